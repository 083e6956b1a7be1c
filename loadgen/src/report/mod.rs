//! Results: the JSON document, CSVs, the terminal table and the plots.
//!
//! `result.json` is the record of a run; everything else (table, CSV, plots,
//! PostgreSQL rows) is derived from the same [`RunResult`].

mod plots;
mod table;

use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use crate::record::{RecordRow, RequestRecord};
use crate::sampler::{CpuSample, DeviceSample};
use crate::stats::StepSummary;
use crate::sweep::SweepResult;

pub use plots::write_plots;
pub use table::render_table;

/// Version of the `result.json` layout (bumped on incompatible changes).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    pub loadgen_version: &'static str,
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub cores: usize,
    pub started_at: String,
    pub finished_at: String,
    /// The server's `/info`, verbatim.
    pub server_info: Option<Value>,
    pub server_git_commit: Option<String>,
    pub server_git_branch: Option<String>,
    pub gpu_name: Option<String>,
}

/// Settings loadgen worked out (beyond the flags as given).
#[derive(Debug, Clone, Serialize)]
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

/// Write `result.json`, `requests.csv` and `summary.csv` into `dir`.
pub fn write_files(
    dir: &Path,
    result: &RunResult,
    records: &[RequestRecord],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let json = serde_json::to_vec_pretty(result).context("serializing result")?;
    std::fs::write(dir.join("result.json"), json)
        .with_context(|| format!("cannot write {}", dir.display()))?;
    let mut w = csv::Writer::from_path(dir.join("requests.csv")).context("requests.csv")?;
    for r in records {
        w.serialize(r.row()).context("requests.csv")?;
    }
    w.flush().context("requests.csv")?;
    write_summary_csv(&dir.join("summary.csv"), &result.steps)
}

/// One row per step with the headline numbers (milliseconds for latencies).
fn write_summary_csv(path: &Path, steps: &[StepSummary]) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_path(path).with_context(|| path.display().to_string())?;
    let mut header = vec![
        "step",
        "label",
        "batch_size",
        "requests",
        "ok",
        "errors",
        "window_s",
    ];
    header.extend([
        "requests_per_s",
        "output_tokens_per_s",
        "total_tokens_per_s",
        "goodput_requests_per_s",
        "batch_efficiency",
    ]);
    let metrics = [
        "ttft",
        "ttft_from_scheduled",
        "itl",
        "tpot",
        "e2e",
        "e2e_from_scheduled",
        "send_lag",
    ];
    let stats = ["mean", "p50", "p90", "p95", "p99", "max"];
    let names: Vec<String> = metrics
        .iter()
        .flat_map(|m| stats.iter().map(move |s| format!("{m}_{s}_ms")))
        .collect();
    header.extend(names.iter().map(String::as_str));
    w.write_record(&header)?;
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
    for s in steps {
        let mut row = vec![
            s.index.to_string(),
            s.label.clone(),
            s.batch_size.map(|b| b.to_string()).unwrap_or_default(),
            s.requests.sent.to_string(),
            s.requests.ok.to_string(),
            s.requests.errors.to_string(),
            format!("{:.6}", s.window.seconds),
            format!("{:.6}", s.throughput.requests_per_s),
            opt(s.throughput.output_tokens_per_s),
            opt(s.throughput.total_tokens_per_s),
            opt(s.goodput.as_ref().map(|g| g.requests_per_s)),
            opt(s.batch_efficiency),
        ];
        for d in [
            &s.ttft,
            &s.ttft_from_scheduled,
            &s.itl,
            &s.tpot,
            &s.e2e,
            &s.e2e_from_scheduled,
            &s.send_lag,
        ] {
            for v in d
                .as_ref()
                .map(|d| [d.mean, d.p50, d.p90, d.p95, d.p99, d.max].map(|x| Some(x * 1e3)))
                .unwrap_or([None; 6])
            {
                row.push(opt(v));
            }
        }
        w.write_record(&row)?;
    }
    w.flush()?;
    Ok(())
}
