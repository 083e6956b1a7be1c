//! Every metric, attribute and span name candlelight emits, written once.
//!
//! The instruments in [`super::metrics`], [`super::host`] and [`super::gpu`] are built
//! from these definitions, and the table in docs/telemetry.md and the dashboard test read the
//! same list ([`ALL_METRICS`]), so a rename cannot drift between code, docs and
//! dashboards. Units are UCUM, so Prometheus names come out predictable; see
//! [`MetricDef::prometheus_name`].

/// The kind of OpenTelemetry instrument behind a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Histogram,
    /// Monotonic sum: Prometheus adds `_total`.
    Counter,
    /// Last value.
    Gauge,
}

/// Which part of the system a metric describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    GenAi,
    Engine,
    Host,
    Gpu,
}

/// One metric: the single source for its name, unit, meaning, buckets and labels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricDef {
    pub name: &'static str,
    /// UCUM unit (`s`, `By`, `1`, `{token}`, ...).
    pub unit: &'static str,
    pub kind: Kind,
    pub group: Group,
    pub description: &'static str,
    /// Explicit bucket boundaries (histograms only; empty otherwise).
    pub buckets: &'static [f64],
    /// Attribute keys the metric may carry. Every value comes from a closed set.
    pub attributes: &'static [&'static str],
}

impl MetricDef {
    /// The name Prometheus shows, derived the way both the OTel Rust Prometheus
    /// exporter and the collector's `prometheus` exporter derive it: dots become
    /// underscores, a known unit adds a suffix, annotation units (`{token}`) add
    /// nothing, and counters end in `_total`.
    pub fn prometheus_name(&self) -> String {
        let mut name = sanitize(self.name);
        if let Some(suffix) = unit_suffix(self.unit) {
            name.push('_');
            name.push_str(suffix);
        }
        if self.kind == Kind::Counter {
            name.push_str("_total");
        }
        name
    }

    /// The series names a Prometheus query can select for this metric
    /// (histograms expose `_bucket`, `_sum` and `_count`).
    pub fn prometheus_series(&self) -> Vec<String> {
        let base = self.prometheus_name();
        match self.kind {
            Kind::Histogram => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{base}{s}"))
                .collect(),
            Kind::Counter | Kind::Gauge => vec![base],
        }
    }
}

/// A Prometheus label name for an OTel attribute key (`gen_ai.token.type` → `gen_ai_token_type`).
pub fn prometheus_label(attribute: &str) -> String {
    sanitize(attribute)
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The units candlelight uses and their Prometheus suffixes.
fn unit_suffix(unit: &str) -> Option<&'static str> {
    match unit {
        "s" => Some("seconds"),
        "By" => Some("bytes"),
        "1" => Some("ratio"),
        "W" => Some("watts"),
        "Cel" => Some("celsius"),
        "Hz" => Some("hertz"),
        _ => None,
    }
}

pub mod attr;
pub mod span;

use attr::*;

const GENAI_ATTRS: &[&str] = &[
    GEN_AI_OPERATION_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_PROVIDER_NAME,
];
const GENAI_ERROR_ATTRS: &[&str] = &[
    GEN_AI_OPERATION_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_PROVIDER_NAME,
    ERROR_TYPE,
];
const TOKEN_ATTRS: &[&str] = &[
    GEN_AI_OPERATION_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_TOKEN_TYPE,
];
const STEP_ATTRS: &[&str] = &[STEP_KIND];
const GPU_ATTRS: &[&str] = &[HW_ID, HW_NAME];

/// Seconds, for short engine intervals (a step, a token gap).
const FAST_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5,
    5.0,
];
/// Seconds, for waits and phases that may last the whole request.
const SLOW_SECONDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96,
    81.92,
];
const BATCH_SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
const BATCH_TOKENS: &[f64] = &[
    1.0, 4.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
];

const fn histogram(
    name: &'static str,
    unit: &'static str,
    group: Group,
    description: &'static str,
    buckets: &'static [f64],
    attributes: &'static [&'static str],
) -> MetricDef {
    MetricDef {
        name,
        unit,
        kind: Kind::Histogram,
        group,
        description,
        buckets,
        attributes,
    }
}

const fn scalar(
    kind: Kind,
    name: &'static str,
    unit: &'static str,
    group: Group,
    description: &'static str,
    attributes: &'static [&'static str],
) -> MetricDef {
    MetricDef {
        name,
        unit,
        kind,
        group,
        description,
        buckets: &[],
        attributes,
    }
}

// --- GenAI semantic conventions (bucket boundaries from the conventions) ---

