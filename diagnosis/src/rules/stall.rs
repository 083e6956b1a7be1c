//! `prefill_stall` and `io_wait`: time passes without tokens.
//!
//! A prefill stall is a long prefill step that decoding streams wait behind:
//! their inter-token gaps grow a long tail. An I/O wait is work pending while
//! compute idles and the host waits on disk or network.

use super::{check, pct, remedies, Ctx, Outcome};
use crate::finding::{Bottleneck, Evidence, Severity, Unit};

const PREFILL_REMEDIES: &[&str] = &[
    "Lower --max-prefill-tokens (default 512) so long prompts are prefilled in chunks, with decode steps for running streams in between.",
    "Lower --max-batch-tokens, the tokens one step may process, for the same reason.",
    "Send very long prompts to replicas of their own, so chat streams do not wait behind them.",
];

const IO_REMEDIES: &[&str] = &[
    "Find the waiting device: iostat -x 5 (disk), vmstat 5 (swap in/out), and the network for remote storage.",
    "Keep the model file on local disk and leave enough free memory for it to stay in the page cache (mmap pages evicted under memory pressure are read again).",
    "Read the server's and the system's logs for I/O errors and timeouts (the guide's step 4).",
];

pub(super) fn prefill_stall(cx: &Ctx) -> Outcome {
    let srv = &cx.s.server;
    let (Some(itl), Some(prefill), Some(decode)) = (srv.itl, srv.prefill_step, srv.decode_step)
    else {
        let note = "prefill_stall: needs inter-token latency and prefill/decode step durations";
        return Outcome::Clear(vec![cx.missing(
            "inter_token_p99_over_p50",
            Unit::Factor,
            note,
        )]);
    };
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
    let ev = vec![
        check!(
            cx,
            "inter_token_p99_over_p50",
            ratio(itl.p99, itl.p50),
            Factor,
            AtLeast,
            PREFILL_STALL_ITL_RATIO
        ),
        check!(
            cx,
            "inter_token_p99",
            itl.p99,
            Seconds,
            AtLeast,
            PREFILL_STALL_MIN_GAP
        ),
        check!(
            cx,
            "prefill_step_p99_over_decode_step_p50",
            ratio(prefill.p99, decode.p50),
            Factor,
            AtLeast,
            PREFILL_STEP_RATIO
        ),
    ];
    if !ev.iter().all(Evidence::is_met) {
        return Outcome::Clear(ev);
    }
    let summary = format!(
        "Prefill stalls decoding: streams pause {:.2} s (p99) between tokens, {:.0}x their usual gap, behind prefill steps of {:.2} s.",
        itl.p99,
        ratio(itl.p99, itl.p50),
        prefill.p99
    );
    Outcome::Fired(cx.finding(
        Bottleneck::PrefillStall,
        Severity::Warning,
        summary,
        ev,
        remedies(PREFILL_REMEDIES),
    ))
}

/// Whether requests were in flight, with its evidence (true when unknown).
fn in_flight(cx: &Ctx) -> (Option<Evidence>, bool) {
    match (cx.running_mean(), cx.waiting_mean()) {
        (None, None) => (None, true),
        (r, w) => {
            let n = r.unwrap_or(0.0) + w.unwrap_or(0.0);
            (
                Some(cx.info("requests_in_flight_mean", n, Unit::Requests)),
                n > 0.0,
            )
        }
    }
}

pub(super) fn io_wait(cx: &Ctx) -> Outcome {
    let Some(iowait) = cx.mean(&cx.s.host.iowait) else {
        let note = "io_wait: no iowait signal";
        return Outcome::Clear(vec![cx.missing("iowait_mean", Unit::Ratio, note)]);
    };
    let mut ev = vec![check!(
        cx,
        "iowait_mean",
        iowait,
        Ratio,
        AtLeast,
        IOWAIT_HIGH
    )];
    match cx.mean(&cx.s.host.process_cpu) {
        Some(c) => ev.push(check!(
            cx,
            "process_cpu_of_allowance_mean",
            c / cx.allowance,
            Ratio,
            Below,
            COMPUTE_LIGHT
        )),
        None => ev.push(cx.missing(
            "process_cpu_of_allowance_mean",
            Unit::Ratio,
            "no process CPU signal",
        )),
    }
    if let Some(g) = cx.mean(&cx.s.gpu.utilization) {
        ev.push(check!(
            cx,
            "gpu_utilization_mean",
            g,
            Ratio,
            Below,
            COMPUTE_LIGHT
        ));
    }
    let (flight, busy) = in_flight(cx);
    let held = ev.iter().all(Evidence::is_met) && busy;
    ev.extend(flight);
    if let Some(e2e) = cx.s.server.e2e {
        ev.push(cx.info("e2e_p99", e2e.p99, Unit::Seconds));
    }
    if !held {
        return Outcome::Clear(ev);
    }
    let summary = format!(
        "I/O wait: the host spends {} of its CPU time waiting on I/O while the server's compute idles with requests in flight.",
        pct(iowait)
    );
    Outcome::Fired(cx.finding(
        Bottleneck::IoWait,
        Severity::Warning,
        summary,
        ev,
        remedies(IO_REMEDIES),
    ))
}

#[cfg(test)]
#[path = "stall_tests.rs"]
mod tests;
