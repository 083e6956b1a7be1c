//! What the cluster's telemetry shows: the endpoint picker's view of a replica,
//! per-instance series in Prometheus on both paths, and the dashboards'
//! aggregates over instances.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};

use super::support::{get_text, samples, unix_now, Cluster, Prometheus};
use super::{by_instance, eventually, REQUESTS};

/// The chart's `core-metrics-extractor` mapping (read from the template) finds
/// its gauges on a live replica, and the cache info labels it names carry
/// integers, as the EPP parses them.
pub async fn endpoint_picker_mapping(cluster: &Cluster) -> anyhow::Result<()> {
    let template = std::fs::read_to_string(
        testkit::workspace_root().join("deploy/helm/candlelight/templates/_helpers.tpl"),
    )?;
    let field = |key: &str| -> anyhow::Result<String> {
        template
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
            .map(|v| v.trim().to_owned())
            .with_context(|| format!("the chart's EPP config has no {key}"))
    };
    let text = get_text(&format!("{}/metrics", cluster.replica(1, "url")?)).await?;
    for key in ["queuedRequestsSpec", "runningRequestsSpec", "kvUsageSpec"] {
        let name = field(key)?;
        let found = samples(&text, &name);
        ensure!(
            found.len() == 1,
            "{key}: {name} has {} samples on /metrics",
            found.len()
        );
        if key == "kvUsageSpec" {
            ensure!(
                (0.0..=1.0).contains(&found[0].value),
                "{name} is not a 0-1 fraction"
            );
        }
    }
    let info_name = field("cacheInfoSpec")?;
    let info = samples(&text, &info_name);
    ensure!(info.len() == 1, "{info_name}: {} samples", info.len());
    for key in ["cacheBlockSizeLabelName", "cacheNumBlocksLabelName"] {
        let label = field(key)?;
        let value = info[0].labels.get(&label).with_context(|| {
            format!(
                "{key}: {info_name} has no label {label}: {:?}",
                info[0].labels
            )
        })?;
        let n: u64 = value
            .parse()
            .with_context(|| format!("{label}={value:?} is no integer"))?;
        ensure!(n > 0, "{label} is 0");
    }
    Ok(())
}

/// Both paths hold one series per replica, equal to the replica's own counter;
/// on the collector path each replica arrived through its agent.
pub async fn per_instance_series(cluster: &Cluster, truth: &[f64]) -> anyhow::Result<()> {
    let prometheus = Prometheus::new(cluster.get("prometheus_url")?);
    let want = by_instance(truth);
    for (job, label) in [
        ("candlelight", "instance"),
        ("otel-collector", "exported_instance"),
    ] {
        let expr = format!("sum by ({label}) ({REQUESTS}{{job=\"{job}\"}})");
        let found = eventually(
            &format!("{expr} = {want:?}"),
            Duration::from_secs(60),
            || {
                let (prometheus, expr, want) = (&prometheus, &expr, &want);
                async move {
                    let got = prometheus.by(expr, label, unix_now()).await?;
                    Ok((got == *want).then_some(()))
                }
            },
        )
        .await;
        if let Err(e) = found {
            let last = prometheus.by(&expr, label, unix_now()).await?;
            bail!("job {job}: Prometheus has {last:?}, replicas {want:?}: {e}");
        }
    }
    let info = prometheus
        .query_at("target_info{job=\"otel-collector\"}", unix_now())
        .await?;
    for n in 1..=cluster.replicas()? {
        let instance = format!("replica-{n}");
        let node = format!("node-{}", cluster.replica(n, "agent")?);
        let seen = info
            .iter()
            .find(|s| s.labels.get("exported_instance") == Some(&instance))
            .and_then(|s| s.labels.get("k8s_node_name"));
        ensure!(
            seen == Some(&node),
            "{instance} should report through agent {node}, target_info says {seen:?}"
        );
    }
    Ok(())
}