pub const REQUEST_DURATION: MetricDef = histogram(
    "gen_ai.server.request.duration",
    "s",
    Group::GenAi,
    "Time from receiving a request to its last token (or its failure).",
    &[
        0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
    ],
    GENAI_ERROR_ATTRS,
);
pub const TIME_TO_FIRST_TOKEN: MetricDef = histogram(
    "gen_ai.server.time_to_first_token",
    "s",
    Group::GenAi,
    "Time from receiving a request to its first generated token.",
    &[
        0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    ],
    GENAI_ATTRS,
);
pub const TIME_PER_OUTPUT_TOKEN: MetricDef = histogram(
    "gen_ai.server.time_per_output_token",
    "s",
    Group::GenAi,
    "Average time per generated token after the first, per request.",
    &[
        0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
    ],
    GENAI_ATTRS,
);
pub const TOKEN_USAGE: MetricDef = histogram(
    "gen_ai.server.token.usage",
    "{token}",
    Group::GenAi,
    "Input and output tokens per request, by gen_ai.token.type.",
    &[
        1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
        4194304.0, 16777216.0, 67108864.0,
    ],
    TOKEN_ATTRS,
);

// --- Engine ---

pub const QUEUE_DURATION: MetricDef = histogram(
    "candlelight.queue.duration",
    "s",
    Group::Engine,
    "Time a request waited in the queue before admission.",
    SLOW_SECONDS,
    &[],
);
pub const PREFILL_DURATION: MetricDef = histogram(
    "candlelight.request.prefill.duration",
    "s",
    Group::Engine,
    "Time from a request's admission to its first token.",
    SLOW_SECONDS,
    &[],
);
pub const DECODE_DURATION: MetricDef = histogram(
    "candlelight.request.decode.duration",
    "s",
    Group::Engine,
    "Time from a request's first token to its last.",
    SLOW_SECONDS,
    &[],
);
pub const STEP_DURATION: MetricDef = histogram(
    "candlelight.step.duration",
    "s",
    Group::Engine,
    "Duration of one batched forward step, by step kind.",
    FAST_SECONDS,
    STEP_ATTRS,
);
pub const INTER_TOKEN_DURATION: MetricDef = histogram(
    "candlelight.inter_token.duration",
    "s",
    Group::Engine,
    "Gap between consecutive tokens of one request.",
    FAST_SECONDS,
    &[],
);
pub const BATCH_SIZE: MetricDef = histogram(
    "candlelight.batch.size",
    "{request}",
    Group::Engine,
    "Sequences in one engine step, by step kind.",
    BATCH_SIZES,
    STEP_ATTRS,
);
pub const BATCH_TOKENS_PER_STEP: MetricDef = histogram(
    "candlelight.batch.tokens",
    "{token}",
    Group::Engine,
    "Tokens processed in one engine step, by step kind.",
    BATCH_TOKENS,
    STEP_ATTRS,
);
pub const BATCH_LIMIT: MetricDef = scalar(
    Kind::Gauge,
    "candlelight.batch.limit",
    "{request}",
    Group::Engine,
    "Configured maximum batch size (batch fill = batch size / limit).",
    &[],
);
pub const REQUESTS_RUNNING: MetricDef = scalar(
    Kind::Gauge,
    "candlelight.requests.running",
    "{request}",
    Group::Engine,
    "Requests admitted and generating.",
    &[],
);
pub const REQUESTS_WAITING: MetricDef = scalar(
    Kind::Gauge,
    "candlelight.requests.waiting",
    "{request}",
    Group::Engine,
    "Requests queued, waiting for admission.",
    &[],
);
pub const KV_CACHE_USAGE: MetricDef = scalar(
    Kind::Gauge,
    "candlelight.kv_cache.usage",
    "By",
    Group::Engine,
    "KV cache bytes reserved by running sequences (held, or promised to them); excludes the evictable prefix cache.",
    &[],
);
pub const KV_CACHE_UTILIZATION: MetricDef = scalar(
    Kind::Gauge,
    "candlelight.kv_cache.utilization",
    "1",
    Group::Engine,
    "Reserved KV cache as a fraction of capacity (0..1); the inference gateway's KV signal.",
    &[],
);
pub const KV_CACHE_CACHED: MetricDef = scalar(
    Kind::Gauge,
    "candlelight.kv_cache.cached",
    "By",
    Group::Engine,
    "KV cache bytes holding evictable prefixes of finished requests (the prefix cache).",
    &[],
);
pub const KV_CACHE_RESIDENT: MetricDef = scalar(
    Kind::Gauge,
    "candlelight.kv_cache.resident",
    "By",
    Group::Engine,
    "KV cache memory written so far (its high-water mark): freed blocks are reused first, so RSS grows by this much with peak use, not per request.",
    &[],
);
pub const PREFIX_CACHE_QUERIES: MetricDef = scalar(
    Kind::Counter,
    "candlelight.prefix_cache.queries",
    "{token}",
    Group::Engine,
    "Prompt tokens looked up in the prefix cache at admission.",
    &[],
);
pub const PREFIX_CACHE_HITS: MetricDef = scalar(
    Kind::Counter,
    "candlelight.prefix_cache.hits",
    "{token}",
    Group::Engine,
    "Prompt tokens whose keys and values came from the prefix cache (not computed again).",
    &[],
);
pub const CACHE_CONFIG_INFO: MetricDef = scalar(
    Kind::Gauge,
    "candlelight.cache_config.info",
    "{info}",
    Group::Engine,
    "Always 1; its labels describe the paged KV cache (block size in tokens, blocks).",
    &[KV_BLOCK_SIZE, KV_BLOCKS],
);
pub const KV_CACHE_CAPACITY: MetricDef = scalar(
    Kind::Gauge,
    "candlelight.kv_cache.capacity",
    "By",
    Group::Engine,
    "KV cache bytes the engine may use.",
    &[],
);
pub const COMPUTE_THREADS: MetricDef = scalar(
    Kind::Gauge,
    "candlelight.compute.threads",
    "{thread}",
    Group::Engine,
    "Threads the backend computes on (its share of the host's cores).",
    &[],
);
pub const TOKENS_PROMPT: MetricDef = scalar(
    Kind::Counter,
    "candlelight.tokens.prompt",
    "{token}",
    Group::Engine,
    "Prompt tokens prefilled.",
    &[],
);
pub const TOKENS_GENERATED: MetricDef = scalar(
    Kind::Counter,
    "candlelight.tokens.generated",
    "{token}",
    Group::Engine,
    "Tokens generated.",
    &[],
);
pub const REQUESTS_FINISHED: MetricDef = scalar(
    Kind::Counter,
    "candlelight.requests.finished",
    "{request}",
    Group::Engine,
    "Requests that finished normally, by finish reason.",
    &[FINISH_REASON],
);
pub const REQUESTS_REJECTED: MetricDef = scalar(
    Kind::Counter,
    "candlelight.requests.rejected",
    "{request}",
    Group::Engine,
    "Requests refused before queueing (HTTP 429), by error.type.",
    &[ERROR_TYPE],
);
pub const REQUESTS_CANCELLED: MetricDef = scalar(
    Kind::Counter,
    "candlelight.requests.cancelled",
    "{request}",
    Group::Engine,
    "Requests whose client went away before they finished.",
    &[],
);
pub const REQUESTS_FAILED: MetricDef = scalar(
    Kind::Counter,
    "candlelight.requests.failed",
    "{request}",
    Group::Engine,
    "Requests the engine ended early, by error.type (shutdown, request_timeout, generation, engine_unavailable).",
    &[ERROR_TYPE],
);
pub const TELEMETRY_DROPPED: MetricDef = scalar(
    Kind::Counter,
    "candlelight.telemetry.dropped",
    "{item}",
    Group::Engine,
    "Spans and metric points dropped: export queue full or collector unreachable.",
    &[SIGNAL],
);

