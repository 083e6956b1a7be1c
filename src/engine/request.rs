//! What enters the engine (a validated, tokenized request) and what comes out
//! (a stream of neutral token events). The API layer maps both to wire formats.

use std::time::Instant;

use super::events::{FinishReason, SpanHandle};
use super::sampler::SamplingParams;

/// When to stop generating.
#[derive(Debug, Clone, PartialEq)]
pub struct StoppingCriteria {
    /// Hard cap on generated tokens (≥ 1), already fitted to the context.
    pub max_new_tokens: usize,
    /// Generation ends when the text contains one of these; it is not returned.
    pub stop_sequences: Vec<String>,
    /// Keep generating past the end-of-sequence token (exact lengths for load tests).
    pub ignore_eos: bool,
    /// End-of-sequence is not allowed before this many tokens.
    pub min_new_tokens: usize,
    /// Generation ends when one of these tokens is sampled (it is not returned).
    pub stop_token_ids: Vec<u32>,
    /// Wall-clock limit: past it the request ends (`FinishReason::Timeout`, or
    /// [`FailureKind::Timeout`] if it never started).
    pub deadline: Option<Instant>,
}

/// A request the API layer validated and tokenized.
pub struct GenerationRequest {
    prompt_ids: Vec<u32>,
    pub sampling: SamplingParams,
    pub stopping: StoppingCriteria,
    /// Opaque telemetry handle, handed back in engine events.
    pub span: SpanHandle,
    /// KV positions it may occupy: prompt + max new tokens (computed once, here).
    token_budget: usize,
}

impl GenerationRequest {
    pub fn new(
        prompt_ids: Vec<u32>,
        sampling: SamplingParams,
        stopping: StoppingCriteria,
        span: SpanHandle,
    ) -> Self {
        let token_budget = prompt_ids.len() + stopping.max_new_tokens;
        Self {
            prompt_ids,
            sampling,
            stopping,
            span,
            token_budget,
        }
    }

    pub fn prompt_ids(&self) -> &[u32] {
        &self.prompt_ids
    }

    pub fn into_prompt_ids(self) -> Vec<u32> {
        self.prompt_ids
    }

    /// KV positions this request may occupy at most.
    pub fn token_budget(&self) -> usize {
        self.token_budget
    }
}

/// An alternative token with its log-probability.
#[derive(Debug, Clone, PartialEq)]
pub struct TopToken {
    pub id: u32,
    pub text: String,
    pub logprob: f32,
}

/// One generated token.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub id: u32,
    /// Text this token releases. May be empty: bytes of an unfinished UTF-8
    /// character, or text held back because it may start a stop sequence.
    pub text: String,
    pub logprob: f32,
    /// A control token such as end-of-sequence.
    pub special: bool,
    /// The best alternatives, when asked for (`top_n_tokens` / `top_logprobs`).
    pub top: Vec<TopToken>,
}

/// How a generation ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    pub reason: FinishReason,
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys and values came from the prefix cache.
    pub cached_tokens: usize,
    pub generated_tokens: usize,
    pub seed: u64,
    /// Admission and first-token instants (for the API's timing fields).
    pub queued_at: Instant,
    pub first_token_at: Option<Instant>,
}

/// Why a request ended without finishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The forward pass failed.
    Engine,
    /// The server shut down before the request finished (after `--shutdown-grace`).
    Shutdown,
    /// The request's deadline passed before it was admitted.
    Timeout,
    /// The engine thread stopped (it panicked); nothing more will come.
    EngineDead,
}

/// A request that ended early, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

/// What the engine sends back on a request's channel: tokens, the last one
/// carrying how the generation finished, or a failure.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    Token {
        token: Token,
        /// Set on the last token only.
        finish: Option<Finish>,
    },
    Failed(Failure),
}
