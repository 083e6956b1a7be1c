//! One run from flags to files: check everything, run the steps, write results.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use serde_json::{json, Value};

use crate::cli::Cli;
use crate::client::{http_client, Target};
use crate::otel::Tracing;
use crate::preflight::{self, ServerFacts};
use crate::promtext::{agreement, Scrape};
use crate::protocol::{ApiKind, GenParams};
use crate::record::{RequestRecord, RunClock};
use crate::report::{self, DatabaseOutcome, Environment, Resolved, RunResult};
use crate::runner::{run_step, RunContext, StepOutcome, StepSpec};
use crate::sampler::{scrape, ClientCpu, DeviceSampler};
use crate::stats::{summarize, ServerView, StepSummary};
use crate::sweep::{self, StepRunner};
use crate::workload::{load_jsonl, LenDist, Workload};

/// How a finished run went, for the exit status.
#[derive(Debug)]
pub struct RunReport {
    pub output_dir: PathBuf,
    pub result: RunResult,
    /// Set when results are on disk but not in PostgreSQL.
    pub database_error: Option<String>,
}

/// Words per token before calibration: an estimate for English BPE vocabularies.
const DEFAULT_TOKENS_PER_WORD: f64 = 1.3;

fn workload(cli: &Cli, tokens_per_word: Option<f64>) -> anyhow::Result<Workload> {
    let output = cli.output_len.unwrap_or(LenDist::Fixed { value: 128 });
    Ok(match &cli.dataset {
        Some(path) => Workload::Dataset {
            entries: load_jsonl(path)?,
            output,
            seed: cli.seed,
        },
        None => Workload::Synthetic {
            input: cli.input_len.unwrap_or(LenDist::Fixed { value: 128 }),
            output,
            tokens_per_word: tokens_per_word.unwrap_or(DEFAULT_TOKENS_PER_WORD),
            seed: cli.seed,
        },
    })
}

/// Runs steps with server scrapes and CPU accounting around each.
struct Executor<'a> {
    ctx: RunContext,
    cpu: &'a ClientCpu,
    metrics: bool,
    slo: Option<crate::stats::Slo>,
    outcomes: Vec<StepOutcome>,
    summaries: Vec<StepSummary>,
}

impl StepRunner for Executor<'_> {
    async fn step(&mut self, spec: StepSpec) -> anyhow::Result<StepSummary> {
        let http = &self.ctx.target.http;
        let base = &self.ctx.target.base;
        let before = if self.metrics {
            scrape(http, base).await.ok()
        } else {
            None
        };
        let outcome = run_step(&self.ctx, &spec).await?;
        let server = match before {
            Some(b) => server_view(http, base, &b, &outcome.records).await,
            None => None,
        };
        let client = self.cpu.usage(outcome.start, outcome.end);
        let summary = summarize(&outcome, self.slo.as_ref(), client, server);
        self.outcomes.push(outcome);
        self.summaries.push(summary.clone());
        Ok(summary)
    }
}

/// The server's histograms over the step, compared with the client's samples.
/// Waits (up to 2 s) for the server to record the step's last requests.
async fn server_view(
    http: &reqwest::Client,
    base: &str,
    before: &Scrape,
    records: &[RequestRecord],
) -> Option<ServerView> {
    const TTFT: &str = "gen_ai_server_time_to_first_token_seconds";
    const E2E: &str = "gen_ai_server_request_duration_seconds";
    let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.outcome.is_ok()).collect();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut after = scrape(http, base).await.ok()?;
    loop {
        let seen = after
            .histogram(E2E, &[])
            .map(|h| h.since(before.histogram(E2E, &[]).as_ref()).count);
        if seen.is_none_or(|n| n >= ok.len() as f64) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = scrape(http, base).await.ok()?;
    }
    let delta = |name: &str, filter: &[(&str, &str)]| {
        after
            .histogram(name, filter)
            .map(|h| h.since(before.histogram(name, filter).as_ref()))
    };
    let ttft: Vec<f64> = records.iter().filter_map(|r| r.ttft()).collect();
    let e2e: Vec<f64> = ok.iter().map(|r| r.e2e()).collect();
    let decode = [("candlelight_step_kind", "decode")];
    Some(ServerView {
        ttft: delta(TTFT, &[]).map(|h| agreement(&ttft, &h)),
        e2e: delta(E2E, &[]).map(|h| agreement(&e2e, &h)),
        decode_batch_size_mean: delta("candlelight_batch_size", &decode).and_then(|h| h.mean()),
    })
}

