//! Command line and configuration.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::engine::SchedulerLimits;

pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Debug, Parser)]
#[command(
    name = "candlelight",
    version,
    about = "An LLM inference server you can see inside"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a GGUF model over HTTP (TGI and OpenAI APIs).
    Serve(ServeConfig),
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// GGUF model file (llama architecture). Fetch the default with scripts/fetch-model.sh.
    #[arg(long, env = "CANDLELIGHT_MODEL", default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Name clients use in the OpenAI `model` field (default: the file name without quantization).
    #[arg(long)]
    pub model_name: Option<String>,
    #[arg(long, env = "CANDLELIGHT_HOST", default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, env = "CANDLELIGHT_PORT", default_value_t = 3000)]
    pub port: u16,
    /// Sequences decoded together in one step.
    #[arg(long, default_value_t = 16)]
    pub max_batch_size: usize,
    /// KV-cache positions all running sequences may reserve together
    /// (each reserves prompt + max_new_tokens). Default: 4 × the model context.
    #[arg(long)]
    pub max_total_tokens: Option<usize>,
    /// Prompt tokens prefilled in one step. A longer prompt is prefilled in
    /// chunks over several steps, with running streams decoding in between.
    /// On CPU, prefill speed is flat beyond a few hundred tokens per step, so
    /// larger chunks would only lengthen the pauses other streams see.
    #[arg(long, default_value_t = 512)]
    pub max_prefill_tokens: usize,
    /// Requests allowed to wait for admission; more get HTTP 429.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Largest accepted request body, in bytes (larger gets HTTP 413).
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Compute threads (default: all cores).
    #[arg(long, env = "CANDLELIGHT_THREADS")]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// Telemetry flags. The standard `OTEL_*` variables work too; flags win.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Switch all telemetry off (no spans, no OTLP, no samplers; /metrics is empty).
    #[arg(long)]
    pub no_telemetry: bool,
    /// OTLP endpoint, e.g. http://localhost:4317 (else OTEL_EXPORTER_OTLP_ENDPOINT).
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf` (else OTEL_EXPORTER_OTLP_PROTOCOL).
    #[arg(long)]
    pub otlp_protocol: Option<String>,
    /// service.name (else OTEL_SERVICE_NAME, default "candlelight").
    #[arg(long)]
    pub service_name: Option<String>,
    /// Metric export interval in milliseconds (else OTEL_METRIC_EXPORT_INTERVAL).
    #[arg(long)]
    pub metric_export_interval_ms: Option<u64>,
}

impl TelemetryArgs {
    pub fn metric_export_interval(&self) -> Option<Duration> {
        self.metric_export_interval_ms.map(Duration::from_millis)
    }
}

impl ServeConfig {
    /// Engine limits, filling defaults that depend on the model.
    pub fn limits(&self, context_length: usize) -> SchedulerLimits {
        SchedulerLimits {
            max_batch_size: self.max_batch_size.max(1),
            max_total_tokens: self.max_total_tokens.unwrap_or(4 * context_length).max(1),
            max_prefill_tokens: self.max_prefill_tokens.max(1),
            max_queue: self.max_queue,
        }
    }

    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }

    /// Parses a config from arguments (for tests and embedding).
    pub fn parse_from<I, T>(args: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = Cli::parse_from(
            std::iter::once("candlelight".into())
                .chain(std::iter::once("serve".into()))
                .chain(args.into_iter().map(Into::into)),
        );
        match cli.command {
            Command::Serve(c) => c,
        }
    }
}
