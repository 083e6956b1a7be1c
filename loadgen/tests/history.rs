//! The PostgreSQL history against a real PostgreSQL (Debian's, through
//! scripts/services/postgres.sh) with loadgen's mock server as the load target:
//! a database made by an older loadgen is migrated in place with its rows;
//! a database that goes down during a run gets the run later from the spool,
//! through `loadgen history push`, exactly once.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{args, loadgen_async as loadgen, mock, read_result, text, Postgres};
use loadgen::mock::MockConfig;

/// The schema of the loadgen before the guide-compatible one, verbatim.
const OLD_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS benchmarks (
    id          BIGSERIAL PRIMARY KEY,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    git_commit  TEXT,
    git_branch  TEXT,
    metadata    JSONB NOT NULL
);
CREATE TABLE IF NOT EXISTS device_measurements (
    benchmark_id      BIGINT NOT NULL REFERENCES benchmarks (id) ON DELETE CASCADE,
    time              TIMESTAMPTZ NOT NULL,
    cpu_util          DOUBLE PRECISION,
    mem_megabytes     DOUBLE PRECISION,
    gpu_util          DOUBLE PRECISION,
    gpu_mem_megabytes DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS device_measurements_run ON device_measurements (benchmark_id, time);
CREATE TABLE IF NOT EXISTS model_measurements (
    benchmark_id BIGINT NOT NULL REFERENCES benchmarks (id) ON DELETE CASCADE,
    time         TIMESTAMPTZ NOT NULL,
    step         INTEGER NOT NULL,
    summary      JSONB NOT NULL
);
CREATE INDEX IF NOT EXISTS model_measurements_run ON model_measurements (benchmark_id, step);
"#;

fn count(rows: &[tokio_postgres::Row]) -> i64 {
    rows.first().map_or(0, |r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_database_is_migrated_in_place_and_keeps_its_rows() {
    let pg = Postgres::start();
    let db = pg.client().await;
    db.batch_execute(OLD_SCHEMA).await.expect("old schema");
    let old: i64 = db
        .query_one(
            "INSERT INTO benchmarks (git_commit, git_branch, metadata) VALUES ('abc123', 'old-branch', '{\"model\": \"old\", \"sweep\": {\"kind\": \"batch\"}}') RETURNING id",
            &[],
        )
        .await
        .expect("old run")
        .get(0);
    db.batch_execute(&format!(
        "INSERT INTO device_measurements (benchmark_id, time, cpu_util, mem_megabytes) VALUES ({old}, now(), 50, 100);
         INSERT INTO model_measurements (benchmark_id, time, step, summary) VALUES
           ({old}, now(), 0, '{{\"label\": \"batch=1\", \"batch_size\": 1, \"throughput\": {{\"requests_per_s\": 2.5, \"output_tokens_per_s\": 80}}, \"ttft\": {{\"p50\": 0.1, \"p99\": 0.2}}}}')"
    ))
    .await
    .expect("old rows");

    let url = mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let flags = [
        "--requests",
        "3",
        "--output-len",
        "2",
        "--sample-interval",
        "0.1",
        "--no-plots",
        "--database-url",
        &pg.url,
    ];
    let out = loadgen(args(&url, dir.path(), &flags)).await;
    assert!(out.status.success(), "{}", text(&out));
    let r = read_result(dir.path());
    assert_eq!(r["database"]["written"], true, "{}", r["database"]);
    let new = r["database"]["benchmark_id"]
        .as_i64()
        .expect("benchmark id");

    let row = db
        .query_one(
            "SELECT branch, commit_id, metadata->>'model', run_id FROM benchmarks WHERE benchmark_id = $1",
            &[&old],
        )
        .await
        .expect("the old run under the new column names");
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("old-branch")
    );
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("abc123"));
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("old"));
    assert_eq!(
        row.get::<_, Option<String>>(3),
        None,
        "old runs have no run id"
    );
    let m = db
        .query_one(
            "SELECT measurement_id, step, (measurements->'throughput'->>'requests_per_s')::float FROM model_measurements WHERE benchmark_id = $1",
            &[&old],
        )
        .await
        .expect("the old step");
    assert!(m.get::<_, i64>(0) > 0);
    assert_eq!(m.get::<_, Option<i32>>(1), Some(0));
    assert_eq!(m.get::<_, Option<f64>>(2), Some(2.5));
    let devices = db
        .query(
            "SELECT count(measurement_id) FROM device_measurements WHERE benchmark_id = $1",
            &[&old],
        )
        .await
        .expect("old device rows");
    assert_eq!(count(&devices), 1);
    let new_run = db
        .query(
            "SELECT count(*) FROM benchmarks WHERE benchmark_id = $1 AND run_id = $2",
            &[&new, &r["run_id"].as_str().unwrap_or("")],
        )
        .await
        .expect("new run");
    assert_eq!(count(&new_run), 1);
    let findings = db
        .query("SELECT count(*) FROM diagnosis_findings", &[])
        .await
        .expect("findings table");
    assert_eq!(count(&findings), 0);
    // The dashboard works on the migrated database, for old and new runs alike.
    common::dashboard_queries_return_rows(&db, old).await;
    common::dashboard_queries_return_rows(&db, new).await;
}

