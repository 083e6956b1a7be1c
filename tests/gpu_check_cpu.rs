//! The non-CUDA parts of the GPU check (`scripts/gpu-check.sh`, docs/gpu.md),
//! run on the CPU: the metadata-only model file, a server on synthetic weights,
//! and `compare-logits` on those weights. On the CPU the subject and the
//! reference are both candle on the CPU, so the prefill pass agrees by
//! construction; the decode pass (token by token against the batched prefill)
//! and the command's plumbing are what this checks. The GPU machine runs the same
//! commands with `--device cuda:0`. Needs the server binary (`cargo build
//! --bins`).

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::process::candlelight_bin;
use testkit::free_port;

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
    let log = dir.path().join("server.log");
    let file = std::fs::File::create(&log).expect("server log");
    let server = Command::new(candlelight_bin())
        .args(["serve", "--model", &meta, "--synthetic", "1"])
        .args(["--device", "cpu", "--host", "127.0.0.1"])
        .args([
            "--port",
            &port.to_string(),
            "--threads",
            "2",
            "--no-telemetry",
        ])
        .stdout(file.try_clone().expect("log handle"))
        .stderr(file)
        .spawn()
        .expect("start the server");
    // Killed on drop: a failed assertion below must not leave it running.
    let mut server = KillOnDrop(server);
    let result = ask(port, &mut server.0, &log).await;
    let (info, generated) = result;
    assert_eq!(info["backend"], "candle", "{info}");
    assert_eq!(info["device"], "cpu", "{info}");
    assert_eq!(generated["details"]["generated_tokens"], 4, "{generated}");
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `/info` and a 4-token `/generate` once the server is ready.
async fn ask(
    port: u16,
    server: &mut std::process::Child,
    log: &std::path::Path,
) -> (serde_json::Value, serde_json::Value) {
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client");
    let deadline = Instant::now() + Duration::from_secs(120);
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    while !client
        .get(format!("{base}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        if let Ok(Some(status)) = server.try_wait() {
            panic!("server exited ({status}):\n{}", log_text());
        }
        assert!(
            Instant::now() < deadline,
            "server not ready in 120 s:\n{}",
            log_text()
        );
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
