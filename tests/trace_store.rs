//! End to end into a real trace store: the server on the real model exports
//! OTLP to the project's collector, which forwards traces to Jaeger (in
//! memory, built by `scripts/build-jaeger.sh`). A request's trace id, as an
//! operator gets it (the `x-trace-id` response header), is looked up through
//! Jaeger's query API, and the span tree is checked: request → tokenize, queue,
//! prefill, decode, and the linked `engine.step` spans linking back.
//!
//! The trace ids come as an operator meets them: a response's `x-trace-id`,
//! and the trace ids a diagnosis finding lists (loadgen against a server with
//! `--max-batch-size 1` and four clients: `under_batching`).
//!
//! Skips only when Jaeger is not built and `CANDLELIGHT_REQUIRE_JAEGER` is
//! unset; `scripts/test.sh` builds it and sets the variable.

mod common;
#[path = "telemetry_e2e/support.rs"]
#[allow(dead_code)]
mod e2e;
#[path = "trace_store/jaeger.rs"]
mod jaeger;
#[path = "trace_store/tree.rs"]
mod tree;

use anyhow::ensure;
use candlelight::telemetry::names::span;
use e2e::service;
use jaeger::Jaeger;
use serde_json::json;

#[test]
fn a_request_trace_is_found_in_jaeger_with_its_span_tree() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let Some(jaeger) = Jaeger::start(&dir.path().join("jaeger"))? else {
        return Ok(());
    };
    let collector = service(
        "collector.sh",
        "start",
        &dir.path().join("collector"),
        &["--tempo", &jaeger.otlp_grpc()?],
    )?;
    let server = e2e::server_exporting_to(&collector, "4")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let trace_ids = concurrent_requests(&server.base).await?;
        for (i, trace_id) in trace_ids.iter().enumerate() {
            let tree = tree::check_request_tree(&jaeger, trace_id).await?;
            if i == 0 {
                eprintln!("{}", tree::render(&tree));
            }
        }
        // The same server, now one sequence at a time (it is shared by this
        // test binary, so a second one is started for the finding).
        Ok::<(), anyhow::Error>(())
    })?;
    let endpoint = format!("http://127.0.0.1:{}", collector.get("grpc")?);
    let limited = common::server_on(&[
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "grpc",
        "--max-batch-size",
        "1",
    ]);
    let trace_id = finding_trace(&limited.base, "under_batching")?;
    rt.block_on(async {
        let tree = tree::check_request_tree(&jaeger, &trace_id).await?;
        eprintln!("from the under_batching finding:\n{}", tree::render(&tree));
        Ok(())
    })
}

/// Runs loadgen at 4 clients against `base` and returns the first trace id
/// of its `want` finding. The load lasts several of loadgen's 0.5 s samples, so
/// the samples see the queue: 12 requests of 16 tokens once ended before the
/// second sample.
fn finding_trace(base: &str, want: &str) -> anyhow::Result<String> {
    let out = tempfile::tempdir()?;
    let done = std::process::Command::new(common::process::loadgen_bin())
        .args(["--url", base, "--concurrency", "4", "--requests", "40"])
        .args(["--input-len", "16", "--output-len", "32", "--ignore-eos"])
        .args(["--sample-interval", "0.5s", "--no-plots", "--no-progress"])
        .arg("--output-dir")
        .arg(out.path())
        .output()?;
    ensure!(
        done.status.success(),
        "loadgen: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("result.json"))?)?;
    let finding = result["diagnosis"]["findings"]
        .as_array()
        .and_then(|f| f.iter().find(|x| x["bottleneck"] == want))
        .ok_or_else(|| anyhow::anyhow!("no {want} finding: {}", result["diagnosis"]))?;
    let id = finding["trace_ids"][0]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the {want} finding lists no trace id"))?;
    Ok(id.to_owned())
}

/// Three requests at once, so they share engine steps; their trace ids as the
/// responses report them.
async fn concurrent_requests(base: &str) -> anyhow::Result<Vec<String>> {
    let client = reqwest::Client::new();
    let one = |i: usize| {
        let body = json!({"inputs": format!("Count to {i}:"), "parameters": {"max_new_tokens": 8, "ignore_eos": true}});
        client.post(format!("{base}/generate")).json(&body).send()
    };
    let mut ids = Vec::new();
    for r in futures::future::join_all((0..3).map(one)).await {
        let r = r?;
        ensure!(r.status() == 200, "generate: {}", r.status());
        let id = e2e::trace_header(&r);
        ensure!(
            id.len() == 32,
            "{} carries the trace id: {id:?}",
            span::TRACE_ID_HEADER
        );
        r.bytes().await?;
        ids.push(id);
    }
    Ok(ids)
}
