//! OpenAI's response and stream-chunk shapes, as typed structs.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::engine::{Finish, Token};

#[derive(Debug, Serialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens whose keys and values came from the prefix cache.
    pub cached_tokens: usize,
}

#[derive(Debug, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

impl Usage {
    pub fn of(prompt_tokens: usize, f: &Finish) -> Self {
        Self {
            prompt_tokens,
            completion_tokens: f.generated_tokens,
            total_tokens: prompt_tokens + f.generated_tokens,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: f.cached_tokens,
            },
        }
    }
}

/// Legacy completions' log-probabilities.
#[derive(Debug, Serialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    /// Per token: alternative text → log-probability.
    pub top_logprobs: Vec<Map<String, Value>>,
    pub text_offset: Vec<usize>,
}

impl CompletionLogprobs {
    pub fn of(tokens: &[Token]) -> Self {
        Self::from_offset(tokens, 0)
    }

    /// With text offsets counted from `offset` (for stream chunks).
    pub fn from_offset(tokens: &[Token], mut offset: usize) -> Self {
        let mut text_offset = Vec::with_capacity(tokens.len());
        for t in tokens {
            text_offset.push(offset);
            offset += t.text.len();
        }
        Self {
            tokens: tokens.iter().map(|t| t.text.clone()).collect(),
            token_logprobs: tokens.iter().map(|t| t.logprob).collect(),
            top_logprobs: tokens
                .iter()
                .map(|t| {
                    t.top
                        .iter()
                        .map(|a| (a.text.clone(), Value::from(a.logprob)))
                        .collect()
                })
                .collect(),
            text_offset,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CompletionChoice {
    pub index: u32,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: &'static str,
}

#[derive(Debug, Serialize)]
pub struct CompletionResponse {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    pub usage: Usage,
}

#[derive(Debug, Serialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Serialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Serialize)]
pub struct ChatLogprobs {
    pub content: Vec<TokenLogprob>,
}

impl ChatLogprobs {
    pub fn of(tokens: &[Token]) -> Self {
        Self {
            content: tokens
                .iter()
                .map(|t| TokenLogprob {
                    token: t.text.clone(),
                    logprob: t.logprob,
                    bytes: t.text.as_bytes().to_vec(),
                    top_logprobs: t
                        .top
                        .iter()
                        .map(|a| TopLogprob {
                            token: a.text.clone(),
                            logprob: a.logprob,
                            bytes: a.text.as_bytes().to_vec(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: String,
}

#[derive(Debug, Serialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ChatResponse {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}

/// One streamed choice of a legacy completion.
#[derive(Debug, Serialize)]
pub struct CompletionChunkChoice {
    pub index: u32,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<&'static str>,
}

/// What a chat chunk adds to the message.
#[derive(Debug, Serialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    pub content: String,
}

#[derive(Debug, Serialize)]
pub struct ChatChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
}

/// A stream chunk: `choices` holds one choice, or none in the usage chunk.
#[derive(Debug, Serialize)]
pub struct Chunk<C> {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<C>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}
