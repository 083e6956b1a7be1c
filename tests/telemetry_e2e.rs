//! End to end: the server on the real model exports OTLP to the collector built
//! from `collector/`, which feeds Debian's Prometheus (metrics) and a second
//! collector standing in for Tempo (traces, written to a JSON-lines file).
//!
//! Checks, as an operator would see them: every metric in
//! `telemetry::names` reaches Prometheus under its expected name; every
//! Prometheus query in `grafana/dashboards/*.json` returns data; request spans
//! nest under the client's `traceparent` and link to the engine steps they rode
//! in; and with the collector stopped the server keeps answering, counts what it
//! drops, and resumes exporting when the collector is back. GPU per-device
//! metrics and panels are required only where NVML sees a GPU.

mod common;
#[path = "telemetry_e2e/support.rs"]
mod e2e;

use std::time::Duration;

use anyhow::{ensure, Context as _};
use candlelight::telemetry::names::{self, Group, ALL_METRICS};
use e2e::{eventually, service, Prometheus, SpanFile};
use serde_json::json;
use testkit::ScriptService;

const MODEL: &str = "SmolLM2-135M-Instruct";
const CLIENT_SPAN: &str = "b7ad6b7169203331";
const T_GENERATE: &str = "0af7651916cd43dd8448eb211c80319c";
const T_CHAT: &str = "1bf7651916cd43dd8448eb211c80319d";
const T_AFTER_OUTAGE: &str = "2cf7651916cd43dd8448eb211c80319e";
const T_HTTP_PROTOBUF: &str = "3df7651916cd43dd8448eb211c80319f";

fn traceparent(trace: &str) -> String {
    format!("00-{trace}-{CLIENT_SPAN}-01")
}

#[test]
fn telemetry_reaches_prometheus_and_traces_through_the_collector() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let backend = service(
        "collector.sh",
        "start-trace-backend",
        &dir.path().join("backend"),
        &[],
    )?;
    let tempo = format!("127.0.0.1:{}", backend.get("grpc")?);
    let mut collector = service(
        "collector.sh",
        "start",
        &dir.path().join("collector"),
        &["--tempo", &tempo],
    )?;
    let server = e2e::server_exporting_to(&collector, "8")?;
    let server_addr = server.base.trim_start_matches("http://").to_owned();
    let scrape_target = format!("127.0.0.1:{}", collector.get("prometheus")?);
    let prometheus_dir = dir.path().join("prometheus");
    let prom_args = [
        "--collector",
        &scrape_target,
        "--server",
        &server_addr,
        "--scrape-interval",
        "1s",
    ];
    let prometheus_service = service("prometheus.sh", "start", &prometheus_dir, &prom_args)?;
    let prometheus = Prometheus::new(prometheus_service.get("url")?);
    let spans = SpanFile::new(backend.get("traces")?);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (prom, server) = (&prometheus, &server);
    rt.block_on(async {
        let client = reqwest::Client::new();
        first_wave(&client, &server.base).await?;
        // A second wave once the first is in Prometheus, so rates have an increase.
        eventually(
            "the first wave in Prometheus",
            Duration::from_secs(60),
            || async move {
                let found = prom
                    .query("gen_ai_server_request_duration_seconds_count{job=\"otel-collector\"}")
                    .await?;
                Ok((!found.is_empty()).then_some(()))
            },
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        second_wave(&client, &server.base).await?;

        let gpus = metrics_reach_prometheus(prom).await?;
        dashboards_return_data(prom, gpus).await?;
        traces_have_structure_attributes_and_links(&spans).await?;
        collector_outage_does_not_stop_serving(
            &client,
            &server.base,
            &mut collector,
            &tempo,
            &spans,
        )
        .await?;
        http_protobuf_exports_too(&collector, &spans).await
    })
}

/// Traced requests: one TGI non-streaming, one OpenAI streaming chat.
async fn first_wave(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let body = json!({"inputs": "The capital of France is", "parameters": {"max_new_tokens": 8, "ignore_eos": true}});
    let r = client
        .post(format!("{base}/generate"))
        .header("traceparent", traceparent(T_GENERATE))
        .json(&body)
        .send()
        .await?;
    ensure!(r.status() == 200, "generate: {}", r.status());
    ensure!(
        e2e::trace_header(&r) == T_GENERATE,
        "x-trace-id continues the client trace"
    );
    r.bytes().await?;
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8, "stream": true, "ignore_eos": true});
    let r = client
        .post(format!("{base}/v1/chat/completions"))
        .header("traceparent", traceparent(T_CHAT))
        .json(&body)
        .send()
        .await?;
    ensure!(r.status() == 200, "chat: {}", r.status());
    ensure!(e2e::trace_header(&r) == T_CHAT);
    let events = common::sse_data(r).await;
    ensure!(
        events.last().map(String::as_str) == Some("[DONE]"),
        "stream completes: {events:?}"
    );
    Ok(())
}

