use crate::finding::Bottleneck::{Cpu, KvCache, QueueSaturation, UnderBatching};
use crate::finding::Severity;
use crate::rules::testkit::*;
use crate::signals::{LoadShape, Summary};

#[test]
fn queue_fires_critical_when_the_queue_grows() {
    let mut s = baseline();
    s.server.requests_waiting = ramp(0.0, 30.0);
    let d = expect_fires(&s, QueueSaturation);
    let f = d.finding(QueueSaturation).expect("finding");
    assert_eq!(f.severity, Severity::Critical);
    assert!(f.summary.contains("keeps growing"), "{}", f.summary);
}

#[test]
fn queue_near_miss_when_growth_is_small_or_noise() {
    let mut s = baseline();
    s.server.requests_waiting = ramp(0.0, 4.0);
    expect_quiet(&s, QueueSaturation);
    s.server.requests_waiting = alternating(0.0, 8.0);
    expect_quiet(&s, QueueSaturation);
}

fn open_loop(rate: f64, achieved: f64) -> crate::Signals {
    let mut s = baseline();
    if let Some(l) = s.load.as_mut() {
        l.shape = LoadShape::Open { rate };
        l.achieved_rate = Some(achieved);
    }
    s
}

#[test]
fn queue_fires_when_an_open_loop_falls_behind() {
    let d = expect_fires(&open_loop(10.0, 5.0), QueueSaturation);
    let f = d.finding(QueueSaturation).expect("finding");
    assert!(f.summary.contains("5.00 of 10.00"), "{}", f.summary);
}

#[test]
fn queue_near_miss_when_an_open_loop_nearly_keeps_up() {
    expect_quiet(&open_loop(10.0, 9.5), QueueSaturation);
}

#[test]
fn queue_fires_on_queue_full_refusals() {
    let mut s = baseline();
    s.server.rejected_fraction = Some(0.05);
    expect_fires(&s, QueueSaturation);
    s.server.rejected_fraction = Some(0.005);
    expect_quiet(&s, QueueSaturation);
}

#[test]
fn queue_warns_when_waiting_dominates_latency() {
    let mut s = baseline();
    s.server.queue_time = Some(Summary::new(0.5, 1.2));
    s.server.e2e = Some(Summary::new(1.5, 2.0));
    let d = expect_fires(&s, QueueSaturation);
    assert_eq!(
        d.finding(QueueSaturation).map(|f| f.severity),
        Some(Severity::Warning)
    );
    s.server.queue_time = Some(Summary::new(0.5, 0.8));
    expect_quiet(&s, QueueSaturation);
}

/// `clients` closed-loop clients against `--max-batch-size limit`, the batch full.
fn capped(limit: f64, clients: u64) -> crate::Signals {
    let mut s = baseline();
    s.server.batch_limit = Some(limit);
    s.server.decode_batch_mean = Some(limit);
    s.server.requests_running = flat(limit);
    s.server.requests_waiting = flat(clients as f64 - limit);
    s.host.process_cpu = flat(0.95);
    if let Some(l) = s.load.as_mut() {
        l.shape = LoadShape::Closed {
            concurrency: clients,
        };
    }
    s
}

#[test]
fn under_batching_fires_for_batch_limit_1_with_8_clients() {
    let d = expect_fires(&capped(1.0, 8), UnderBatching);
    let f = d.finding(UnderBatching).expect("finding");
    assert!(f.remedies[0].contains("--max-batch-size"));
    assert!(f.summary.contains("8 concurrent"), "{}", f.summary);
    // A busy CPU at batch 1 is not mistaken for a CPU bottleneck.
    assert!(d.finding(Cpu).is_none());
}

#[test]
fn under_batching_near_miss_when_a_large_batch_saturates_the_cpu() {
    let d = expect_quiet(&capped(8.0, 16), UnderBatching);
    // That run is the cpu rule's: saturated past the plateau, with a queue.
    assert!(d.finding(Cpu).is_some());
}

#[test]
fn under_batching_near_miss_when_the_load_barely_exceeds_the_limit() {
    expect_quiet(&capped(4.0, 6), UnderBatching);
}

#[test]
fn under_batching_on_a_gpu_needs_gpu_headroom() {
    let mut s = capped(16.0, 64);
    s.host.process_cpu = flat(0.2);
    s.gpu.utilization = flat(0.4);
    expect_fires(&s, UnderBatching);
    s.gpu.utilization = flat(0.9);
    expect_quiet(&s, UnderBatching);
}

fn kv_blocked(kv: f64, batch: f64) -> crate::Signals {
    let mut s = baseline();
    s.server.kv_cache_utilization = flat(kv);
    s.server.requests_waiting = flat(5.0);
    s.server.decode_batch_mean = Some(batch);
    s.server.requests_running = flat(batch);
    if let Some(l) = s.load.as_mut() {
        l.shape = LoadShape::Closed { concurrency: 7 };
    }
    s
}

#[test]
fn kv_fires_when_reserved_kv_blocks_admission_below_the_batch_limit() {
    let d = expect_fires(&kv_blocked(0.7, 2.0), KvCache);
    assert!(d.finding(KvCache).expect("kv").remedies[0].contains("--max-total-tokens"));
    assert!(d.finding(UnderBatching).is_none());
}

#[test]
fn kv_near_miss_below_the_reserved_share() {
    expect_quiet(&kv_blocked(0.45, 2.0), KvCache);
}

#[test]
fn kv_near_miss_when_batches_are_full() {
    expect_quiet(&kv_blocked(0.7, 15.0), KvCache);
}

#[test]
fn queue_time_share_is_capped_where_bucket_interpolation_overshoots() {
    let mut s = baseline();
    s.server.queue_time = Some(Summary::new(20.0, 38.6));
    s.server.e2e = Some(Summary::new(21.0, 24.1));
    let d = expect_fires(&s, QueueSaturation);
    let share = d
        .finding(QueueSaturation)
        .and_then(|f| {
            f.evidence
                .iter()
                .find(|e| e.signal == "queue_time_share_p99")
        })
        .and_then(|e| e.value);
    assert_eq!(share, Some(1.0));
    let f = d.finding(QueueSaturation).expect("finding");
    assert!(
        f.summary.contains("wait 24.10 s of their 24.10 s"),
        "{}",
        f.summary
    );
}
