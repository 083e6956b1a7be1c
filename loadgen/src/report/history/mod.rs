//! Benchmark history in PostgreSQL: live metrics live in Prometheus, history here.
//!
//! One transaction per run: the `benchmarks` row, then `device_measurements`,
//! `model_measurements` and `diagnosis_findings` in multi-row INSERTs of up to
//! [`BATCH`] rows. Either the whole run lands or none of it does, and a run
//! lands once: its `run_id` is unique, so writing it again (a pushed spool)
//! inserts nothing. When PostgreSQL cannot take the run, it goes to a spool
//! file ([`spool`]) that `loadgen history push` writes later.

mod schema;
pub mod spool;

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Transaction};

use crate::report::RunResult;

/// Rows per INSERT statement (9 parameters each stays far below PostgreSQL's 65535).
const BATCH: usize = 1000;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(String),
    #[error("PostgreSQL did not answer within {0:?}")]
    Timeout(Duration),
    #[error("PostgreSQL write failed: {0}")]
    Write(#[from] tokio_postgres::Error),
}

/// One `device_measurements` row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceRow {
    pub time: SystemTime,
    pub cpu_util: Option<f64>,
    pub mem_megabytes: Option<f64>,
    pub gpu_util: Option<f64>,
    pub gpu_mem_megabytes: Option<f64>,
}

/// One `model_measurements` row: a step's summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRow {
    /// The end of the step's window.
    pub time: SystemTime,
    pub step: i32,
    /// The step object of `result.json`.
    pub measurements: Value,
}

/// One `diagnosis_findings` row (`step` is `None` for a finding about the
/// whole run). Filled from the run's diagnosis; none until loadgen has one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FindingRow {
    pub step: Option<i32>,
    pub bottleneck: String,
    pub severity: String,
    pub summary: String,
    pub evidence: Value,
    pub remedies: Value,
    pub trace_ids: Vec<String>,
}

/// Everything one run writes; also the content of a spool file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunHistory {
    /// Unique per run: the idempotency key.
    pub run_id: String,
    pub created_at: SystemTime,
    pub repository: Option<String>,
    pub branch: Option<String>,
    pub commit_id: Option<String>,
    pub commit_message: Option<String>,
    /// model, gpu_name, loadgen_config, resolved, server_info, sweep, environment.
    pub metadata: Value,
    pub devices: Vec<DeviceRow>,
    pub steps: Vec<StepRow>,
    pub findings: Vec<FindingRow>,
}

impl RunHistory {
    /// The rows of a finished run.
    pub fn of(r: &RunResult) -> Self {
        let metadata = json!({
            "model": r.resolved.model,
            "gpu_name": r.environment.gpu_name,
            "loadgen_config": r.config,
            "resolved": r.resolved,
            "server_info": r.environment.server_info,
            "sweep": r.sweep,
            "environment": r.environment,
            "diagnosis": r.diagnosis.as_ref().map(|d| json!({
                "status": d.status,
                "sweep": d.sweep,
            })),
        });
        let wall = humantime::parse_rfc3339(&r.environment.started_at)
            .unwrap_or_else(|_| SystemTime::now());
        let steps = r
            .steps
            .iter()
            .map(|s| StepRow {
                time: wall + Duration::from_secs_f64(s.window.end_s),
                step: s.index as i32,
                measurements: serde_json::to_value(s).unwrap_or(Value::Null),
            })
            .collect();
        let devices = r
            .device_samples
            .iter()
            .map(|d| DeviceRow {
                time: d.time,
                cpu_util: d.cpu_util,
                mem_megabytes: d.mem_megabytes,
                gpu_util: d.gpu_util,
                gpu_mem_megabytes: d.gpu_mem_megabytes,
            })
            .collect();
        let env = &r.environment;
        RunHistory {
            run_id: r.run_id.clone(),
            created_at: wall,
            repository: env.server_git_repository.clone(),
            branch: env.server_git_branch.clone(),
            commit_id: env.server_git_commit.clone(),
            commit_message: env.server_git_message.clone(),
            metadata,
            devices,
            steps,
            findings: findings_of(r),
        }
    }
}

/// One row per finding of every step's diagnosis.
fn findings_of(r: &RunResult) -> Vec<FindingRow> {
    r.steps
        .iter()
        .flat_map(|s| {
            let findings = s.diagnosis.iter().flat_map(|d| d.findings.iter());
            findings.map(|f| FindingRow {
                step: Some(s.index as i32),
                bottleneck: f.bottleneck.as_str().to_owned(),
                severity: f.severity.as_str().to_owned(),
                summary: f.summary.clone(),
                evidence: serde_json::to_value(&f.evidence).unwrap_or(Value::Null),
                remedies: serde_json::to_value(&f.remedies).unwrap_or(Value::Null),
                trace_ids: f.trace_ids.clone(),
            })
        })
        .collect()
}

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

/// Where a written run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub benchmark_id: i64,
    /// False when the run was already there (written before, by its run id).
    pub inserted: bool,
}

/// Create (or migrate) the schema and record the run, once.
pub async fn write(url: &str, run: &RunHistory) -> Result<Written, HistoryError> {
    let mut client = connect(url).await?;
    let tx = client.transaction().await?;
    // Serialize schema changes between concurrent loadgens (CREATE ... IF NOT
    // EXISTS and the migration are not race-free in PostgreSQL).
    tx.execute("SELECT pg_advisory_xact_lock(7254817351)", &[])
        .await?;
    schema::ensure(&tx).await?;
    let inserted = tx
        .query_opt(
            "INSERT INTO benchmarks (run_id, repository, branch, commit_id, commit_message, metadata, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (run_id) DO NOTHING RETURNING benchmark_id",
            &[&run.run_id, &run.repository, &run.branch, &run.commit_id, &run.commit_message, &run.metadata, &run.created_at],
        )
        .await?;
    let Some(row) = inserted else {
        let row = tx
            .query_one(
                "SELECT benchmark_id FROM benchmarks WHERE run_id = $1",
                &[&run.run_id],
            )
            .await?;
        tx.commit().await?;
        return Ok(Written {
            benchmark_id: row.get(0),
            inserted: false,
        });
    };
    let id: i64 = row.get(0);
    write_rows(&tx, id, run).await?;
    tx.commit().await?;
    Ok(Written {
        benchmark_id: id,
        inserted: true,
    })
}

/// The run's measurement and finding rows, in multi-row INSERTs.
async fn write_rows(tx: &Transaction<'_>, id: i64, run: &RunHistory) -> Result<(), HistoryError> {
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
            params.extend([
                &id as &(dyn ToSql + Sync),
                &s.time,
                &s.step,
                &s.measurements,
            ]);
        }
        let sql = insert_sql(
            "model_measurements (benchmark_id, time, step, measurements)",
            chunk.len(),
            4,
        );
        tx.execute(&sql, &params).await?;
    }
    for chunk in run.findings.chunks(BATCH) {
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * 8);
        for f in chunk {
            params.extend([
                &id as &(dyn ToSql + Sync),
                &f.step,
                &f.bottleneck,
                &f.severity,
                &f.summary,
                &f.evidence,
                &f.remedies,
                &f.trace_ids,
            ]);
        }
        let sql = insert_sql(
            "diagnosis_findings (benchmark_id, step, bottleneck, severity, summary, evidence, remedies, trace_ids)",
            chunk.len(),
            8,
        );
        tx.execute(&sql, &params).await?;
    }
    Ok(())
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