/// Concurrent requests (batched together) and a validation error.
async fn second_wave(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let one = |i: usize| {
        let body = json!({"model": MODEL, "prompt": format!("Count to {i}:"), "max_tokens": 16, "ignore_eos": true, "stream": i.is_multiple_of(2)});
        client
            .post(format!("{base}/v1/completions"))
            .json(&body)
            .send()
    };
    for r in futures::future::join_all((0..6).map(one)).await {
        let r = r?;
        ensure!(r.status() == 200, "completion: {}", r.status());
        ensure!(
            e2e::trace_header(&r).len() == 32,
            "every response carries a trace id"
        );
        r.bytes().await?;
    }
    let bad = json!({"inputs": "x", "parameters": {"temperature": -1.0}});
    let r = client
        .post(format!("{base}/generate"))
        .json(&bad)
        .send()
        .await?;
    ensure!(r.status() == 422, "validation error: {}", r.status());
    Ok(())
}

/// Every metric arrives through the collector under its derived name. Returns
/// the number of GPUs the server saw (GPU series are required only then).
async fn metrics_reach_prometheus(prom: &Prometheus) -> anyhow::Result<f64> {
    let gpus = eventually(
        "candlelight_gpu_available",
        Duration::from_secs(60),
        || async move {
            let v = prom
                .query("candlelight_gpu_available{job=\"otel-collector\"}")
                .await?;
            Ok(v.first().and_then(e2e::sample_value))
        },
    )
    .await?;
    let wanted: Vec<String> = ALL_METRICS
        .iter()
        .filter(|m| gpus > 0.0 || m.group != Group::Gpu || m.name == names::GPU_AVAILABLE.name)
        .flat_map(|m| m.prometheus_series())
        .collect();
    let wanted = &wanted;
    eventually(
        "every metric in Prometheus via the collector",
        Duration::from_secs(90),
        || async move {
            let mut missing = Vec::new();
            for series in wanted {
                if prom
                    .query(&format!("{series}{{job=\"otel-collector\"}}"))
                    .await?
                    .is_empty()
                {
                    missing.push(series.clone());
                }
            }
            if !missing.is_empty() {
                eprintln!("waiting for {missing:?}");
            }
            Ok(missing.is_empty().then_some(()))
        },
    )
    .await?;
    let labelled = [
        "gen_ai_server_time_to_first_token_seconds_count{gen_ai_operation_name=\"chat\",gen_ai_request_model=\"SmolLM2-135M-Instruct\",gen_ai_provider_name=\"candlelight\"}",
        "gen_ai_server_request_duration_seconds_count{error_type=\"validation\"}",
        "gen_ai_server_token_usage_count{gen_ai_token_type=\"output\"}",
        "candlelight_requests_finished_total{candlelight_finish_reason=\"length\"}",
        "candlelight_step_duration_seconds_count{candlelight_step_kind=\"decode\"}",
        "system_cpu_utilization_ratio{cpu_mode=\"iowait\"}",
    ];
    for q in labelled {
        eventually(
            &format!("data for {q}"),
            Duration::from_secs(30),
            || async move { Ok((!prom.query(q).await?.is_empty()).then_some(())) },
        )
        .await?;
    }
    Ok(gpus)
}