/// Dashboard panels of the form `max [by (L)] (sum by (job[, L]) (rate(M[..])))`
/// checked here: the collector and direct copies are not added, instances are.
const AGGREGATE_PANELS: &[&str] = &["Request rate", "Tokens per second", "Finish reasons"];

/// Each aggregate query equals the per-instance rates summed here, per job,
/// then the larger job's; and it exceeds any single instance's rate.
pub async fn dashboards_sum_across_instances(cluster: &Cluster) -> anyhow::Result<()> {
    let prometheus = Prometheus::new(cluster.get("prometheus_url")?);
    let dir = testkit::workspace_root().join("grafana/dashboards");
    let queries: Vec<(String, String)> = super::e2e::dashboard_queries(&dir)?
        .into_iter()
        .filter(|(title, _)| AGGREGATE_PANELS.contains(&title.as_str()))
        .collect();
    ensure!(queries.len() >= 4, "aggregate panels missing: {queries:?}");
    // One evaluation time: every query below sees the same samples.
    let at = unix_now();
    for (title, expr) in &queries {
        let (metric, group) = parse_aggregate(expr)?;
        let dashboard = prometheus.by(expr, &group, at).await?;
        let mut expected: BTreeMap<String, f64> = BTreeMap::new();
        let mut largest_instance = 0.0f64;
        for (job, label) in [
            ("candlelight", "instance"),
            ("otel-collector", "exported_instance"),
        ] {
            let per_expr = format!("rate({metric}{{job=\"{job}\"}}[5m])");
            let per = prometheus.query_at(&per_expr, at).await?;
            let mut instances: BTreeMap<String, f64> = BTreeMap::new();
            let mut sums: BTreeMap<String, f64> = BTreeMap::new();
            for s in &per {
                let key = s.labels.get(&group).cloned().unwrap_or_default();
                *sums.entry(key).or_default() += s.value;
                let instance = s.labels.get(label).cloned().unwrap_or_default();
                *instances.entry(instance).or_default() += s.value;
            }
            ensure!(
                instances.len() == cluster.replicas()? && instances.values().all(|v| *v > 0.0),
                "{title}: {per_expr} at {at} should rise on every replica: {instances:?}"
            );
            largest_instance = instances.values().copied().fold(largest_instance, f64::max);
            for (key, sum) in sums {
                let e = expected.entry(key).or_insert(f64::MIN);
                *e = e.max(sum);
            }
        }
        ensure!(
            dashboard.keys().eq(expected.keys()),
            "{title}: groups {dashboard:?} vs {expected:?}"
        );
        for (key, want) in &expected {
            let got = dashboard[key];
            ensure!(
                (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                "{title} [{key}]: dashboard {got}, per-instance sum {want} ({expr})"
            );
        }
        let whole: f64 = dashboard.values().sum();
        ensure!(
            whole > largest_instance,
            "{title}: {whole} is no sum over instances (largest one {largest_instance})"
        );
        eprintln!("dashboard '{title}' = {dashboard:?} (sum over 3 instances)");
    }
    Ok(())
}

/// `(M, L)` from `max [by (L)] (sum by (job[, L]) (rate(M[..])))`; L empty if absent.
fn parse_aggregate(expr: &str) -> anyhow::Result<(String, String)> {
    let group = match expr.strip_prefix("max by (") {
        Some(rest) => rest.split_once(')').map(|(l, _)| l.trim().to_owned()),
        None if expr.starts_with("max (sum by (job)") => Some(String::new()),
        None => None,
    };
    let metric = expr
        .split_once("rate(")
        .and_then(|(_, rest)| rest.split_once('['))
        .map(|(m, _)| m.trim().to_owned());
    match (metric, group) {
        (Some(m), Some(g)) if !m.contains('{') && expr.contains("sum by (job") => Ok((m, g)),
        _ => bail!("not a max-of-sums aggregate: {expr}"),
    }
}
