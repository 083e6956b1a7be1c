//! The one seam between HTTP handlers and the engine: render and tokenize,
//! validate, submit, and hand back a stream of neutral events. Handlers only
//! turn those events into TGI or OpenAI JSON.

use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;

use crate::engine::{Finish, GenerationEvent, GenerationRequest, Token};
use crate::telemetry::{RequestParams, RequestTelemetry};

use super::chat::ChatMessage;
use super::error::{ApiError, ErrorKind};
use super::validation::{validate, Bounds, FieldNames, RawParams};
use super::AppState;

/// What the client asked to continue.
pub enum Prompt {
    Text(String),
    /// Token ids, already checked against the vocabulary.
    Ids(Vec<u32>),
    Chat(Vec<ChatMessage>),
}

/// GenAI operation names (semantic conventions).
#[derive(Debug, Clone, Copy)]
pub enum Operation {
    TextCompletion,
    Chat,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::TextCompletion => "text_completion",
            Operation::Chat => "chat",
        }
    }
}

/// A request accepted by the engine.
pub struct Submitted {
    pub events: UnboundedReceiver<GenerationEvent>,
    pub prompt_tokens: usize,
    pub seed: u64,
    /// The prompt's text (to echo it, as `return_full_text` asks).
    pub prompt_text: Option<String>,
}

/// Everything a non-streaming response needs.
pub struct Collected {
    pub tokens: Vec<Token>,
    pub text: String,
    pub finish: Finish,
}

/// One generation request, as a handler parsed it.
pub struct Generation<'a> {
    pub prompt: Prompt,
    pub params: RawParams,
    pub names: &'a FieldNames,
    pub default_max_new_tokens: u32,
    pub stream: bool,
    /// Keep only the prompt's last `n` tokens (TGI `truncate`).
    pub truncate: Option<usize>,
}

/// Tokenizes, validates and submits `g`; the request's telemetry `tel`
/// started when it arrived.
pub fn submit(
    app: &AppState,
    tel: &RequestTelemetry,
    g: Generation<'_>,
    arrived: Instant,
) -> Result<Submitted, ApiError> {
    let flavor = g.names.flavor;
    let engine = app.engine(flavor)?;
    let tok_start = Instant::now();
    let (mut prompt_ids, prompt_text) = render_and_tokenize(app, &g.prompt, g.names)?;
    if let Some(keep) = g.truncate.filter(|&k| k < prompt_ids.len()) {
        prompt_ids.drain(..prompt_ids.len() - keep);
    }
    tel.record_tokenize(tok_start, Instant::now(), prompt_ids.len());

    let info = engine.info();
    let bounds = Bounds {
        context_length: info.context_length,
        vocab_size: info.vocab_size,
        default_max_new_tokens: g.default_max_new_tokens,
        deadline: app.request_timeout().map(|t: Duration| arrived + t),
    };
    let valid = validate(&g.params, prompt_ids.len(), g.names, &bounds)?;
    tel.record_params(&RequestParams {
        max_tokens: valid.stopping.max_new_tokens,
        temperature: valid.sampling.temperature,
        top_p: valid.sampling.top_p,
        top_k: g.params.top_k,
        stream: g.stream,
    });
    let prompt_tokens = prompt_ids.len();
    let seed = valid.sampling.seed;
    let request = GenerationRequest::new(
        prompt_ids,
        valid.sampling,
        valid.stopping,
        tel.span_handle(),
    );
    let (_, events) = engine
        .submit(request)
        .map_err(|e| ApiError::from_submit(flavor, e))?;
    Ok(Submitted {
        events,
        prompt_tokens,
        seed,
        prompt_text,
    })
}

/// The prompt's token ids, and its text when it came as text.
fn render_and_tokenize(
    app: &AppState,
    prompt: &Prompt,
    names: &FieldNames,
) -> Result<(Vec<u32>, Option<String>), ApiError> {
    let f = names.flavor;
    let engine = app.engine(f)?;
    let text = match prompt {
        Prompt::Ids(ids) if ids.is_empty() => {
            return Err(ApiError::field(f, names.prompt, "must not be empty"))
        }
        Prompt::Ids(ids) => return Ok((ids.clone(), None)),
        Prompt::Text(t) if t.is_empty() => {
            return Err(ApiError::field(f, names.prompt, "must not be empty"))
        }
        Prompt::Text(t) => t.clone(),
        Prompt::Chat(messages) if messages.is_empty() => {
            return Err(ApiError::field(
                f,
                "messages",
                "must hold at least one message",
            ))
        }
        Prompt::Chat(messages) => app
            .chat_template(f)?
            .render(messages)
            .map_err(|e| ApiError::field(f, "messages", e))?,
    };
    let ids = engine
        .tokenizer()
        .encode(&text, true)
        .map_err(|e| ApiError::field(f, names.prompt, e))?;
    Ok((ids, Some(text)))
}

/// Waits for the whole generation.
pub async fn collect(mut s: Submitted, names: &FieldNames) -> Result<Collected, ApiError> {
    let flavor = names.flavor;
    let mut tokens = Vec::new();
    let mut text = String::new();
    while let Some(ev) = s.events.recv().await {
        match ev {
            GenerationEvent::Token { token, finish } => {
                text.push_str(&token.text);
                tokens.push(token);
                if let Some(finish) = finish {
                    return Ok(Collected {
                        tokens,
                        text,
                        finish,
                    });
                }
            }
            GenerationEvent::Failed(f) => return Err(ApiError::from_failure(flavor, f)),
        }
    }
    Err(engine_gone(flavor))
}

/// The engine dropped a request without a word: its thread is gone.
pub fn engine_gone(flavor: super::error::Flavor) -> ApiError {
    ApiError::new(
        flavor,
        ErrorKind::EngineUnavailable,
        "the inference engine stopped before the generation finished",
    )
}
