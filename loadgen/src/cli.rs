//! Command line, and the checks that reject contradictory flags before any load.

use std::path::PathBuf;

use clap::Parser;
use serde::Serialize;

use crate::protocol::ApiKind;
use crate::schedule::Arrivals;
use crate::ser::parse_secs;
use crate::stats::Slo;
use crate::workload::LenDist;

/// Drive an LLM server with streamed requests and measure TTFT, inter-token
/// latency, TPOT, end-to-end latency and throughput.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(name = "loadgen", version)]
pub struct Cli {
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
    #[arg(long, env = "LOADGEN_DATABASE_URL")]
    #[serde(skip)]
    pub database_url: Option<String>,
    /// Server git commit for the history (default: /info's git_commit, if any).
    #[arg(long)]
    pub server_git_commit: Option<String>,
    #[arg(long)]
    pub server_git_branch: Option<String>,
    /// GPU name for the history (default: from the server's /info or metrics).
    #[arg(long)]
    pub gpu_name: Option<String>,
    /// Interval of the server /metrics sampler (0 disables it).
    #[arg(long, value_parser = parse_secs, default_value = "1")]
    pub sample_interval: f64,

    /// Export loadgen's client spans over OTLP/gRPC to this endpoint (e.g. http://localhost:4317).
    #[arg(long)]
    pub otlp: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FlagError(pub String);

fn bad(msg: impl Into<String>) -> Result<(), FlagError> {
    Err(FlagError(msg.into()))
}

impl Cli {
    /// Reject contradictory or out-of-range flags, one line each.
    pub fn validate(&self) -> Result<(), FlagError> {
        self.validate_shape()?;
        self.validate_limits()?;
        if self.dataset.is_some() && self.input_len.is_some() {
            return bad("--input-len applies to synthetic prompts; it contradicts --dataset");
        }
        if self.slo_search && self.slo.is_none() {
            return bad("--slo-search needs --slo");
        }
        if !(self.slo_attainment > 0.0 && self.slo_attainment <= 1.0) {
            return bad("--slo-attainment must be in (0, 1]");
        }
        if self.timeout <= 0.0 {
            return bad("--timeout must be positive");
        }
        if !(0.0..=2.0).contains(&self.temperature) {
            return bad("--temperature must be in [0, 2]");
        }
        match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => return bad(format!("--url '{}' is not an http(s) URL", self.url)),
        }
        if let Some(db) = &self.database_url {
            if let Err(e) = db.parse::<tokio_postgres::Config>() {
                return bad(format!("--database-url is not a PostgreSQL URL: {e}"));
            }
        }
        Ok(())
    }

    fn validate_shape(&self) -> Result<(), FlagError> {
        let shapes = [
            ("--concurrency", self.concurrency.is_some()),
            ("--rate", self.rate.is_some()),
            ("--batch-sizes", self.batch_sizes.is_some()),
            ("--rate-sweep", self.rate_sweep),
            ("--slo-search", self.slo_search),
        ];
        let given: Vec<&str> = shapes.iter().filter(|s| s.1).map(|s| s.0).collect();
        if given.len() > 1 {
            return bad(format!(
                "{} are mutually exclusive load shapes",
                given.join(" and ")
            ));
        }
        if self.concurrency == Some(0) {
            return bad("--concurrency must be at least 1");
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                return bad("--rate must be a positive number");
            }
        }
        if let Some(b) = &self.batch_sizes {
            if b.is_empty() || b.contains(&0) {
                return bad("--batch-sizes must be positive integers");
            }
        }
        if self
            .sweep_fractions
            .iter()
            .any(|f| !(f.is_finite() && *f > 0.0))
        {
            return bad("--sweep-fractions must be positive");
        }
        if self.sweep_concurrency == 0 {
            return bad("--sweep-concurrency must be at least 1");
        }
        let open = self.rate.is_some() || self.rate_sweep || self.slo_search;
        if (self.arrivals.is_some() || self.burstiness.is_some()) && !open {
            return bad("--arrivals/--burstiness shape an open loop; they need --rate, --rate-sweep or --slo-search");
        }
        if let Some(b) = self.burstiness {
            if self.arrivals.is_some_and(|a| a != Arrivals::Gamma) {
                return bad("--burstiness only applies to --arrivals gamma");
            }
            if !(b.is_finite() && b > 0.0) {
                return bad("--burstiness must be positive");
            }
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), FlagError> {
        if self.duration.is_some() && self.requests.is_some() {
            return bad("--duration and --requests are mutually exclusive limits");
        }
        if self.requests == Some(0) {
            return bad("--requests must be at least 1");
        }
        if let Some(d) = self.duration {
            if d <= 0.0 {
                return bad("--duration must be positive");
            }
            if self.warmup + self.cooldown >= d {
                return bad("--warmup plus --cooldown must be shorter than --duration");
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["loadgen"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("parses")
    }

    #[test]
    fn contradictions_are_one_line_errors() {
        for args in [
            &["--rate", "2", "--concurrency", "3"][..],
            &["--batch-sizes", "1,2", "--rate", "1"],
            &["--duration", "10", "--requests", "5"],
            &["--concurrency", "2", "--burstiness", "0.5"],
            &[
                "--rate",
                "2",
                "--arrivals",
                "poisson",
                "--burstiness",
                "0.5",
            ],
            &["--slo-search"],
            &["--duration", "10", "--warmup", "6", "--cooldown", "4"],
            &["--dataset", "x.jsonl", "--input-len", "5"],
            &["--url", "ftp://x"],
            &["--database-url", "mysql://nope"],
        ] {
            let err = cli(args).validate().expect_err("contradiction");
            assert!(!err.to_string().contains('\n'), "{args:?}: {err}");
        }
    }

    #[test]
    fn sensible_combinations_pass() {
        for args in [
            &["--concurrency", "4", "--duration", "30s", "--warmup", "5s"][..],
            &["--rate", "2.5", "--burstiness", "0.5", "--requests", "20"],
            &[
                "--batch-sizes",
                "1,2,4",
                "--requests",
                "8",
                "--slo",
                "ttft=1s",
            ],
            &["--rate-sweep", "--duration", "5"],
            &["--slo-search", "--slo", "ttft=500ms"],
        ] {
            cli(args)
                .validate()
                .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        assert_eq!(
            cli(&["--rate", "1", "--burstiness", "2"]).arrivals(),
            Arrivals::Gamma
        );
    }
}
