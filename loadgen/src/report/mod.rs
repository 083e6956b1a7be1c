//! Results: the JSON document, CSVs, the terminal table and the plots.
//!
//! `result.json` is the record of a run; everything else (table, CSV, plots,
//! PostgreSQL rows) is derived from the same [`RunResult`].

mod files;
pub mod history;
pub mod merge;
pub mod otel;
mod plots;
mod table;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::measure::record::{RecordRow, RequestRecord};
use crate::measure::stats::StepSummary;
use crate::measure::usage::{CpuSample, DeviceSample};
use crate::plan::sweep::SweepResult;

pub use files::write_files;
pub use merge::WorkerInfo;
pub use plots::write_plots;
pub use table::render_table;

/// Version of the `result.json` layout (bumped on incompatible changes).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Environment {
    pub loadgen_version: String,
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub cores: usize,
    pub started_at: String,
    pub finished_at: String,
    /// The server's `/info`, verbatim.
    pub server_info: Option<Value>,
    pub server_git_commit: Option<String>,
    pub server_git_branch: Option<String>,
    pub server_git_repository: Option<String>,
    pub server_git_message: Option<String>,
    pub gpu_name: Option<String>,
}

/// Settings loadgen worked out (beyond the flags as given).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resolved {
    pub endpoint: String,
    pub model: String,
    /// Server tokens per synthetic word; `None` when the server has no /tokenize
    /// (then synthetic lengths are estimates and the server's counts are reported).
    pub tokens_per_word: Option<f64>,
    pub metrics_endpoint: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseOutcome {
    pub written: bool,
    pub benchmark_id: Option<i64>,
    pub error: Option<String>,
    /// Where the history rows went instead (for `loadgen history push`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub spool: Vec<String>,
}

/// One request in `result.json` (with `--save-requests`).
#[derive(Debug, Clone, Serialize)]
pub struct RequestJson {
    #[serde(flatten)]
    pub row: RecordRow,
    /// Every inter-token gap, seconds.
    pub itl_s: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub schema_version: u32,
    /// Unique per run (a UUID): the history's idempotency key.
    pub run_id: String,
    pub config: Value,
    pub resolved: Resolved,
    pub environment: Environment,
    pub sweep: SweepResult,
    pub steps: Vec<StepSummary>,
    pub device_samples: Vec<DeviceSample>,
    pub client_cpu_samples: Vec<CpuSample>,
    pub database: Option<DatabaseOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<Vec<RequestJson>>,
    /// A worker's run (`--worker-id`): what `loadgen merge` needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerInfo>,
    /// A merged run: the workers' output directories.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<Vec<String>>,
    /// What limited the run: every step's findings, and a sweep's verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<diagnosis::Diagnosis>,
}

pub fn request_json(records: &[RequestRecord]) -> Vec<RequestJson> {
    records
        .iter()
        .map(|r| RequestJson {
            row: r.row(),
            itl_s: r.itl().collect(),
        })
        .collect()
}
