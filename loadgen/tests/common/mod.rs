//! Real processes for loadgen's tests: the candlelight server, PostgreSQL, and
//! the loadgen binary itself. Each helper picks a free port, waits for readiness
//! with a timeout, and kills its process on drop (on failure too).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use testkit::{workspace_root, ScriptService, ServerProcess};

/// The real candlelight server on the real model: CANDLELIGHT_BIN and
/// CANDLELIGHT_MODEL where set, else the workspace's debug build and default
/// model. Killed on drop.
pub fn start_server() -> ServerProcess {
    let root = workspace_root();
    let path = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(default))
    };
    let bin = path("CANDLELIGHT_BIN", "target/debug/candlelight");
    let model = path(
        "CANDLELIGHT_MODEL",
        "models/SmolLM2-135M-Instruct.Q4_1.gguf",
    );
    ServerProcess::start(&bin, &model, &[], &[]).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A throwaway PostgreSQL cluster from Debian, via scripts/services/postgres.sh
/// (which prints its URL); stopped on drop.
pub struct Postgres {
    service: ScriptService,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("loadgen-pg")
            .tempdir()
            .expect("temp dir");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod temp dir");
        }
        let service = ScriptService::start(
            "scripts/services/postgres.sh",
            "start",
            &dir.path().join("pg"),
            &[],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        let url = service.stdout().trim().to_owned();
        Postgres {
            service,
            url,
            _dir: dir,
        }
    }

    /// Take the database down (its data stays).
    pub fn stop(&mut self) {
        self.service.stop().unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Bring it back, same data, same port.
    pub fn restart(&mut self) {
        self.service
            .start_again(&[])
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// A connected client (its connection runs on the current tokio runtime).
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test PostgreSQL");
        tokio::spawn(conn);
        client
    }
}

/// Every query of grafana/dashboards/benchmark-history.json returns rows for
/// run `benchmark` (the one its `run` variable picks).
pub async fn dashboard_queries_return_rows(client: &tokio_postgres::Client, benchmark: i64) {
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(
            workspace_root().join("grafana/dashboards/benchmark-history.json"),
        )
        .expect("dashboard"),
    )
    .expect("dashboard JSON");
    let var = dash["templating"]["list"][0]["query"]
        .as_str()
        .expect("run variable query");
    assert!(!client
        .query(var, &[])
        .await
        .expect("variable query")
        .is_empty());
    for panel in dash["panels"].as_array().expect("panels") {
        assert_eq!(panel["datasource"]["uid"], "candlelight-postgres");
        for t in panel["targets"].as_array().expect("targets") {
            let sql = t["rawSql"]
                .as_str()
                .expect("rawSql")
                .replace("$benchmark", &benchmark.to_string());
            let rows = client
                .query(sql.as_str(), &[])
                .await
                .unwrap_or_else(|e| panic!("{}: {e}\n{sql}", panel["title"]));
            assert!(!rows.is_empty(), "{} returned no rows", panel["title"]);
        }
    }
}

/// Run the loadgen binary to completion.
pub fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .args(["--no-progress"])
        .stdin(Stdio::null())
        .output()
        .expect("run loadgen")
}

pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn read_result(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("result.json")).expect("result.json written");
    serde_json::from_str(&text).expect("result.json is JSON")
}

/// The files every run writes (plots unless --no-plots).
pub fn assert_outputs(dir: &Path, sweep: bool) {
    let mut files = vec![
        "result.json",
        "requests.csv",
        "summary.csv",
        "latency_cdf.svg",
        "ttft_over_time.svg",
        "itl_over_time.svg",
    ];
    if sweep {
        files.extend(["sweep_throughput.svg", "sweep_latency.svg"]);
    }
    for f in files {
        let p = dir.join(f);
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{} missing or empty", p.display());
    }
    let csv = std::fs::read_to_string(dir.join("requests.csv")).expect("requests.csv");
    assert!(csv
        .lines()
        .next()
        .is_some_and(|h| h.contains("ttft_s") && h.contains("trace_id")));
}

/// `scripts/services/collector.sh ACTION DIR ARGS`: `start` (the project's
/// collector) or `start-trace-backend`; stopped on drop.
pub fn collector(action: &str, dir: &Path, args: &[&str]) -> ScriptService {
    ScriptService::start("scripts/services/collector.sh", action, dir, args)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Run the loadgen binary to completion with extra environment variables.
pub fn loadgen_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .args(["--no-progress"])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run loadgen")
}

/// Start loadgen's mock SSE server on a free port; returns its URL.
pub async fn mock(cfg: loadgen::mock::MockConfig) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(loadgen::mock::serve(listener, cfg));
    url
}

/// Run the loadgen binary off the async workers.
pub async fn loadgen_async(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        loadgen(&refs)
    })
    .await
    .expect("loadgen thread")
}

/// `--url URL --output-dir DIR` then `rest`.
pub fn args(url: &str, dir: &std::path::Path, rest: &[&str]) -> Vec<String> {
    let mut v = vec![
        "--url".to_string(),
        url.to_string(),
        "--output-dir".into(),
        dir.display().to_string(),
    ];
    v.extend(rest.iter().map(|s| s.to_string()));
    v
}
