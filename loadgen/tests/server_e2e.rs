//! loadgen against the real candlelight server on the real model, and a real
//! PostgreSQL from Debian. Workloads are small (8-16 output tokens, a handful of
//! requests): the model runs on two CPU cores.
//!
//! Needs `cargo build -p candlelight` (or CANDLELIGHT_BIN) and the model
//! (scripts/fetch-model.sh, or CANDLELIGHT_MODEL).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::{assert_outputs, loadgen, read_result, start_server, text, Postgres};
use serde_json::Value;
use testkit::ServerProcess;

/// One real server at a time: the model shares two cores with everything else.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn run(server: &ServerProcess, dir: &Path, rest: &[&str]) -> Value {
    let mut a = vec![
        "--url",
        &server.url,
        "--output-dir",
        dir.to_str().unwrap_or("."),
    ];
    a.extend_from_slice(&[
        "--ignore-eos",
        "--input-len",
        "16",
        "--sample-interval",
        "0.5",
    ]);
    a.extend_from_slice(rest);
    let out = loadgen(&a);
    assert!(
        out.status.success(),
        "{}\nserver log:\n{}",
        text(&out),
        server.log()
    );
    read_result(dir)
}

/// Waits (up to 30 s) until the server's /metrics has a series named `name`:
/// the process CPU gauge needs two host samples a second apart after start.
fn wait_for_metric(server: &ServerProcess, name: &str) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let url = format!("{}/metrics", server.url);
    rt.block_on(async {
        for _ in 0..300 {
            if let Ok(r) = reqwest::get(&url).await {
                if r.text()
                    .await
                    .is_ok_and(|t| t.lines().any(|l| l.starts_with(name)))
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{name} never appeared in {url}");
    });
}

fn step_ok(step: &Value, expected: u64) {
    assert_eq!(step["requests"]["errors"], 0, "{step}");
    assert_eq!(step["requests"]["ok"], expected, "{step}");
    assert_eq!(step["token_counts"], "server", "{step}");
    assert!(
        step["ttft"]["p50"].as_f64().is_some_and(|v| v > 0.0),
        "{step}"
    );
}

#[test]
fn every_load_shape_against_the_real_server() {
    let _one = serial();
    let server = start_server();
    let cases: [(&str, &[&str], usize); 6] = [
        (
            "closed/tgi",
            &[
                "--api",
                "tgi",
                "--concurrency",
                "2",
                "--requests",
                "4",
                "--output-len",
                "8",
            ],
            1,
        ),
        (
            "open/chat",
            &[
                "--api",
                "chat",
                "--rate",
                "4",
                "--requests",
                "4",
                "--output-len",
                "8",
            ],
            1,
        ),
        (
            "batch/completions",
            &[
                "--batch-sizes",
                "1,2",
                "--requests",
                "4",
                "--output-len",
                "8",
            ],
            2,
        ),
        (
            "rate sweep",
            &[
                "--rate-sweep",
                "--sweep-concurrency",
                "2",
                "--sweep-fractions",
                "0.5,1",
                "--requests",
                "3",
                "--output-len",
                "8",
            ],
            3,
        ),
        (
            "multi-turn/chat",
            &[
                "--api",
                "chat",
                "--multi-turn",
                "2",
                "--system-prompt-len",
                "32",
                "--concurrency",
                "2",
                "--requests",
                "4",
                "--output-len",
                "8",
            ],
            1,
        ),
        (
            "shared prefix/completions",
            &[
                "--shared-prefix",
                "64",
                "--prefixes",
                "2",
                "--concurrency",
                "2",
                "--requests",
                "4",
                "--output-len",
                "8",
            ],
            1,
        ),
    ];
    for (name, args, steps) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let r = run(&server, dir.path(), args);
        assert_outputs(dir.path(), steps > 1);
        let got = r["steps"].as_array().map_or(0, Vec::len);
        assert_eq!(got, steps, "{name}");
        for s in r["steps"].as_array().into_iter().flatten() {
            let n = s["requests"]["sent"].as_u64().unwrap_or(0);
            step_ok(s, n);
            assert_eq!(
                s["output_tokens"]["min"], 8.0,
                "{name}: ignore_eos makes lengths exact"
            );
        }
        // Trace links: the server continues the trace loadgen started.
        let slow = &r["steps"][0]["slowest"][0];
        assert!(
            slow["trace_id"].as_str().is_some_and(|t| t.len() == 32),
            "{name}: {slow}"
        );
        assert_eq!(
            slow["trace_id"], slow["server_trace_id"],
            "{name}: server honours traceparent"
        );
        assert!(
            r["environment"]["server_info"].is_object(),
            "{name}: /info recorded"
        );
        if name.starts_with("multi-turn") {
            let turns = &r["steps"][0]["turns"];
            assert_eq!(turns.as_array().map(Vec::len), Some(2), "{name}: {turns}");
            let input = |t: usize| turns[t]["input_tokens"]["mean"].as_f64().unwrap_or(0.0);
            assert!(
                input(1) > input(0) + 8.0,
                "{name}: turn 2 resends the history"
            );
        }
    }
}

