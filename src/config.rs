//! Command line and configuration.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::engine::backend::{BackendKind, Device};
use crate::engine::kv::{KvConfig, DEFAULT_BLOCK_SIZE};
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
    Serve(Box<ServeConfig>),
    /// Name the bottleneck of a running deployment from its Prometheus.
    Diagnose(DiagnoseArgs),
    /// Compare a backend's logits with candle's on the CPU (the GPU check; docs/gpu.md).
    #[command(hide = true)]
    CompareLogits(Box<crate::engine::backend::candle::compare::CompareArgs>),
    /// Write a GGUF file's metadata and tokenizer, without tensors, for
    /// `serve --synthetic` (docs/gpu.md).
    #[command(hide = true)]
    ExtractMetadata {
        /// The model file.
        input: PathBuf,
        /// The GGUF file to write.
        output: PathBuf,
    },
}

/// `candlelight diagnose`: read a window of metrics from Prometheus and say
/// what limits the deployment, per replica.
#[derive(Debug, Clone, Args)]
pub struct DiagnoseArgs {
    /// Prometheus base URL, e.g. http://localhost:9090.
    #[arg(long)]
    pub prometheus: String,
    /// How far back to look.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// Resolution of the range queries.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub step: Duration,
    /// Print the diagnosis as JSON instead of text.
    #[arg(long)]
    pub json: bool,
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
    /// Where the model runs: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, env = "CANDLELIGHT_DEVICE", default_value = "cpu")]
    pub device: Device,
    /// What computes: `native` (candlelight's CPU kernels), `candle` (candle-core,
    /// CPU or CUDA, every GGUF type), or `auto` (native when it has kernels for
    /// every matmul tensor type in the file and the device is the CPU, else candle).
    #[arg(long, env = "CANDLELIGHT_BACKEND", default_value = "auto")]
    pub backend: BackendKind,
    /// Sequences running (prefilling or decoding) at once.
    #[arg(long, default_value_t = 16)]
    pub max_batch_size: usize,
    /// KV-cache positions all running sequences may reserve together
    /// (each reserves prompt + max_new_tokens). Default: 4 × the model context,
    /// or what --kv-memory-fraction allows on a GPU.
    #[arg(long)]
    pub max_total_tokens: Option<usize>,
    /// Fraction (0-1] of the device's free memory the KV cache may take, after
    /// the weights are loaded (GPUs; the CPU reports no free-memory figure).
    #[arg(long, value_parser = parse_fraction)]
    pub kv_memory_fraction: Option<f64>,
    /// Tokens one engine step computes: one per decoding sequence plus prompt
    /// tokens. Bounds how long running streams wait between tokens when new
    /// prompts arrive (the inter-token tail), at some cost in time to first token.
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH_TOKENS)]
    pub max_batch_tokens: usize,
    /// Prompt tokens one step computes, at most (within --max-batch-tokens).
    #[arg(long, default_value_t = 512)]
    pub max_prefill_tokens: usize,
    /// KV positions the prefix cache may keep for reuse by later prompts
    /// (default: all room no running sequence needs).
    #[arg(long)]
    pub prefix_cache_tokens: Option<usize>,
    /// Do not reuse cached prompt prefixes.
    #[arg(long)]
    pub no_prefix_cache: bool,
    /// Requests allowed to wait for admission; more get HTTP 429.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Largest accepted request body, in bytes (larger gets HTTP 413).
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Compute threads (default: all cores).
    #[arg(long, env = "CANDLELIGHT_THREADS")]
    pub threads: Option<usize>,
    /// Serve seeded random weights of the model's shape instead of its tensors
    /// (candle backend; --model may then hold metadata only). For GPU checks on
    /// machines without the model file: see docs/gpu.md.
    #[arg(long, value_name = "SEED")]
    pub synthetic: Option<u64>,
    #[command(flatten)]
    pub access: AccessArgs,
    #[command(flatten)]
    pub limits: ConnectionArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// Who may call the server.
#[derive(Debug, Clone, Args)]
pub struct AccessArgs {
    /// Require `Authorization: Bearer <KEY>` on every route but /health and
    /// /live (and /metrics and /info unless --protect-metrics).
    #[arg(long, env = "CANDLELIGHT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// With --api-key, also require the key on /metrics and /info.
    #[arg(long)]
    pub protect_metrics: bool,
    /// Allow cross-origin browser requests from ORIGIN (repeatable; `*` for
    /// any). CORS is off without it.
    #[arg(long = "cors-allow-origin", value_name = "ORIGIN")]
    pub cors_allow_origin: Vec<String>,
}

/// Connection limits, timeouts and shutdown.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Open connections served at once; beyond it, requests get 503
    /// (/live and /health are still answered).
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Time a client has to send a request's headers.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's body.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub body_read_timeout: Duration,
    /// Wall-clock limit per request, from its arrival (e.g. `120s`); off by default.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub request_timeout: Option<Duration>,
    /// On SIGTERM/SIGINT, how long running requests may take to finish before
    /// they are ended (a second signal exits at once).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
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

/// A fraction in (0, 1]: 0 would leave no KV cache, and above 1 is more
/// memory than there is.
fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!(
            "`{s}`: expected a fraction above 0 and at most 1, like 0.9"
        )),
    }
}

/// Default step budget. On 2 CPU cores a step costs ~1.7 ms per token, so 64
/// tokens keep a decode stall under ~120 ms while prompts still advance 48+
/// tokens a step at 16 streams (see docs/performance.md for the measurements).
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 64;

impl ServeConfig {
    /// Engine limits, filling defaults that depend on the model (`context_length`)
    /// and, with --kv-memory-fraction, on the device's free memory.
    pub fn limits(
        &self,
        context_length: usize,
        kv_bytes_per_token: usize,
        free_memory: Option<usize>,
    ) -> SchedulerLimits {
        let from_memory = self
            .kv_memory_fraction
            .zip(free_memory)
            .map(|(f, free)| (f * free as f64) as usize / kv_bytes_per_token.max(1));
        let max_total_tokens = self
            .max_total_tokens
            .or(from_memory)
            .unwrap_or(4 * context_length)
            .max(1);
        SchedulerLimits {
            max_batch_size: self.max_batch_size.max(1),
            max_total_tokens,
            max_batch_tokens: self.max_batch_tokens.max(1),
            max_prefill_tokens: self.max_prefill_tokens.max(1),
            max_queue: self.max_queue,
        }
    }

    /// KV block pool for `limits`: enough blocks for `max_total_tokens`, and the
    /// prefix cache's cap.
    pub fn kv_config(&self, limits: &SchedulerLimits) -> KvConfig {
        let block_size = DEFAULT_BLOCK_SIZE;
        let capacity_blocks = limits.max_total_tokens.div_ceil(block_size);
        let prefix_cache_blocks = (!self.no_prefix_cache).then(|| {
            self.prefix_cache_tokens
                .map_or(capacity_blocks, |t| t / block_size)
        });
        KvConfig {
            block_size,
            capacity_blocks,
            prefix_cache_blocks,
        }
    }

    /// The name clients use in `model`: `--model-name`, else the file name
    /// without its quantization suffix.
    pub fn model_name(&self) -> String {
        self.model_name.clone().unwrap_or_else(|| {
            self.model
                .file_name()
                .and_then(|f| f.to_str())
                .map(crate::engine::model_name_from_file)
                .unwrap_or_else(|| "model".to_owned())
        })
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
            Command::Serve(c) => *c,
            _ => unreachable!("invariant: the arguments start with `serve`"),
        }
    }
}
