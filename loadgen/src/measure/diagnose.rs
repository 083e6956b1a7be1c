//! The run's diagnosis: what was measured, turned into the [`diagnosis`]
//! crate's signals, one step at a time (plus the sweep's curve), with the
//! trace ids of the requests that show each finding best.

use diagnosis::{
    diagnose, judge_sweep, Diagnosis, GpuSignals, HostSignals, LoadShape, LoadSignals, Series,
    ServerSignals, Signals, Summary, SweepPoint, TraceCriterion, Window,
};

use crate::measure::record::RequestRecord;
use crate::measure::stats::{Dist, StepSummary};
use crate::measure::usage::{CpuSample, DeviceSample, ServerGauges};
use crate::plan::step::Shape;

/// What the diagnosis needs to know about where loadgen ran.
pub struct Placement {
    /// loadgen and the server share a host (its CPU counts in the host's busy time).
    pub client_on_server_host: bool,
    /// Cores loadgen may use.
    pub client_cores: usize,
}

/// One diagnosis per step, merged; a batch sweep's steps are also judged as a curve.
pub fn diagnose_run(
    steps: &mut [StepSummary],
    devices: &[DeviceSample],
    cpu: &[CpuSample],
    records: &[RequestRecord],
    cx: &Placement,
) -> Diagnosis {
    let sweep = sweep_points(steps, devices);
    let mut parts = Vec::new();
    for step in steps.iter_mut() {
        let mut signals = step_signals(step, devices, cpu, cx);
        signals.sweep = sweep.clone();
        let mut d = diagnose(&signals);
        let mine: Vec<&RequestRecord> = records.iter().filter(|r| r.step == step.index).collect();
        d.attach_traces(|criterion, _| slowest(&mine, criterion));
        step.diagnosis = Some(d.clone());
        parts.push(d);
    }
    let mut run = Diagnosis::merge(parts);
    if run.sweep.is_none() && sweep.len() > 1 {
        let allowance = steps
            .first()
            .map(|s| step_signals(s, devices, cpu, cx).host.cpu_allowance())
            .unwrap_or(1.0);
        run.sweep = judge_sweep(&sweep, allowance);
    }
    run
}

/// The signals of one step's window.
fn step_signals(
    step: &StepSummary,
    devices: &[DeviceSample],
    cpu: &[CpuSample],
    cx: &Placement,
) -> Signals {
    let window = Window {
        label: Some(step.label.clone()),
        ..Window::new(step.window.start_s, step.window.end_s)
    };
    let gauge = |f: fn(&ServerGauges) -> Option<f64>| series(devices, f);
    let last = |f: fn(&ServerGauges) -> Option<f64>| {
        devices
            .iter()
            .rev()
            .find_map(|d| d.gauges.as_ref().and_then(f))
    };
    Signals {
        window,
        instance: None,
        server: server_signals(step, devices),
        host: HostSignals {
            cores: last(|g| g.host_cores),
            server_threads: last(|g| g.compute_threads),
            process_cpu: gauge(|g| g.process_cpu),
            host_cpu_busy: gauge(|g| g.host_busy),
            iowait: gauge(|g| g.host_iowait),
            steal: gauge(|g| g.host_steal),
            process_rss: gauge(|g| g.process_rss_bytes),
            kv_cache_resident: gauge(|g| g.kv_cache_resident_bytes),
            memory_limit: last(|g| g.memory_limit_bytes),
        },
        gpu: GpuSignals {
            utilization: gauge(|g| g.gpu_utilization),
            ..GpuSignals::default()
        },
        load: Some(load_signals(step, cpu, cx)),
        sweep: Vec::new(),
    }
}

fn server_signals(step: &StepSummary, devices: &[DeviceSample]) -> ServerSignals {
    let gauge = |f: fn(&ServerGauges) -> Option<f64>| series(devices, f);
    let view = step.server.as_ref();
    let sent = step.requests.sent.max(1) as f64;
    let rejected = step.errors.get("http_429").copied().unwrap_or(0) as f64;
    ServerSignals {
        requests_waiting: gauge(|g| g.requests_waiting),
        requests_running: gauge(|g| g.requests_running),
        batch_limit: devices
            .iter()
            .rev()
            .find_map(|d| d.gauges.as_ref().and_then(|g| g.batch_limit)),
        decode_batch_mean: view.and_then(|v| v.decode_batch_size_mean),
        kv_cache_utilization: gauge(|g| g.kv_cache_utilization),
        queue_time: view.and_then(|v| v.queue_time),
        ttft: step.ttft.as_ref().map(summary),
        itl: step.itl.as_ref().map(summary),
        e2e: step.e2e.as_ref().map(summary),
        prefill_step: view.and_then(|v| v.prefill_step),
        decode_step: view.and_then(|v| v.decode_step),
        prompt_tokens_per_s: None,
        generated_tokens_per_s: step.throughput.output_tokens_per_s,
        requests_finished: Some(step.requests.ok as f64),
        error_fraction: Some(step.requests.errors as f64 / sent),
        rejected_fraction: Some(rejected / sent),
    }
}

