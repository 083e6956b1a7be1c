use crate::finding::Bottleneck::{Cpu, Gpu, Interference};
use crate::rules::testkit::*;
use crate::signals::SweepPoint;

/// 16 clients on a CPU server with --max-batch-size 16: batches of 12 on average, 4 waiting.
fn busy_cpu(process_cpu: f64) -> crate::Signals {
    let mut s = baseline();
    s.server.decode_batch_mean = Some(12.0);
    s.server.requests_running = flat(12.0);
    s.server.requests_waiting = flat(4.0);
    s.host.process_cpu = flat(process_cpu);
    s.host.host_cpu_busy = flat(process_cpu + 0.03);
    s
}

#[test]
fn cpu_fires_when_saturated_past_the_batch_plateau_with_demand_left() {
    let d = expect_fires(&busy_cpu(0.95), Cpu);
    let f = d.finding(Cpu).expect("cpu finding");
    assert!(f.summary.contains("95%"), "{}", f.summary);
    assert!(f.remedies.iter().any(|r| r.contains("--threads")));
    assert!(f.evidence.iter().all(|e| e.is_met()));
}

#[test]
fn cpu_near_miss_below_saturation() {
    expect_quiet(&busy_cpu(0.65), Cpu);
}

#[test]
fn cpu_busy_alone_is_no_finding() {
    // The baseline's CPU is 90% busy at batch 2: decode is the compute.
    let d = expect_quiet(&baseline(), Cpu);
    let e = d
        .evidence
        .iter()
        .find(|e| e.signal == "decode_batch_mean")
        .expect("batch checked");
    assert_eq!(e.met, Some(false));
}

#[test]
fn cpu_near_miss_without_demand_left_over() {
    let mut s = busy_cpu(0.95);
    s.server.requests_waiting = flat(0.5);
    expect_quiet(&s, Cpu);
}

#[test]
fn cpu_counts_only_the_cores_the_server_may_use() {
    // One thread on two cores: 45% of the host is 90% of its allowance.
    let mut s = busy_cpu(0.45);
    s.host.server_threads = Some(1.0);
    expect_fires(&s, Cpu);
    s.host.server_threads = None;
    expect_quiet(&s, Cpu);
}

#[test]
fn cpu_fires_from_a_flat_sweep_with_a_saturated_cpu() {
    let mut s = baseline();
    s.host.process_cpu = flat(0.97);
    s.sweep = [
        (1.0, 100.0),
        (2.0, 190.0),
        (4.0, 330.0),
        (8.0, 500.0),
        (16.0, 510.0),
    ]
    .iter()
    .map(|&(b, thr)| SweepPoint {
        server_batch_mean: Some(b * 0.95),
        process_cpu: Some(0.97),
        latency_p50_s: Some(b * 0.1),
        ..SweepPoint::new(b, thr)
    })
    .collect();
    let d = expect_fires(&s, Cpu);
    assert_eq!(d.sweep.as_ref().and_then(|v| v.knee), Some(8.0));
}

#[test]
fn cpu_fires_on_a_gpu_host_when_the_gpu_waits() {
    let mut s = busy_cpu(0.95);
    s.gpu.utilization = flat(0.2);
    expect_fires(&s, Cpu);
    s.gpu.utilization = flat(0.85);
    expect_quiet(&s, Cpu);
}

fn busy_gpu(util: f64) -> crate::Signals {
    let mut s = baseline();
    s.gpu.utilization = flat(util);
    s.host.process_cpu = flat(0.1);
    s.host.host_cpu_busy = flat(0.15);
    s.server.decode_batch_mean = Some(15.0);
    s.server.requests_waiting = flat(3.0);
    s
}

#[test]
fn gpu_fires_when_busy_with_full_batches_and_a_queue() {
    let d = expect_fires(&busy_gpu(0.92), Gpu);
    assert!(d.finding(Gpu).expect("gpu").summary.contains("92%"));
}

#[test]
fn gpu_near_miss_just_below_saturation() {
    expect_quiet(&busy_gpu(0.78), Gpu);
}

#[test]
fn gpu_near_miss_when_batches_are_not_full() {
    let mut s = busy_gpu(0.92);
    s.server.decode_batch_mean = Some(10.0);
    expect_quiet(&s, Gpu);
}

#[test]
fn gpu_without_a_gpu_says_so() {
    let d = expect_quiet(&baseline(), Gpu);
    assert!(d
        .evidence
        .iter()
        .any(|e| e.signal == "gpu_utilization" && e.note.as_deref() == Some("gpu: no GPU signal")));
}

fn host(busy: f64, process: f64, client: f64, same_host: bool) -> crate::Signals {
    let mut s = baseline();
    s.host.host_cpu_busy = flat(busy);
    s.host.process_cpu = flat(process);
    if let Some(l) = s.load.as_mut() {
        l.client_cpu = flat(client);
        l.client_on_server_host = same_host;
    }
    s
}

#[test]
fn interference_fires_when_other_work_takes_the_cpu() {
    let d = expect_fires(&host(0.98, 0.45, 0.05, true), Interference);
    // Interference is not mistaken for a saturated server.
    assert!(d.finding(Cpu).is_none());
}

#[test]
fn interference_near_miss_below_the_other_share() {
    expect_quiet(&host(0.96, 0.70, 0.05, true), Interference);
}

#[test]
fn interference_subtracts_loadgen_only_on_the_same_host() {
    expect_quiet(&host(1.0, 0.6, 0.3, true), Interference);
    expect_fires(&host(1.0, 0.6, 0.3, false), Interference);
}

#[test]
fn interference_scales_loadgen_cpu_to_its_cores() {
    // loadgen pinned to 1 of 2 cores, 60% busy there: 30% of the host.
    let mut s = host(1.0, 0.6, 0.6, true);
    if let Some(l) = s.load.as_mut() {
        l.client_cores = Some(1.0);
    }
    expect_quiet(&s, Interference);
}

#[test]
fn interference_fires_on_cpu_steal_and_not_just_below() {
    let mut s = baseline();
    s.host.steal = flat(0.2);
    expect_fires(&s, Interference);
    s.host.steal = flat(0.08);
    expect_quiet(&s, Interference);
}

#[test]
fn interference_is_quiet_while_the_server_idles() {
    let mut s = host(0.98, 0.05, 0.0, true);
    s.server.requests_running = flat(0.0);
    expect_quiet(&s, Interference);
}
