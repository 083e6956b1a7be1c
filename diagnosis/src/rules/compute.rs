//! `cpu`, `gpu` and `interference`: is compute the limit, and whose compute.
//!
//! On a CPU-only server decode *is* the compute, so a busy CPU alone is no
//! finding. `cpu` fires only when the CPU is saturated **and** more batching
//! no longer helps **and** there is demand left over; `interference` fires when
//! CPU time goes to someone else (other processes, or the hypervisor).

use super::{check, pct, remedies, Ctx, Outcome};
use crate::finding::{Bottleneck, Evidence, Severity, Unit};
use crate::stats;
use crate::sweep::SweepLimit;
use crate::thresholds::*;

const CPU_REMEDIES: &[&str] = &[
    "Add CPU: more cores or more replicas. Larger batches no longer raise throughput on these cores.",
    "Give the server every core it can use (--threads N, default all cores) and keep other heavy work off its host.",
    "Cut the work per token: a smaller model or a lighter quantization (Q4_0/Q4_1 rather than Q8_0).",
    "Keep --max-batch-size near the knee (about 8 on the CPU backend): beyond it a batch adds latency, not throughput.",
];

const GPU_REMEDIES: &[&str] = &[
    "The GPU's compute is the limit: add GPUs or replicas, or use a faster GPU.",
    "Quantize the model: fewer bytes and cheaper kernels per token.",
    "Use the most efficient attention and matmul path the backend offers (the guide: FlashAttention, SDPA).",
    "Keep --max-batch-size at the knee of a batch sweep: beyond it a batch adds latency, not throughput.",
];

const INTERFERENCE_REMEDIES: &[&str] = &[
    "Move other heavy processes off the server's host, or pin the server to cores of its own (taskset, cpuset) and set --threads to their count.",
    "Run the load generator on another machine, or pin it to cores the server does not use.",
    "On a VM with CPU steal: use dedicated or larger instances. Benchmark on a quiet machine (the guide: large swings mean interference).",
];

/// Whether a batch sweep says batching stopped helping for `why`, with its evidence.
fn sweep_flat(cx: &Ctx, why: SweepLimit) -> Option<Evidence> {
    let v = cx.sweep?;
    let knee = v.knee?;
    (v.limit == Some(why)).then(|| {
        cx.info("sweep_knee_batch_size", knee, Unit::Count)
            .with_note(format!(
                "throughput stops rising beyond this batch size ({why})"
            ))
    })
}

/// Demand left over: requests waiting on average.
fn waiting_check(cx: &Ctx) -> Evidence {
    match cx.waiting_mean() {
        Some(w) => check!(
            cx,
            "requests_waiting_mean",
            w,
            Requests,
            AtLeast,
            QUEUE_PRESENT_MIN
        ),
        None => cx.missing(
            "requests_waiting_mean",
            Unit::Requests,
            "no waiting-requests signal",
        ),
    }
}

pub(super) fn cpu(cx: &Ctx) -> Outcome {
    let Some(level) = cx.cpu_of_allowance() else {
        let note = "cpu: no process CPU signal (or too few samples)";
        return Outcome::Clear(vec![cx.missing(
            "process_cpu_of_allowance",
            Unit::Ratio,
            note,
        )]);
    };
    let mut ev = vec![check!(
        cx,
        "process_cpu_of_allowance",
        level,
        Ratio,
        AtLeast,
        CPU_SATURATION
    )];
    let saturated = ev[0].is_met();
    let why;
    let limited = if let Some(e) = sweep_flat(cx, SweepLimit::CpuSaturated) {
        why = format!(
            "a batch sweep stops gaining beyond {:.0}",
            e.value.unwrap_or(0.0)
        );
        ev.push(e);
        true
    } else {
        let no_gain = match (cx.steady(&cx.s.gpu.utilization), cx.batch_mean()) {
            (Some(gpu), _) => {
                why = format!("the GPU waits for it ({} busy)", pct(gpu));
                check!(cx, "gpu_utilization", gpu, Ratio, Below, GPU_SATURATION)
            }
            (None, Some(b)) => {
                why = format!(
                    "decode batches of {b:.1} are past the {CPU_BATCH_PLATEAU:.0}-sequence point where larger batches stop paying"
                );
                check!(
                    cx,
                    "decode_batch_mean",
                    b,
                    Requests,
                    AtLeast,
                    CPU_BATCH_PLATEAU
                )
            }
            (None, None) => {
                why = String::new();
                cx.missing("decode_batch_mean", Unit::Requests, "no batch-size signal")
            }
        };
        let waiting = waiting_check(cx);
        let held = no_gain.is_met() && waiting.is_met();
        ev.extend([no_gain, waiting]);
        held
    };
    if !(saturated && limited) {
        return Outcome::Clear(ev);
    }
    let summary = format!(
        "CPU-bound: the server keeps {} of the cores it may use busy and {why}.",
        pct(level)
    );
    Outcome::Fired(cx.finding(
        Bottleneck::Cpu,
        Severity::Warning,
        summary,
        ev,
        remedies(CPU_REMEDIES),
    ))
}

