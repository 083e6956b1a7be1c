//! One load run from flags to files: check everything, run the steps, write
//! the results (and the history, if asked).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde_json::Value;

use crate::app::finish::{default_dir, finish, Destination, RunReport};
use crate::measure::diagnose::{diagnose_run, Placement};
use crate::measure::record::{RequestRecord, RunClock};
use crate::measure::server::{scrape, server_view};
use crate::measure::stats::{summarize, Slo, StepSummary};
use crate::measure::usage::{ClientCpuMeter, CpuSample, DeviceSample, DeviceScraper};
use crate::plan::cli::Cli;
use crate::plan::share::Share;
use crate::plan::step::StepSpec;
use crate::plan::sweep::{self, StepRunner, SweepResult};
use crate::plan::workload::{load_jsonl, Conversations, LenDist, Synthetic, Workload};
use crate::report::merge::{WorkerInfo, WorkerStep};
use crate::report::otel::{Export, Tracing};
use crate::report::{self, Environment, Resolved, RunResult};
use crate::send::auth::default_headers;
use crate::send::client::{http_client, Target};
use crate::send::preflight::{self, ServerFacts};
use crate::send::protocol::{ApiKind, GenParams};
use crate::send::runner::{run_step, Ids, RunContext, StepOutcome};

/// Words per token before calibration: an estimate for English BPE vocabularies.
const DEFAULT_TOKENS_PER_WORD: f64 = 1.3;

/// The workload the flags describe, with the uncalibrated tokens-per-word
/// estimate (the preflight replaces it with the server's own).
fn workload(cli: &Cli) -> anyhow::Result<Workload> {
    let output = cli.output_len.unwrap_or(LenDist::Fixed { value: 128 });
    if let Some(path) = &cli.dataset {
        return Ok(Workload::Dataset {
            entries: load_jsonl(path)?,
            output,
            seed: cli.seed,
        });
    }
    let text = Synthetic {
        input: cli.input_len.unwrap_or(LenDist::Fixed { value: 128 }),
        output,
        tokens_per_word: DEFAULT_TOKENS_PER_WORD,
        seed: cli.seed,
    };
    Ok(match (cli.multi_turn, cli.shared_prefix) {
        (Some(turns), _) => Workload::MultiTurn(Conversations {
            text,
            turns,
            system_prompt_len: cli.system_prompt_len,
            think_time: Duration::from_secs_f64(cli.think_time.unwrap_or(0.0)),
        }),
        (None, Some(prefix_len)) => Workload::SharedPrefix {
            text,
            prefix_len,
            prefixes: cli.prefixes.unwrap_or(1),
        },
        (None, None) => Workload::Synthetic(text),
    })
}