fn git_field(cli: Option<&String>, info: Option<&Value>, keys: &[&str]) -> Option<String> {
    cli.cloned().or_else(|| {
        let info = info?;
        keys.iter()
            .find_map(|k| info.get(*k)?.as_str().map(str::to_string))
    })
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// What the checks before the load established.
struct Prepared {
    work: Workload,
    facts: ServerFacts,
    model: String,
    target: Arc<Target>,
    tracing: Arc<Tracing>,
}

/// Everything before the first request of the load: flags, dataset, server
/// readiness and shape, model, calibration. Each failure is one line.
async fn prepare(cli: &Cli) -> anyhow::Result<Prepared> {
    cli.validate()?;
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let base = cli.url.trim_end_matches('/').to_string();
    // A malformed dataset is reported before the server is contacted.
    let mut work = workload(cli, None)?;
    let http = http_client().context("building the HTTP client")?;
    preflight::wait_ready(&http, &base, Duration::from_secs_f64(cli.wait)).await?;
    let facts = preflight::facts(&http, &base).await;
    let model = match (&cli.model, cli.api) {
        (Some(m), _) => m.clone(),
        (None, ApiKind::Tgi) => "tgi".to_string(),
        (None, _) => preflight::discover_model(&http, &base, facts.info.as_ref()).await?,
    };
    if let Workload::Synthetic {
        tokens_per_word, ..
    } = &mut work
    {
        *tokens_per_word = facts.tokens_per_word.unwrap_or(DEFAULT_TOKENS_PER_WORD);
    }
    let target = Arc::new(Target {
        http,
        endpoint: format!("{base}{}", cli.endpoint_path()),
        base,
        api: cli.api,
        params: GenParams {
            model: model.clone(),
            temperature: cli.temperature,
            ignore_eos: cli.ignore_eos,
            seed: None,
        },
        timeout: Duration::from_secs_f64(cli.timeout),
    });
    let tracing = Arc::new(Tracing::new(cli.otlp.as_deref()).context("setting up --otlp")?);
    preflight::probe(&target, &tracing).await?;
    // Let the server finish recording the probe, so the first step's /metrics
    // delta holds only the step's own requests.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(url) = &cli.database_url {
        if let Err(e) = crate::history::check(url).await {
            eprintln!("warning: {e}; the run goes on and its results will be written to files");
        }
    }
    Ok(Prepared {
        work,
        facts,
        model,
        target,
        tracing,
    })
}

/// Ctrl-C stops issuing requests; a second Ctrl-C exits at once.
fn on_interrupt() -> Arc<AtomicBool> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: finishing in-flight requests (Ctrl-C again to abort)");
            flag.store(true, Ordering::Relaxed);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    interrupted
}

/// Run everything the flags ask for. Errors before the load are one line each.
pub async fn run(cli: Cli, progress: bool) -> anyhow::Result<RunReport> {
    let p = prepare(&cli).await?;
    let clock = RunClock::now();
    let cpu = ClientCpu::start(clock);
    let sampler = (p.facts.metrics && cli.sample_interval > 0.0).then(|| {
        let interval = Duration::from_secs_f64(cli.sample_interval);
        DeviceSampler::start(
            p.target.http.clone(),
            p.target.base.clone(),
            interval,
            clock,
        )
    });
    let mut exec = Executor {
        ctx: RunContext {
            target: p.target.clone(),
            workload: Arc::new(p.work.clone()),
            tracing: p.tracing.clone(),
            clock,
            seed: cli.seed,
            progress,
            next_id: Arc::new(AtomicU64::new(0)),
            interrupted: on_interrupt(),
        },
        cpu: &cpu,
        metrics: p.facts.metrics,
        slo: cli.slo.clone(),
        outcomes: Vec::new(),
        summaries: Vec::new(),
    };
    let sweep_result = sweep::run(&cli, &mut exec).await?;
    cpu.stop();
    let devices = sampler.map(DeviceSampler::finish).unwrap_or_default();
    p.tracing.shutdown();
    let Executor {
        outcomes,
        mut summaries,
        ..
    } = exec;
    sweep::batch_efficiency(&mut summaries);
    let records: Vec<RequestRecord> = outcomes.into_iter().flat_map(|o| o.records).collect();
    let result = RunResult {
        schema_version: report::SCHEMA_VERSION,
        config: serde_json::to_value(&cli).context("serializing config")?,
        resolved: Resolved {
            endpoint: p.target.endpoint.clone(),
            model: p.model.clone(),
            tokens_per_word: match &p.work {
                Workload::Synthetic { .. } => p.facts.tokens_per_word,
                Workload::Dataset { .. } => None,
            },
            metrics_endpoint: p.facts.metrics,
        },
        environment: environment(&cli, &p.facts, clock),
        sweep: sweep_result,
        steps: summaries,
        device_samples: devices,
        client_cpu_samples: cpu.samples(),
        database: None,
        requests: cli.save_requests.then(|| report::request_json(&records)),
    };
    finish(&cli, result, &records, clock).await
}

