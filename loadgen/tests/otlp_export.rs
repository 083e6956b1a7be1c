//! loadgen's client spans reach the project's real OpenTelemetry Collector
//! (built from `collector/` by scripts/build-collector.sh) when only the
//! standard `OTEL_*` variables are set, as in the compose file's loadgen
//! service: over OTLP/HTTP through the main collector to the trace backend,
//! and over gRPC straight to the trace backend. The load target is loadgen's
//! own mock server: the spans under test are the client's.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{collector, loadgen_env, read_result, text};
use loadgen::mock::{serve, MockConfig};
use serde_json::Value;

/// Trace ids of `loadgen.request` spans in the trace backend's file, with the
/// service name of their resource.
fn client_spans(file: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        for rs in v["resourceSpans"].as_array().into_iter().flatten() {
            let attr = |key: &str| {
                rs["resource"]["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["key"] == key)
                    .and_then(|a| a["value"]["stringValue"].as_str())
                    .unwrap_or("")
                    .to_string()
            };
            let service = format!(
                "{}|{}",
                attr("service.name"),
                attr("deployment.environment")
            );
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    if span["name"] == "loadgen.request" {
                        let id = span["traceId"].as_str().unwrap_or("").to_string();
                        out.push((id, service.clone()));
                    }
                }
            }
        }
    }
    out
}

/// Run loadgen with `env` and wait until every request's client span is in `file`.
fn run_and_find_spans(url: &str, env: &[(&str, &str)], file: &Path, service: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = loadgen_env(
        &[
            "--url",
            url,
            "--output-dir",
            dir.path().to_str().unwrap_or("."),
            "--requests",
            "4",
            "--output-len",
            "4",
            "--save-requests",
            "--no-plots",
        ],
        env,
    );
    assert!(out.status.success(), "{}", text(&out));
    let result = read_result(dir.path());
    let wanted: HashSet<String> = result["requests"]
        .as_array()
        .expect("--save-requests")
        .iter()
        .filter_map(|r| r["trace_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(wanted.len(), 4);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans = client_spans(file);
        let found: HashSet<String> = spans
            .iter()
            .filter(|(id, s)| wanted.contains(id) && s == service)
            .map(|(id, _)| id.clone())
            .collect();
        if found == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 4 client spans of service {service} reached {}: {spans:?}",
            found.len(),
            file.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn otel_variables_alone_export_client_spans_over_http_and_grpc() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let backend = collector("start-trace-backend", &dir.path().join("backend"), &[]);
    let tempo = format!("127.0.0.1:{}", backend.get("grpc")?);
    let collector = collector("start", &dir.path().join("collector"), &["--tempo", &tempo]);
    let traces = Path::new(backend.get("traces")?).to_path_buf();

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    rt.spawn(serve(listener, MockConfig::default()));

    // OTLP/HTTP, the specification's default protocol, through the collector.
    let http = format!("http://127.0.0.1:{}", collector.get("http")?);
    run_and_find_spans(
        &url,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", http.as_str()),
            ("OTEL_SERVICE_NAME", "loadgen-http"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
        &traces,
        "loadgen-http|test",
    );
    // gRPC, straight to the trace backend, named by the per-signal variable.
    let grpc = format!("http://{tempo}");
    run_and_find_spans(
        &url,
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", grpc.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
        &traces,
        "loadgen|",
    );
    Ok(())
}
