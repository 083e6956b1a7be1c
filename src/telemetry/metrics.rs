//! The request and engine instruments, built from [`super::names`].
//!
//! Instruments are created once at startup; recording is then a lock-free
//! aggregate update in the SDK, cheap enough for the engine thread. Attribute
//! values always come from closed sets (operation, step kind, finish reason,
//! error type): never prompt text, request ids or other user strings.

use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};

use super::names::{self, MetricDef};

/// Build an `f64` histogram with the definition's unit, description and buckets.
pub fn f64_histogram(meter: &Meter, def: &MetricDef) -> Histogram<f64> {
    meter
        .f64_histogram(def.name)
        .with_unit(def.unit)
        .with_description(def.description)
        .with_boundaries(def.buckets.to_vec())
        .build()
}

/// Build a `u64` histogram with the definition's unit, description and buckets.
pub fn u64_histogram(meter: &Meter, def: &MetricDef) -> Histogram<u64> {
    meter
        .u64_histogram(def.name)
        .with_unit(def.unit)
        .with_description(def.description)
        .with_boundaries(def.buckets.to_vec())
        .build()
}

pub fn u64_counter(meter: &Meter, def: &MetricDef) -> Counter<u64> {
    meter
        .u64_counter(def.name)
        .with_unit(def.unit)
        .with_description(def.description)
        .build()
}

pub fn u64_gauge(meter: &Meter, def: &MetricDef) -> Gauge<u64> {
    meter
        .u64_gauge(def.name)
        .with_unit(def.unit)
        .with_description(def.description)
        .build()
}

pub fn f64_gauge(meter: &Meter, def: &MetricDef) -> Gauge<f64> {
    meter
        .f64_gauge(def.name)
        .with_unit(def.unit)
        .with_description(def.description)
        .build()
}

/// Request (GenAI) and engine instruments.
pub struct Instruments {
    pub request_duration: Histogram<f64>,
    pub time_to_first_token: Histogram<f64>,
    pub time_per_output_token: Histogram<f64>,
    pub token_usage: Histogram<u64>,
    pub queue_duration: Histogram<f64>,
    pub prefill_duration: Histogram<f64>,
    pub decode_duration: Histogram<f64>,
    pub step_duration: Histogram<f64>,
    pub inter_token: Histogram<f64>,
    pub batch_size: Histogram<u64>,
    pub batch_tokens: Histogram<u64>,
    pub batch_limit: Gauge<u64>,
    pub running: Gauge<u64>,
    pub waiting: Gauge<u64>,
    pub kv_cache_usage: Gauge<u64>,
    pub kv_cache_utilization: Gauge<f64>,
    pub kv_cache_cached: Gauge<u64>,
    pub kv_cache_resident: Gauge<u64>,
    pub kv_cache_capacity: Gauge<u64>,
    pub prefix_cache_queries: Counter<u64>,
    pub prefix_cache_hits: Counter<u64>,
    pub cache_config: Gauge<u64>,
    pub compute_threads: Gauge<u64>,
    pub tokens_prompt: Counter<u64>,
    pub tokens_generated: Counter<u64>,
    pub finished: Counter<u64>,
    pub rejected: Counter<u64>,
    pub cancelled: Counter<u64>,
    pub failed: Counter<u64>,
}

impl std::fmt::Debug for Instruments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Instruments")
    }
}

/// The `error.type` of each way the engine ends a request early.
pub fn failure_error_type(kind: crate::engine::FailureKind) -> &'static str {
    use crate::engine::FailureKind;
    match kind {
        FailureKind::Engine => "generation",
        FailureKind::Shutdown => "shutdown",
        FailureKind::Timeout => "request_timeout",
        FailureKind::EngineDead => "engine_unavailable",
    }
}

const ERROR_TYPES_OF_FAILURES: [&str; 4] = [
    "generation",
    "shutdown",
    "request_timeout",
    "engine_unavailable",
];

