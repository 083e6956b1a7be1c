//! Signals of a healthy light-load run on a CPU-only server, for rule tests to
//! push one signal past (or just short of) a threshold.

use crate::finding::{Bottleneck, Diagnosis};
use crate::signals::*;

/// Seconds of the test window, sampled every [`STEP`] seconds.
pub const SECONDS: f64 = 60.0;
pub const STEP: f64 = 2.0;

/// A series holding `v` over the window.
pub fn flat(v: f64) -> Option<Series> {
    ramp(v, v)
}

/// A series going linearly from `from` to `to` over the window.
pub fn ramp(from: f64, to: f64) -> Option<Series> {
    let n = (SECONDS / STEP) as usize + 1;
    Some(Series::sampled(0.0, STEP, n, |t| {
        from + (to - from) * t / SECONDS
    }))
}

/// A series alternating `a`, `b`, `a`, ... over the window.
pub fn alternating(a: f64, b: f64) -> Option<Series> {
    let n = (SECONDS / STEP) as usize + 1;
    Some(Series::sampled(0.0, STEP, n, |t| {
        if ((t / STEP) as usize).is_multiple_of(2) {
            a
        } else {
            b
        }
    }))
}

fn summary(p50: f64, p99: f64) -> Option<Summary> {
    Some(Summary::new(p50, p99))
}

/// Two closed-loop clients against a 2-core CPU server with `--max-batch-size 16`:
/// the CPU is busy (decode is the compute), nothing queues, nothing grows.
pub fn baseline() -> Signals {
    const MIB: f64 = 1024.0 * 1024.0;
    Signals {
        window: Window::new(0.0, SECONDS),
        instance: None,
        server: ServerSignals {
            requests_waiting: flat(0.0),
            requests_running: flat(2.0),
            batch_limit: Some(16.0),
            decode_batch_mean: Some(2.0),
            kv_cache_utilization: flat(0.1),
            queue_time: summary(0.001, 0.005),
            ttft: summary(0.15, 0.3),
            itl: summary(0.012, 0.05),
            e2e: summary(1.0, 1.5),
            prefill_step: summary(0.1, 0.2),
            decode_step: summary(0.012, 0.02),
            prompt_tokens_per_s: Some(256.0),
            generated_tokens_per_s: Some(128.0),
            requests_finished: Some(120.0),
            error_fraction: Some(0.0),
            rejected_fraction: Some(0.0),
        },
        host: HostSignals {
            cores: Some(2.0),
            server_threads: None,
            process_cpu: flat(0.9),
            host_cpu_busy: flat(0.96),
            iowait: flat(0.0),
            steal: flat(0.0),
            process_rss: alternating(300.0 * MIB, 301.0 * MIB),
            kv_cache_resident: None,
            memory_limit: Some(8192.0 * MIB),
        },
        gpu: GpuSignals::default(),
        load: Some(LoadSignals {
            shape: LoadShape::Closed { concurrency: 2 },
            achieved_rate: Some(2.0),
            client_cpu: flat(0.05),
            client_cores: Some(2.0),
            client_on_server_host: true,
            send_lag: summary(0.0002, 0.001),
        }),
        sweep: Vec::new(),
    }
}

/// Diagnoses `s`, asserting `b` fired, and returns the diagnosis.
pub fn expect_fires(s: &Signals, b: Bottleneck) -> Diagnosis {
    let d = crate::diagnose(s);
    assert!(
        d.finding(b).is_some(),
        "{b} should fire:\n{}",
        crate::render_text(&d)
    );
    d
}

/// Diagnoses `s`, asserting `b` did not fire.
pub fn expect_quiet(s: &Signals, b: Bottleneck) -> Diagnosis {
    let d = crate::diagnose(s);
    assert!(
        d.finding(b).is_none(),
        "{b} should not fire:\n{}",
        crate::render_text(&d)
    );
    d
}
