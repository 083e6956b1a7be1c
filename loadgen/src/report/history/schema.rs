//! The history schema, and the in-place migration of databases that older
//! loadgens created.
//!
//! `benchmarks`, `device_measurements` and `model_measurements` have the
//! columns of the guide's benchmark stack (the transformers `benchmark/`
//! schema), so its dashboards and queries work unchanged. candlelight keeps
//! its extras beside them: `benchmarks.run_id` (a unique key that makes
//! writing a run idempotent), `model_measurements.step`, and the
//! `diagnosis_findings` table.

use tokio_postgres::Transaction;

/// The schema, created if absent. Utilizations are percent, memory megabytes
/// (10^6 bytes). Nullability follows the guide's schema where other writers
/// may leave a column out.
pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS benchmarks (
    benchmark_id   BIGSERIAL PRIMARY KEY,
    repository     TEXT,
    branch         TEXT,
    commit_id      TEXT,
    commit_message TEXT,
    metadata       JSONB,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    run_id         TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS benchmarks_run_id ON benchmarks (run_id);
CREATE TABLE IF NOT EXISTS device_measurements (
    measurement_id    BIGSERIAL PRIMARY KEY,
    benchmark_id      BIGINT NOT NULL REFERENCES benchmarks (benchmark_id) ON DELETE CASCADE,
    cpu_util          DOUBLE PRECISION,
    mem_megabytes     DOUBLE PRECISION,
    gpu_util          DOUBLE PRECISION,
    gpu_mem_megabytes DOUBLE PRECISION,
    time              TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS device_measurements_run ON device_measurements (benchmark_id, time);
CREATE TABLE IF NOT EXISTS model_measurements (
    measurement_id BIGSERIAL PRIMARY KEY,
    benchmark_id   BIGINT NOT NULL REFERENCES benchmarks (benchmark_id) ON DELETE CASCADE,
    measurements   JSONB,
    time           TIMESTAMPTZ NOT NULL DEFAULT now(),
    step           INTEGER
);
CREATE INDEX IF NOT EXISTS model_measurements_run ON model_measurements (benchmark_id, step);
CREATE TABLE IF NOT EXISTS diagnosis_findings (
    finding_id   BIGSERIAL PRIMARY KEY,
    benchmark_id BIGINT NOT NULL REFERENCES benchmarks (benchmark_id) ON DELETE CASCADE,
    step         INTEGER,
    bottleneck   TEXT NOT NULL,
    severity     TEXT NOT NULL,
    summary      TEXT NOT NULL,
    evidence     JSONB NOT NULL DEFAULT '[]',
    remedies     JSONB NOT NULL DEFAULT '[]',
    trace_ids    TEXT[] NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS diagnosis_findings_run ON diagnosis_findings (benchmark_id, step);
"#;

/// Columns older loadgens named differently: (table, old name, new name).
const RENAMES: [(&str, &str, &str); 4] = [
    ("benchmarks", "id", "benchmark_id"),
    ("benchmarks", "git_commit", "commit_id"),
    ("benchmarks", "git_branch", "branch"),
    ("model_measurements", "summary", "measurements"),
];

/// Statements that bring an existing table (an older loadgen's, or one the
/// guide's stack made) up to [`SCHEMA`]; each is a no-op on a current one.
///
/// Each entry: the table, the column the change adds (skipped when present:
/// a serial column must not be added twice), and the change.
const UPGRADES: [(&str, Option<&str>, &str); 14] = [
    (
        "benchmarks",
        Some("repository"),
        "ADD COLUMN repository TEXT",
    ),
    ("benchmarks", Some("branch"), "ADD COLUMN branch TEXT"),
    ("benchmarks", Some("commit_id"), "ADD COLUMN commit_id TEXT"),
    (
        "benchmarks",
        Some("commit_message"),
        "ADD COLUMN commit_message TEXT",
    ),
    ("benchmarks", Some("metadata"), "ADD COLUMN metadata JSONB"),
    ("benchmarks", Some("run_id"), "ADD COLUMN run_id TEXT"),
    ("benchmarks", None, "ALTER COLUMN metadata DROP NOT NULL"),
    (
        "device_measurements",
        Some("measurement_id"),
        "ADD COLUMN measurement_id BIGSERIAL PRIMARY KEY",
    ),
    (
        "device_measurements",
        None,
        "ALTER COLUMN time SET DEFAULT now()",
    ),
    (
        "model_measurements",
        Some("measurement_id"),
        "ADD COLUMN measurement_id BIGSERIAL PRIMARY KEY",
    ),
    (
        "model_measurements",
        Some("measurements"),
        "ADD COLUMN measurements JSONB",
    ),
    (
        "model_measurements",
        Some("step"),
        "ADD COLUMN step INTEGER",
    ),
    (
        "model_measurements",
        None,
        "ALTER COLUMN measurements DROP NOT NULL",
    ),
    (
        "model_measurements",
        None,
        "ALTER COLUMN step DROP NOT NULL",
    ),
];

/// The columns `table` has (none when it does not exist).
async fn columns(tx: &Transaction<'_>, table: &str) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = tx
        .query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1",
            &[&table],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Create the schema, first migrating existing tables in place (renamed
/// columns keep their rows). Runs inside the writer's transaction, under its
/// advisory lock, so concurrent loadgens never race on it.
pub async fn ensure(tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
    for (table, old, new) in RENAMES {
        let cols = columns(tx, table).await?;
        if cols.iter().any(|c| c == old) && !cols.iter().any(|c| c == new) {
            tx.batch_execute(&format!("ALTER TABLE {table} RENAME COLUMN {old} TO {new}"))
                .await?;
        }
    }
    for (table, adds, change) in UPGRADES {
        let cols = columns(tx, table).await?;
        let present = |c: &str| cols.iter().any(|x| x == c);
        if !cols.is_empty() && !adds.is_some_and(present) {
            tx.batch_execute(&format!("ALTER TABLE {table} {change}"))
                .await?;
        }
    }
    tx.batch_execute(SCHEMA).await
}
