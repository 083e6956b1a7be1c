//! The local multi-replica cluster, end to end: `scripts/cluster.sh up` starts
//! three real replicas (`--threads 1`) behind HAProxy, two collector agents, a
//! gateway collector and Prometheus; loadgen (the real binary) drives it
//! through the balancer.
//!
//! Checks, in order:
//! - three loadgen workers share one seeded load through the balancer, and
//!   `loadgen merge` gives counts and percentiles equal to those computed here
//!   from all their raw records;
//! - every replica served requests (its own `/metrics`), and exposes what the
//!   chart's endpoint-picker mapping reads (names and cache info labels);
//! - Prometheus holds per-instance series on both paths (direct scrape,
//!   `instance=replica-N`; collectors, `exported_instance=replica-N`, through
//!   the agent each replica reports to), equal to the replicas' own counters;
//! - the dashboards' aggregate queries sum across instances;
//! - a replica killed with SIGKILL mid-run: HAProxy takes it out, later requests
//!   all succeed, loadgen reports the failed ones by kind, nothing hangs;
//! - `cluster.sh down` leaves no process behind.
//!
//! Needs `cargo build -p loadgen` (or CANDLELIGHT_LOADGEN_BIN), the model
//! (scripts/fetch-model.sh), the collector (scripts/build-collector.sh) and
//! Debian's prometheus and haproxy (scripts/install-deps.sh).

mod common;
#[allow(dead_code)]
#[path = "telemetry_e2e/support.rs"]
mod e2e;
#[path = "cluster/failover.rs"]
mod failover;
#[path = "cluster/support.rs"]
mod support;
#[path = "cluster/telemetry.rs"]
mod telemetry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use serde_json::Value;
use support::{alive, get_text, read_json, total, Cluster, Loadgen};

/// The server's request counter (every generation request, whatever its outcome).
pub const REQUESTS: &str = "gen_ai_server_request_duration_seconds_count";

#[test]
fn three_replicas_behind_haproxy_with_collectors_and_prometheus() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let started = Instant::now();
    let mut cluster = Cluster::up(&root.path().join("cluster"), &["--replicas", "3"])?;
    eprintln!(
        "cluster up in {:.1}s (cluster.sh: {}s)",
        started.elapsed().as_secs_f64(),
        cluster.get("up_seconds")?
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        // A first request on each replica creates its series; once Prometheus
        // holds them on both paths, later traffic shows as a rate everywhere.
        warm_up(&cluster).await?;
        let before = replica_totals(&cluster).await?;
        telemetry::per_instance_series(&cluster, &before).await?;
        workers_merge_into_the_whole(&cluster, root.path()).await?;
        let after = replica_totals(&cluster).await?;
        for (n, (b, a)) in before.iter().zip(&after).enumerate() {
            ensure!(
                a > b,
                "replica-{} served no request ({b} -> {a}); log:\n{}",
                n + 1,
                cluster.replica_log(n + 1)
            );
        }
        eprintln!("requests per replica: {after:?}");
        telemetry::endpoint_picker_mapping(&cluster).await?;
        telemetry::per_instance_series(&cluster, &after).await?;
        telemetry::dashboards_sum_across_instances(&cluster).await?;
        failover::kill_one_replica_mid_run(&cluster, root.path()).await
    })?;
    let pids = cluster.pids();
    ensure!(pids.len() >= 8, "cluster.sh printed too few pids: {pids:?}");
    cluster.down()?;
    let left: Vec<u32> = pids.into_iter().filter(|p| alive(*p)).collect();
    ensure!(left.is_empty(), "still running after down: {left:?}");
    eprintln!("whole test: {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// One two-token TGI request straight to each replica.
async fn warm_up(cluster: &Cluster) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for n in 1..=cluster.replicas()? {
        let resp = client
            .post(format!("{}/generate", cluster.replica(n, "url")?))
            .json(&serde_json::json!({"inputs": "Hello", "parameters": {"max_new_tokens": 2}}))
            .send()
            .await?;
        ensure!(resp.status().is_success(), "replica-{n}: {}", resp.status());
    }
    Ok(())
}

/// Each replica's request count, from its own `/metrics`.
async fn replica_totals(cluster: &Cluster) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for n in 1..=cluster.replicas()? {
        let text = get_text(&format!("{}/metrics", cluster.replica(n, "url")?)).await?;
        out.push(total(&text, REQUESTS));
    }
    Ok(out)
}

/// Flags every loadgen run here shares: small, exact-length completions.
pub fn loadgen_args(url: &str, out: &Path, rest: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--url",
        url,
        "--api",
        "completions",
        "--input-len",
        "16",
        "--ignore-eos",
        "--no-plots",
        "--no-progress",
        "--sample-interval",
        "0",
        "--timeout",
        "60s",
        "--output-dir",
    ]
    .map(String::from)
    .into();
    a.push(out.display().to_string());
    a.extend(rest.iter().map(|s| s.to_string()));
    a
}

const WORKERS: usize = 3;
const WORKER_REQUESTS: usize = 12;

