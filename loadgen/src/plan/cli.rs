//! Command line, and the checks that reject contradictory flags before any load.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::durations::parse_secs;
use crate::measure::stats::Slo;
use crate::plan::schedule::Arrivals;
use crate::plan::share::Share;
use crate::plan::workload::LenDist;
use crate::send::auth::Header;
use crate::send::protocol::ApiKind;

/// Drive an LLM server with streamed requests and measure TTFT, inter-token
/// latency, TPOT, end-to-end latency and throughput.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(name = "loadgen", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Other commands; without one, loadgen runs a load.
    #[command(subcommand)]
    #[serde(skip)]
    pub command: Option<Command>,

    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:3000", env = "LOADGEN_URL")]
    pub url: String,
    /// API to speak.
    #[arg(long, value_enum, default_value = "completions")]
    pub api: ApiKind,
    /// Override the endpoint path (default depends on --api).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Model name for OpenAI APIs (default: first of /v1/models, else /info).
    #[arg(long)]
    pub model: Option<String>,
    /// Extra HTTP header on every request, 'Name: value' (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<Header>,
    /// API key, sent as `Authorization: Bearer KEY` on every request.
    #[arg(long, env = "LOADGEN_API_KEY", hide_env_values = true)]
    #[serde(serialize_with = "crate::send::auth::redact")]
    pub api_key: Option<String>,

    /// Closed loop: this many virtual users, each sending its next request when
    /// the previous one finishes.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Open loop: requests per second, on a schedule computed up front.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Inter-arrival distribution for open loop [default: poisson].
    #[arg(long, value_enum)]
    pub arrivals: Option<Arrivals>,
    /// Gamma shape for bursty arrivals (1 = Poisson, < 1 burstier); implies --arrivals gamma.
    #[arg(long)]
    pub burstiness: Option<f64>,
    /// Batch sweep: one closed-loop step per level, e.g. 1,2,4,8,16.
    #[arg(long, value_delimiter = ',')]
    pub batch_sizes: Option<Vec<usize>>,
    /// Rate sweep: find the maximum throughput, then run at fractions of it.
    #[arg(long)]
    pub rate_sweep: bool,
    /// Fractions of the maximum throughput for --rate-sweep.
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,0.75,1.0")]
    pub sweep_fractions: Vec<f64>,
    /// Concurrency of the maximum-throughput step of --rate-sweep / --slo-search.
    #[arg(long, default_value_t = 16)]
    pub sweep_concurrency: usize,

    /// Service-level objective, e.g. ttft=500ms,tpot=50ms,e2e=10s; enables goodput.
    #[arg(long)]
    pub slo: Option<Slo>,
    /// Search for the highest rate that meets --slo.
    #[arg(long)]
    pub slo_search: bool,
    /// Fraction of requests that must meet the SLO for a rate to pass.
    #[arg(long, default_value_t = 0.9)]
    pub slo_attainment: f64,
    /// Bisection steps of --slo-search.
    #[arg(long, default_value_t = 4)]
    pub slo_search_steps: u32,

    /// Run (each step) for this long, e.g. 30s.
    #[arg(long, value_parser = parse_secs)]
    pub duration: Option<f64>,
    /// Run (each step) for this many requests [default: 100 when no --duration].
    #[arg(long)]
    pub requests: Option<u64>,
    /// Leading window excluded from the statistics.
    #[arg(long, value_parser = parse_secs, default_value = "0")]
    pub warmup: f64,
    /// Trailing window excluded from the statistics.
    #[arg(long, value_parser = parse_secs, default_value = "0")]
    pub cooldown: f64,

    /// Synthetic prompt length in server tokens: N, uniform:MIN:MAX, normal:MEAN:STD [default: 128].
    #[arg(long)]
    pub input_len: Option<LenDist>,
    /// Output length in tokens (also the default for dataset lines without max_tokens) [default: 128].
    #[arg(long)]
    pub output_len: Option<LenDist>,
    /// Prompts from a JSONL file (prompt, messages, or ShareGPT conversations per line).
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Multi-turn conversations of N turns (chat API): each turn sends the whole
    /// history, the server's real replies included, plus a new user message of
    /// --input-len tokens. --requests counts requests, rounded up to whole conversations.
    #[arg(long, value_name = "N")]
    pub multi_turn: Option<u32>,
    /// Pause between a reply and the next turn of a conversation, e.g. 2s.
    #[arg(long, value_parser = parse_secs, value_name = "DUR")]
    pub think_time: Option<f64>,
    /// A system prompt of this many tokens, shared by every conversation.
    #[arg(long, value_name = "TOKENS")]
    pub system_prompt_len: Option<u32>,
    /// Every prompt starts with one of --prefixes shared prefixes of LEN tokens,
    /// followed by a unique suffix of --input-len tokens.
    #[arg(long, value_name = "LEN")]
    pub shared_prefix: Option<u32>,
    /// How many distinct shared prefixes [default: 1].
    #[arg(long, value_name = "K")]
    pub prefixes: Option<u32>,
    /// Ask the server to ignore EOS so output lengths are exact.
    #[arg(long)]
    pub ignore_eos: bool,
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Seed for the workload and the arrival schedule.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Per-request limit.
    #[arg(long, value_parser = parse_secs, default_value = "300")]
    pub timeout: f64,
    /// Wait up to this long for the server to become reachable and ready.
    #[arg(long, value_parser = parse_secs, default_value = "0")]
    pub wait: f64,

    /// Run worker K's share of the load (0-based; with --workers): request i
    /// goes to worker i mod N. Merge the workers' results with `loadgen merge`.
    #[arg(long, value_name = "K", requires = "workers")]
    pub worker_id: Option<u64>,
    /// Number of workers sharing the load (with --worker-id).
    #[arg(long, value_name = "N", requires = "worker_id")]
    pub workers: Option<u64>,

    /// Directory for result.json, CSVs and plots [default: results/<time>].
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Include every request (with inter-token gaps) in result.json.
    #[arg(long)]
    pub save_requests: bool,
    #[arg(long)]
    pub no_plots: bool,
    #[arg(long)]
    pub no_progress: bool,

    /// Record the run in PostgreSQL (postgres://user@host:port/metrics).
    #[arg(long, env = "LOADGEN_DATABASE_URL", hide_env_values = true)]
    #[serde(skip)]
    pub database_url: Option<String>,
    /// Where the run's history goes when PostgreSQL cannot take it, for
    /// `loadgen history push` [default: $XDG_STATE_HOME/candlelight/spool].
    #[arg(long, env = "LOADGEN_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Server git commit for the history (default: /info's git_commit, if any).
    #[arg(long)]
    pub server_git_commit: Option<String>,
    #[arg(long)]
    pub server_git_branch: Option<String>,
    /// Server repository for the history (default: /info's git_repository, if any).
    #[arg(long)]
    pub server_git_repository: Option<String>,
    /// Server commit message for the history (default: /info's git_commit_message, if any).
    #[arg(long)]
    pub server_git_message: Option<String>,
    /// GPU name for the history (default: from the server's /info or metrics).
    #[arg(long)]
    pub gpu_name: Option<String>,
    /// Interval of the server /metrics device scrape (0 disables it).
    #[arg(long, value_parser = parse_secs, default_value = "1")]
    pub sample_interval: f64,

    /// Export loadgen's client spans over OTLP to this endpoint (e.g. http://localhost:4317);
    /// gRPC unless OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf. Without it,
    /// OTEL_EXPORTER_OTLP_ENDPOINT applies.
    #[arg(long)]
    pub otlp: Option<String>,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Combine workers' results (from --worker-id/--workers runs) into one
    /// report, with exact percentiles over all their requests.
    Merge(MergeArgs),
    /// The PostgreSQL history.
    History {
        #[command(subcommand)]
        action: HistoryCommand,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct MergeArgs {
    /// The workers' output directories.
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Where the merged results go [default: results/<time>-merged].
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    #[arg(long)]
    pub no_plots: bool,
    /// Record the merged run in PostgreSQL.
    #[arg(long, env = "LOADGEN_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Where a run goes when PostgreSQL cannot take it [default: $XDG_STATE_HOME/candlelight/spool].
    #[arg(long, env = "LOADGEN_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum HistoryCommand {
    /// Write spooled runs (kept while PostgreSQL was down) to PostgreSQL. Each
    /// run is written once, however often it is pushed.
    Push {
        /// PostgreSQL URL (postgres://user@host:port/metrics).
        #[arg(long, env = "LOADGEN_DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// Spool files or directories [default: every file in the spool directory].
        #[arg(value_name = "SPOOL")]
        spools: Vec<PathBuf>,
        /// The spool directory [default: $XDG_STATE_HOME/candlelight/spool].
        #[arg(long, env = "LOADGEN_SPOOL_DIR")]
        spool_dir: Option<PathBuf>,
    },
}

impl Cli {
    /// This process's share of the load.
    pub fn share(&self) -> Share {
        match (self.worker_id, self.workers) {
            (Some(id), Some(of)) if of > 0 => Share { id, of },
            _ => Share::WHOLE,
        }
    }

    pub fn arrivals(&self) -> Arrivals {
        match (self.arrivals, self.burstiness) {
            (Some(a), _) => a,
            (None, Some(_)) => Arrivals::Gamma,
            (None, None) => Arrivals::Poisson,
        }
    }

    pub fn endpoint_path(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| self.api.default_path().to_string())
    }
}
