//! Real processes for loadgen's tests: the candlelight server, PostgreSQL, and
//! the loadgen binary itself. Each helper picks a free port, waits for readiness
//! with a timeout, and kills its process on drop (on failure too).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("invariant: loadgen lives inside the workspace")
        .to_path_buf()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// The real candlelight server on the real model, killed on drop.
pub struct Server {
    child: Child,
    pub url: String,
    log: PathBuf,
}

impl Server {
    pub fn start() -> Server {
        let root = workspace_root();
        let bin = std::env::var_os("CANDLELIGHT_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/debug/candlelight"));
        let model = std::env::var_os("CANDLELIGHT_MODEL")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
        assert!(
            bin.exists(),
            "server binary {} missing: run `cargo build -p candlelight`",
            bin.display()
        );
        assert!(
            model.exists(),
            "model {} missing: run scripts/fetch-model.sh",
            model.display()
        );
        let port = free_port();
        let log = std::env::temp_dir().join(format!("loadgen-test-server-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("server log file");
        let child = Command::new(&bin)
            .args(["serve", "--model"])
            .arg(&model)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--threads",
                "2",
            ])
            .stdout(Stdio::from(log_file.try_clone().expect("log handle")))
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("start candlelight");
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        server.wait_healthy(Duration::from_secs(120));
        server
    }

    fn wait_healthy(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if http_status(&format!("{}/health", self.url)) == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "server not healthy within {limit:?}; log:\n{}",
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Status of a plain blocking HTTP GET (no async runtime needed).
pub fn http_status(url: &str) -> Option<u16> {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    {
        let rest = url.strip_prefix("http://")?;
        let (host, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
        let mut s = TcpStream::connect(host).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).ok()?;
        let head = std::str::from_utf8(&buf[..n]).ok()?;
        head.split_whitespace().nth(1)?.parse().ok()
    }
}

/// A throwaway PostgreSQL cluster from Debian, via scripts/services/postgres.sh.
pub struct Postgres {
    dir: tempfile::TempDir,
    pub url: String,
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
        let script = workspace_root().join("scripts/services/postgres.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(dir.path().join("pg"))
            .output()
            .expect("run postgres.sh");
        assert!(
            out.status.success(),
            "postgres.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Postgres { dir, url }
    }

    fn script(&self, action: &str) {
        let script = workspace_root().join("scripts/services/postgres.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(action)
            .arg(self.dir.path().join("pg"))
            .output()
            .expect("run postgres.sh");
        assert!(
            out.status.success(),
            "postgres.sh {action} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Take the database down (its data stays).
    pub fn stop(&self) {
        self.script("stop");
    }

    /// Bring it back, same data, same port.
    pub fn restart(&self) {
        self.script("start");
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

impl Drop for Postgres {
    fn drop(&mut self) {
        let script = workspace_root().join("scripts/services/postgres.sh");
        let _ = Command::new("bash")
            .arg(script)
            .arg("stop")
            .arg(self.dir.path().join("pg"))
            .output();
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

/// A process started by `scripts/services/collector.sh ACTION DIR ...`, which
/// prints `KEY=VALUE` lines (pid, ports, paths); stopped on drop.
pub struct Collector {
    dir: PathBuf,
    vars: std::collections::HashMap<String, String>,
}

impl Collector {
    /// `action` is `start` (the project's collector) or `start-trace-backend`.
    pub fn start(action: &str, dir: &Path, args: &[&str]) -> Collector {
        let script = workspace_root().join("scripts/services/collector.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(action)
            .arg(dir)
            .args(args)
            .output()
            .expect("run collector.sh");
        assert!(
            out.status.success(),
            "collector.sh {action} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let vars = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Collector {
            dir: dir.to_path_buf(),
            vars,
        }
    }

    pub fn get(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("collector.sh printed no {key}: {:?}", self.vars))
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let script = workspace_root().join("scripts/services/collector.sh");
        let _ = Command::new("bash")
            .arg(script)
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
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
