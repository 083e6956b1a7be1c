//! The files of a run: `result.json`, `requests.csv` and `summary.csv`.

use std::path::Path;

use anyhow::Context;

use super::RunResult;
use crate::measure::raw::RawRecord;
use crate::measure::record::RequestRecord;
use crate::measure::stats::{CachedTokens, Dist, StepSummary, TurnSummary};

/// Write `requests.csv`, `summary.csv` (and a worker's `records.jsonl`),
/// then `result.json`: last, so a reader that waits for it (the merge Job)
/// finds every other file complete.
pub fn write_files(
    dir: &Path,
    result: &RunResult,
    records: &[RequestRecord],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut w = csv::Writer::from_path(dir.join("requests.csv")).context("requests.csv")?;
    for r in records {
        w.serialize(r.row()).context("requests.csv")?;
    }
    w.flush().context("requests.csv")?;
    if result.worker.is_some() {
        write_raw_records(&dir.join("records.jsonl"), records)?;
    }
    write_summary_csv(&dir.join("summary.csv"), &result.steps)?;
    let json = serde_json::to_vec_pretty(result).context("serializing result")?;
    let (tmp, path) = (dir.join("result.json.tmp"), dir.join("result.json"));
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `records.jsonl`, for `loadgen merge`: one raw record per line.
fn write_raw_records(path: &Path, records: &[RequestRecord]) -> anyhow::Result<()> {
    use std::io::Write;
    let file = std::fs::File::create(path).with_context(|| path.display().to_string())?;
    let mut w = std::io::BufWriter::new(file);
    for r in records {
        serde_json::to_writer(&mut w, &RawRecord::from(r)).context("records.jsonl")?;
        w.write_all(b"\n").context("records.jsonl")?;
    }
    w.flush().context("records.jsonl")?;
    Ok(())
}

/// The latency metrics of `summary.csv`, in column order.
const METRICS: [&str; 7] = [
    "ttft",
    "ttft_from_scheduled",
    "itl",
    "tpot",
    "e2e",
    "e2e_from_scheduled",
    "send_lag",
];

fn header() -> Vec<String> {
    let mut header: Vec<String> = [
        "step",
        "label",
        "batch_size",
        "requests",
        "ok",
        "errors",
        "window_s",
        "requests_per_s",
        "output_tokens_per_s",
        "total_tokens_per_s",
        "goodput_requests_per_s",
        "batch_efficiency",
    ]
    .map(String::from)
    .to_vec();
    let stats = ["mean", "p50", "p90", "p95", "p99", "max"];
    header.extend(
        METRICS
            .iter()
            .flat_map(|m| stats.iter().map(move |s| format!("{m}_{s}_ms"))),
    );
    header.extend(
        [
            "turn",
            "cached_tokens_sum",
            "cached_tokens_mean",
            "cached_tokens_input_fraction",
        ]
        .map(String::from),
    );
    header
}

fn opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.6}")).unwrap_or_default()
}

/// Six cells (mean, p50, p90, p95, p99, max, in ms) per metric.
fn latency_cells(row: &mut Vec<String>, dists: [&Option<Dist>; 7]) {
    for d in dists {
        let cells = d
            .as_ref()
            .map(|d| [d.mean, d.p50, d.p90, d.p95, d.p99, d.max].map(|x| Some(x * 1e3)))
            .unwrap_or([None; 6]);
        row.extend(cells.map(opt));
    }
}

fn cache_cells(row: &mut Vec<String>, c: Option<&CachedTokens>) {
    row.push(c.map(|c| c.sum.to_string()).unwrap_or_default());
    row.push(opt(c.map(|c| c.mean)));
    row.push(opt(c.and_then(|c| c.input_fraction)));
}

fn step_row(s: &StepSummary) -> Vec<String> {
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
    latency_cells(
        &mut row,
        [
            &s.ttft,
            &s.ttft_from_scheduled,
            &s.itl,
            &s.tpot,
            &s.e2e,
            &s.e2e_from_scheduled,
            &s.send_lag,
        ],
    );
    row.push(String::new());
    cache_cells(&mut row, s.cached_tokens.as_ref());
    row
}

/// A turn's row: the step's identity, the turn's own counts and latencies.
fn turn_row(s: &StepSummary, t: &TurnSummary) -> Vec<String> {
    let mut row = vec![
        s.index.to_string(),
        s.label.clone(),
        s.batch_size.map(|b| b.to_string()).unwrap_or_default(),
        (t.counted + t.errors).to_string(),
        t.counted.to_string(),
        t.errors.to_string(),
    ];
    row.extend(std::iter::repeat_n(String::new(), 6));
    latency_cells(
        &mut row,
        [&t.ttft, &None, &t.itl, &t.tpot, &t.e2e, &None, &None],
    );
    row.push(t.turn.to_string());
    cache_cells(&mut row, t.cached_tokens.as_ref());
    row
}

/// One row per step with the headline numbers (milliseconds for latencies),
/// followed, for multi-turn runs, by one row per turn index (`turn` set).
fn write_summary_csv(path: &Path, steps: &[StepSummary]) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_path(path).with_context(|| path.display().to_string())?;
    w.write_record(header())?;
    for s in steps {
        w.write_record(step_row(s))?;
        for t in &s.turns {
            w.write_record(turn_row(s, t))?;
        }
    }
    w.flush()?;
    Ok(())
}