/// Runs steps with server scrapes and CPU accounting around each.
struct Executor<'a> {
    ctx: RunContext,
    cpu: &'a ClientCpuMeter,
    metrics: bool,
    slo: Option<Slo>,
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
    let mut work = workload(cli)?;
    let headers = default_headers(&cli.headers, cli.api_key.as_deref())?;
    let http = http_client(headers).context("building the HTTP client")?;
    preflight::wait_ready(&http, &base, Duration::from_secs_f64(cli.wait)).await?;
    let facts = preflight::facts(&http, &base).await;
    let model = match (&cli.model, cli.api) {
        (Some(m), _) => m.clone(),
        (None, ApiKind::Tgi) => "tgi".to_string(),
        (None, _) => preflight::discover_model(&http, &base, facts.info.as_ref()).await?,
    };
    work.calibrate(facts.tokens_per_word.unwrap_or(DEFAULT_TOKENS_PER_WORD));
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
    let export = Export::resolve(cli.otlp.as_deref(), &|k| std::env::var(k).ok())
        .context("exporting client spans")?;
    let tracing = Arc::new(Tracing::new(export.as_ref()).context("exporting client spans")?);
    preflight::probe(&target, &tracing).await?;
    // Let the server finish recording the probe, so the first step's /metrics
    // delta holds only the step's own requests.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(url) = &cli.database_url {
        if let Err(e) = crate::report::history::check(url).await {
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
    let ran = drive(&cli, &p, progress, clock).await?;
    let worker = (cli.share() != Share::WHOLE).then(|| WorkerInfo {
        id: cli.share().id,
        of: cli.share().of,
        clock_start_unix_ns: unix_ns(clock.wall),
        steps: ran.outcomes.iter().map(WorkerStep::of).collect(),
    });
    let records: Vec<RequestRecord> = ran.outcomes.into_iter().flat_map(|o| o.records).collect();
    let mut steps = ran.summaries;
    let where_ran = Placement {
        client_on_server_host: is_local(&p.target.base),
        client_cores: crate::measure::usage::cores(),
    };
    let diagnosis = (!steps.is_empty()).then(|| {
        diagnose_run(
            &mut steps,
            &ran.devices,
            &ran.cpu_samples,
            &records,
            &where_ran,
        )
    });
    let result = RunResult {
        schema_version: report::SCHEMA_VERSION,
        run_id: uuid::Uuid::new_v4().to_string(),
        config: serde_json::to_value(&cli).context("serializing config")?,
        resolved: Resolved {
            endpoint: p.target.endpoint.clone(),
            model: p.model.clone(),
            tokens_per_word: p.facts.tokens_per_word.filter(|_| p.work.is_synthetic()),
            metrics_endpoint: p.facts.metrics,
        },
        environment: environment(&cli, &p.facts, clock),
        sweep: ran.sweep,
        steps,
        device_samples: ran.devices,
        client_cpu_samples: ran.cpu_samples,
        database: None,
        requests: cli.save_requests.then(|| report::request_json(&records)),
        worker,
        merged_from: None,
        diagnosis,
    };
    let place = Destination {
        output_dir: cli
            .output_dir
            .clone()
            .unwrap_or_else(|| default_dir(clock.wall, "")),
        database_url: cli.database_url.clone(),
        spool_dir: cli.spool_dir.clone(),
        plots: !cli.no_plots,
    };
    finish(&place, result, &records).await
}

/// What the steps produced, with the resource use around them.
struct Ran {
    sweep: SweepResult,
    outcomes: Vec<StepOutcome>,
    summaries: Vec<StepSummary>,
    devices: Vec<DeviceSample>,
    cpu_samples: Vec<CpuSample>,
}

/// Run the steps, metering loadgen's CPU and scraping the server's devices.
async fn drive(cli: &Cli, p: &Prepared, progress: bool, clock: RunClock) -> anyhow::Result<Ran> {
    let cpu = ClientCpuMeter::start(clock);
    let scraper = (p.facts.metrics && cli.sample_interval > 0.0).then(|| {
        let interval = Duration::from_secs_f64(cli.sample_interval);
        DeviceScraper::start(
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
            ids: Arc::new(Ids::new(cli.share())),
            interrupted: on_interrupt(),
        },
        cpu: &cpu,
        metrics: p.facts.metrics,
        slo: cli.slo.clone(),
        outcomes: Vec::new(),
        summaries: Vec::new(),
    };
    let sweep = sweep::run(cli, &mut exec).await?;
    cpu.stop();
    let devices = scraper.map(DeviceScraper::finish).unwrap_or_default();
    p.tracing.shutdown().await;
    let Executor {
        outcomes,
        mut summaries,
        ..
    } = exec;
    sweep::batch_efficiency(&mut summaries);
    Ok(Ran {
        sweep,
        outcomes,
        summaries,
        devices,
        cpu_samples: cpu.samples(),
    })
}

/// Whether `base` points at this host (loadgen then shares the server's CPUs).
fn is_local(base: &str) -> bool {
    let host = reqwest::Url::parse(base)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let own = sysinfo::System::host_name().unwrap_or_default();
    matches!(host.as_str(), "localhost" | "::1" | "[::1]")
        || host.starts_with("127.")
        || (!own.is_empty() && host == own)
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn environment(cli: &Cli, facts: &ServerFacts, clock: RunClock) -> Environment {
    let info = facts.info.as_ref();
    Environment {
        loadgen_version: env!("CARGO_PKG_VERSION").to_string(),
        hostname: sysinfo::System::host_name().ok(),
        os: sysinfo::System::long_os_version().ok(),
        cores: crate::measure::usage::cores(),
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
        server_git_repository: git_field(
            cli.server_git_repository.as_ref(),
            info,
            &["git_repository", "repository"],
        ),
        server_git_message: git_field(
            cli.server_git_message.as_ref(),
            info,
            &["git_commit_message", "commit_message"],
        ),
        gpu_name: cli.gpu_name.clone().or_else(|| facts.gpu_name.clone()),
    }
}
