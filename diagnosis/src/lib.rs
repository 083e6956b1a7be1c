//! Names the bottleneck of an LLM serving run, with its evidence and remedies.
//!
//! A pure library: signals in, a [`Diagnosis`] out. No HTTP, no OpenTelemetry,
//! no clock, no I/O; every type is serde-serializable, so a diagnosis can go
//! into `result.json`, PostgreSQL or `--json` output as it is.
//!
//! # Using it
//!
//! 1. Fill a [`Signals`] for one window (and one replica). Every field is
//!    optional; a rule whose signals are missing is skipped and the diagnosis
//!    says so in its evidence ("gpu: no GPU signal").
//!    - **loadgen** (one step): `window` = the step's measurement window in run
//!      seconds (after warm-up; `load_end_s` where the step's load stopped if
//!      samples go on after it); `server` from the step's `/metrics` deltas and
//!      gauge samples (summaries from its histograms, or loadgen's own exact
//!      percentiles for TTFT/ITL/E2E); `host` from the device sampler
//!      (`process_cpu_utilization_ratio`, `system_cpu_utilization_ratio{cpu_mode}`,
//!      `process_memory_usage_bytes`); `load` = the step's [`LoadShape`],
//!      achieved rate, loadgen's CPU samples (fraction of *its* cores),
//!      `client_cores`, `client_on_server_host` and send lag; `sweep` = one
//!      [`SweepPoint`] per batch level for a batch sweep.
//!    - **`candlelight diagnose --prometheus URL`**: one [`Signals`] per
//!      `instance` from range queries over the window (gauges as [`Series`],
//!      `histogram_quantile` p50/p99 as [`Summary`]), `load: None`; then
//!      [`Diagnosis::merge`] the per-instance diagnoses.
//! 2. Call [`diagnose`].
//! 3. Fill trace ids: each finding's `wants_traces` says which requests show
//!    it best ([`TraceCriterion`]); [`Diagnosis::attach_traces`] calls back
//!    with each criterion and keeps at most [`MAX_TRACE_IDS`] ids.
//! 4. Print [`render_text`] (the report's "Diagnosis" block) and/or serialize.
//!
//! ```
//! use diagnosis::{diagnose, render_text, Bottleneck, LoadShape, LoadSignals, Series, Signals, Window};
//!
//! let flat = |v: f64| Some(Series::sampled(0.0, 2.0, 31, |_| v));
//! let mut s = Signals { window: Window::new(0.0, 60.0), ..Default::default() };
//! // --max-batch-size 1 with 8 closed-loop clients: one runs, seven wait.
//! s.server.batch_limit = Some(1.0);
//! s.server.decode_batch_mean = Some(1.0);
//! s.server.requests_running = flat(1.0);
//! s.server.requests_waiting = flat(7.0);
//! s.host.process_cpu = flat(0.95);
//! s.load = Some(LoadSignals::new(LoadShape::Closed { concurrency: 8 }));
//!
//! let mut d = diagnose(&s);
//! d.attach_traces(|_criterion, _instance| vec!["4bf92f3577b34da6a3ce929d0e0e4736".into()]);
//! let f = d.finding(Bottleneck::UnderBatching).expect("under-batched");
//! assert!(f.remedies[0].contains("--max-batch-size"));
//! assert_eq!(f.trace_ids.len(), 1);
//! println!("{}", render_text(&d));
//! ```
//!
//! # What each rule reads
//!
//! | rule | needs | also uses |
//! |---|---|---|
//! | `cpu` | `host.process_cpu`, and `server.decode_batch_mean` (or `requests_running`) + `requests_waiting`, or a `sweep` | `host.cores`/`server_threads`, `gpu.utilization` |
//! | `gpu` | `gpu.utilization`, and batch mean + `batch_limit` + waiting, or a `sweep` | |
//! | `memory_growth` | `host.process_rss` (at least 5 samples) | `window.load_end_s` + samples after it, `server.requests_finished`, `host.memory_limit` |
//! | `io_wait` | `host.iowait`, `host.process_cpu` | `requests_running`/`requests_waiting`, `gpu.utilization`, `server.e2e` |
//! | `queue_saturation` | any of: `requests_waiting` (at least 5 samples), `load` open-loop rate + `achieved_rate`, `rejected_fraction`, `queue_time` + `e2e` | |
//! | `under_batching` | `batch_limit`, batch mean, `requests_waiting` | `load.shape` (closed-loop N), `host.process_cpu`, `gpu.utilization` |
//! | `kv_cache` | `kv_cache_utilization`, `requests_waiting`, `batch_limit`, batch mean | |
//! | `prefill_stall` | `server.itl`, `prefill_step`, `decode_step` | |
//! | `client` | `load` with `client_cpu` and/or `send_lag` | |
//! | `interference` | `host.host_cpu_busy` + `process_cpu`, and/or `host.steal` | `load.client_cpu`/`client_cores`/`client_on_server_host`, `requests_running` |
//!
//! From Prometheus (one replica, `I` its `instance`; take one job, see
//! `docs/stack.md`): gauges as range queries, e.g.
//! `candlelight_requests_waiting{instance="I"}`,
//! `system_cpu_utilization_ratio{instance="I", cpu_mode="busy"}` (and
//! `"iowait"`, `"steal"`), `max(hw_gpu_utilization_ratio{instance="I"})`;
//! the decode batch mean as
//! `increase(candlelight_batch_size_sum{candlelight_step_kind="decode"}[W]) / increase(..._count[W])`;
//! summaries as `histogram_quantile(0.5 | 0.99, sum by (le) (rate(<histogram>_bucket[W])))`
//! over the window `W`. The recording rules in
//! `prometheus/rules/candlelight-alerts.yml` compute the same signals per instance.
//!
//! The window must be set: series points outside `[window.start_s,
//! window.load_end()]` are not read, so a zero-length window reads nothing.
//!
//! # Rules and thresholds
//!
//! One rule per [`Bottleneck`] (module `rules`); every threshold is a constant
//! in [`thresholds`] with its reason and source, listed with the rules in
//! `docs/diagnosis.md`. The Prometheus alerts in `prometheus/rules/` use the
//! same numbers, and a test keeps them equal.