impl Instruments {
    pub fn new(meter: &Meter) -> Instruments {
        Instruments {
            request_duration: f64_histogram(meter, &names::REQUEST_DURATION),
            time_to_first_token: f64_histogram(meter, &names::TIME_TO_FIRST_TOKEN),
            time_per_output_token: f64_histogram(meter, &names::TIME_PER_OUTPUT_TOKEN),
            token_usage: u64_histogram(meter, &names::TOKEN_USAGE),
            queue_duration: f64_histogram(meter, &names::QUEUE_DURATION),
            prefill_duration: f64_histogram(meter, &names::PREFILL_DURATION),
            decode_duration: f64_histogram(meter, &names::DECODE_DURATION),
            step_duration: f64_histogram(meter, &names::STEP_DURATION),
            inter_token: f64_histogram(meter, &names::INTER_TOKEN_DURATION),
            batch_size: u64_histogram(meter, &names::BATCH_SIZE),
            batch_tokens: u64_histogram(meter, &names::BATCH_TOKENS_PER_STEP),
            batch_limit: u64_gauge(meter, &names::BATCH_LIMIT),
            running: u64_gauge(meter, &names::REQUESTS_RUNNING),
            waiting: u64_gauge(meter, &names::REQUESTS_WAITING),
            kv_cache_usage: u64_gauge(meter, &names::KV_CACHE_USAGE),
            kv_cache_utilization: f64_gauge(meter, &names::KV_CACHE_UTILIZATION),
            kv_cache_cached: u64_gauge(meter, &names::KV_CACHE_CACHED),
            kv_cache_resident: u64_gauge(meter, &names::KV_CACHE_RESIDENT),
            kv_cache_capacity: u64_gauge(meter, &names::KV_CACHE_CAPACITY),
            prefix_cache_queries: u64_counter(meter, &names::PREFIX_CACHE_QUERIES),
            prefix_cache_hits: u64_counter(meter, &names::PREFIX_CACHE_HITS),
            cache_config: u64_gauge(meter, &names::CACHE_CONFIG_INFO),
            compute_threads: u64_gauge(meter, &names::COMPUTE_THREADS),
            tokens_prompt: u64_counter(meter, &names::TOKENS_PROMPT),
            tokens_generated: u64_counter(meter, &names::TOKENS_GENERATED),
            finished: u64_counter(meter, &names::REQUESTS_FINISHED),
            rejected: u64_counter(meter, &names::REQUESTS_REJECTED),
            cancelled: u64_counter(meter, &names::REQUESTS_CANCELLED),
            failed: u64_counter(meter, &names::REQUESTS_FAILED),
        }
    }

    /// Start counters and gauges at zero, so that dashboards (and `rate()`) see
    /// every series from the first scrape rather than after the first event.
    pub fn publish_zeros(&self, max_batch_size: usize) {
        use crate::engine::events::{FinishReason, RejectReason};
        use names::attr::{ERROR_TYPE, FINISH_REASON};
        use opentelemetry::KeyValue;
        self.batch_limit.record(max_batch_size as u64, &[]);
        for g in [
            &self.running,
            &self.waiting,
            &self.kv_cache_usage,
            &self.kv_cache_cached,
            &self.kv_cache_resident,
            &self.kv_cache_capacity,
        ] {
            g.record(0, &[]);
        }
        self.kv_cache_utilization.record(0.0, &[]);
        for c in [
            &self.tokens_prompt,
            &self.tokens_generated,
            &self.cancelled,
            &self.prefix_cache_queries,
            &self.prefix_cache_hits,
        ] {
            c.add(0, &[]);
        }
        for reason in [
            FinishReason::Length,
            FinishReason::EosToken,
            FinishReason::StopSequence,
        ] {
            self.finished
                .add(0, &[KeyValue::new(FINISH_REASON, reason.as_str())]);
        }
        let full = RejectReason::QueueFull.as_str();
        self.rejected.add(0, &[KeyValue::new(ERROR_TYPE, full)]);
        for kind in ERROR_TYPES_OF_FAILURES {
            self.failed.add(0, &[KeyValue::new(ERROR_TYPE, kind)]);
        }
    }
}