/// Three workers through the balancer, then `loadgen merge`: the merged report
/// equals what all the raw records say.
async fn workers_merge_into_the_whole(cluster: &Cluster, root: &Path) -> anyhow::Result<()> {
    let url = cluster.get("balancer_url")?;
    let requests = WORKER_REQUESTS.to_string();
    let mut runs = Vec::new();
    let mut dirs = Vec::new();
    for k in 0..WORKERS {
        let dir = root.join(format!("worker-{k}"));
        let (id, of) = (k.to_string(), WORKERS.to_string());
        let rest = [
            "--worker-id",
            &id,
            "--workers",
            &of,
            "--concurrency",
            "3",
            "--requests",
            &requests,
            "--output-len",
            "8",
            "--seed",
            "11",
        ];
        runs.push(Loadgen::spawn(
            &root.join(format!("worker-{k}.log")),
            &loadgen_args(url, &dir, &rest),
        )?);
        dirs.push(dir);
    }
    for run in runs {
        run.finish(Duration::from_secs(180)).await?;
    }
    let merged = root.join("merged");
    let mut args = vec!["merge".to_string()];
    args.extend(dirs.iter().map(|d| d.display().to_string()));
    args.extend([
        "--output-dir".into(),
        merged.display().to_string(),
        "--no-plots".into(),
    ]);
    Loadgen::spawn(&root.join("merge.log"), &args)?
        .finish(Duration::from_secs(60))
        .await?;
    check_merge(&dirs, &merged)
}

fn check_merge(dirs: &[PathBuf], merged: &Path) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for (k, dir) in dirs.iter().enumerate() {
        let records = raw_records(dir)?;
        ensure!(
            records.len() == WORKER_REQUESTS / WORKERS,
            "worker {k} sent {} requests",
            records.len()
        );
        ensure!(
            records.iter().all(|r| r["id"]
                .as_u64()
                .is_some_and(|i| i % WORKERS as u64 == k as u64)),
            "worker {k} sent another worker's requests"
        );
        all.extend(records);
    }
    let mut ids: Vec<u64> = all.iter().filter_map(|r| r["id"].as_u64()).collect();
    ids.sort_unstable();
    ensure!(
        ids == (0..WORKER_REQUESTS as u64).collect::<Vec<_>>(),
        "worker shares overlap or miss a request: {ids:?}"
    );
    let result = read_json(&merged.join("result.json"))?;
    let step = &result["steps"][0];
    let sent = step["requests"]["sent"].as_u64();
    ensure!(sent == Some(WORKER_REQUESTS as u64), "merged sent: {step}");
    ensure!(
        step["requests"]["errors"] == 0,
        "errors through a healthy cluster: {step}"
    );
    ensure!(
        step["requests"]["counted"] == WORKER_REQUESTS as u64,
        "{step}"
    );
    let [ttft, e2e, itl] = latency_samples(&all)?;
    for (metric, values) in [("ttft", &ttft), ("e2e", &e2e), ("itl", &itl)] {
        let d = &step[metric];
        ensure!(d["count"] == values.len() as u64, "{metric} count: {d}");
        for (stat, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
            let got = d[stat].as_f64().unwrap_or(f64::NAN);
            let want = percentile(values, q);
            ensure!(
                (got - want).abs() < 1e-9,
                "{metric} {stat}: merged {got}, records {want}"
            );
        }
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let got = d["mean"].as_f64().unwrap_or(f64::NAN);
        ensure!(
            (got - mean).abs() < 1e-9,
            "{metric} mean: merged {got}, records {mean}"
        );
    }
    eprintln!(
        "merge: {} requests, ttft p50 {:.3}s, e2e p99 {:.3}s, {} ITL samples",
        WORKER_REQUESTS,
        percentile(&ttft, 0.5),
        percentile(&e2e, 0.99),
        itl.len()
    );
    Ok(())
}

fn raw_records(dir: &Path) -> anyhow::Result<Vec<Value>> {
    std::fs::read_to_string(dir.join("records.jsonl"))
        .with_context(|| format!("{}: a worker writes records.jsonl", dir.display()))?
        .lines()
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

/// Nearest-rank percentile, as loadgen's README defines it.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// TTFT, E2E and ITL samples (seconds) of the successful records, sorted.
fn latency_samples(records: &[Value]) -> anyhow::Result<[Vec<f64>; 3]> {
    let secs = |v: &Value| v.as_u64().map(|ns| ns as f64 / 1e9).context("nanoseconds");
    let (mut ttft, mut e2e, mut itl) = (Vec::new(), Vec::new(), Vec::new());
    for r in records.iter().filter(|r| r["error_kind"].is_null()) {
        let tokens = r["token_times_ns"]
            .as_array()
            .context("token_times_ns")?
            .iter()
            .map(secs)
            .collect::<anyhow::Result<Vec<f64>>>()?;
        let first = *tokens.first().context("a successful request has tokens")?;
        ttft.push(first - secs(&r["sent_ns"])?);
        e2e.push(secs(&r["end_ns"])? - secs(&r["sent_ns"])?);
        itl.extend(tokens.windows(2).map(|w| w[1] - w[0]));
    }
    for v in [&mut ttft, &mut e2e, &mut itl] {
        v.sort_by(f64::total_cmp);
    }
    Ok([ttft, e2e, itl])
}

/// Polls `check` until it yields a value or `timeout` passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    e2e::eventually(what, timeout, check).await
}

/// `{replica-N: value}` for per-replica vectors.
pub fn by_instance(values: &[f64]) -> BTreeMap<String, f64> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("replica-{}", i + 1), *v))
        .collect()
}
