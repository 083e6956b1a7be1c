//! What enters the engine (a validated, tokenized request) and what comes out
//! (a stream of neutral token events). The API layer maps both to wire formats.

use std::time::Instant;

use super::events::{FinishReason, SpanHandle};
use super::sampler::SamplingParams;

/// When to stop generating.
#[derive(Debug, Clone, PartialEq)]
pub struct StoppingCriteria {
    /// Hard cap on generated tokens (≥ 1).
    pub max_new_tokens: usize,
    /// Generation ends when the text contains one of these; it is not returned.
    pub stop_sequences: Vec<String>,
    /// Keep generating past the end-of-sequence token (exact lengths for load tests).
    pub ignore_eos: bool,
}

/// A request the API layer validated and tokenized.
pub struct GenerationRequest {
    pub prompt_ids: Vec<u32>,
    pub sampling: SamplingParams,
    pub stopping: StoppingCriteria,
    /// Opaque telemetry handle, handed back in engine events.
    pub span: SpanHandle,
}

impl GenerationRequest {
    /// KV positions this request may occupy at most.
    pub fn token_budget(&self) -> usize {
        self.prompt_ids.len() + self.stopping.max_new_tokens
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
    pub generated_tokens: usize,
    pub seed: u64,
    /// Admission and first-token instants (for the API's timing fields).
    pub queued_at: Instant,
    pub first_token_at: Option<Instant>,
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
    Failed(String),
}
