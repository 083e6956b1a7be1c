use crate::finding::Bottleneck::{IoWait, PrefillStall};
use crate::finding::TraceCriterion;
use crate::rules::testkit::*;
use crate::signals::Summary;

fn stalled(itl_p50: f64, itl_p99: f64, prefill_p99: f64) -> crate::Signals {
    let mut s = baseline();
    s.server.itl = Some(Summary::new(itl_p50, itl_p99));
    s.server.prefill_step = Some(Summary::new(prefill_p99 / 2.0, prefill_p99));
    s.server.decode_step = Some(Summary::new(0.015, 0.03));
    s
}

#[test]
fn prefill_stall_fires_behind_long_prefill_steps() {
    let d = expect_fires(&stalled(0.015, 2.0, 3.0), PrefillStall);
    let f = d.finding(PrefillStall).expect("finding");
    assert!(f.remedies[0].contains("--max-prefill-tokens"));
    assert_eq!(f.wants_traces, Some(TraceCriterion::LargestInterTokenGap));
}

#[test]
fn prefill_stall_near_miss_when_gaps_are_short() {
    // A 128-token prompt on a CPU: 15x the decode gap, but a quarter second.
    expect_quiet(&stalled(0.015, 0.23, 0.25), PrefillStall);
}

#[test]
fn prefill_stall_near_miss_when_the_tail_is_modest() {
    expect_quiet(&stalled(0.2, 0.9, 3.0), PrefillStall);
}

#[test]
fn prefill_stall_near_miss_when_prefill_steps_are_short() {
    // Long gaps, but not from prefill: some other pause.
    expect_quiet(&stalled(0.015, 2.0, 0.06), PrefillStall);
}

#[test]
fn prefill_stall_says_what_it_lacks() {
    let mut s = baseline();
    s.server.prefill_step = None;
    let d = expect_quiet(&s, PrefillStall);
    assert!(d
        .evidence
        .iter()
        .any(|e| e.signal == "inter_token_p99_over_p50" && e.value.is_none()));
}

fn waiting_on_io(iowait: f64, cpu: f64) -> crate::Signals {
    let mut s = baseline();
    s.host.iowait = flat(iowait);
    s.host.process_cpu = flat(cpu);
    s.host.host_cpu_busy = flat(cpu + 0.05);
    s
}

#[test]
fn io_wait_fires_with_idle_compute_and_requests_in_flight() {
    let d = expect_fires(&waiting_on_io(0.3, 0.05), IoWait);
    assert!(d.finding(IoWait).expect("io").summary.contains("30%"));
}

#[test]
fn io_wait_near_miss_below_the_iowait_share() {
    expect_quiet(&waiting_on_io(0.08, 0.05), IoWait);
}

#[test]
fn io_wait_near_miss_while_the_cpu_computes() {
    expect_quiet(&waiting_on_io(0.3, 0.5), IoWait);
}

#[test]
fn io_wait_near_miss_while_the_gpu_computes() {
    let mut s = waiting_on_io(0.3, 0.05);
    s.gpu.utilization = flat(0.7);
    expect_quiet(&s, IoWait);
}

#[test]
fn io_wait_near_miss_with_nothing_in_flight() {
    let mut s = waiting_on_io(0.3, 0.05);
    s.server.requests_running = flat(0.0);
    expect_quiet(&s, IoWait);
}
