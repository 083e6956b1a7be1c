//! OpenAI's API: `/v1/completions`, `/v1/chat/completions` (JSON or SSE with
//! `usage` and `stream_options.include_usage`), and `/v1/models`. Requests,
//! responses and stream chunks are typed structs ([`wire`]).

mod messages;
mod stream;
pub mod wire;

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::engine::events::FinishReason;
use crate::engine::Finish;
use crate::telemetry::RequestTelemetry;

use super::error::{ApiError, ErrorKind, Flavor};
use super::fields::{self, Field};
use super::generation::{collect, submit, Generation, Operation, Prompt};
use super::json::{self, Body};
use super::validation::{prompt_ids, RawParams, OPENAI_FIELDS};
use super::AppState;
use wire::*;

const F: Flavor = Flavor::OpenAi;
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

/// `stream_options` keys and what happens to them.
const STREAM_OPTIONS: &[Field] = &[
    Field {
        name: "include_usage",
        decision: fields::Decision::Honoured,
    },
    Field {
        name: "include_obfuscation",
        decision: fields::Decision::NoOp("candlelight pads no chunks"),
    },
];

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
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logit_bias: Option<BTreeMap<String, f32>>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
    pub stop_token_ids: Option<Vec<u32>>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub ignore_eos: bool,
    pub min_tokens: Option<u32>,
}