async fn push(url: &str, rest: &[&str]) -> std::process::Output {
    let mut a = vec![
        "history".to_string(),
        "push".into(),
        "--database-url".into(),
        url.into(),
    ];
    a.extend(rest.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(&a)
            .output()
            .expect("run loadgen history push")
    })
    .await
    .expect("push thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_down_mid_run_gets_the_run_from_the_spool_once() {
    let mut pg = Postgres::start();
    let url = mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (out_dir, spool) = (dir.path().join("out"), dir.path().join("spool"));
    let child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args(
            &url,
            &out_dir,
            &[
                "--concurrency",
                "1",
                "--duration",
                "3s",
                "--output-len",
                "2",
            ],
        ))
        .args([
            "--sample-interval",
            "0.2",
            "--no-plots",
            "--no-progress",
            "--database-url",
            &pg.url,
        ])
        .args(["--spool-dir", spool.to_str().unwrap_or(".")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loadgen");
    // The database is up when the run starts, and down when it ends.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    pg.stop();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("loadgen");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("not to PostgreSQL") && err.contains("history-spool.json"),
        "{err}"
    );
    let r = read_result(&out_dir);
    assert!(
        r["steps"][0]["requests"]["ok"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "results still written"
    );
    assert!(out_dir.join("requests.csv").is_file());
    let run_id = r["run_id"].as_str().expect("run id").to_string();
    let spooled = spool.join(format!("{run_id}.json"));
    assert!(spooled.is_file() && out_dir.join("history-spool.json").is_file());

    pg.restart();
    let first = push(&pg.url, &["--spool-dir", spool.to_str().unwrap_or(".")]).await;
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        String::from_utf8_lossy(&first.stdout).contains("written as benchmark"),
        "{}",
        text(&first)
    );
    assert!(!spooled.exists(), "a pushed run leaves the spool directory");
    // Again, from the copy beside the results: nothing new is written.
    let again = push(&pg.url, &[out_dir.to_str().unwrap_or(".")]).await;
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("already recorded"),
        "{}",
        text(&again)
    );
    let nothing = push(&pg.url, &["--spool-dir", spool.to_str().unwrap_or(".")]).await;
    assert!(String::from_utf8_lossy(&nothing.stdout).contains("nothing to push"));

    let db = pg.client().await;
    let runs = db
        .query(
            "SELECT count(*) FROM benchmarks WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .expect("runs");
    assert_eq!(count(&runs), 1, "pushed twice, written once");
    let steps = db
        .query("SELECT count(*) FROM model_measurements m JOIN benchmarks b USING (benchmark_id) WHERE b.run_id = $1", &[&run_id])
        .await
        .expect("steps");
    assert_eq!(count(&steps), 1);
    let devices = db
        .query("SELECT count(*) FROM device_measurements d JOIN benchmarks b USING (benchmark_id) WHERE b.run_id = $1", &[&run_id])
        .await
        .expect("devices");
    assert!(
        count(&devices) >= 2,
        "the device samples came through the spool"
    );
}
