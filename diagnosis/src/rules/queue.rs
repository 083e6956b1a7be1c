//! `queue_saturation`, `under_batching` and `kv_cache`: requests wait, and why.
//!
//! A queue that grows (or an open loop that falls behind, or "queue full"
//! refusals) means demand exceeds capacity. A queue beside a batch held at a
//! small limit means the limit is what binds; a queue beside a batch *below*
//! its limit, with the KV cache reserved, means KV space is what binds.

use super::{check, pct, remedies, Ctx, Outcome};
use crate::finding::{Bottleneck, Evidence, Severity, Unit};
use crate::signals::LoadShape;
use crate::stats::LinearFit;
use crate::thresholds::*;

const QUEUE_REMEDIES: &[&str] = &[
    "Demand exceeds capacity: add replicas, or lower the offered rate.",
    "If batches run below --max-batch-size, admission is what binds: see under_batching and kv_cache.",
    "Raise --max-batch-size only while CPU or GPU have headroom; otherwise scale out.",
    "Bound the wait: --max-queue N refuses requests beyond N waiting (HTTP 429) instead of letting latency grow.",
];

const KV_REMEDIES: &[&str] = &[
    "Raise --max-total-tokens (the KV positions all running sequences may reserve together) if memory allows; on a GPU, --kv-memory-fraction.",
    "Reserve less per request: each sequence reserves prompt + max new tokens at admission, so smaller max_tokens in requests or shorter prompts admit more.",
    "Add replicas to spread the sequences over more KV memory.",
];

/// The waiting queue's growth over the window, with a 95% interval on its slope.
fn growth(cx: &Ctx) -> (Vec<Evidence>, bool) {
    let w = &cx.s.window;
    let Some(series) = &cx.s.server.requests_waiting else {
        let note = "queue_saturation: no waiting-requests signal";
        return (
            vec![cx.missing("requests_waiting_growth", Unit::Requests, note)],
            false,
        );
    };
    let Some(fit) = LinearFit::fit(series.between(w.start_s, w.load_end())) else {
        let note = "too few samples for a slope";
        return (
            vec![cx.missing("requests_waiting_growth", Unit::Requests, note)],
            false,
        );
    };
    let grown = fit.slope * (w.load_end() - w.start_s);
    let lower = fit.slope_lower_bound();
    let e = check!(
        cx,
        "requests_waiting_growth",
        grown,
        Requests,
        AtLeast,
        QUEUE_GROWTH_MIN
    );
    let held = e.is_met() && lower > 0.0;
    let low = cx
        .info(
            "requests_waiting_slope_low95",
            lower,
            Unit::RequestsPerSecond,
        )
        .with_note("lower end of the slope's 95% interval; must be above 0");
    (vec![e, low], held)
}

pub(super) fn queue_saturation(cx: &Ctx) -> Outcome {
    let (mut ev, grew) = growth(cx);
    let mut why = Vec::new();
    let mut severity = Severity::Warning;
    if grew {
        why.push("the waiting queue keeps growing".to_string());
        severity = Severity::Critical;
    }
    if let Some((e, achieved, rate)) = open_loop_shortfall(cx) {
        if e.is_met() {
            why.push(format!(
                "only {achieved:.2} of {rate:.2} requests/s offered complete"
            ));
            severity = Severity::Critical;
        }
        ev.push(e);
    }
    if let Some(r) = cx.s.server.rejected_fraction {
        let e = check!(
            cx,
            "rejected_queue_full_fraction",
            r,
            Ratio,
            AtLeast,
            REJECTED_FRACTION_HIGH
        );
        if e.is_met() {
            why.push(format!(
                "{} of requests are refused with 'queue full'",
                pct(r)
            ));
            severity = Severity::Critical;
        }
        ev.push(e);
    }
    match (cx.s.server.queue_time, cx.s.server.e2e) {
        (Some(q), Some(e2e)) if e2e.p99 > 0.0 => {
            // No request queues longer than it lives, but the two p99s can
            // still cross: the window's queue histogram counts requests as they
            // are admitted and the E2E one as they finish (not the same
            // requests on a saturated run), and both are read by interpolation
            // inside wide buckets. A share above 1 says nothing more: cap it.
            let queued = q.p99.min(e2e.p99);
            let e = check!(
                cx,
                "queue_time_share_p99",
                queued / e2e.p99,
                Ratio,
                AtLeast,
                QUEUE_TIME_SHARE
            );
            if e.is_met() {
                why.push(format!(
                    "requests wait {:.2} s of their {:.2} s p99 latency in the queue",
                    queued, e2e.p99
                ));
            }
            ev.push(e);
        }
        _ => ev.push(cx.missing(
            "queue_time_share_p99",
            Unit::Ratio,
            "no queue time or E2E latency signal",
        )),
    }
    if why.is_empty() {
        return Outcome::Clear(ev);
    }
    let summary = format!("Queue saturated: {}.", why.join("; "));
    Outcome::Fired(cx.finding(
        Bottleneck::QueueSaturation,
        severity,
        summary,
        ev,
        remedies(QUEUE_REMEDIES),
    ))
}

/// Achieved over offered request rate, for an open loop that reports both:
/// the check, the achieved rate and the offered one.
fn open_loop_shortfall(cx: &Ctx) -> Option<(Evidence, f64, f64)> {
    let load = cx.s.load.as_ref()?;
    let LoadShape::Open { rate } = load.shape else {
        return None;
    };
    let achieved = load.achieved_rate?;
    (rate > 0.0).then(|| {
        let e = check!(
            cx,
            "achieved_over_offered_rate",
            achieved / rate,
            Ratio,
            Below,
            OPEN_LOOP_MIN_ACHIEVED
        );
        (e, achieved, rate)
    })
}