/// Record the history (if asked), then write the files whatever the database did.
async fn finish(
    cli: &Cli,
    mut result: RunResult,
    records: &[RequestRecord],
    clock: RunClock,
) -> anyhow::Result<RunReport> {
    let output_dir = cli.output_dir.clone().unwrap_or_else(|| {
        let stamp = humantime::format_rfc3339_seconds(clock.wall)
            .to_string()
            .replace(':', "-");
        PathBuf::from("results").join(stamp)
    });
    let mut database_error = None;
    if let Some(url) = &cli.database_url {
        let outcome = match record_history(url, &result, &result.resolved.model).await {
            Ok(id) => DatabaseOutcome {
                written: true,
                benchmark_id: Some(id),
                error: None,
            },
            Err(e) => {
                database_error = Some(e.to_string());
                DatabaseOutcome {
                    written: false,
                    benchmark_id: None,
                    error: Some(e.to_string()),
                }
            }
        };
        result.database = Some(outcome);
    }
    report::write_files(&output_dir, &result, records)?;
    if !cli.no_plots {
        report::write_plots(&output_dir, records, &result.steps).context("writing plots")?;
    }
    Ok(RunReport {
        output_dir,
        result,
        database_error,
    })
}

fn environment(cli: &Cli, facts: &ServerFacts, clock: RunClock) -> Environment {
    let info = facts.info.as_ref();
    Environment {
        loadgen_version: env!("CARGO_PKG_VERSION"),
        hostname: sysinfo::System::host_name().ok(),
        os: sysinfo::System::long_os_version().ok(),
        cores: crate::sampler::cores(),
        started_at: rfc3339(clock.wall),
        finished_at: rfc3339(SystemTime::now()),
        server_info: facts.info.clone(),
        server_git_commit: git_field(
            cli.server_git_commit.as_ref(),
            info,
            &["git_commit", "git_sha", "commit"],
        ),
        server_git_branch: git_field(
            cli.server_git_branch.as_ref(),
            info,
            &["git_branch", "branch"],
        ),
        gpu_name: cli.gpu_name.clone().or_else(|| facts.gpu_name.clone()),
    }
}

async fn record_history(
    url: &str,
    r: &RunResult,
    model: &str,
) -> Result<i64, crate::history::HistoryError> {
    let metadata = json!({
        "model": model,
        "gpu_name": r.environment.gpu_name,
        "loadgen_config": r.config,
        "resolved": r.resolved,
        "server_info": r.environment.server_info,
        "sweep": r.sweep,
        "environment": r.environment,
    });
    let wall =
        humantime::parse_rfc3339(&r.environment.started_at).unwrap_or_else(|_| SystemTime::now());
    let steps = r
        .steps
        .iter()
        .map(|s| crate::history::StepRow {
            time: wall + Duration::from_secs_f64(s.window.end_s),
            step: s.index as i32,
            summary: serde_json::to_value(s).unwrap_or(Value::Null),
        })
        .collect();
    let run = crate::history::RunHistory {
        created_at: wall,
        git_commit: r.environment.server_git_commit.clone(),
        git_branch: r.environment.server_git_branch.clone(),
        metadata,
        devices: &r.device_samples,
        steps,
    };
    crate::history::write(url, &run).await
}