impl CommonParams {
    fn raw(&self, top_logprobs: u32) -> RawParams {
        RawParams {
            max_new_tokens: self.max_completion_tokens.or(self.max_tokens),
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            logit_bias: self
                .logit_bias
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            seed: self.seed,
            stop: match self.stop.clone() {
                Some(Stop::One(s)) => vec![s],
                Some(Stop::Many(v)) => v,
                None => Vec::new(),
            },
            stop_token_ids: self.stop_token_ids.clone().unwrap_or_default(),
            ignore_eos: self.ignore_eos,
            min_new_tokens: self.min_tokens,
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

    /// Parses the shared fields of `body` and refuses what cannot be honoured.
    fn parse(app: &AppState, body: &Map<String, Value>) -> Result<Self, ApiError> {
        if let Some(Value::Object(o)) = body.get("stream_options") {
            fields::check(F, "stream_options.", o, &[STREAM_OPTIONS])?;
        }
        let c: Self = json::parse(F, "", Value::Object(body.clone()))?;
        if let Some(model) = c.model.as_deref().filter(|m| *m != app.model_name()) {
            return Err(ApiError::about(
                F,
                ErrorKind::UnknownModel,
                "model",
                format!(
                    "`{model}` is not served here; this server serves `{}`",
                    app.model_name()
                ),
            ));
        }
        Ok(c)
    }
}

fn finish_reason(f: &Finish) -> &'static str {
    match f.reason {
        FinishReason::Length => "length",
        FinishReason::EosToken | FinishReason::StopSequence => "stop",
        FinishReason::Timeout => "timeout",
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs `handle` with the request's telemetry started as it arrived, ending
/// it with the error type if the request is refused.
async fn traced<Fut>(
    app: &AppState,
    parent: Option<Extension<opentelemetry::Context>>,
    operation: Operation,
    handle: impl FnOnce(RequestTelemetry) -> Fut,
) -> Response
where
    Fut: std::future::Future<Output = Result<Response, (RequestTelemetry, ApiError)>>,
{
    let tel = app
        .telemetry()
        .start_request(parent.as_ref().map(|p| &p.0), operation.as_str());
    match handle(tel).await {
        Ok(r) => r,
        Err((tel, e)) => {
            tel.fail(e.kind.as_str());
            e.into_response()
        }
    }
}

/// `POST /v1/completions`
pub async fn completions(
    State(app): State<AppState>,
    parent: Option<Extension<opentelemetry::Context>>,
    body: Body,
) -> Response {
    let arrived = Instant::now();
    traced(&app, parent, Operation::TextCompletion, |tel| async {
        match completion(&app, &tel, body, arrived).await {
            Ok(r) => Ok(r),
            Err(e) => Err((tel, e)),
        }
    })
    .await
}

async fn completion(
    app: &AppState,
    tel: &RequestTelemetry,
    body: Body,
    arrived: Instant,
) -> Result<Response, ApiError> {
    let map = json::object(F, body, &[fields::OPENAI_COMMON, fields::COMPLETIONS])?;
    let common = CommonParams::parse(app, &map)?;
    let logprobs: Option<u32> = json::field(F, &map, "logprobs")?;
    let vocab = app.engine(F)?.info().vocab_size;
    let prompt = completion_prompt(map.get("prompt"), vocab)?;
    let g = Generation {
        prompt,
        params: common.raw(logprobs.unwrap_or(0)),
        names: &OPENAI_FIELDS,
        default_max_new_tokens: COMPLETIONS_DEFAULT_MAX_TOKENS,
        stream: common.stream,
        truncate: None,
    };
    let s = submit(app, tel, g, arrived)?;
    let meta = stream::Meta {
        id: format!("cmpl-{}", app.next_response_id()),
        model: app.model_name().to_owned(),
        created: unix_now(),
    };
    if common.stream {
        let kind = stream::Kind::Completion {
            logprobs: logprobs.is_some(),
        };
        return Ok(stream::sse(s, meta, kind, common.include_usage()));
    }
    let prompt_tokens = s.prompt_tokens;
    let c = collect(s, &OPENAI_FIELDS).await?;
    Ok(Json(CompletionResponse {
        id: meta.id,
        object: "text_completion",
        created: meta.created,
        model: meta.model,
        choices: vec![CompletionChoice {
            index: 0,
            text: c.text,
            logprobs: logprobs.map(|_| CompletionLogprobs::of(&c.tokens)),
            finish_reason: finish_reason(&c.finish),
        }],
        usage: Usage::of(prompt_tokens, &c.finish),
    })
    .into_response())
}

/// `prompt`: a string, an array of token ids, or an array holding one of these.
fn completion_prompt(v: Option<&Value>, vocab: usize) -> Result<Prompt, ApiError> {
    let bad = || {
        ApiError::about(
            F,
            ErrorKind::Schema,
            "prompt",
            "expected a string or an array of token ids",
        )
    };
    match v {
        None => Err(ApiError::about(
            F,
            ErrorKind::Schema,
            "prompt",
            "missing field `prompt`",
        )),
        Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
        Some(Value::Array(items)) if items.len() == 1 && !items[0].is_number() => {
            completion_prompt(Some(&items[0]), vocab)
        }
        Some(Value::Array(items)) if items.iter().all(|i| i.is_string() || i.is_array()) => {
            Err(ApiError::about(
                F,
                ErrorKind::Unsupported,
                "prompt",
                "only one prompt per request is supported",
            ))
        }
        Some(Value::Array(items)) => {
            let ids: Vec<u64> = items
                .iter()
                .map(Value::as_u64)
                .collect::<Option<_>>()
                .ok_or_else(bad)?;
            Ok(Prompt::Ids(prompt_ids(
                &ids,
                "prompt",
                &OPENAI_FIELDS,
                vocab,
            )?))
        }
        Some(_) => Err(bad()),
    }
}

/// `POST /v1/chat/completions`
pub async fn chat_completions(
    State(app): State<AppState>,
    parent: Option<Extension<opentelemetry::Context>>,
    body: Body,
) -> Response {
    let arrived = Instant::now();
    traced(&app, parent, Operation::Chat, |tel| async {
        match chat(&app, &tel, body, arrived).await {
            Ok(r) => Ok(r),
            Err(e) => Err((tel, e)),
        }
    })
    .await
}

async fn chat(
    app: &AppState,
    tel: &RequestTelemetry,
    body: Body,
    arrived: Instant,
) -> Result<Response, ApiError> {
    let map = json::object(F, body, &[fields::OPENAI_COMMON, fields::CHAT])?;
    let common = CommonParams::parse(app, &map)?;
    let messages = messages::parse(map.get("messages"))?;
    let logprobs = json::field::<Option<bool>>(F, &map, "logprobs")?.unwrap_or(false);
    let top: Option<u32> = json::field(F, &map, "top_logprobs")?;
    let g = Generation {
        prompt: Prompt::Chat(messages),
        params: common.raw(if logprobs { top.unwrap_or(0) } else { 0 }),
        names: &OPENAI_FIELDS,
        default_max_new_tokens: CHAT_DEFAULT_MAX_TOKENS,
        stream: common.stream,
        truncate: None,
    };
    let s = submit(app, tel, g, arrived)?;
    let meta = stream::Meta {
        id: format!("chatcmpl-{}", app.next_response_id()),
        model: app.model_name().to_owned(),
        created: unix_now(),
    };
    if common.stream {
        return Ok(stream::sse(
            s,
            meta,
            stream::Kind::Chat { logprobs },
            common.include_usage(),
        ));
    }
    let prompt_tokens = s.prompt_tokens;
    let c = collect(s, &OPENAI_FIELDS).await?;
    Ok(Json(ChatResponse {
        id: meta.id,
        object: "chat.completion",
        created: meta.created,
        model: meta.model,
        choices: vec![ChatChoice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content: c.text,
            },
            logprobs: logprobs.then(|| ChatLogprobs::of(&c.tokens)),
            finish_reason: finish_reason(&c.finish),
        }],
        usage: Usage::of(prompt_tokens, &c.finish),
    })
    .into_response())
}

/// `GET /v1/models`
pub async fn models(State(app): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: vec![ModelCard {
            id: app.model_name().to_owned(),
            object: "model",
            created: app.started_unix(),
            owned_by: "candlelight",
        }],
    })
}