/// The batch limit and the mean decode batch.
fn limit_and_batch(cx: &Ctx) -> Option<(f64, f64)> {
    match (cx.s.server.batch_limit, cx.batch_mean()) {
        (Some(l), Some(b)) if l > 0.0 => Some((l, b)),
        _ => None,
    }
}

fn no_batch(cx: &Ctx) -> Evidence {
    let note = "no batch size or batch limit signal";
    cx.missing("decode_batch_fill", Unit::Ratio, note)
}

/// Whether compute has room for larger batches, with its evidence: the CPU
/// (a limit below the CPU plateau, or CPU not saturated) and, where there is
/// one, the GPU (not saturated). The alert CandlelightUnderBatched reads the same.
fn headroom(cx: &Ctx, limit: f64) -> (Vec<Evidence>, bool) {
    let small = check!(cx, "batch_limit", limit, Requests, Below, CPU_BATCH_PLATEAU);
    let mut cpu_room = small.is_met();
    let mut ev = vec![small];
    if !cpu_room {
        if let Some(c) = cx.cpu_of_allowance() {
            let e = check!(
                cx,
                "process_cpu_of_allowance",
                c,
                Ratio,
                Below,
                CPU_SATURATION
            );
            cpu_room = e.is_met();
            ev.push(e);
        }
    }
    let mut gpu_room = true;
    if let Some(gpu) = cx.steady(&cx.s.gpu.utilization) {
        let e = check!(cx, "gpu_utilization", gpu, Ratio, Below, GPU_SATURATION);
        gpu_room = e.is_met();
        ev.push(e);
    }
    (ev, cpu_room && gpu_room)
}

pub(super) fn under_batching(cx: &Ctx) -> Outcome {
    let Some((limit, batch)) = limit_and_batch(cx) else {
        return Outcome::Clear(vec![no_batch(cx)]);
    };
    let Some(waiting) = cx.waiting_mean() else {
        let note = "under_batching: no waiting-requests signal";
        return Outcome::Clear(vec![cx.missing(
            "requests_waiting_mean",
            Unit::Requests,
            note,
        )]);
    };
    let demand = match cx.s.load.as_ref().map(|l| l.shape) {
        Some(LoadShape::Closed { concurrency }) => concurrency as f64,
        _ => cx.running_mean().unwrap_or(batch) + waiting,
    };
    let mut ev = vec![
        check!(
            cx,
            "decode_batch_fill",
            batch / limit,
            Ratio,
            AtLeast,
            BATCH_FULL_FRACTION
        ),
        check!(
            cx,
            "requests_waiting_mean",
            waiting,
            Requests,
            AtLeast,
            QUEUE_PRESENT_MIN
        ),
        check!(
            cx,
            "offered_over_batch_limit",
            demand / limit,
            Factor,
            AtLeast,
            UNDER_BATCHING_DEMAND_RATIO
        ),
    ];
    let (room, has_room) = headroom(cx, limit);
    let held = ev.iter().all(Evidence::is_met) && has_room;
    ev.extend(room);
    if !held {
        return Outcome::Clear(ev);
    }
    let summary = format!(
        "Under-batched: --max-batch-size {limit:.0} caps decode batches at {batch:.1} while the load offers {demand:.0} concurrent requests ({waiting:.1} waiting)."
    );
    let fixes = vec![
        format!(
            "Raise --max-batch-size toward the offered concurrency ({demand:.0}); on the CPU backend gains flatten near {CPU_BATCH_PLATEAU:.0} sequences."
        ),
        "Check that --max-total-tokens leaves KV room for that many sequences (each reserves prompt + max new tokens).".to_string(),
    ];
    Outcome::Fired(cx.finding(
        Bottleneck::UnderBatching,
        Severity::Warning,
        summary,
        ev,
        fixes,
    ))
}

pub(super) fn kv_cache(cx: &Ctx) -> Outcome {
    let Some(kv) = cx.mean(&cx.s.server.kv_cache_utilization) else {
        let note = "kv_cache: no KV utilization signal";
        return Outcome::Clear(vec![cx.missing(
            "kv_cache_utilization_mean",
            Unit::Ratio,
            note,
        )]);
    };
    let mut ev = vec![check!(
        cx,
        "kv_cache_utilization_mean",
        kv,
        Ratio,
        AtLeast,
        KV_BLOCKING_USAGE
    )];
    match cx.waiting_mean() {
        Some(w) => ev.push(check!(
            cx,
            "requests_waiting_mean",
            w,
            Requests,
            AtLeast,
            QUEUE_PRESENT_MIN
        )),
        None => ev.push(cx.missing(
            "requests_waiting_mean",
            Unit::Requests,
            "no waiting-requests signal",
        )),
    }
    let batch = limit_and_batch(cx);
    match batch {
        Some((l, b)) => ev.push(check!(
            cx,
            "decode_batch_fill",
            b / l,
            Ratio,
            Below,
            BATCH_FULL_FRACTION
        )),
        None => ev.push(no_batch(cx)),
    }
    if !ev.iter().all(Evidence::is_met) {
        return Outcome::Clear(ev);
    }
    let (limit, b) = batch.unwrap_or_default();
    let summary = format!(
        "KV-bound: {} of the KV cache is reserved and requests wait while batches run at {b:.1} of {limit:.0}: admission is blocked by KV space.",
        pct(kv)
    );
    Outcome::Fired(cx.finding(
        Bottleneck::KvCache,
        Severity::Warning,
        summary,
        ev,
        remedies(KV_REMEDIES),
    ))
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
