//! The GPU check (`scripts/gpu-check.sh`, docs/gpu.md) on the CPU: the same
//! script the GPU machine runs, on a bundle of CPU builds, with
//! `--device cpu`. There the subject and the reference of `compare-logits` are
//! both candle on the CPU, so the prefill pass agrees by construction; the
//! decode pass (token by token against the batched prefill), the bundle, the
//! synthetic-weights server under loadgen, the drain and the script's own
//! plumbing are what this checks. The GPU machine runs the same with
//! `--device cuda:0`. Needs the workspace's binaries (`cargo build --bins`),
//! `strip` and `xz`.

mod common;

use std::path::Path;
use std::process::Command;

use common::process::{candlelight_bin, loadgen_bin};
use testkit::{free_port, workspace_root, ServerProcess};

fn gpu_check(args: &[&str], out: &Path) -> (bool, String) {
    let result = Command::new("bash")
        .arg(workspace_root().join("scripts/gpu-check.sh"))
        .args(args)
        .env("CANDLELIGHT_HOST_BIN", candlelight_bin())
        .env("LOADGEN_BIN", loadgen_bin())
        .env("GPU_CHECK_BUDGET_S", "300")
        .env("OUT", out)
        .output()
        .expect("run scripts/gpu-check.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    (result.status.success(), text)
}

#[test]
fn the_gpu_check_passes_on_the_cpu() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bundle = dir.path().join("bundle");
    let bundle_arg = bundle.to_str().expect("UTF-8 path");
    let (ok, log) = gpu_check(&["bundle", bundle_arg, "--cpu"], dir.path());
    assert!(ok, "bundle: {log}");
    // The bundle travels in 64 MiB: the 98 MB model cannot, its metadata can.
    let meta = std::fs::metadata(bundle.join("model.gguf")).map_or(0, |m| m.len());
    assert!(
        meta > 0 && meta < 4 << 20,
        "metadata-only file is {meta} bytes"
    );
    let manifest = std::fs::read_to_string(bundle.join("MANIFEST")).expect("MANIFEST");
    assert!(manifest.contains("variant=cpu"), "{manifest}");

    let port = free_port().to_string();
    let (ok, log) = gpu_check(
        &["run", bundle_arg, "--device", "cpu", "--port", &port],
        dir.path(),
    );
    assert!(ok, "run: {log}");
    let summary = std::fs::read_to_string(dir.path().join("gpu-check-summary.txt"))
        .expect("the summary is copied to $OUT");
    for step in ["logits", "serve", "shutdown"] {
        assert!(
            summary
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([step, "PASS"])),
            "{step} did not pass:\n{summary}\n{log}"
        );
    }
    assert!(summary.contains("c=4 "), "both load levels ran:\n{summary}");
}

/// What the bundle's server says about itself, and a request's details, on
/// synthetic weights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_weights_serve_on_the_candle_backend() {
    let dir = tempfile::tempdir().expect("temp dir");
    let meta = dir.path().join("model.gguf");
    let out = Command::new(candlelight_bin())
        .arg("extract-metadata")
        .arg(common::model_path())
        .arg(&meta)
        .output()
        .expect("run candlelight");
    assert!(out.status.success(), "extract-metadata: {out:?}");
    let server = ServerProcess::start(
        &candlelight_bin(),
        &meta,
        &["--synthetic", "1", "--device", "cpu", "--no-telemetry"],
        &[],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let client = reqwest::Client::new();
    let info: serde_json::Value = client
        .get(format!("{}/info", server.url))
        .send()
        .await
        .expect("/info")
        .json()
        .await
        .expect("/info is JSON");
    assert_eq!(info["backend"], "candle", "{info}");
    assert_eq!(info["device"], "cpu", "{info}");
    let body = serde_json::json!({
        "inputs": "Hello",
        "parameters": {"max_new_tokens": 4, "details": true}
    });
    let generated: serde_json::Value = client
        .post(format!("{}/generate", server.url))
        .json(&body)
        .send()
        .await
        .expect("/generate")
        .json()
        .await
        .expect("/generate is JSON");
    assert_eq!(generated["details"]["generated_tokens"], 4, "{generated}");
}
