//! OpenAI's API: `/v1/completions`, `/v1/chat/completions` (JSON or SSE with
//! `usage` and `stream_options.include_usage`), and `/v1/models`.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::stream::{self, Stream};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::events::FinishReason;
use crate::engine::{Finish, GenerationEvent, Token};

use super::chat::ChatMessage;
use super::dispatch::{collect, dispatch, DispatchArgs, Dispatched, Operation, Prompt};
use super::error::{ApiError, ErrorKind, Flavor};
use super::json::{parse, JsonBody, WireRequest};
use super::tgi::json_event;
use super::validation::{RawParams, OPENAI_FIELDS};
use super::AppState;

/// OpenAI's default `max_tokens` for legacy completions.
const COMPLETIONS_DEFAULT_MAX_TOKENS: u32 = 16;
/// Chat requests without `max_tokens` get this many (capped by the context).
const CHAT_DEFAULT_MAX_TOKENS: u32 = 512;

/// `stop` is a string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Fields both endpoints share.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CommonParams {
    pub model: Option<String>,
    pub max_tokens: Option<u32>,
    /// Newer chat spelling of `max_tokens`.
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub repetition_penalty: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub ignore_eos: bool,
    pub n: Option<u32>,
}

impl CommonParams {
    fn raw(&self, top_logprobs: u32) -> RawParams {
        RawParams {
            max_new_tokens: self.max_completion_tokens.or(self.max_tokens),
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            stop: self.stop.clone().map(Stop::into_vec).unwrap_or_default(),
            ignore_eos: self.ignore_eos,
            top_n_tokens: top_logprobs,
            // OpenAI samples at temperature 1 unless told otherwise; 0 is greedy.
            do_sample: Some(self.temperature.is_none_or(|t| t > 0.0)),
        }
    }

    fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: String,
    /// Legacy: number of alternatives per token (0-20).
    pub logprobs: Option<u32>,
    /// Parsed from the same body by [`WireRequest::from_bytes`].
    #[serde(skip)]
    pub common: CommonParams,
}

impl WireRequest for CompletionRequest {
    const FLAVOR: Flavor = Flavor::OpenAi;

    fn from_bytes(bytes: &[u8]) -> Result<Self, ApiError> {
        let mut req: Self = parse(bytes)?;
        req.common = parse(bytes)?;
        Ok(req)
    }
}

/// Message content: a string or a list of `{type: "text", text}` parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WireMessage {
    pub role: String,
    pub content: Content,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<WireMessage>,
    #[serde(default)]
    pub logprobs: bool,
    pub top_logprobs: Option<u32>,
    /// Parsed from the same body by [`WireRequest::from_bytes`].
    #[serde(skip)]
    pub common: CommonParams,
}

impl WireRequest for ChatRequest {
    const FLAVOR: Flavor = Flavor::OpenAi;

    fn from_bytes(bytes: &[u8]) -> Result<Self, ApiError> {
        let mut req: Self = parse(bytes)?;
        req.common = parse(bytes)?;
        Ok(req)
    }
}

fn finish_reason(f: &Finish) -> &'static str {
    match f.reason {
        FinishReason::Length => "length",
        FinishReason::EosToken | FinishReason::StopSequence => "stop",
        FinishReason::Timeout => "timeout",
    }
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Rejects what this server cannot honour, naming the field.
fn check_common(app: &AppState, c: &CommonParams) -> Result<(), ApiError> {
    if let Some(model) = &c.model {
        if model != app.model_name() {
            let mut e = ApiError::new(
                ErrorKind::UnknownModel,
                format!(
                    "model: `{model}` is not served here; this server serves `{}`",
                    app.model_name()
                ),
            );
            e.param = Some("model".into());
            return Err(e.flavor(Flavor::OpenAi));
        }
    }
    if c.n.is_some_and(|n| n != 1) {
        return Err(ApiError::field("n", "only n = 1 is supported").flavor(Flavor::OpenAi));
    }
    Ok(())
}