fn load_signals(step: &StepSummary, cpu: &[CpuSample], cx: &Placement) -> LoadSignals {
    let shape = match step.shape {
        Shape::Closed { concurrency } => LoadShape::Closed {
            concurrency: concurrency as u64,
        },
        Shape::Open { rate, .. } => LoadShape::Open { rate },
    };
    // loadgen's CPU samples are percent of the cores it may use.
    let client_cpu = Series::new(cpu.iter().map(|c| (c.t_s, c.cpu_pct / 100.0)).collect()).ok();
    LoadSignals {
        achieved_rate: Some(step.throughput.requests_per_s),
        client_cpu,
        client_cores: Some(cx.client_cores as f64),
        client_on_server_host: cx.client_on_server_host,
        send_lag: step.send_lag.as_ref().map(summary),
        ..LoadSignals::new(shape)
    }
}

/// A sweep's levels, when the steps are one (closed-loop batch levels).
fn sweep_points(steps: &[StepSummary], devices: &[DeviceSample]) -> Vec<SweepPoint> {
    if steps.len() < 2 || steps.iter().any(|s| s.batch_size.is_none()) {
        return Vec::new();
    }
    steps
        .iter()
        .filter_map(|s| {
            let throughput = s
                .throughput
                .output_tokens_per_s
                .unwrap_or(s.throughput.requests_per_s);
            let in_window = |f: fn(&ServerGauges) -> Option<f64>| {
                mean(
                    devices
                        .iter()
                        .filter(|d| d.t_s >= s.window.start_s && d.t_s <= s.window.end_s)
                        .filter_map(|d| d.gauges.as_ref().and_then(f)),
                )
            };
            Some(SweepPoint {
                latency_p50_s: s.e2e.as_ref().map(|d| d.p50),
                server_batch_mean: s.server.as_ref().and_then(|v| v.decode_batch_size_mean),
                process_cpu: in_window(|g| g.process_cpu),
                gpu_utilization: in_window(|g| g.gpu_utilization),
                ..SweepPoint::new(s.batch_size? as f64, throughput)
            })
        })
        .collect()
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// One gauge over the run, from the samples that have it.
fn series(devices: &[DeviceSample], f: fn(&ServerGauges) -> Option<f64>) -> Option<Series> {
    let points: Vec<(f64, f64)> = devices
        .iter()
        .filter_map(|d| Some((d.t_s, f(d.gauges.as_ref()?)?)))
        .collect();
    (!points.is_empty())
        .then(|| Series::new(points).ok())
        .flatten()
}

fn summary(d: &Dist) -> Summary {
    Summary {
        mean: Some(d.mean),
        max: Some(d.max),
        count: Some(d.count as u64),
        ..Summary::new(d.p50, d.p99)
    }
}

/// Up to three trace ids of the requests that show `criterion` most: the
/// server's ids where it returned them (they find the server's spans).
fn slowest(records: &[&RequestRecord], criterion: TraceCriterion) -> Vec<String> {
    let key = |r: &RequestRecord| -> Option<f64> {
        match criterion {
            // loadgen has no per-request queue time: TTFT holds it.
            TraceCriterion::SlowestQueueTime | TraceCriterion::SlowestTtft => r.ttft(),
            TraceCriterion::SlowestE2e => Some(r.e2e()),
            TraceCriterion::LargestInterTokenGap => r.itl().reduce(f64::max),
            TraceCriterion::LargestSendLag => Some(r.send_lag()),
        }
    };
    let mut ranked: Vec<(f64, &RequestRecord)> = records
        .iter()
        .filter(|r| r.outcome.is_ok())
        .filter_map(|r| Some((key(r)?, *r)))
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranked
        .into_iter()
        .take(diagnosis::MAX_TRACE_IDS)
        .map(|(_, r)| {
            r.server_trace_id
                .clone()
                .unwrap_or_else(|| r.trace_id.clone())
        })
        .collect()
}
