//! Development tests of the loadgen binary against its tiny in-process SSE
//! server: load shapes, outputs, bad input, token-count honesty, database down.
//! (The real-server tests are in `server_e2e.rs`.)

mod common;

use common::{args, assert_outputs, loadgen_async as loadgen, mock, read_result, text};
use loadgen::mock::MockConfig;
use testkit::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_load_shape_writes_json_csv_and_plots() {
    let url = mock(MockConfig::default()).await;
    let small = [
        "--output-len",
        "8",
        "--input-len",
        "16",
        "--sample-interval",
        "0.2",
    ];
    let shapes: [(&str, &[&str], bool, usize); 6] = [
        (
            "closed",
            &["--concurrency", "3", "--requests", "12", "--api", "tgi"],
            false,
            1,
        ),
        (
            "open",
            &["--rate", "40", "--requests", "12", "--api", "chat"],
            false,
            1,
        ),
        (
            "gamma",
            &["--rate", "40", "--burstiness", "0.5", "--duration", "0.5s"],
            false,
            1,
        ),
        (
            "batch",
            &["--batch-sizes", "1,2,4", "--requests", "8"],
            true,
            3,
        ),
        (
            "rate-sweep",
            &[
                "--rate-sweep",
                "--sweep-fractions",
                "0.5,1",
                "--sweep-concurrency",
                "4",
                "--requests",
                "8",
            ],
            true,
            3,
        ),
        (
            "slo",
            &[
                "--slo-search",
                "--slo",
                "ttft=1s,e2e=5s",
                "--slo-search-steps",
                "2",
                "--sweep-concurrency",
                "4",
                "--requests",
                "6",
            ],
            true,
            2,
        ),
    ];
    for (name, shape, sweep, steps) in shapes {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut a = args(&url, dir.path(), shape);
        a.extend(small.iter().map(|s| s.to_string()));
        let out = loadgen(a).await;
        assert!(out.status.success(), "{name}: {}", text(&out));
        assert_outputs(dir.path(), sweep);
        let r = read_result(dir.path());
        let got = r["steps"].as_array().map_or(0, Vec::len);
        assert!(got >= steps, "{name}: {got} steps");
        let s0 = &r["steps"][0];
        assert_eq!(s0["requests"]["errors"], 0, "{name}");
        assert_eq!(s0["token_counts"], "server", "{name}");
        assert!(
            s0["ttft"]["p99"].as_f64().is_some_and(|v| v > 0.0),
            "{name}"
        );
        assert!(s0["tpot"]["p50"].as_f64().is_some(), "{name}");
        assert!(s0["slowest"][0]["trace_id"]
            .as_str()
            .is_some_and(|t| t.len() == 32));
        // The mock echoes the traceparent's trace id, as a tracing server does.
        assert_eq!(
            s0["slowest"][0]["trace_id"],
            s0["slowest"][0]["server_trace_id"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_sweep_reports_efficiency_relative_to_batch_one() {
    let url = mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let out = loadgen(args(
        &url,
        dir.path(),
        &[
            "--batch-sizes",
            "1,2",
            "--requests",
            "6",
            "--output-len",
            "4",
            "--no-plots",
        ],
    ))
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let r = read_result(dir.path());
    assert_eq!(r["steps"][0]["batch_efficiency"], 1.0);
    assert!(r["steps"][1]["batch_efficiency"].as_f64().is_some());
    assert_eq!(r["sweep"]["kind"], "batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_counts_are_reported_not_guessed() {
    let url = mock(MockConfig {
        no_usage: true,
        ..MockConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let out = loadgen(args(
        &url,
        dir.path(),
        &["--requests", "3", "--output-len", "4", "--no-plots"],
    ))
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let s = &read_result(dir.path())["steps"][0];
    assert_eq!(s["token_counts"], "missing");
    assert!(s["throughput"]["output_tokens_per_s"].is_null());
    assert!(s["tpot"].is_null());
    assert!(s["ttft"]["count"] == 3, "latencies are still measured");
    let warned = s["warnings"].as_array().is_some_and(|w| {
        w.iter()
            .any(|x| x.as_str().is_some_and(|x| x.contains("token counts")))
    });
    assert!(warned, "{s}");
}

fn one_line_error(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(!out.status.success(), "{}", text(out));
    assert_eq!(err.lines().count(), 1, "expected one line: {err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_line_before_any_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let err = one_line_error(&loadgen(args(&dead, dir.path(), &["--requests", "1"])).await);
    assert!(err.contains("cannot reach"), "{err}");

    let wrong = mock(MockConfig {
        wrong_shape: true,
        ..MockConfig::default()
    })
    .await;
    let err = one_line_error(&loadgen(args(&wrong, dir.path(), &["--requests", "1"])).await);
    assert!(err.contains("another API shape"), "{err}");

    let url = mock(MockConfig::default()).await;
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\": \"fine\"}\n{\"prompt\": \n").expect("write");
    let err = one_line_error(
        &loadgen(args(
            &url,
            dir.path(),
            &["--dataset", bad.to_str().unwrap_or("")],
        ))
        .await,
    );
    assert!(err.contains("bad.jsonl:2"), "{err}");

    let err = one_line_error(
        &loadgen(args(
            &url,
            dir.path(),
            &["--rate", "1", "--concurrency", "2"],
        ))
        .await,
    );
    assert!(err.contains("mutually exclusive"), "{err}");
    let err = one_line_error(&loadgen(args(&url, dir.path(), &["--rate", "x"])).await);
    assert!(err.contains("--rate"), "{err}");
    // No load reached the good server: only bad flags and files were used with it.
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("mock_requests_total 0"), "{metrics}");
    assert!(!dir.path().join("result.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataset_prompts_drive_the_run() {
    let url = mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("prompts.jsonl");
    let lines = [
        r#"{"prompt": "one two three", "max_tokens": 3}"#,
        r#"{"messages": [{"role": "user", "content": "four five"}]}"#,
        r#"{"conversations": [{"from": "human", "value": "six"}, {"from": "gpt", "value": "seven"}]}"#,
    ];
    std::fs::write(&data, lines.join("\n")).expect("write");
    let a = args(
        &url,
        dir.path(),
        &[
            "--dataset",
            data.to_str().unwrap_or(""),
            "--api",
            "chat",
            "--requests",
            "6",
            "--output-len",
            "5",
            "--save-requests",
            "--no-plots",
        ],
    );
    let out = loadgen(a).await;
    assert!(out.status.success(), "{}", text(&out));
    let r = read_result(dir.path());
    let reqs = r["requests"]
        .as_array()
        .expect("--save-requests keeps records");
    assert_eq!(reqs.len(), 6);
    assert_eq!(reqs[0]["output_tokens"], 3, "line's max_tokens wins");
    assert_eq!(reqs[1]["output_tokens"], 5, "--output-len otherwise");
    assert_eq!(reqs[0]["itl_s"].as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_still_writes_results_and_says_so() {
    let url = mock(MockConfig::default()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("postgres://postgres@127.0.0.1:{}/metrics", free_port());
    let spool = dir.path().join("spool");
    let out = loadgen(args(
        &url,
        dir.path(),
        &[
            "--requests",
            "2",
            "--output-len",
            "2",
            "--database-url",
            &db,
            "--spool-dir",
            spool.to_str().unwrap_or("."),
            "--no-plots",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not to PostgreSQL") && err.contains("spooled to"),
        "{err}"
    );
    let r = read_result(dir.path());
    assert_eq!(r["database"]["written"], false);
    assert_eq!(r["steps"][0]["requests"]["ok"], 2);
    let run_id = r["run_id"].as_str().expect("run id");
    assert!(dir.path().join("history-spool.json").is_file());
    assert!(spool.join(format!("{run_id}.json")).is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_and_headers_go_everywhere_and_never_into_the_output() {
    const KEY: &str = "s3cr3t-key-123";
    let url = mock(MockConfig {
        api_key: Some(KEY.into()),
        ..MockConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let base = ["--requests", "2", "--output-len", "2", "--no-plots"];
    let err = one_line_error(&loadgen(args(&url, dir.path(), &base)).await);
    assert!(err.contains("401") && err.contains("--api-key"), "{err}");

    let mut with_key = base.to_vec();
    with_key.extend([
        "--api-key",
        KEY,
        "--header",
        "X-Tenant: blue",
        "--header",
        "X-Auth-Token: tok-456",
        "--sample-interval",
        "0.1",
    ]);
    let out = loadgen(args(&url, dir.path(), &with_key)).await;
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(!printed.contains(KEY) && !printed.contains("tok-456"));
    let raw = std::fs::read_to_string(dir.path().join("result.json")).expect("result.json");
    assert!(
        !raw.contains(KEY) && !raw.contains("tok-456"),
        "a secret leaked"
    );
    let r = read_result(dir.path());
    assert_eq!(r["config"]["api_key"], "<redacted>");
    assert_eq!(r["config"]["headers"][0], "x-tenant: blue");
    // /metrics and /tokenize answered, so they carried the key too.
    assert_eq!(r["resolved"]["metrics_endpoint"], true, "{}", r["resolved"]);
    assert!(r["resolved"]["tokens_per_word"].as_f64().is_some());
    assert_eq!(r["steps"][0]["requests"]["ok"], 2);

    // The key from the environment works the same way.
    let out = tokio::task::spawn_blocking({
        let a = args(&url, dir.path(), &base);
        move || {
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            common::loadgen_env(&refs, &[("LOADGEN_API_KEY", KEY)])
        }
    })
    .await
    .expect("loadgen thread");
    assert!(out.status.success(), "{}", text(&out));
}