// --- Host (sysinfo, sampled in the background) ---

pub const PROCESS_CPU_UTILIZATION: MetricDef = scalar(
    Kind::Gauge,
    "process.cpu.utilization",
    "1",
    Group::Host,
    "CPU used by this process, as a fraction of all cores (0..1).",
    &[],
);
pub const PROCESS_MEMORY_USAGE: MetricDef = scalar(
    Kind::Gauge,
    "process.memory.usage",
    "By",
    Group::Host,
    "Resident set size of this process.",
    &[],
);
pub const SYSTEM_CPU_UTILIZATION: MetricDef = scalar(
    Kind::Gauge,
    "system.cpu.utilization",
    "1",
    Group::Host,
    "System CPU time as a fraction of all cores, by cpu.mode (busy, iowait).",
    &[CPU_MODE],
);
pub const SYSTEM_CPU_LOGICAL_COUNT: MetricDef = scalar(
    Kind::Gauge,
    "system.cpu.logical.count",
    "{cpu}",
    Group::Host,
    "Logical CPU cores of the host.",
    &[],
);
pub const SYSTEM_MEMORY_USAGE: MetricDef = scalar(
    Kind::Gauge,
    "system.memory.usage",
    "By",
    Group::Host,
    "System memory in use.",
    &[SYSTEM_MEMORY_STATE],
);
pub const SYSTEM_MEMORY_LIMIT: MetricDef = scalar(
    Kind::Gauge,
    "system.memory.limit",
    "By",
    Group::Host,
    "Total system memory.",
    &[],
);

// --- GPU (NVML, per device) ---