/// Every Prometheus query of every dashboard returns data.
async fn dashboards_return_data(prom: &Prometheus, gpus: f64) -> anyhow::Result<()> {
    let gpu_series: Vec<String> = ALL_METRICS
        .iter()
        .filter(|m| m.group == Group::Gpu && m.name != names::GPU_AVAILABLE.name)
        .map(|m| m.prometheus_name())
        .collect();
    let exprs = e2e::dashboard_queries(&testkit::workspace_root().join("grafana/dashboards"))?;
    ensure!(
        exprs.len() > 40,
        "expected the dashboards' queries, found {}",
        exprs.len()
    );
    let mut skipped = 0;
    for (title, expr) in exprs {
        if gpus == 0.0 && gpu_series.iter().any(|s| expr.contains(s.as_str())) {
            skipped += 1;
            continue;
        }
        let expr = &expr;
        eventually(
            &format!("data for {title:?}: {expr}"),
            Duration::from_secs(30),
            || async move {
                let result = prom.query(expr).await?;
                Ok(result
                    .iter()
                    .filter_map(e2e::sample_value)
                    .any(f64::is_finite)
                    .then_some(()))
            },
        )
        .await?;
    }
    eprintln!(
        "dashboards: every query returned data ({skipped} GPU queries skipped without a GPU)"
    );
    Ok(())
}

async fn traces_have_structure_attributes_and_links(file: &SpanFile) -> anyhow::Result<()> {
    let genai_name = format!("text_completion {MODEL}");
    eventually(
        "the traced requests in the trace backend",
        Duration::from_secs(60),
        || async move {
            let spans = file.read()?;
            let done = [T_GENERATE, T_CHAT]
                .iter()
                .all(|t| spans.iter().any(|s| s.trace_id == *t && s.name == "decode"));
            Ok(done.then_some(()))
        },
    )
    .await?;
    let spans = file.read()?;
    let in_trace = |t: &'static str| spans.iter().filter(move |s| s.trace_id == t);
    let http = in_trace(T_GENERATE)
        .find(|s| s.name == "POST /generate")
        .context("HTTP server span")?;
    ensure!(
        http.kind == 2 && http.parent == CLIENT_SPAN,
        "server span under the client span: {http:?}"
    );
    ensure!(
        http.attr("http.response.status_code") == Some(json!("200")),
        "{http:?}"
    );
    ensure!(http.attr("http.route") == Some(json!("/generate")));
    let genai = in_trace(T_GENERATE)
        .find(|s| s.name == genai_name)
        .context("GenAI span")?;
    ensure!(
        genai.parent == http.span_id,
        "GenAI span under the HTTP span"
    );
    for (key, want) in [
        ("gen_ai.operation.name", json!("text_completion")),
        ("gen_ai.provider.name", json!("candlelight")),
        ("gen_ai.request.model", json!(MODEL)),
        ("gen_ai.request.max_tokens", json!("8")),
        ("gen_ai.usage.output_tokens", json!("8")),
        ("gen_ai.response.finish_reasons", json!(["length"])),
    ] {
        ensure!(
            genai.attr(key) == Some(want.clone()),
            "{key}: {:?} != {want}",
            genai.attr(key)
        );
    }
    ensure!(
        genai.attr("gen_ai.usage.input_tokens").is_some()
            && genai.attr("gen_ai.response.time_to_first_chunk").is_some()
    );
    for child in ["tokenize", "queue", "prefill", "decode"] {
        let n = in_trace(T_GENERATE)
            .filter(|s| s.name == child && s.parent == genai.span_id)
            .count();
        ensure!(n == 1, "one {child} span under the GenAI span, found {n}");
    }
    let decode = in_trace(T_GENERATE)
        .find(|s| s.name == "decode")
        .context("decode")?;
    ensure!(decode.attr("candlelight.decode.tokens") == Some(json!("8")));
    ensure!(
        decode.events.iter().any(|e| e == "first_token"),
        "first-token event"
    );
    ensure!(
        decode.links.len() == 7,
        "8 tokens: 1 from prefill, 7 decode steps: {:?}",
        decode.links
    );
    for (trace, span) in &decode.links {
        let step = spans
            .iter()
            .find(|s| &s.trace_id == trace && &s.span_id == span);
        let step = step.context("decode links to a step span the backend received")?;
        ensure!(
            step.name == "engine.step decode" && step.parent.is_empty(),
            "{step:?}"
        );
        ensure!(
            step.links
                .contains(&(T_GENERATE.to_owned(), genai.span_id.clone())),
            "the step links back"
        );
    }
    let prefill = in_trace(T_GENERATE)
        .find(|s| s.name == "prefill")
        .context("prefill")?;
    ensure!(
        prefill.links.len() == 1,
        "prefill links to its prefill step"
    );
    let chat = in_trace(T_CHAT)
        .find(|s| s.name == format!("chat {MODEL}"))
        .context("chat GenAI span")?;
    ensure!(chat.attr("gen_ai.request.stream") == Some(json!(true)));
    let batched = spans
        .iter()
        .filter(|s| s.name == "engine.step decode")
        .map(|s| s.links.len())
        .max();
    ensure!(
        batched.unwrap_or(0) >= 2,
        "concurrent requests share decode steps"
    );
    ensure!(
        spans.iter().all(|s| s.service == "candlelight"),
        "service.name is candlelight"
    );
    Ok(())
}

