//! Bad values of the flags that choose where and how the model runs
//! (`--device`, `--backend`, `--kv-memory-fraction`, `--synthetic`): the server
//! refuses to start, exits non-zero, and says which flag and why. A good value
//! of the same flags starts a server that serves.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::candlelight_bin;
use testkit::{free_port, ServerProcess};

/// `serve` with `flags` on the default model: its exit code and output, or a
/// failure if it is still running after 120 s.
fn refused(flags: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("server.log");
    let file = std::fs::File::create(&log).expect("log file");
    let mut child = Command::new(candlelight_bin())
        .args(["serve", "--model"])
        .arg(common::model_path())
        .args(["--host", "127.0.0.1", "--port", &free_port().to_string()])
        .args(["--no-telemetry"])
        .args(flags)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log handle"))
        .stderr(file)
        .spawn()
        .expect("start candlelight");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{flags:?} did not stop the server");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    (status.code().unwrap_or(-1), text)
}

#[test]
fn bad_values_are_refused_naming_the_flag() {
    // Parse errors: exit 2, and clap names the flag with our reason.
    for (flags, names) in [
        (&["--device", "gpu"][..], "--device"),
        (&["--device", "cuda:x"], "--device"),
        (&["--backend", "fast"], "--backend"),
        (&["--kv-memory-fraction", "0"], "--kv-memory-fraction"),
        (&["--kv-memory-fraction", "1.5"], "--kv-memory-fraction"),
        (&["--kv-memory-fraction", "NaN"], "--kv-memory-fraction"),
    ] {
        let (code, text) = refused(flags);
        assert_eq!(code, 2, "{flags:?}: {text}");
        assert!(
            text.contains(names),
            "{flags:?} should name {names}: {text}"
        );
    }
    // Combinations found wrong at load: exit 1 with the reason.
    for (flags, reason) in [
        (
            &["--backend", "native", "--device", "cuda"][..],
            "the native backend runs on the CPU only",
        ),
        (
            &["--device", "cuda:0"],
            "built without the `cuda` feature; scripts/build-cuda.sh",
        ),
        (
            &["--backend", "native", "--synthetic", "1"],
            "synthetic weights need the candle backend",
        ),
    ] {
        if cfg!(feature = "cuda") && reason.contains("`cuda` feature") {
            continue;
        }
        let (code, text) = refused(flags);
        assert_eq!(code, 1, "{flags:?}: {text}");
        assert!(text.contains(reason), "{flags:?}: {text}");
    }
}

/// The good values: a fraction at the bound, the CPU named, and a backend
/// chosen; the server starts and answers.
#[test]
fn good_values_start_a_server_that_serves() {
    let server = ServerProcess::start(
        &candlelight_bin(),
        &common::model_path(),
        &[
            "--device",
            "cpu",
            "--backend",
            "native",
            "--kv-memory-fraction",
            "1",
            "--no-telemetry",
        ],
        &[],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let body = r#"{"inputs":"Hello","parameters":{"max_new_tokens":2}}"#;
    let out = Command::new("curl")
        .args(["-sf", "-H", "content-type: application/json", "-d", body])
        .arg(format!("{}/generate", server.url))
        .output()
        .expect("curl");
    assert!(out.status.success(), "{}", server.log());
    assert!(String::from_utf8_lossy(&out.stdout).contains("generated_text"));
}