/// loadgen's TTFT and E2E agree with the server's own histograms over the same
/// requests, within one bucket.
#[test]
fn client_latencies_agree_with_server_histograms() {
    let _one = serial();
    let server = start_server();
    for api in ["tgi", "completions", "chat"] {
        // The test machines are shared: one noisy step can push a client latency
        // across a bucket edge. A real disagreement fails every attempt.
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let dir = tempfile::tempdir().expect("temp dir");
            let r = run(
                &server,
                dir.path(),
                &[
                    "--api",
                    api,
                    "--concurrency",
                    "2",
                    "--requests",
                    "6",
                    "--output-len",
                    "12",
                    "--no-plots",
                ],
            );
            let s = &r["steps"][0];
            step_ok(s, 6);
            let agree = ["ttft", "e2e"]
                .iter()
                .all(|m| s["server"][*m]["within_one_bucket"] == true);
            if !agree && attempt < ATTEMPTS {
                eprintln!("{api}: attempt {attempt} disagreed by more than a bucket, retrying");
                continue;
            }
            for metric in ["ttft", "e2e"] {
                let a = &s["server"][metric];
                assert_eq!(
                    a["server_count"], 6.0,
                    "{api} {metric}: server saw the step's requests: {a}"
                );
                assert_eq!(a["within_one_bucket"], true, "{api} {metric}: {a}");
                let (c, sv) = (
                    a["client_mean"].as_f64().unwrap_or(0.0),
                    a["server_mean"].as_f64().unwrap_or(0.0),
                );
                assert!(
                    c >= sv * 0.9,
                    "{api} {metric}: client mean {c} below server mean {sv}"
                );
            }
            break;
        }
    }
}

#[test]
fn runs_land_in_postgres_and_the_dashboard_queries_return_them() {
    let _one = serial();
    let pg = Postgres::start();
    let server = start_server();
    // The run below is shorter than a second: let the CPU gauge exist first.
    wait_for_metric(&server, "process_cpu_utilization");
    let dir = tempfile::tempdir().expect("temp dir");
    let db = pg.url.as_str();
    let r = run(
        &server,
        dir.path(),
        &[
            "--batch-sizes",
            "1,2",
            "--requests",
            "4",
            "--output-len",
            "8",
            "--database-url",
            db,
            "--server-git-branch",
            "test",
        ],
    );
    assert_eq!(r["database"]["written"], true, "{}", r["database"]);
    let id = r["database"]["benchmark_id"]
        .as_i64()
        .expect("benchmark id");
    // A second run, so comparisons across runs have something to compare.
    let dir2 = tempfile::tempdir().expect("temp dir");
    let r2 = run(
        &server,
        dir2.path(),
        &[
            "--concurrency",
            "2",
            "--requests",
            "3",
            "--output-len",
            "8",
            "--database-url",
            db,
        ],
    );
    assert_eq!(r2["database"]["written"], true);

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(db, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(conn);
        let row = client
            .query_one("SELECT branch, metadata->>'model' FROM benchmarks WHERE benchmark_id = $1", &[&id])
            .await
            .expect("benchmark row");
        assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("test"));
        assert!(row.get::<_, Option<String>>(1).is_some_and(|m| !m.is_empty()));
        let steps: i64 = client
            .query_one("SELECT count(*) FROM model_measurements WHERE benchmark_id = $1", &[&id])
            .await
            .expect("count")
            .get(0);
        assert_eq!(steps, 2);
        let devices: i64 = client
            .query_one("SELECT count(*) FROM device_measurements WHERE benchmark_id = $1 AND cpu_util IS NOT NULL", &[&id])
            .await
            .expect("count")
            .get(0);
        assert!(devices >= 1, "device samples from /metrics");

        common::dashboard_queries_return_rows(&client, id).await;
    });
}

#[test]
fn a_server_killed_midway_is_reported_and_results_still_written() {
    let _one = serial();
    let mut server = start_server();
    let dir = tempfile::tempdir().expect("temp dir");
    let child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--url",
            &server.url,
            "--output-dir",
            dir.path().to_str().unwrap_or("."),
        ])
        .args([
            "--concurrency",
            "2",
            "--duration",
            "60s",
            "--output-len",
            "64",
            "--ignore-eos",
            "--input-len",
            "16",
        ])
        .args(["--no-progress", "--no-plots", "--save-requests"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loadgen");
    std::thread::sleep(Duration::from_secs(6));
    server.kill();
    let out = child.wait_with_output().expect("loadgen finishes");
    let r = read_result(dir.path());
    let s = &r["steps"][0];
    assert!(
        s["requests"]["ok"].as_u64().unwrap_or(0) >= 1,
        "some requests finished before the kill: {}",
        text(&out)
    );
    assert!(s["requests"]["errors"].as_u64().unwrap_or(0) >= 1, "{s}");
    let errors = s["errors"].as_object().expect("errors by kind");
    assert!(
        errors
            .keys()
            .any(|k| k == "connect" || k == "stream_truncated" || k == "transport"),
        "{errors:?}"
    );
    assert!(
        s["aborted"]
            .as_str()
            .is_some_and(|a| a.contains("unreachable")),
        "{s}"
    );
    assert!(dir.path().join("requests.csv").exists());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("errors "),
        "the table shows the errors: {stdout}"
    );
}