/// Which flavour of response a stream produces.
#[derive(Clone, Copy)]
enum Kind {
    Completion,
    Chat { logprobs: bool },
}

/// `POST /v1/completions`
pub async fn completions(
    State(app): State<AppState>,
    parent: Option<Extension<opentelemetry::Context>>,
    JsonBody(req): JsonBody<CompletionRequest>,
) -> Result<Response, ApiError> {
    check_common(&app, &req.common)?;
    let top = req.logprobs.unwrap_or(0);
    let d = dispatch(
        &app,
        DispatchArgs {
            operation: Operation::TextCompletion,
            prompt: Prompt::Text(req.prompt.clone()),
            params: req.common.raw(top),
            names: &OPENAI_FIELDS,
            flavor: Flavor::OpenAi,
            default_max_new_tokens: COMPLETIONS_DEFAULT_MAX_TOKENS,
            stream: req.common.stream,
            parent: parent.map(|p| p.0),
        },
    )?;
    let id = format!("cmpl-{}", app.next_response_id());
    if req.common.stream {
        return Ok(sse(
            d,
            id,
            app.model_name().to_owned(),
            Kind::Completion,
            req.common.include_usage(),
        ));
    }
    let prompt_tokens = d.prompt_tokens;
    let c = collect(d).await.map_err(|e| e.flavor(Flavor::OpenAi))?;
    let logprobs = req.logprobs.map(|_| completion_logprobs(&c.tokens));
    Ok(Json(json!({
        "id": id,
        "object": "text_completion",
        "created": unix_now(),
        "model": app.model_name(),
        "choices": [{
            "index": 0,
            "text": c.text,
            "logprobs": logprobs,
            "finish_reason": finish_reason(&c.finish),
        }],
        "usage": usage(prompt_tokens, c.finish.generated_tokens),
    }))
    .into_response())
}

/// `POST /v1/chat/completions`
pub async fn chat_completions(
    State(app): State<AppState>,
    parent: Option<Extension<opentelemetry::Context>>,
    JsonBody(req): JsonBody<ChatRequest>,
) -> Result<Response, ApiError> {
    check_common(&app, &req.common)?;
    let messages = req
        .messages
        .iter()
        .map(|m| ChatMessage {
            role: m.role.clone(),
            content: match &m.content {
                Content::Text(t) => t.clone(),
                Content::Parts(parts) => parts
                    .iter()
                    .filter(|p| p.kind == "text")
                    .map(|p| p.text.as_str())
                    .collect(),
            },
        })
        .collect();
    let top = if req.logprobs {
        req.top_logprobs.unwrap_or(0)
    } else {
        0
    };
    let d = dispatch(
        &app,
        DispatchArgs {
            operation: Operation::Chat,
            prompt: Prompt::Chat(messages),
            params: req.common.raw(top),
            names: &OPENAI_FIELDS,
            flavor: Flavor::OpenAi,
            default_max_new_tokens: CHAT_DEFAULT_MAX_TOKENS,
            stream: req.common.stream,
            parent: parent.map(|p| p.0),
        },
    )?;
    let id = format!("chatcmpl-{}", app.next_response_id());
    let kind = Kind::Chat {
        logprobs: req.logprobs,
    };
    if req.common.stream {
        return Ok(sse(
            d,
            id,
            app.model_name().to_owned(),
            kind,
            req.common.include_usage(),
        ));
    }
    let prompt_tokens = d.prompt_tokens;
    let c = collect(d).await.map_err(|e| e.flavor(Flavor::OpenAi))?;
    let logprobs = req
        .logprobs
        .then(|| json!({ "content": chat_logprobs(&c.tokens) }));
    Ok(Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": unix_now(),
        "model": app.model_name(),
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": c.text },
            "logprobs": logprobs,
            "finish_reason": finish_reason(&c.finish),
        }],
        "usage": usage(prompt_tokens, c.finish.generated_tokens),
    }))
    .into_response())
}