/// With the collector down, requests still succeed and drops are counted; once
/// it is back on the same ports, traces and metrics flow again.
async fn collector_outage_does_not_stop_serving(
    client: &reqwest::Client,
    base: &str,
    collector: &mut ScriptService,
    tempo: &str,
    spans: &SpanFile,
) -> anyhow::Result<()> {
    let ports: Vec<(&str, String)> = ["grpc", "http", "prometheus", "health", "self_metrics"]
        .iter()
        .map(|k| Ok((*k, collector.get(k)?.to_owned())))
        .collect::<anyhow::Result<_>>()?;
    collector.stop()?;
    let body = json!({"inputs": "Hello", "parameters": {"max_new_tokens": 4}});
    for _ in 0..3 {
        let r = client
            .post(format!("{base}/generate"))
            .json(&body)
            .send()
            .await?;
        ensure!(
            r.status() == 200,
            "serving continues without a collector: {}",
            r.status()
        );
    }
    eventually(
        "dropped metric points counted",
        Duration::from_secs(60),
        || async move {
            let text = client
                .get(format!("{base}/metrics"))
                .send()
                .await?
                .text()
                .await?;
            let dropped = e2e::text_value(
                &text,
                "candlelight_telemetry_dropped_total",
                "candlelight_signal=\"metrics\"",
            );
            Ok(dropped.filter(|d| *d > 0.0))
        },
    )
    .await?;

    let mut args = vec!["--tempo".to_owned(), tempo.to_owned()];
    for (key, port) in &ports {
        args.push(format!("--{}", key.replace('_', "-")));
        args.push(port.clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    collector.start_again(&args)?;
    let r = client
        .post(format!("{base}/generate"))
        .header("traceparent", traceparent(T_AFTER_OUTAGE))
        .json(&body)
        .send()
        .await?;
    ensure!(r.status() == 200);
    eventually(
        "traces resume after the outage",
        Duration::from_secs(90),
        || async move {
            Ok(spans
                .read()?
                .iter()
                .any(|s| s.trace_id == T_AFTER_OUTAGE && s.name == "decode")
                .then_some(()))
        },
    )
    .await?;
    let exporter = &format!("http://127.0.0.1:{}/metrics", collector.get("prometheus")?);
    eventually(
        "metrics resume after the outage",
        Duration::from_secs(60),
        || async move {
            let text = client.get(exporter).send().await?.text().await?;
            Ok(text
                .contains("gen_ai_server_request_duration_seconds_count")
                .then_some(()))
        },
    )
    .await
}

/// The OTLP/HTTP transport works too (the server run above used gRPC).
async fn http_protobuf_exports_too(
    collector: &ScriptService,
    spans: &SpanFile,
) -> anyhow::Result<()> {
    use candlelight::telemetry::{Telemetry, TelemetryConfig};
    let cfg = TelemetryConfig {
        otlp_endpoint: Some(format!("http://127.0.0.1:{}", collector.get("http")?)),
        otlp_protocol: Some("http/protobuf".into()),
        service_name: Some("candlelight-http-check".into()),
        ..TelemetryConfig::default()
    };
    let telemetry = Telemetry::init(&cfg, MODEL, 1)?;
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("traceparent", traceparent(T_HTTP_PROTOBUF).parse()?);
    let parent = candlelight::telemetry::http::extract_parent(&headers);
    telemetry
        .start_request(Some(&parent), "chat")
        .fail("validation");
    telemetry.shutdown().await; // flushes
    eventually(
        "a span sent over OTLP/HTTP",
        Duration::from_secs(30),
        || async move {
            let found = spans
                .read()?
                .into_iter()
                .find(|s| s.trace_id == T_HTTP_PROTOBUF);
            Ok(found.map(|s| s.service == "candlelight-http-check"))
        },
    )
    .await
    .and_then(|ok| {
        ensure!(ok, "service name from the CLI");
        Ok(())
    })
}
