//! `candlelight diagnose --prometheus URL`: the bottleneck of a live
//! deployment, read from its Prometheus, per replica.
//!
//! Every signal the [`diagnosis`] crate reads is fetched with one PromQL query
//! over the window: gauges as range queries, distributions as
//! `histogram_quantile` of the window's increase. The server's metrics reach
//! Prometheus twice (its own `/metrics`, `job="candlelight"`, and through the
//! collector, where the replica is in `exported_instance`); each signal takes
//! the direct copy of a replica and falls back to the collector's.

mod prom;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use diagnosis::{
    diagnose, render_text, Diagnosis, GpuSignals, HostSignals, ServerSignals, Signals, Summary,
    Window,
};

use crate::config::DiagnoseArgs;
use prom::{Prometheus, Replicas};

pub async fn run(args: DiagnoseArgs) -> anyhow::Result<()> {
    let prom = Prometheus::new(&args.prometheus)?;
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs_f64();
    let d = diagnose_window(&prom, end, args.window, args.step).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        print!("{}", render_text(&d));
    }
    Ok(())
}

/// The diagnosis of every replica Prometheus knows, over `window` ending at `end`.
pub async fn diagnose_window(
    prom: &Prometheus,
    end: f64,
    window: Duration,
    step: Duration,
) -> anyhow::Result<Diagnosis> {
    let span = prom::Span {
        start: end - window.as_secs_f64(),
        end,
        step: step.as_secs_f64().max(1.0),
        range: format!("{}s", window.as_secs().max(1)),
    };
    let replicas = prom.replicas(&span).await?;
    if replicas.is_empty() {
        anyhow::bail!(
            "Prometheus at {} has no candlelight series in the last {}; is it scraping the server?",
            prom.url(),
            humantime::format_duration(window)
        );
    }
    let mut parts = Vec::new();
    for instance in replicas.names() {
        let signals = signals(prom, &replicas, &instance, &span).await?;
        parts.push(diagnose(&signals));
    }
    Ok(Diagnosis::merge(parts))
}

/// Everything the rules read about one replica.
async fn signals(
    prom: &Prometheus,
    replicas: &Replicas,
    instance: &str,
    span: &prom::Span,
) -> anyhow::Result<Signals> {
    let q = prom::Queries {
        prom,
        replicas,
        instance,
        span,
    };
    let mut window = Window::new(0.0, span.end - span.start);
    window.label = Some(span.range.clone());
    Ok(Signals {
        window,
        instance: Some(instance.to_owned()),
        server: server_signals(&q).await?,
        host: host_signals(&q).await?,
        gpu: GpuSignals {
            utilization: q.series("max by (R) (hw_gpu_utilization_ratio{S})").await?,
            memory_used: q
                .series("sum by (R) (hw_gpu_memory_usage_bytes{S})")
                .await?,
            memory_limit: q.last("sum by (R) (hw_gpu_memory_limit_bytes{S})").await?,
        },
        load: None,
        sweep: Vec::new(),
    })
}

async fn server_signals(q: &prom::Queries<'_>) -> anyhow::Result<ServerSignals> {
    let decode_steps = r#"candlelight_step_kind=~"decode|mixed""#;
    let requests = "sum by (R) (increase(gen_ai_server_request_duration_seconds_count{S}[W]))";
    let errors = r#"sum by (R) (increase(gen_ai_server_request_duration_seconds_count{S, error_type!="", error_type!="cancelled"}[W]))"#;
    let rejected = "sum by (R) (increase(candlelight_requests_rejected_total{S}[W]))";
    Ok(ServerSignals {
        requests_waiting: q.series("max by (R) (candlelight_requests_waiting{S})").await?,
        requests_running: q.series("max by (R) (candlelight_requests_running{S})").await?,
        batch_limit: q.last("max by (R) (candlelight_batch_limit{S})").await?,
        decode_batch_mean: q
            .last(&format!(
                "sum by (R) (increase(candlelight_batch_size_sum{{S, {decode_steps}}}[W])) / sum by (R) (increase(candlelight_batch_size_count{{S, {decode_steps}}}[W]))"
            ))
            .await?,
        kv_cache_utilization: q
            .series("max by (R) (candlelight_kv_cache_utilization_ratio{S})")
            .await?,
        queue_time: summary(q, "candlelight_queue_duration_seconds", "").await?,
        ttft: summary(q, "gen_ai_server_time_to_first_token_seconds", "").await?,
        itl: summary(q, "candlelight_inter_token_duration_seconds", "").await?,
        e2e: summary(q, "gen_ai_server_request_duration_seconds", r#", error_type="""#).await?,
        prefill_step: summary(
            q,
            "candlelight_step_duration_seconds",
            r#", candlelight_step_kind=~"prefill|mixed""#,
        )
        .await?,
        decode_step: summary(
            q,
            "candlelight_step_duration_seconds",
            r#", candlelight_step_kind="decode""#,
        )
        .await?,
        prompt_tokens_per_s: q.last("sum by (R) (rate(candlelight_tokens_prompt_total{S}[W]))").await?,
        generated_tokens_per_s: q
            .last("sum by (R) (rate(candlelight_tokens_generated_total{S}[W]))")
            .await?,
        requests_finished: q
            .last("sum by (R) (increase(candlelight_requests_finished_total{S}[W]))")
            .await?,
        error_fraction: q.last(&format!("({errors}) / ({requests})")).await?,
        rejected_fraction: q
            .last(&format!("({rejected}) / (({rejected}) + ({requests}))"))
            .await?,
    })
}

async fn host_signals(q: &prom::Queries<'_>) -> anyhow::Result<HostSignals> {
    let mode =
        |m: &str| format!(r#"max by (R) (system_cpu_utilization_ratio{{S, cpu_mode="{m}"}})"#);
    Ok(HostSignals {
        cores: q.last("max by (R) (system_cpu_logical_count{S})").await?,
        server_threads: q
            .last("max by (R) (candlelight_compute_threads{S})")
            .await?,
        process_cpu: q
            .series("max by (R) (process_cpu_utilization_ratio{S})")
            .await?,
        host_cpu_busy: q.series(&mode("busy")).await?,
        iowait: q.series(&mode("iowait")).await?,
        steal: q.series(&mode("steal")).await?,
        process_rss: q
            .series("max by (R) (process_memory_usage_bytes{S})")
            .await?,
        kv_cache_resident: q
            .series("max by (R) (candlelight_kv_cache_resident_bytes{S})")
            .await?,
        memory_limit: q.last("max by (R) (system_memory_limit_bytes{S})").await?,
    })
}

/// p50 and p99 of a histogram over the window (`filter` adds label matchers).
async fn summary(
    q: &prom::Queries<'_>,
    histogram: &str,
    filter: &str,
) -> anyhow::Result<Option<Summary>> {
    let quantile = |p: f64| {
        format!("histogram_quantile({p}, sum by (R, le) (increase({histogram}_bucket{{S{filter}}}[W])))")
    };
    let p50 = q.last(&quantile(0.5)).await?;
    let p99 = q.last(&quantile(0.99)).await?;
    let count = q
        .last(&format!(
            "sum by (R) (increase({histogram}_count{{S{filter}}}[W]))"
        ))
        .await?;
    Ok(match (p50, p99, count) {
        (Some(p50), Some(p99), Some(n)) if n > 0.0 => Some(Summary {
            count: Some(n.round() as u64),
            ..Summary::new(p50, p99)
        }),
        _ => None,
    })
}
