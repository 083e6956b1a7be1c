//! Real processes: the candlelight server binary (with the flags and fault
//! switches a test needs), loadgen, and CPU burners. Each is killed on drop,
//! on failure too.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use serde_json::Value;
use testkit::ServerProcess;

/// Where the workspace's binaries are: beside CANDLELIGHT_BIN when set, else
/// in this test's own `target/<profile>` (test binaries live in its `deps/`).
fn target_dir() -> PathBuf {
    std::env::var_os("CANDLELIGHT_BIN")
        .map(PathBuf::from)
        .and_then(|b| b.parent().map(PathBuf::from))
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.to_path_buf())
        })
        .unwrap_or_else(|| super::workspace_root().join("target/debug"))
}

/// The server binary: CANDLELIGHT_BIN, else this test's own target dir's.
pub fn candlelight_bin() -> PathBuf {
    binary("CANDLELIGHT_BIN", "candlelight")
}

/// The loadgen binary: CANDLELIGHT_LOADGEN_BIN, else beside the server's.
pub fn loadgen_bin() -> PathBuf {
    binary("CANDLELIGHT_LOADGEN_BIN", "loadgen")
}

fn binary(var: &str, name: &str) -> PathBuf {
    let bin = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join(name));
    assert!(
        bin.exists(),
        "{} missing: run `cargo build --workspace --bins` (or set {var})",
        bin.display()
    );
    bin
}

/// The server binary on the real model: `args` after the model, host, port
/// and 2 threads; `env` on top of OTLP export off (the scrape path is what
/// loadgen reads). Killed on drop.
pub fn start_server(args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
    let mut all_env = vec![
        ("OTEL_TRACES_EXPORTER", "none"),
        ("OTEL_METRICS_EXPORTER", "none"),
    ];
    all_env.extend_from_slice(env);
    ServerProcess::start(&candlelight_bin(), &super::model_path(), args, &all_env)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Busy loops eating CPU beside the server: `taskset` pins them when `cpus` is set.
pub struct Burner(Vec<Child>);

impl Burner {
    pub fn start(n: usize, cpus: Option<&str>) -> Burner {
        let spawn = |_| {
            let mut cmd = match cpus {
                Some(c) => {
                    let mut t = Command::new("taskset");
                    t.args(["-c", c, "sh"]);
                    t
                }
                None => Command::new("sh"),
            };
            cmd.args(["-c", "while :; do :; done"])
                .stdout(Stdio::null())
                .spawn()
                .expect("start a CPU burner")
        };
        Burner((0..n).map(spawn).collect())
    }
}

impl Drop for Burner {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs loadgen against `url` and returns its `result.json`. With `cpus` set it
/// runs pinned there (taskset) at the lowest priority (nice 19), so busy loops
/// on those cpus starve it whatever the kernel's scheduler: at equal priority a
/// recent scheduler wakes it within a few ms and nothing slips.
pub fn loadgen(url: &str, args: &[&str], cpus: Option<&str>) -> Value {
    let out = tempfile::tempdir().expect("temp dir");
    let bin = loadgen_bin();
    let mut cmd = match cpus {
        Some(c) => {
            let mut t = Command::new("taskset");
            t.args(["-c", c, "nice", "-n", "19"]).arg(&bin);
            t
        }
        None => Command::new(&bin),
    };
    cmd.args(["--url", url, "--wait", "60s", "--no-plots", "--no-progress"])
        .args(["--sample-interval", "0.5s", "--ignore-eos", "--output-dir"])
        .arg(out.path())
        .args(args);
    let started = Instant::now();
    let done = cmd.output().expect("run loadgen");
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "loadgen {args:?} failed ({:?}):\n{stdout}\n{}",
        done.status,
        String::from_utf8_lossy(&done.stderr)
    );
    eprintln!(
        "loadgen {args:?} took {:.1} s:\n{stdout}",
        started.elapsed().as_secs_f64()
    );
    let text = std::fs::read_to_string(out.path().join("result.json")).expect("result.json");
    serde_json::from_str(&text).expect("result.json is JSON")
}

/// The bottlenecks a result's diagnosis named.
pub fn bottlenecks(result: &Value) -> Vec<String> {
    result["diagnosis"]["findings"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|x| x["bottleneck"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts the diagnosis named `want`, showing the evidence otherwise.
pub fn expect_finding(result: &Value, want: &str) {
    let found = bottlenecks(result);
    assert!(
        found.iter().any(|b| b == want),
        "expected a `{want}` finding, got {found:?}; evidence:\n{}",
        evidence_lines(&result["diagnosis"])
    );
}

/// One line per piece of evidence of a diagnosis (its findings' and the
/// checked ones'): short enough for a CI log that keeps only a part.
pub fn evidence_lines(diagnosis: &Value) -> String {
    let findings = diagnosis["findings"].as_array().into_iter().flatten();
    let fired = findings.flat_map(|f| f["evidence"].as_array().into_iter().flatten());
    let checked = diagnosis["evidence"].as_array().into_iter().flatten();
    fired
        .chain(checked)
        .map(|e| {
            format!(
                "  {:<16} {:<40} {} {} {} (met: {})",
                e["bottleneck"].as_str().unwrap_or("-"),
                e["signal"].as_str().unwrap_or("-"),
                e["value"],
                e["comparison"].as_str().unwrap_or(""),
                e["threshold"],
                e["met"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first trace id of the first `want` finding.
pub fn trace_of(result: &Value, want: &str) -> Option<String> {
    result["diagnosis"]["findings"]
        .as_array()?
        .iter()
        .find(|f| f["bottleneck"] == want)?["trace_ids"][0]
        .as_str()
        .map(str::to_owned)
}