pub mod finding;
pub mod render;
mod rules;
pub mod signals;
pub mod stats;
pub mod sweep;
pub mod thresholds;

pub use finding::{
    Bottleneck, Comparison, Diagnosis, Evidence, Finding, Severity, Status, TraceCriterion, Unit,
    WindowRef, MAX_TRACE_IDS,
};
pub use render::{render_sweep_text, render_text};
pub use signals::{
    GpuSignals, HostSignals, LoadShape, LoadSignals, Series, ServerSignals, SignalError, Signals,
    Summary, SweepPoint, Window,
};
pub use sweep::{judge_sweep, SweepLevel, SweepLimit, SweepVerdict};

/// Diagnoses one window of one replica: runs every rule, and judges the batch
/// sweep when the signals hold one.
pub fn diagnose(signals: &Signals) -> Diagnosis {
    let sweep = judge_sweep(&signals.sweep, signals.host.cpu_allowance());
    let cx = rules::Ctx::new(signals, sweep.as_ref());
    let (findings, mut evidence) = rules::run_all(&cx);
    // Failures name no bottleneck of their own, but a diagnosis must not hide them.
    if let Some(errors) = signals.server.error_fraction {
        let mut e = Evidence::check(
            "error_fraction",
            errors,
            Unit::Ratio,
            Comparison::AtLeast,
            ("SLO_ERROR_RATIO", thresholds::SLO_ERROR_RATIO),
            cx.window.clone(),
        );
        if e.is_met() {
            e = e.with_note("requests fail: read the server's logs");
        }
        e.instance.clone_from(&signals.instance);
        evidence.push(e);
    }
    Diagnosis {
        window: Some(cx.window.clone()),
        ..Diagnosis::from_parts(findings, evidence, sweep)
    }
}

/// Diagnoses several replicas' signals and merges the verdicts.
pub fn diagnose_all<'a>(signals: impl IntoIterator<Item = &'a Signals>) -> Diagnosis {
    Diagnosis::merge(signals.into_iter().map(diagnose))
}
