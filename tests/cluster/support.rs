//! The local cluster (`scripts/cluster.sh`) as a value that brings it down when
//! dropped, the loadgen binary as a child process with a deadline, Prometheus
//! queries at a fixed evaluation time, and Prometheus text parsing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use serde_json::Value;
use testkit::ScriptService;

/// A cluster started by `scripts/cluster.sh up DIR`; `down` on drop, on failure too.
pub struct Cluster {
    service: ScriptService,
}

impl Cluster {
    pub fn up(dir: &Path, args: &[&str]) -> anyhow::Result<Cluster> {
        let model = super::common::model_path();
        let env = [
            ("CANDLELIGHT_BIN", env!("CARGO_BIN_EXE_candlelight")),
            ("CANDLELIGHT_MODEL", model.to_str().context("model path")?),
        ];
        let service =
            ScriptService::start_with("scripts/cluster.sh", ("up", "down"), dir, args, &env)?;
        Ok(Cluster { service })
    }

    pub fn get(&self, key: &str) -> anyhow::Result<&str> {
        self.service.get(key)
    }

    pub fn replicas(&self) -> anyhow::Result<usize> {
        Ok(self.get("replicas")?.parse()?)
    }

    pub fn replica(&self, n: usize, what: &str) -> anyhow::Result<&str> {
        self.get(&format!("replica_{n}_{what}"))
    }

    /// Every pid `up` printed (replicas, balancer, collectors, Prometheus).
    pub fn pids(&self) -> Vec<u32> {
        self.service
            .vars()
            .filter(|(k, _)| k.ends_with("_pid"))
            .filter_map(|(_, v)| v.parse().ok())
            .collect()
    }

    /// The replica's log, for failure messages.
    pub fn replica_log(&self, n: usize) -> String {
        std::fs::read_to_string(self.service.dir().join(format!("replica-{n}/replica.log")))
            .unwrap_or_default()
    }

    pub fn down(&mut self) -> anyhow::Result<()> {
        self.service.stop()
    }
}

pub fn alive(pid: u32) -> bool {
    // A zombie still has /proc/PID; its state letter is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_owned())
        })
        .is_some_and(|rest| !rest.starts_with('Z'))
}

/// One loadgen process, its output in `<dir>.log`.
pub struct Loadgen {
    child: Child,
    log: PathBuf,
}

impl Loadgen {
    pub fn spawn(log: &Path, args: &[String]) -> anyhow::Result<Loadgen> {
        let file = std::fs::File::create(log)?;
        let child = Command::new(crate::common::process::loadgen_bin())
            .args(args)
            .env("OTEL_TRACES_EXPORTER", "none")
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()
            .context("starting loadgen")?;
        Ok(Loadgen {
            child,
            log: log.to_owned(),
        })
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `limit`; past it, kills loadgen and fails: a request hung.
    pub async fn finish(mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(
                    status.success(),
                    "loadgen failed ({status}):\n{}",
                    self.log_text()
                );
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "loadgen still running after {limit:?}:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Loadgen {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

pub async fn get_text(url: &str) -> anyhow::Result<String> {
    let resp = reqwest::get(url).await?;
    ensure!(resp.status().is_success(), "GET {url}: {}", resp.status());
    Ok(resp.text().await?)
}

/// One sample of Prometheus text: its labels and value.
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of metric `name` in Prometheus text.
pub fn samples(text: &str, name: &str) -> Vec<Sample> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with('{') || rest.starts_with(' '))
        .filter_map(|rest| {
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => {
                    let (labels, value) = r.rsplit_once('}')?;
                    (parse_labels(labels), value)
                }
                None => (BTreeMap::new(), rest),
            };
            let value = value.split_whitespace().next()?.parse().ok()?;
            Some(Sample { labels, value })
        })
        .collect()
}

/// `a="x",b="y"` (values without escaped quotes, which candlelight's labels never hold).
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    s.split("\",")
        .filter_map(|pair| pair.split_once("=\""))
        .map(|(k, v)| (k.trim().to_owned(), v.trim_end_matches('"').to_owned()))
        .collect()
}

/// The sum of every sample of `name` (a counter over all its label sets).
pub fn total(text: &str, name: &str) -> f64 {
    samples(text, name).iter().map(|s| s.value).sum()
}

pub use crate::e2e::Prometheus;

/// Queries at an explicit evaluation time, so that queries compared with each
/// other see the same data.
impl Prometheus {
    /// The samples of an instant vector at `time` (Unix seconds).
    pub async fn query_at(&self, expr: &str, time: f64) -> anyhow::Result<Vec<Sample>> {
        let data = self.query_data(expr, Some(time)).await?;
        let items = data["result"].as_array().cloned().unwrap_or_default();
        items
            .iter()
            .map(|item| {
                let labels = item["metric"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect();
                let value = item["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .with_context(|| format!("{expr}: sample without a value: {item}"))?;
                Ok(Sample { labels, value })
            })
            .collect()
    }

    /// `{label value: sample value}` of `expr` at `time`, grouped by `label`.
    pub async fn by(
        &self,
        expr: &str,
        label: &str,
        time: f64,
    ) -> anyhow::Result<BTreeMap<String, f64>> {
        let mut out = BTreeMap::new();
        for s in self.query_at(expr, time).await? {
            let key = s.labels.get(label).cloned().unwrap_or_default();
            ensure!(
                out.insert(key.clone(), s.value).is_none(),
                "{expr}: two samples for {label}={key}"
            );
        }
        Ok(out)
    }
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
