//! Shared helpers for integration tests: the default model, the reference
//! data, and a real candlelight server started in-process on a free port.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use serde::de::DeserializeOwned;

pub mod process;

use testkit::workspace_root;

/// The default model; fetched by `scripts/fetch-model.sh` (the test script runs it).
pub fn model_path() -> PathBuf {
    let p = std::env::var_os("CANDLELIGHT_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-model.sh",
        p.display()
    );
    p
}

/// `tests/data/reference/<name>`: llama.cpp's outputs, committed with the
/// repository (`$CANDLELIGHT_REFERENCE_DIR/<name>` overrides the folder).
pub fn read_jsonl<T: DeserializeOwned>(name: &str) -> Vec<T> {
    let dir = std::env::var_os("CANDLELIGHT_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("tests/data/reference"));
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("reference line is JSON"))
        .collect()
}

/// A server running on its own runtime thread for the whole test binary.
pub struct TestServer {
    pub base: String,
}

/// Starts a server on the real model with `extra` flags (one more per call;
/// compute threads are process-wide, so they stay as the first server set them).
pub fn server_on(extra: &[&str]) -> TestServer {
    server_with(extra)
}

/// Starts (once per test binary) a server on the real model with `extra` flags.
pub fn server_with(extra: &[&str]) -> TestServer {
    let model = model_path();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    let mut args: Vec<String> = vec![
        "--model".into(),
        model.display().to_string(),
        "--threads".into(),
        "2".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let config = candlelight::config::ServeConfig::parse_from(args);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            candlelight::server::serve(config, listener, std::future::pending())
                .await
                .expect("server runs");
        });
    });
    let base = format!("http://{addr}");
    wait_healthy(&base);
    TestServer { base }
}

pub fn shared_server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| server_with(&["--no-telemetry"]))
}

/// Waits up to 120 s for `{base}/health` to answer 200 (callable from async tests too).
pub fn wait_healthy(base: &str) {
    assert!(
        testkit::wait_healthy(base, Duration::from_secs(120)),
        "server at {base} never became healthy"
    );
}

/// Reads an SSE response into its `data:` payloads (comments and keep-alives dropped).
pub async fn sse_data(resp: reqwest::Response) -> Vec<String> {
    let body = resp.text().await.expect("SSE body");
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim_start().to_owned())
        .collect()
}