pub(super) fn gpu(cx: &Ctx) -> Outcome {
    let Some(level) = cx.steady(&cx.s.gpu.utilization) else {
        return Outcome::Clear(vec![cx.missing(
            "gpu_utilization",
            Unit::Ratio,
            "gpu: no GPU signal",
        )]);
    };
    let mut ev = vec![check!(
        cx,
        "gpu_utilization",
        level,
        Ratio,
        AtLeast,
        GPU_SATURATION
    )];
    let saturated = ev[0].is_met();
    let limited = if let Some(e) = sweep_flat(cx, SweepLimit::GpuSaturated) {
        ev.push(e);
        true
    } else {
        let fill = match (cx.batch_mean(), cx.s.server.batch_limit) {
            (Some(b), Some(l)) if l > 0.0 => {
                check!(
                    cx,
                    "decode_batch_fill",
                    b / l,
                    Ratio,
                    AtLeast,
                    BATCH_FULL_FRACTION
                )
            }
            _ => cx.missing(
                "decode_batch_fill",
                Unit::Ratio,
                "no batch size or batch limit signal",
            ),
        };
        let waiting = waiting_check(cx);
        let held = fill.is_met() && waiting.is_met();
        ev.extend([fill, waiting]);
        held
    };
    if !(saturated && limited) {
        return Outcome::Clear(ev);
    }
    let summary = format!(
        "GPU-bound: the GPU is {} busy and larger batches no longer raise throughput.",
        pct(level)
    );
    Outcome::Fired(cx.finding(
        Bottleneck::Gpu,
        Severity::Warning,
        summary,
        ev,
        remedies(GPU_REMEDIES),
    ))
}

/// Host CPU busy beyond the server's and (on the same host) loadgen's, steady level.
fn other_cpu(cx: &Ctx) -> Option<(f64, Option<&'static str>)> {
    let (s, w) = (cx.s, &cx.s.window);
    let busy = s.host.host_cpu_busy.as_ref()?;
    let process = s.host.process_cpu.as_ref()?;
    let mut note = None;
    let client = match &s.load {
        Some(l) if l.client_on_server_host => match (&l.client_cpu, s.host.cores) {
            (Some(c), Some(cores)) if cores > 0.0 => {
                Some((c, l.client_cores.unwrap_or(cores) / cores))
            }
            _ => {
                note = Some("loadgen's CPU unknown: counted as other work");
                None
            }
        },
        _ => None,
    };
    let other: Vec<f64> = busy
        .between(w.start_s, w.load_end())
        .iter()
        .map(|&(t, b)| {
            let own = process.at(t).unwrap_or(0.0);
            let loadgen = client.map_or(0.0, |(c, share)| c.at(t).unwrap_or(0.0) * share);
            (b - own - loadgen).max(0.0)
        })
        .collect();
    Some((stats::steady_level(&other)?, note))
}

pub(super) fn interference(cx: &Ctx) -> Outcome {
    let mut ev = Vec::new();
    let mut hit = Vec::new();
    match other_cpu(cx) {
        Some((other, note)) => {
            let mut e = check!(
                cx,
                "host_cpu_other",
                other,
                Ratio,
                AtLeast,
                INTERFERENCE_OTHER_CPU
            );
            if let Some(n) = note {
                e = e.with_note(n);
            }
            if e.is_met() {
                hit.push(format!(
                    "other work keeps {} of the host's CPU busy",
                    pct(other)
                ));
            }
            ev.push(e);
        }
        None => ev.push(cx.missing(
            "host_cpu_other",
            Unit::Ratio,
            "interference: no host busy CPU or process CPU signal",
        )),
    }
    match cx.steady(&cx.s.host.steal) {
        Some(steal) => {
            let e = check!(cx, "cpu_steal", steal, Ratio, AtLeast, CPU_STEAL_HIGH);
            if e.is_met() {
                hit.push(format!("the hypervisor steals {} of the CPU", pct(steal)));
            }
            ev.push(e);
        }
        None => ev.push(cx.missing("cpu_steal", Unit::Ratio, "no CPU steal signal")),
    }
    // Someone else's CPU use only matters while the server has work.
    if let Some(r) = cx.running_mean() {
        let active = r > 0.0;
        ev.push(cx.info("requests_running_mean", r, Unit::Requests));
        if !active {
            hit.clear();
        }
    }
    if hit.is_empty() {
        return Outcome::Clear(ev);
    }
    let summary = format!("Interference: {}, beside the server.", hit.join(", and "));
    Outcome::Fired(cx.finding(
        Bottleneck::Interference,
        Severity::Warning,
        summary,
        ev,
        remedies(INTERFERENCE_REMEDIES),
    ))
}

#[cfg(test)]
#[path = "compute_tests.rs"]
mod tests;