pub const GPU_UTILIZATION: MetricDef = scalar(
    Kind::Gauge,
    "hw.gpu.utilization",
    "1",
    Group::Gpu,
    "Fraction of time a kernel was running on the GPU.",
    GPU_ATTRS,
);
pub const GPU_MEMORY_USAGE: MetricDef = scalar(
    Kind::Gauge,
    "hw.gpu.memory.usage",
    "By",
    Group::Gpu,
    "GPU memory in use (all processes).",
    GPU_ATTRS,
);
pub const GPU_MEMORY_LIMIT: MetricDef = scalar(
    Kind::Gauge,
    "hw.gpu.memory.limit",
    "By",
    Group::Gpu,
    "GPU memory installed.",
    GPU_ATTRS,
);
pub const GPU_POWER: MetricDef = scalar(
    Kind::Gauge,
    "hw.gpu.power",
    "W",
    Group::Gpu,
    "GPU power draw.",
    GPU_ATTRS,
);
pub const GPU_TEMPERATURE: MetricDef = scalar(
    Kind::Gauge,
    "hw.gpu.temperature",
    "Cel",
    Group::Gpu,
    "GPU core temperature.",
    GPU_ATTRS,
);
pub const GPU_CLOCK_SM: MetricDef = scalar(
    Kind::Gauge,
    "hw.gpu.clock.sm",
    "Hz",
    Group::Gpu,
    "GPU streaming-multiprocessor clock.",
    GPU_ATTRS,
);
pub const GPU_PROCESS_MEMORY_USAGE: MetricDef = scalar(
    Kind::Gauge,
    "candlelight.gpu.process.memory.usage",
    "By",
    Group::Gpu,
    "GPU memory used by this process.",
    GPU_ATTRS,
);
pub const GPU_AVAILABLE: MetricDef = scalar(
    Kind::Gauge,
    "candlelight.gpu.available",
    "{device}",
    Group::Gpu,
    "NVIDIA GPUs seen through NVML (0: no GPU or no NVML). Always exported.",
    &[],
);

/// Every metric candlelight exports, in the order docs/telemetry.md lists them.
pub const ALL_METRICS: &[MetricDef] = &[
    REQUEST_DURATION,
    TIME_TO_FIRST_TOKEN,
    TIME_PER_OUTPUT_TOKEN,
    TOKEN_USAGE,
    QUEUE_DURATION,
    PREFILL_DURATION,
    DECODE_DURATION,
    STEP_DURATION,
    INTER_TOKEN_DURATION,
    BATCH_SIZE,
    BATCH_TOKENS_PER_STEP,
    BATCH_LIMIT,
    REQUESTS_RUNNING,
    REQUESTS_WAITING,
    KV_CACHE_USAGE,
    KV_CACHE_UTILIZATION,
    KV_CACHE_CACHED,
    KV_CACHE_RESIDENT,
    KV_CACHE_CAPACITY,
    PREFIX_CACHE_QUERIES,
    PREFIX_CACHE_HITS,
    CACHE_CONFIG_INFO,
    COMPUTE_THREADS,
    TOKENS_PROMPT,
    TOKENS_GENERATED,
    REQUESTS_FINISHED,
    REQUESTS_REJECTED,
    REQUESTS_CANCELLED,
    REQUESTS_FAILED,
    TELEMETRY_DROPPED,
    PROCESS_CPU_UTILIZATION,
    PROCESS_MEMORY_USAGE,
    SYSTEM_CPU_UTILIZATION,
    SYSTEM_CPU_LOGICAL_COUNT,
    SYSTEM_MEMORY_USAGE,
    SYSTEM_MEMORY_LIMIT,
    GPU_UTILIZATION,
    GPU_MEMORY_USAGE,
    GPU_MEMORY_LIMIT,
    GPU_POWER,
    GPU_TEMPERATURE,
    GPU_CLOCK_SM,
    GPU_PROCESS_MEMORY_USAGE,
    GPU_AVAILABLE,
];

/// A Markdown table of [`ALL_METRICS`] (name, Prometheus name, unit, kind, meaning)
/// for docs/telemetry.md, so the docs are generated from the code, not copied.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| Metric | Prometheus name | Unit | Kind | Labels | Meaning |\n|---|---|---|---|---|---|\n",
    );
    for m in ALL_METRICS {
        let labels: Vec<String> = m.attributes.iter().map(|a| format!("`{a}`")).collect();
        out.push_str(&format!(
            "| `{}` | `{}` | `{}` | {:?} | {} | {} |\n",
            m.name,
            m.prometheus_name(),
            m.unit,
            m.kind,
            labels.join(", "),
            m.description
        ));
    }
    out
}

#[cfg(test)]
mod tests;
