//! The one seam between HTTP handlers and the engine: validate, tokenize,
//! submit, and hand back a stream of neutral events. Handlers only turn those
//! events into TGI or OpenAI JSON.

use std::time::Instant;

use tokio::sync::mpsc::UnboundedReceiver;

use crate::engine::{Finish, GenerationEvent, GenerationRequest, Token};
use crate::telemetry::{RequestInfo, RequestTelemetry};

use super::chat::ChatMessage;
use super::error::{ApiError, ErrorKind, Flavor};
use super::validation::{validate, Bounds, FieldNames, RawParams};
use super::AppState;

/// What the client asked to continue.
pub enum Prompt {
    Text(String),
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
pub struct Dispatched {
    pub events: UnboundedReceiver<GenerationEvent>,
    pub prompt_tokens: usize,
    pub seed: u64,
}

/// Everything a non-streaming response needs.
pub struct Collected {
    pub tokens: Vec<Token>,
    pub text: String,
    pub finish: Finish,
}

pub struct DispatchArgs<'a> {
    pub operation: Operation,
    pub prompt: Prompt,
    pub params: RawParams,
    pub names: &'a FieldNames,
    pub flavor: Flavor,
    pub default_max_new_tokens: u32,
    pub stream: bool,
    pub parent: Option<opentelemetry::Context>,
}

pub fn dispatch(app: &AppState, args: DispatchArgs<'_>) -> Result<Dispatched, ApiError> {
    let flavor = args.flavor;
    let engine = app.engine().map_err(|e| e.flavor(flavor))?;
    let tel = app.telemetry().start_request(
        args.parent.as_ref(),
        RequestInfo {
            operation: args.operation.as_str(),
            max_tokens: args
                .params
                .max_new_tokens
                .unwrap_or(args.default_max_new_tokens),
            temperature: args.params.temperature,
            top_p: args.params.top_p,
            top_k: args.params.top_k,
            stream: args.stream,
        },
    );
    let fail = |tel: RequestTelemetry, e: ApiError| {
        tel.fail(e.kind.as_str());
        e.flavor(flavor)
    };

    let tok_start = Instant::now();
    let prompt_ids = match render_and_tokenize(app, &args.prompt, args.names) {
        Ok(ids) => ids,
        Err(e) => return Err(fail(tel, e)),
    };
    tel.record_tokenize(tok_start, Instant::now(), prompt_ids.len());

    let bounds = Bounds {
        context_length: engine.info().context_length,
        default_max_new_tokens: args.default_max_new_tokens,
    };
    let valid = match validate(&args.params, prompt_ids.len(), args.names, &bounds) {
        Ok(v) => v,
        Err(e) => return Err(fail(tel, e)),
    };
    let prompt_tokens = prompt_ids.len();
    let seed = valid.sampling.seed;
    let request = GenerationRequest::new(
        prompt_ids,
        valid.sampling,
        valid.stopping,
        tel.span_handle(),
    );
    match engine.submit(request) {
        Ok((_, events)) => Ok(Dispatched {
            events,
            prompt_tokens,
            seed,
        }),
        Err(e) => Err(fail(tel, ApiError::from(e))),
    }
}

fn render_and_tokenize(
    app: &AppState,
    prompt: &Prompt,
    names: &FieldNames,
) -> Result<Vec<u32>, ApiError> {
    let engine = app.engine()?;
    let text = match prompt {
        Prompt::Text(t) if t.is_empty() => {
            return Err(ApiError::field(names.prompt, "must not be empty"))
        }
        Prompt::Text(t) => t.clone(),
        Prompt::Chat(messages) if messages.is_empty() => {
            return Err(ApiError::field(
                "messages",
                "must hold at least one message",
            ))
        }
        Prompt::Chat(messages) => app
            .chat_template()?
            .render(messages)
            .map_err(|e| ApiError::field("messages", e))?,
    };
    engine
        .tokenizer()
        .encode(&text, true)
        .map_err(|e| ApiError::field(names.prompt, e))
}

/// Waits for the whole generation.
pub async fn collect(mut d: Dispatched) -> Result<Collected, ApiError> {
    let mut tokens = Vec::new();
    let mut text = String::new();
    while let Some(ev) = d.events.recv().await {
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
            GenerationEvent::Failed(f) => {
                return Err(ApiError::new(ErrorKind::Generation, f.message))
            }
        }
    }
    Err(ApiError::new(
        ErrorKind::Generation,
        "the engine stopped before the generation finished",
    ))
}
