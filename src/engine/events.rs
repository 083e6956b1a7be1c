//! Plain events the engine emits for whoever observes it (telemetry, tests).
//!
//! The engine knows nothing of OpenTelemetry or HTTP: it reports what happened,
//! with the instants it happened at, and carries each request's opaque
//! [`SpanHandle`] so an observer can attach step spans to request spans.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::request::FailureKind;

/// Engine-wide request identifier (unique for the life of the process).
pub type RequestId = u64;

/// Opaque per-request value from the API layer (for example a trace context).
/// The engine only carries it along and hands it back in events.
pub type SpanHandle = Arc<dyn Any + Send + Sync>;

/// Which kind of forward pass an engine step ran: prompt tokens only, one new
/// token per running sequence only, or both in one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepKind {
    Prefill,
    Decode,
    Mixed,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Prefill => "prefill",
            StepKind::Decode => "decode",
            StepKind::Mixed => "mixed",
        }
    }

    /// The kind of a step with `prefill` prompt tokens and `decode` decode rows.
    pub fn of(prefill: usize, decode: usize) -> StepKind {
        match (prefill > 0, decode > 0) {
            (true, true) => StepKind::Mixed,
            (true, false) => StepKind::Prefill,
            _ => StepKind::Decode,
        }
    }
}

/// Why a sequence stopped generating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// `max_new_tokens` reached (or the context filled up).
    Length,
    /// The model produced its end-of-sequence token.
    EosToken,
    /// A stop sequence matched the generated text.
    StopSequence,
    /// The request's wall-clock limit (`--request-timeout`) passed mid-generation.
    Timeout,
}

impl FinishReason {
    /// TGI spelling, also used as the metric attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Length => "length",
            FinishReason::EosToken => "eos_token",
            FinishReason::StopSequence => "stop_sequence",
            FinishReason::Timeout => "timeout",
        }
    }
}

/// Why the engine refused to queue a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    QueueFull,
    ShuttingDown,
    EngineDead,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::QueueFull => "queue_full",
            RejectReason::ShuttingDown => "shutting_down",
            RejectReason::EngineDead => "engine_unavailable",
        }
    }
}

/// One request served by a step, as seen by observers.
#[derive(Clone)]
pub struct StepMember<'a> {
    pub req: RequestId,
    pub span: &'a SpanHandle,
    /// Tokens this request contributed to the step (a prompt chunk, or 1 to decode).
    pub tokens: usize,
    /// Whether those were prompt tokens (else one decode token).
    pub prefill: bool,
}

/// Everything the engine reports. Borrowed so that emitting costs no allocation.
pub enum EngineEvent<'a> {
    /// Accepted into the waiting queue.
    Queued {
        req: RequestId,
        span: &'a SpanHandle,
        prompt_tokens: usize,
        at: Instant,
    },
    /// Left the queue: its KV is reserved and its prompt starts prefilling.
    Admitted {
        req: RequestId,
        span: &'a SpanHandle,
        queued_at: Instant,
        /// Prompt tokens found in the prefix cache (not computed again).
        cached_tokens: usize,
        at: Instant,
    },
    /// One batched forward pass finished.
    StepDone {
        kind: StepKind,
        members: &'a [StepMember<'a>],
        tokens: usize,
        started: Instant,
        ended: Instant,
    },
    /// A request's first generated token was sampled.
    FirstToken {
        req: RequestId,
        span: &'a SpanHandle,
        at: Instant,
    },
    /// A later token was sampled; `since_previous` is the inter-token gap.
    Token {
        req: RequestId,
        span: &'a SpanHandle,
        since_previous: Duration,
        at: Instant,
    },
    /// A request finished normally; its KV cache is already freed.
    Finished {
        req: RequestId,
        span: &'a SpanHandle,
        reason: FinishReason,
        prompt_tokens: usize,
        output_tokens: usize,
        at: Instant,
    },
    /// The client went away (or the request was aborted); its KV cache is freed.
    Cancelled {
        req: RequestId,
        span: &'a SpanHandle,
        output_tokens: usize,
        at: Instant,
    },
    /// The request ended early (shutdown, timeout, engine failure).
    Failed {
        req: RequestId,
        span: &'a SpanHandle,
        kind: FailureKind,
        output_tokens: usize,
        at: Instant,
    },
    /// The request could not be queued (HTTP 429).
    Rejected { reason: RejectReason },
    /// The engine thread started.
    Started(EngineFacts),
    /// Scheduler gauges, reported after every step and whenever the queue changes.
    Load(LoadReport),
    /// The prompt's lookup in the prefix cache at admission.
    PrefixLookup {
        queried_tokens: usize,
        hit_tokens: usize,
    },
}

/// The engine's fixed facts, reported once when its thread starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineFacts {
    /// Compute threads the backend uses.
    pub threads: usize,
    pub kv_block_size: usize,
    pub kv_blocks: usize,
}

/// Scheduler and KV gauges after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadReport {
    pub running: usize,
    pub waiting: usize,
    /// KV held by or promised to running sequences.
    pub kv_reserved_bytes: usize,
    /// Evictable prefix-cache KV.
    pub kv_cached_bytes: usize,
    /// KV ever written (its high-water mark, resident on CPU backends).
    pub kv_touched_bytes: usize,
    pub kv_capacity_bytes: usize,
}

/// Something that watches the engine. Called on the engine thread: keep it cheap
/// and never block.
pub trait EngineObserver: Send + Sync {
    fn on_event(&self, event: &EngineEvent<'_>);
}

/// Observer that ignores everything (telemetry off).
pub struct NoopObserver;

impl EngineObserver for NoopObserver {
    fn on_event(&self, _event: &EngineEvent<'_>) {}
}
