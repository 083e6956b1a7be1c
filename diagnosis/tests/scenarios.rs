//! Whole diagnoses of three runs: a healthy light load, an under-batched server
//! and an open loop past capacity, through the public API only.

use diagnosis::*;

const SECONDS: f64 = 60.0;

fn series(f: impl Fn(f64) -> f64) -> Option<Series> {
    Some(Series::sampled(0.0, 2.0, 31, f))
}

fn flat(v: f64) -> Option<Series> {
    series(move |_| v)
}

/// Two closed-loop clients on a 2-core CPU server: busy CPU, no queue.
fn healthy() -> Signals {
    let mut s = Signals {
        window: Window::new(0.0, SECONDS),
        ..Default::default()
    };
    s.server = ServerSignals {
        requests_waiting: flat(0.0),
        requests_running: flat(2.0),
        batch_limit: Some(16.0),
        decode_batch_mean: Some(1.9),
        kv_cache_utilization: flat(0.08),
        queue_time: Some(Summary::new(0.0005, 0.004)),
        ttft: Some(Summary::new(0.16, 0.31)),
        itl: Some(Summary::new(0.011, 0.12)),
        e2e: Some(Summary::new(0.9, 1.4)),
        prefill_step: Some(Summary::new(0.1, 0.22)),
        decode_step: Some(Summary::new(0.011, 0.02)),
        requests_finished: Some(130.0),
        rejected_fraction: Some(0.0),
        ..Default::default()
    };
    s.host = HostSignals {
        cores: Some(2.0),
        process_cpu: flat(0.88),
        host_cpu_busy: flat(0.95),
        iowait: flat(0.002),
        steal: flat(0.0),
        process_rss: series(|t| 280e6 + if (t as i64) % 4 == 0 { 0.0 } else { 1e6 }),
        memory_limit: Some(8e9),
        ..Default::default()
    };
    s.load = Some(LoadSignals {
        achieved_rate: Some(2.1),
        client_cpu: flat(0.04),
        client_cores: Some(2.0),
        client_on_server_host: true,
        send_lag: Some(Summary::new(0.0001, 0.0008)),
        ..LoadSignals::new(LoadShape::Closed { concurrency: 2 })
    });
    s
}

#[test]
fn a_light_load_is_healthy_and_says_what_it_checked() {
    let d = diagnose(&healthy());
    let text = render_text(&d);
    println!("{text}");
    assert_eq!(d.status, Status::Healthy, "{text}");
    assert!(d.findings.is_empty());
    for signal in [
        "process_cpu_of_allowance",
        "requests_waiting_growth",
        "rss_growth",
        "client_cpu_mean",
        "host_cpu_other",
    ] {
        assert!(
            d.evidence
                .iter()
                .any(|e| e.signal == signal && e.value.is_some()),
            "{signal} checked"
        );
    }
    assert!(text.contains("gpu: no GPU signal"), "{text}");
    let json = serde_json::to_value(&d).expect("serializes");
    assert_eq!(json["status"], "healthy");
}

#[test]
fn batch_limit_1_with_8_clients_is_under_batched() {
    let mut s = healthy();
    s.server.batch_limit = Some(1.0);
    s.server.decode_batch_mean = Some(1.0);
    s.server.requests_running = flat(1.0);
    s.server.requests_waiting = flat(7.0);
    s.server.queue_time = Some(Summary::new(3.1, 4.0));
    s.server.e2e = Some(Summary::new(3.6, 4.6));
    s.load = Some(LoadSignals {
        shape: LoadShape::Closed { concurrency: 8 },
        ..s.load.clone().expect("load")
    });
    let mut d = diagnose(&s);
    d.attach_traces(|c, _| match c {
        TraceCriterion::SlowestQueueTime => (1..=5).map(|i| format!("{i:032x}")).collect(),
        _ => Vec::new(),
    });
    let text = render_text(&d);
    println!("{text}");
    assert_eq!(d.status, Status::Degraded);
    let f = d
        .finding(Bottleneck::UnderBatching)
        .expect("under_batching");
    assert_eq!(f.trace_ids.len(), MAX_TRACE_IDS);
    assert!(d.finding(Bottleneck::Cpu).is_none(), "{text}");
    assert!(text.contains("docs/diagnosis.md#under_batching"));
    let json = serde_json::to_value(&d).expect("serializes");
    let b: Vec<&str> = json["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["bottleneck"].as_str())
        .collect();
    assert!(b.contains(&"under_batching"), "{b:?}");
}

#[test]
fn an_open_loop_past_capacity_is_queue_saturated_and_cpu_bound() {
    let mut s = healthy();
    s.server.decode_batch_mean = Some(15.6);
    s.server.requests_running = flat(16.0);
    s.server.requests_waiting = series(|t| 2.0 * t);
    s.server.queue_time = Some(Summary::new(20.0, 55.0));
    s.server.e2e = Some(Summary::new(26.0, 61.0));
    s.host.process_cpu = flat(0.97);
    s.host.host_cpu_busy = flat(0.99);
    s.load = Some(LoadSignals {
        shape: LoadShape::Open { rate: 20.0 },
        achieved_rate: Some(2.4),
        ..s.load.clone().expect("load")
    });
    let d = diagnose(&s);
    println!("{}", render_text(&d));
    let q = d
        .finding(Bottleneck::QueueSaturation)
        .expect("queue_saturation");
    assert_eq!(q.severity, Severity::Critical);
    assert_eq!(
        d.findings[0].bottleneck,
        Bottleneck::QueueSaturation,
        "worst first"
    );
    assert!(d.finding(Bottleneck::Cpu).is_some());
    assert!(d.finding(Bottleneck::UnderBatching).is_none());
}

#[test]
fn replicas_merge_and_keep_their_names() {
    let mut a = healthy();
    a.instance = Some("a:3000".into());
    let mut b = healthy();
    b.instance = Some("b:3000".into());
    b.server.rejected_fraction = Some(0.2);
    let d = diagnose_all([&a, &b]);
    assert_eq!(d.status, Status::Degraded);
    assert_eq!(d.findings.len(), 1);
    assert_eq!(d.findings[0].instance.as_deref(), Some("b:3000"));
    assert!(d
        .evidence
        .iter()
        .any(|e| e.instance.as_deref() == Some("a:3000")));
}

#[test]
fn a_diagnosis_round_trips_through_json() {
    let d = diagnose(&healthy());
    let json = serde_json::to_string(&d).expect("serializes");
    let back: Diagnosis = serde_json::from_str(&json).expect("parses");
    assert_eq!(back.status, d.status);
    assert_eq!(back.evidence.len(), d.evidence.len());
    let s = serde_json::to_string(&healthy()).expect("signals serialize");
    let again: Signals = serde_json::from_str(&s).expect("signals parse");
    assert_eq!(again, healthy());
}

#[test]
fn failures_show_in_the_evidence_even_when_healthy() {
    let mut s = healthy();
    s.server.error_fraction = Some(0.05);
    let d = diagnose(&s);
    let e = d
        .evidence
        .iter()
        .find(|e| e.signal == "error_fraction")
        .expect("error evidence");
    assert_eq!(e.met, Some(true));
    assert!(render_text(&d).contains("error_fraction"));
}
