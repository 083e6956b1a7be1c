//! The diagnosis on the real server under real load. Each scenario drives the
//! server well past one threshold (about 10×, so a noisy CI machine cannot
//! flip the verdict) and checks that loadgen's diagnosis names the bottleneck;
//! one light, unsaturated baseline must come out healthy, so false alarms are
//! caught too. `io_wait` and `gpu` are covered by the crate's rule tests.
//!
//! Scenarios run one at a time (they measure the machine's CPU). Needs the
//! server and loadgen binaries (`cargo build --workspace --bins`); the
//! `candlelight diagnose` scenario also Debian's Prometheus.

mod common;
#[path = "telemetry_e2e/support.rs"]
#[allow(dead_code)]
mod e2e;

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::process::{
    bottlenecks, evidence_lines, expect_finding, loadgen, start_server, trace_of, Burner,
};

/// One scenario at a time: they load the whole machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Light load on an unsaturated server, long enough (a few seconds) for the
/// CPU samplers to take several samples at loadgen's 0.5 s interval.
const LIGHT: &[&str] = &[
    "--concurrency",
    "2",
    "--requests",
    "40",
    "--input-len",
    "32",
    "--output-len",
    "64",
];

#[test]
fn a_light_load_is_healthy() {
    let _one = serial();
    let server = start_server(&[], &[]);
    let result = loadgen(&server.url, LIGHT, None);
    assert_eq!(
        result["diagnosis"]["status"],
        "healthy",
        "findings {:?}:\n{}",
        bottlenecks(&result),
        evidence_lines(&result["diagnosis"])
    );
    // A healthy verdict carries what was checked.
    assert!(result["diagnosis"]["evidence"]
        .as_array()
        .is_some_and(|e| e.len() > 5));
}

/// `--max-batch-size 1` with 8 clients: one runs, seven wait. Prometheus
/// scrapes the server meanwhile, and `candlelight diagnose` reads it too.
#[test]
fn one_sequence_at_a_time_for_eight_clients_is_under_batching() -> anyhow::Result<()> {
    let _one = serial();
    let server = start_server(&["--max-batch-size", "1"], &[]);
    let dir = tempfile::tempdir()?;
    let prometheus = e2e::service(
        "prometheus.sh",
        "start",
        &dir.path().join("prometheus"),
        &[
            "--server",
            &format!("127.0.0.1:{}", server.port),
            "--scrape-interval",
            "1s",
        ],
    )?;
    let args = [
        "--concurrency",
        "8",
        "--requests",
        "48",
        "--input-len",
        "32",
        "--output-len",
        "128",
    ];
    // About 20 s of load: most of the 30 s window `diagnose` reads below, with
    // a scrape every second.
    let result = loadgen(&server.url, &args, None);
    expect_finding(&result, "under_batching");
    assert!(
        trace_of(&result, "under_batching").is_some(),
        "a latency finding lists trace ids"
    );
    let live = diagnose(prometheus.get("url")?)?;
    let named: Vec<&str> = live["findings"]
        .as_array()
        .map(|f| f.iter().filter_map(|x| x["bottleneck"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        named.contains(&"under_batching"),
        "candlelight diagnose named {named:?}:\n{}",
        evidence_lines(&live)
    );
    let instance = format!("127.0.0.1:{}", server.port);
    assert!(
        live["findings"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x["instance"] == instance.as_str())),
        "findings name the replica: {live}"
    );
    Ok(())
}

/// `candlelight diagnose --prometheus URL --json` over the last 30 s.
fn diagnose(prometheus: &str) -> anyhow::Result<serde_json::Value> {
    let bin = common::process::candlelight_bin();
    // Let the last scrape land.
    std::thread::sleep(Duration::from_secs(2));
    let out = Command::new(bin)
        .args(["diagnose", "--prometheus", prometheus])
        .args(["--window", "30s", "--step", "1s", "--json"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "candlelight diagnose failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Requests arrive at 30/s; the server finishes about 5 per second (2 cores).
#[test]
fn an_open_loop_far_above_capacity_saturates_the_queue() {
    let _one = serial();
    let server = start_server(&[], &[]);
    let args = [
        "--rate",
        "30",
        "--arrivals",
        "constant",
        "--requests",
        "150",
        "--input-len",
        "128",
        "--output-len",
        "128",
    ];
    let result = loadgen(&server.url, &args, None);
    expect_finding(&result, "queue_saturation");
}

/// Room for two sequences of 320 positions, with batch room for 16.
#[test]
fn a_small_kv_budget_with_long_prompts_blocks_on_the_kv_cache() {
    let _one = serial();
    let server = start_server(&["--max-total-tokens", "640"], &[]);
    let args = [
        "--concurrency",
        "8",
        "--requests",
        "24",
        "--input-len",
        "256",
        "--output-len",
        "64",
    ];
    let result = loadgen(&server.url, &args, None);
    expect_finding(&result, "kv_cache");
}

/// Two busy loops beside the server take what it and loadgen leave.
#[test]
fn a_cpu_burner_beside_the_server_is_interference() {
    let _one = serial();
    let server = start_server(&[], &[]);
    let _burner = Burner::start(2, None);
    let result = loadgen(&server.url, LIGHT, None);
    expect_finding(&result, "interference");
}

/// loadgen pinned at the lowest priority to one core that two busy loops also
/// want, sending an open loop of short requests: its sends slip.
#[test]
fn a_starved_load_generator_is_the_client() {
    let _one = serial();
    let server = start_server(&[], &[]);
    let _burner = Burner::start(2, Some("0"));
    let args = [
        "--rate",
        "40",
        "--arrivals",
        "poisson",
        "--requests",
        "200",
        "--input-len",
        "8",
        "--output-len",
        "4",
    ];
    let result = loadgen(&server.url, &args, Some("0"));
    expect_finding(&result, "client");
}

/// 1,500-token prompts arriving while others decode, with a prefill budget
/// large enough to take each whole prompt in one step. Short outputs make the
/// stalled gaps a few percent of all gaps, well inside the ITL p99.
#[test]
fn long_prompts_with_a_large_prefill_budget_stall_decoding() {
    let _one = serial();
    let budget = ["--max-batch-tokens", "4096", "--max-prefill-tokens", "4096"];
    let server = start_server(&budget, &[]);
    let args = [
        "--concurrency",
        "4",
        "--requests",
        "16",
        "--input-len",
        "1500",
        "--output-len",
        "16",
    ];
    let result = loadgen(&server.url, &args, None);
    expect_finding(&result, "prefill_stall");
}

/// Many short requests; with the fault switch the server keeps 1 MiB per
/// finished request, without it the same load leaves memory flat.
#[test]
fn a_leak_per_request_is_memory_growth_and_the_same_load_without_it_is_not() {
    let _one = serial();
    let args = [
        "--concurrency",
        "4",
        "--requests",
        "400",
        "--input-len",
        "16",
        "--output-len",
        "2",
    ];
    let leaky = start_server(
        &[],
        &[("CANDLELIGHT_FAULT_LEAK_BYTES_PER_REQUEST", "1048576")],
    );
    let result = loadgen(&leaky.url, &args, None);
    expect_finding(&result, "memory_growth");
    drop(leaky);
    let clean = start_server(&[], &[]);
    let result = loadgen(&clean.url, &args, None);
    let found = bottlenecks(&result);
    assert!(
        !found.iter().any(|b| b == "memory_growth"),
        "no leak, no memory_growth: {found:?}\n{}",
        clean
            .log()
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
