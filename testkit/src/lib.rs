//! Real processes for the workspace's integration tests, shared by the
//! server's tests and loadgen's: the candlelight server binary, the project's
//! service scripts (`scripts/services/*.sh`, `scripts/cluster.sh`), free local
//! ports and a health probe that needs no async runtime. Each process value
//! stops its process when dropped, on failure too.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};

/// The workspace root (this crate lives directly under it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("invariant: testkit lives inside the workspace")
        .to_path_buf()
}

/// A local port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// The status of a plain blocking `GET url` (`http://host:port/path`), or
/// `None` when nothing answers; callable from async tests too.
pub fn http_status(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).ok()?;
    std::str::from_utf8(&head[..n])
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Polls `{base}/health` until it answers 200; false if `limit` passes first.
pub fn wait_healthy(base: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let url = format!("{base}/health");
    while Instant::now() < deadline {
        if http_status(&url) == Some(200) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// `candlelight serve` as a child process on a free port, its output in a log file.
pub struct ServerProcess {
    child: Child,
    pub url: String,
    pub port: u16,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `bin serve --model MODEL --host 127.0.0.1 --port P --threads 2`,
    /// then `args`, with `env` added, and waits up to 120 s for `/health`.
    pub fn start(
        bin: &Path,
        model: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<ServerProcess> {
        ensure!(
            bin.exists(),
            "server binary {} missing: run `cargo build --workspace --bins`",
            bin.display()
        );
        ensure!(
            model.exists(),
            "model {} missing: run scripts/fetch-model.sh",
            model.display()
        );
        let port = free_port();
        let log = std::env::temp_dir().join(format!("candlelight-test-server-{port}.log"));
        let file = std::fs::File::create(&log).context("server log file")?;
        let child = Command::new(bin)
            .args(["serve", "--model"])
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--threads", "2"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let server = ServerProcess {
            child,
            url: format!("http://127.0.0.1:{port}"),
            port,
            log,
        };
        if !wait_healthy(&server.url, Duration::from_secs(120)) {
            bail!("server not healthy within 120 s; log:\n{}", server.log());
        }
        Ok(server)
    }

    /// Everything the server wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `TERM`, `INT`) to the server.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()?;
        ensure!(status.success(), "kill -{signal} {}: {status}", self.pid());
        Ok(())
    }

    /// Waits up to `limit` for the server to exit: its exit code (-1 if a
    /// signal ended it), or `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A service the project's scripts run: `SCRIPT START_ACTION DIR ARGS...`
/// starts it and prints what it started (`KEY=VALUE` lines: pids, ports,
/// paths; or a bare value, such as PostgreSQL's URL); `SCRIPT STOP_ACTION DIR`
/// stops it. Stopped on drop unless already stopped.
pub struct ScriptService {
    script: PathBuf,
    start_action: String,
    stop_action: String,
    dir: PathBuf,
    env: Vec<(String, String)>,
    stdout: String,
    running: bool,
}

impl ScriptService {
    /// `script` is relative to the workspace root; it stops with `stop`.
    pub fn start(
        script: &str,
        action: &str,
        dir: &Path,
        args: &[&str],
    ) -> anyhow::Result<ScriptService> {
        Self::start_with(script, (action, "stop"), dir, args, &[])
    }

    /// `actions` are (start, stop), such as `("up", "down")`; `env` is added
    /// to both.
    pub fn start_with(
        script: &str,
        actions: (&str, &str),
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<ScriptService> {
        let mut service = ScriptService {
            script: workspace_root().join(script),
            start_action: actions.0.to_owned(),
            stop_action: actions.1.to_owned(),
            dir: dir.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            stdout: String::new(),
            running: false,
        };
        service.start_again(args)?;
        Ok(service)
    }

    /// Runs the start action again in the same directory (same data, and the
    /// same ports where the script keeps them).
    pub fn start_again(&mut self, args: &[&str]) -> anyhow::Result<()> {
        let out = self
            .command(&self.start_action)
            .args(args)
            .output()
            .with_context(|| format!("running {}", self.script.display()))?;
        ensure!(
            out.status.success(),
            "{} {} failed: {}",
            self.script.display(),
            self.start_action,
            String::from_utf8_lossy(&out.stderr)
        );
        self.running = true;
        self.stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok(())
    }

    /// The value of a `KEY=VALUE` line the start action printed.
    pub fn get(&self, key: &str) -> anyhow::Result<&str> {
        self.vars()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .with_context(|| {
                format!(
                    "{} printed no {key}:\n{}",
                    self.script.display(),
                    self.stdout
                )
            })
    }

    /// Every `KEY=VALUE` line the start action printed.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.stdout.lines().filter_map(|l| l.split_once('='))
    }

    /// What the start action printed, whole.
    pub fn stdout(&self) -> &str {
        &self.stdout
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs the stop action; its data stays in the directory.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.running = false;
        let out = self.command(&self.stop_action).output()?;
        ensure!(
            out.status.success(),
            "{} {} failed: {}",
            self.script.display(),
            self.stop_action,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    fn command(&self, action: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(&self.script)
            .arg(action)
            .arg(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }
}

impl Drop for ScriptService {
    fn drop(&mut self) {
        if self.running {
            let _ = self.stop();
        }
    }
}
