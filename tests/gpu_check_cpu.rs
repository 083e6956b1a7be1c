//! The non-CUDA parts of the GPU check (`scripts/gpu-check.sh`, docs/gpu.md),
//! run on the CPU: the metadata-only model file, a server on synthetic weights,
//! and `compare-logits` on those weights. The GPU machine runs the same
//! commands with `--device cuda:0`. Needs the server binary (`cargo build
//! --bins`).

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::process::{candlelight_bin, free_port};

fn candlelight(args: &[&str]) -> Output {
    Command::new(candlelight_bin())
        .args(args)
        .output()
        .expect("run candlelight")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The bundle's `model.gguf`: every metadata key and the tokenizer, no tensors.
fn metadata_only(dir: &std::path::Path) -> String {
    let model = common::model_path();
    let meta = dir.join("model.gguf");
    let out = candlelight(&[
        "extract-metadata",
        model.to_str().expect("UTF-8 path"),
        meta.to_str().expect("UTF-8 path"),
    ]);
    assert!(out.status.success(), "extract-metadata: {}", text(&out));
    let size = std::fs::metadata(&meta).expect("model.gguf written").len();
    // The bundle travels in 64 MiB: the 98 MB model cannot, its metadata can.
    assert!(size < 4 << 20, "metadata-only file is {size} bytes");
    meta.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_weights_serve_and_match_the_cpu_reference() {
    let dir = tempfile::tempdir().expect("temp dir");
    let meta = metadata_only(dir.path());

    let out = candlelight(&[
        "compare-logits",
        "--model",
        &meta,
        "--synthetic",
        "1",
        "--device",
        "cpu",
        "--sequences",
        "2",
        "--tokens",
        "16",
    ]);
    let log = text(&out);
    assert!(out.status.success(), "compare-logits: {log}");
    assert!(log.contains("compare-logits: PASS"), "{log}");

    let port = free_port();
    let mut server = Command::new(candlelight_bin())
        .args([
            "serve",
            "--model",
            &meta,
            "--synthetic",
            "1",
            "--device",
            "cpu",
        ])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--threads", "2", "--no-telemetry"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the server");
    let result = ask(port).await;
    let _ = server.kill();
    let _ = server.wait();
    let (info, generated) = result;
    assert_eq!(info["backend"], "candle", "{info}");
    assert_eq!(info["device"], "cpu", "{info}");
    assert_eq!(generated["details"]["generated_tokens"], 4, "{generated}");
}

/// `/info` and a 4-token `/generate` once the server is ready.
async fn ask(port: u16) -> (serde_json::Value, serde_json::Value) {
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !client
        .get(format!("{base}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "server not ready in 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let info = client
        .get(format!("{base}/info"))
        .send()
        .await
        .expect("/info")
        .json()
        .await
        .expect("/info is JSON");
    let body = serde_json::json!({
        "inputs": "Hello",
        "parameters": {"max_new_tokens": 4, "details": true}
    });
    let generated = client
        .post(format!("{base}/generate"))
        .json(&body)
        .send()
        .await
        .expect("/generate")
        .json()
        .await
        .expect("/generate is JSON");
    (info, generated)
}
