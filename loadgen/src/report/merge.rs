//! `loadgen merge`: the workers' results as one run.
//!
//! Percentiles are exact over all requests: every worker kept its raw records
//! (`records.jsonl`), and the merged step summaries are computed from their
//! union by the same `summarize` a single run uses, on a common time base (the
//! earliest worker's start). Runs of different flags or seeds, or an incomplete
//! or repeated set of workers, are refused.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Environment, Resolved, RunResult, SCHEMA_VERSION};
use crate::measure::raw::RawRecord;
use crate::measure::record::RequestRecord;
use crate::measure::stats::{summarize, ClientUsage, Slo, StepSummary};
use crate::measure::usage::{CpuSample, DeviceSample};
use crate::plan::step::StepSpec;
use crate::plan::sweep::{batch_efficiency, SweepResult};
use crate::send::runner::StepOutcome;

/// What a worker's `result.json` holds beyond the common run result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub id: u64,
    pub of: u64,
    /// The worker's run start in nanoseconds since the Unix epoch: the time
    /// base of its records.
    pub clock_start_unix_ns: u64,
    pub steps: Vec<WorkerStep>,
}

/// One step as the worker ran it (offsets in nanoseconds from its start).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerStep {
    pub spec: StepSpec,
    pub start_ns: u64,
    pub load_end_ns: u64,
    pub end_ns: u64,
    pub aborted: Option<String>,
}

impl WorkerStep {
    pub fn of(o: &StepOutcome) -> Self {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        WorkerStep {
            spec: o.spec.clone(),
            start_ns: ns(o.start),
            load_end_ns: ns(o.load_end),
            end_ns: ns(o.end),
            aborted: o.aborted.clone(),
        }
    }
}

/// Flags that may differ between the workers of one load.
const PER_WORKER: [&str; 6] = [
    "worker_id",
    "output_dir",
    "no_progress",
    "no_plots",
    "save_requests",
    "spool_dir",
];

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{dir}: {detail}")]
    Read { dir: PathBuf, detail: String },
    #[error("cannot merge: {0}")]
    Mismatch(String),
}

/// The part of a worker's `result.json` the merge reads.
#[derive(Debug, Deserialize)]
struct WorkerResult {
    run_id: String,
    config: Value,
    resolved: Resolved,
    environment: Environment,
    sweep: SweepResult,
    steps: Vec<Value>,
    device_samples: Vec<DeviceSample>,
    client_cpu_samples: Vec<CpuSample>,
    worker: Option<WorkerInfo>,
}

struct Worker {
    dir: PathBuf,
    result: WorkerResult,
    info: WorkerInfo,
    records: Vec<RawRecord>,
}

fn read_worker(dir: &Path) -> Result<Worker, MergeError> {
    let err = |detail: String| MergeError::Read {
        dir: dir.to_path_buf(),
        detail,
    };
    let text = std::fs::read_to_string(dir.join("result.json"))
        .map_err(|e| err(format!("cannot read result.json: {e}")))?;
    let result: WorkerResult =
        serde_json::from_str(&text).map_err(|e| err(format!("result.json: {e}")))?;
    let info = result.worker.clone().ok_or_else(|| {
        err("not a worker's run (it was not run with --worker-id/--workers)".into())
    })?;
    let file = std::fs::File::open(dir.join("records.jsonl"))
        .map_err(|e| err(format!("cannot read records.jsonl: {e}")))?;
    let mut records = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| err(format!("records.jsonl: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        records.push(
            serde_json::from_str(&line)
                .map_err(|e| err(format!("records.jsonl:{}: {e}", n + 1)))?,
        );
    }
    Ok(Worker {
        dir: dir.to_path_buf(),
        result,
        info,
        records,
    })
}

/// The flags of a run without the ones that may differ per worker.
fn load_flags(config: &Value) -> Value {
    let mut c = config.clone();
    if let Some(map) = c.as_object_mut() {
        for key in PER_WORKER {
            map.remove(key);
        }
    }
    c
}

/// Refuse workers of different loads, and incomplete or repeated sets.
fn check(workers: &[Worker]) -> Result<(), MergeError> {
    let first = &workers[0];
    let flags = load_flags(&first.result.config);
    for w in &workers[1..] {
        let other = load_flags(&w.result.config);
        if other != flags {
            let key = flags
                .as_object()
                .into_iter()
                .flatten()
                .find(|(k, v)| other.get(k.as_str()) != Some(v))
                .map_or("flags".to_string(), |(k, v)| {
                    format!("--{} ({v} vs {})", k.replace('_', "-"), other[k.as_str()])
                });
            return Err(MergeError::Mismatch(format!(
                "{} and {} ran different loads: {key}",
                first.dir.display(),
                w.dir.display()
            )));
        }
    }
    let n = first.info.of;
    let ids: BTreeSet<u64> = workers.iter().map(|w| w.info.id).collect();
    if ids.len() != workers.len() || workers.len() as u64 != n || ids.iter().any(|i| *i >= n) {
        return Err(MergeError::Mismatch(format!(
            "need each of the {n} workers exactly once, got worker ids {:?}",
            workers.iter().map(|w| w.info.id).collect::<Vec<_>>()
        )));
    }
    let steps = first.info.steps.len();
    if workers.iter().any(|w| w.info.steps.len() != steps) {
        return Err(MergeError::Mismatch(
            "the workers ran different numbers of steps".into(),
        ));
    }
    Ok(())
}

/// The merged run, and every request on the common time base.
pub struct Merged {
    pub result: RunResult,
    pub records: Vec<RequestRecord>,
}

