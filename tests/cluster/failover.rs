//! A replica killed with SIGKILL in the middle of a run: HAProxy's health checks
//! take it out of the rotation, requests sent afterwards all succeed on the
//! others, the ones it was serving fail with a reported kind, and none hangs.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use serde_json::Value;

use super::support::{get_text, read_json, samples, total, unix_now, Cluster, Loadgen, Prometheus};
use super::{eventually, loadgen_args, REQUESTS};

/// Long enough that, whatever the machine's speed, many requests start after
/// HAProxy has noticed the kill (which comes a few seconds into the run).
const RUN: &str = "20s";
/// HAProxy's `fall 3` × `inter 1s` plus slack: after this, no request may go to the dead replica.
const DETECTION: f64 = 6.0;
/// Failure kinds a killed upstream can cause (never `timeout`: nothing may hang).
const KINDS: &[&str] = &[
    "stream_truncated",
    "http_502",
    "http_503",
    "connect",
    "transport",
    "bad_event",
];

pub async fn kill_one_replica_mid_run(cluster: &Cluster, root: &Path) -> anyhow::Result<()> {
    let victim = cluster.replicas()?;
    let victim_url = cluster.replica(victim, "url")?.to_owned();
    let out = root.join("failover");
    let rest = [
        "--concurrency",
        "6",
        "--duration",
        RUN,
        "--output-len",
        "32",
        "--seed",
        "3",
    ];
    let mut run = Loadgen::spawn(
        &root.join("failover.log"),
        &loadgen_args(cluster.get("balancer_url")?, &out, &rest),
    )?;
    let start_finished = total(&get_text(&format!("{victim_url}/metrics")).await?, REQUESTS);
    // Mid-run: the victim has finished requests of this run (two: loadgen's
    // probe may be one) and is serving another.
    eventually(
        "the victim serving mid-run",
        Duration::from_secs(120),
        || {
            let url = format!("{victim_url}/metrics");
            async move {
                let text = get_text(&url).await?;
                let running = samples(&text, "candlelight_requests_running")
                    .first()
                    .map_or(0.0, |s| s.value);
                Ok(
                    (total(&text, REQUESTS) >= start_finished + 2.0 && running >= 1.0)
                        .then_some(()),
                )
            }
        },
    )
    .await?;
    ensure!(run.running(), "loadgen finished before the kill");
    let pid = cluster.replica(victim, "pid")?;
    let killed_at = unix_now();
    let status = std::process::Command::new("kill")
        .args(["-KILL", pid])
        .status()?;
    ensure!(status.success(), "kill -KILL {pid}: {status}");
    let waited = Instant::now();
    run.finish(Duration::from_secs(180)).await?;
    eprintln!(
        "loadgen finished {:.1}s after the kill",
        waited.elapsed().as_secs_f64()
    );

    let result = read_json(&out.join("result.json"))?;
    let kill_s = killed_at - started_unix(&result)?;
    check_errors(&result)?;
    check_requests(&out.join("requests.csv"), kill_s)?;
    balancer_marks_down(cluster, victim).await
}

/// Seconds since the epoch of the run's start (`environment.started_at`, ms precision).
fn started_unix(result: &Value) -> anyhow::Result<f64> {
    let text = result["environment"]["started_at"]
        .as_str()
        .context("started_at")?;
    let t = humantime::parse_rfc3339(text)?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)?.as_secs_f64())
}

/// Some requests failed, each counted under a kind a dead upstream causes.
fn check_errors(result: &Value) -> anyhow::Result<()> {
    let step = &result["steps"][0];
    let req = &step["requests"];
    let sent = req["sent"].as_u64().context("sent")?;
    let errors = req["errors"].as_u64().context("errors")?;
    ensure!(errors >= 1, "the kill failed no request: {step}");
    ensure!(req["ok"].as_u64().context("ok")? + errors == sent, "{req}");
    ensure!(step["aborted"].is_null(), "the run stopped early: {step}");
    let kinds = step["errors"].as_object().context("errors by kind")?;
    let counted: u64 = kinds.values().filter_map(Value::as_u64).sum();
    ensure!(
        counted == errors,
        "errors by kind {kinds:?} do not add up to {errors}"
    );
    for kind in kinds.keys() {
        ensure!(
            KINDS.contains(&kind.as_str()),
            "unexpected error kind {kind}: {step}"
        );
    }
    eprintln!("failover: {errors} of {sent} failed: {}", step["errors"]);
    Ok(())
}

/// From requests.csv: failures were in flight at the kill and ended promptly;
/// every request sent once HAProxy had noticed succeeded, and there were some.
fn check_requests(csv: &Path, kill_s: f64) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(csv)?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .context("requests.csv is empty")?
        .split(',')
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .with_context(|| name.to_owned())
    };
    let (sent, end, ok, kind) = (
        col("sent_s")?,
        col("end_s")?,
        col("ok")?,
        col("error_kind")?,
    );
    let mut after = 0;
    for line in lines {
        // Leading columns are numbers and kinds (no commas); the error text comes later.
        let f: Vec<&str> = line.split(',').collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
        let sent_s = num(sent).with_context(|| format!("sent_s in {line}"))?;
        let success = f.get(ok) == Some(&"true");
        if success {
            after += usize::from(sent_s > kill_s + DETECTION);
            continue;
        }
        let kind = f.get(kind).copied().unwrap_or_default();
        ensure!(
            sent_s < kill_s + DETECTION,
            "a request sent {:.1}s after the kill failed ({kind}): HAProxy still routed to the dead replica",
            sent_s - kill_s
        );
        let end_s = num(end).unwrap_or(f64::INFINITY);
        ensure!(
            end_s < kill_s + DETECTION,
            "a failed request ended {:.1}s after the kill ({kind}): it hung",
            end_s - kill_s
        );
    }
    ensure!(
        after >= 1,
        "no request was sent after HAProxy noticed the kill; the run ended too early"
    );
    eprintln!("failover: {after} requests sent after detection, all ok");
    Ok(())
}

/// HAProxy's stats and Prometheus both see the victim down, the others up.
async fn balancer_marks_down(cluster: &Cluster, victim: usize) -> anyhow::Result<()> {
    let csv = get_text(&format!("{};csv", cluster.get("balancer_stats_url")?)).await?;
    for n in 1..=cluster.replicas()? {
        let name = format!("replica-{n}");
        let status = csv
            .lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&"replicas") && f.get(1) == Some(&name.as_str()))
            .and_then(|f| f.get(17).map(|s| s.to_string()))
            .with_context(|| format!("{name} missing from HAProxy's stats"))?;
        let want = if n == victim { "DOWN" } else { "UP" };
        ensure!(
            status.starts_with(want),
            "HAProxy says {name} is {status}, expected {want}"
        );
    }
    let prometheus = Prometheus::new(cluster.get("prometheus_url")?);
    let expr = format!("up{{job=\"candlelight\",instance=\"replica-{victim}\"}}");
    eventually(&format!("{expr} == 0"), Duration::from_secs(30), || {
        let (prometheus, expr) = (&prometheus, &expr);
        async move {
            let s = prometheus.query_at(expr, unix_now()).await?;
            Ok(s.first().is_some_and(|s| s.value == 0.0).then_some(()))
        }
    })
    .await
}