fn chat_logprobs(tokens: &[Token]) -> Vec<Value> {
    tokens
        .iter()
        .map(|t| {
            json!({
                "token": t.text,
                "logprob": t.logprob,
                "bytes": t.text.as_bytes(),
                "top_logprobs": t.top.iter().map(|a| json!({
                    "token": a.text, "logprob": a.logprob, "bytes": a.text.as_bytes(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

fn completion_logprobs(tokens: &[Token]) -> Value {
    let mut offset = 0;
    let mut offsets = Vec::with_capacity(tokens.len());
    for t in tokens {
        offsets.push(offset);
        offset += t.text.len();
    }
    json!({
        "tokens": tokens.iter().map(|t| t.text.clone()).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(|t| {
            t.top.iter().map(|a| (a.text.clone(), json!(a.logprob))).collect::<serde_json::Map<_, _>>()
        }).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

struct ChunkState {
    d: Dispatched,
    id: String,
    model: String,
    created: u64,
    kind: Kind,
    include_usage: bool,
    /// SSE events ready to go out, in order.
    pending: std::collections::VecDeque<Event>,
    finished: bool,
}

impl ChunkState {
    fn chunk(&self, choice: Value, usage: Option<Value>) -> Event {
        let object = match self.kind {
            Kind::Completion => "text_completion",
            Kind::Chat { .. } => "chat.completion.chunk",
        };
        let mut body = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": if choice.is_null() { json!([]) } else { json!([choice]) },
        });
        if let Some(u) = usage {
            body["usage"] = u;
        }
        json_event(&body)
    }

    fn on_token(&mut self, token: &Token, finish: Option<&Finish>) {
        let reason = finish.map(finish_reason);
        let choice = match self.kind {
            Kind::Completion => json!({
                "index": 0,
                "text": token.text,
                "logprobs": null,
                "finish_reason": reason,
            }),
            Kind::Chat { logprobs } => json!({
                "index": 0,
                "delta": { "content": token.text },
                "logprobs": if logprobs { json!({"content": chat_logprobs(std::slice::from_ref(token))}) } else { Value::Null },
                "finish_reason": reason,
            }),
        };
        let ev = self.chunk(choice, None);
        self.pending.push_back(ev);
        if let Some(f) = finish {
            self.finished = true;
            if self.include_usage {
                let ev = self.chunk(
                    Value::Null,
                    Some(usage(f.prompt_tokens, f.generated_tokens)),
                );
                self.pending.push_back(ev);
            }
            self.pending.push_back(Event::default().data("[DONE]"));
        }
    }
}

fn sse(d: Dispatched, id: String, model: String, kind: Kind, include_usage: bool) -> Response {
    let mut st = ChunkState {
        d,
        id,
        model,
        created: unix_now(),
        kind,
        include_usage,
        pending: Default::default(),
        finished: false,
    };
    if let Kind::Chat { .. } = kind {
        // OpenAI opens a chat stream with the assistant role.
        let first = st.chunk(
            json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}),
            None,
        );
        st.pending.push_back(first);
    }
    Sse::new(chunk_stream(st))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn chunk_stream(st: ChunkState) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.finished {
                return None;
            }
            match st.d.events.recv().await? {
                GenerationEvent::Token { token, finish } => st.on_token(&token, finish.as_ref()),
                GenerationEvent::Failed(f) => {
                    st.finished = true;
                    let err = json!({"error": {"message": f.message, "type": "server_error", "code": "generation"}});
                    st.pending.push_back(json_event(&err));
                }
            }
        }
    })
}

/// `GET /v1/models`
pub async fn models(State(app): State<AppState>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": app.model_name(),
            "object": "model",
            "created": app.started_unix(),
            "owned_by": "candlelight",
        }],
    }))
}
