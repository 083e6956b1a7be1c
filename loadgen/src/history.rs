//! Benchmark history in PostgreSQL: live metrics live in Prometheus, history here.
//!
//! One transaction per run: the `benchmarks` row, then `device_measurements` and
//! `model_measurements` in multi-row INSERTs of up to [`BATCH`] rows. Either the
//! whole run lands or none of it does.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use crate::sampler::DeviceSample;

/// Rows per INSERT statement (6 parameters each stays far below PostgreSQL's 65535).
const BATCH: usize = 1000;

/// The schema, created if absent. Utilizations are percent, memory megabytes (10^6 bytes).
pub const SCHEMA: &str = r#"
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

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(String),
    #[error("PostgreSQL did not answer within {0:?}")]
    Timeout(Duration),
    #[error("PostgreSQL write failed: {0}")]
    Write(#[from] tokio_postgres::Error),
}

/// One step's row for `model_measurements`.
pub struct StepRow {
    pub time: SystemTime,
    pub step: i32,
    pub summary: Value,
}

/// Everything one run writes.
pub struct RunHistory<'a> {
    pub created_at: SystemTime,
    pub git_commit: Option<String>,
    pub git_branch: Option<String>,
    pub metadata: Value,
    pub devices: &'a [DeviceSample],
    pub steps: Vec<StepRow>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn pg_error(e: &tokio_postgres::Error) -> String {
    // The top-level message of a connect error is just "error connecting to server".
    match std::error::Error::source(e) {
        Some(src) => format!("{e}: {src}"),
        None => e.to_string(),
    }
}

async fn connect(url: &str) -> Result<Client, HistoryError> {
    let fut = tokio_postgres::connect(url, NoTls);
    let (client, conn) = tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| HistoryError::Timeout(CONNECT_TIMEOUT))?
        .map_err(|e| HistoryError::Connect(pg_error(&e)))?;
    tokio::spawn(async move {
        // The connection ends when the client is dropped; errors surface on queries.
        let _ = conn.await;
    });
    Ok(client)
}

/// Check the database is reachable (before the run, to warn early).
pub async fn check(url: &str) -> Result<(), HistoryError> {
    let client = connect(url).await?;
    client.simple_query("SELECT 1").await?;
    Ok(())
}

/// Create the schema if absent and record the run; returns the benchmark id.
pub async fn write(url: &str, run: &RunHistory<'_>) -> Result<i64, HistoryError> {
    let mut client = connect(url).await?;
    let tx = client.transaction().await?;
    // Serialize schema creation between concurrent loadgens (CREATE ... IF NOT
    // EXISTS is not race-free in PostgreSQL).
    tx.execute("SELECT pg_advisory_xact_lock(7254817351)", &[])
        .await?;
    tx.batch_execute(SCHEMA).await?;
    let row = tx
        .query_one(
            "INSERT INTO benchmarks (created_at, git_commit, git_branch, metadata) VALUES ($1, $2, $3, $4) RETURNING id",
            &[&run.created_at, &run.git_commit, &run.git_branch, &run.metadata],
        )
        .await?;
    let id: i64 = row.get(0);
    for chunk in run.devices.chunks(BATCH) {
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * 6);
        for d in chunk {
            params.extend([
                &id as &(dyn ToSql + Sync),
                &d.time,
                &d.cpu_util,
                &d.mem_megabytes,
                &d.gpu_util,
                &d.gpu_mem_megabytes,
            ]);
        }
        let sql = insert_sql(
            "device_measurements (benchmark_id, time, cpu_util, mem_megabytes, gpu_util, gpu_mem_megabytes)",
            chunk.len(),
            6,
        );
        tx.execute(&sql, &params).await?;
    }
    for chunk in run.steps.chunks(BATCH) {
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * 4);
        for s in chunk {
            params.extend([&id as &(dyn ToSql + Sync), &s.time, &s.step, &s.summary]);
        }
        let sql = insert_sql(
            "model_measurements (benchmark_id, time, step, summary)",
            chunk.len(),
            4,
        );
        tx.execute(&sql, &params).await?;
    }
    tx.commit().await?;
    Ok(id)
}

/// `INSERT INTO table (cols) VALUES ($1, ..., $w), (...)` for `rows` rows of width `w`.
fn insert_sql(table: &str, rows: usize, width: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let cells: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", cells.join(", "))
        })
        .collect();
    format!("INSERT INTO {table} VALUES {}", values.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_insert_numbers_parameters_row_major() {
        assert_eq!(
            insert_sql("t (a, b)", 2, 2),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"
        );
    }
}