/// Merge the workers' output directories.
pub fn merge(dirs: &[PathBuf]) -> Result<Merged, MergeError> {
    let mut workers = dirs
        .iter()
        .map(|d| read_worker(d))
        .collect::<Result<Vec<_>, _>>()?;
    workers.sort_by_key(|w| w.info.id);
    check(&workers)?;
    let t0 = workers
        .iter()
        .map(|w| w.info.clock_start_unix_ns)
        .min()
        .unwrap_or(0);
    let shift = |w: &Worker| Duration::from_nanos(w.info.clock_start_unix_ns - t0);
    let mut records = Vec::new();
    for w in &workers {
        for r in &w.records {
            let rec = r
                .clone()
                .into_record(shift(w))
                .map_err(|e| MergeError::Read {
                    dir: w.dir.clone(),
                    detail: format!("records.jsonl: {e}"),
                })?;
            records.push(rec);
        }
    }
    records.sort_by_key(|r| r.id);
    let steps = merged_steps(&workers, &records, &shift);
    let result = merged_result(&workers, steps, t0);
    Ok(Merged { result, records })
}

/// Every step recomputed over all workers' requests.
fn merged_steps(
    workers: &[Worker],
    records: &[RequestRecord],
    shift: &dyn Fn(&Worker) -> Duration,
) -> Vec<StepSummary> {
    let first = &workers[0];
    let slo: Option<Slo> = serde_json::from_value(first.result.config["slo"].clone()).ok();
    let mut steps: Vec<StepSummary> = (0..first.info.steps.len())
        .map(|i| {
            let at = |w: &Worker, ns: u64| shift(w) + Duration::from_nanos(ns);
            let parts = workers.iter().map(|w| (w, &w.info.steps[i]));
            let outcome = StepOutcome {
                spec: first.info.steps[i].spec.clone(),
                start: parts
                    .clone()
                    .map(|(w, s)| at(w, s.start_ns))
                    .min()
                    .unwrap_or_default(),
                load_end: parts
                    .clone()
                    .map(|(w, s)| at(w, s.load_end_ns))
                    .max()
                    .unwrap_or_default(),
                end: parts
                    .clone()
                    .map(|(w, s)| at(w, s.end_ns))
                    .max()
                    .unwrap_or_default(),
                records: records
                    .iter()
                    .filter(|r| r.step == first.info.steps[i].spec.index)
                    .cloned()
                    .collect(),
                aborted: parts.clone().find_map(|(_, s)| s.aborted.clone()),
            };
            summarize(&outcome, slo.as_ref(), client_usage(workers, i), None)
        })
        .collect();
    batch_efficiency(&mut steps);
    steps
}

/// loadgen's own CPU over a step: the mean of the workers' means and the
/// largest of their peaks (each a percentage of its own machine).
fn client_usage(workers: &[Worker], step: usize) -> ClientUsage {
    let field = |w: &Worker, k: &str| w.result.steps.get(step)?["client"][k].as_f64();
    let means: Vec<f64> = workers
        .iter()
        .filter_map(|w| field(w, "cpu_mean_pct"))
        .collect();
    ClientUsage {
        cpu_mean_pct: (!means.is_empty()).then(|| means.iter().sum::<f64>() / means.len() as f64),
        cpu_max_pct: workers
            .iter()
            .filter_map(|w| field(w, "cpu_max_pct"))
            .reduce(f64::max),
        cores: workers[0].result.environment.cores,
    }
}

/// The merged `result.json`: the first worker's flags (less `--worker-id`),
/// environment spanning all workers, and the first worker's device samples.
fn merged_result(workers: &[Worker], steps: Vec<StepSummary>, t0: u64) -> RunResult {
    let first = &workers[0];
    let mut config = first.result.config.clone();
    if let Some(map) = config.as_object_mut() {
        map.insert("worker_id".into(), Value::Null);
    }
    let mut environment = first.result.environment.clone();
    let wall = |w: &Worker| w.info.clock_start_unix_ns;
    environment.started_at = rfc3339(t0);
    environment.finished_at = workers
        .iter()
        .map(|w| w.result.environment.finished_at.clone())
        .max()
        .unwrap_or_default();
    let shift = (wall(first) - t0) as f64 / 1e9;
    let base = SystemTime::UNIX_EPOCH + Duration::from_nanos(t0);
    let device_samples = first
        .result
        .device_samples
        .iter()
        .map(|d| {
            let t_s = d.t_s + shift;
            DeviceSample {
                t_s,
                time: base + Duration::from_secs_f64(t_s),
                ..d.clone()
            }
        })
        .collect();
    RunResult {
        schema_version: SCHEMA_VERSION,
        run_id: merged_run_id(workers),
        config,
        resolved: first.result.resolved.clone(),
        environment,
        sweep: first.result.sweep.clone(),
        steps,
        device_samples,
        client_cpu_samples: first.result.client_cpu_samples.clone(),
        database: None,
        requests: None,
        worker: None,
        merged_from: Some(
            workers
                .iter()
                .map(|w| w.dir.display().to_string())
                .collect(),
        ),
        diagnosis: None,
    }
}

/// The same workers always merge into the same run id, so recording a merge
/// twice writes the history once.
fn merged_run_id(workers: &[Worker]) -> String {
    let ids: Vec<&str> = workers.iter().map(|w| w.result.run_id.as_str()).collect();
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, ids.join(",").as_bytes()).to_string()
}

fn rfc3339(unix_ns: u64) -> String {
    humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_nanos(unix_ns))
        .to_string()
}
