//! text-generation-inference's API: `/generate`, `/generate_stream`, `/tokenize`.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::stream::{self, Stream};
use serde::{Deserialize, Serialize};

use crate::engine::{GenerationEvent, Token};

use super::dispatch::{collect, dispatch, DispatchArgs, Dispatched, Operation, Prompt};
use super::error::{ApiError, Flavor};
use super::json::{JsonBody, WireRequest};
use super::validation::{RawParams, TGI_FIELDS};
use super::AppState;

/// TGI's default when `max_new_tokens` is absent.
const DEFAULT_MAX_NEW_TOKENS: u32 = 100;

#[derive(Debug, Deserialize)]
pub struct GenerateRequest {
    pub inputs: String,
    #[serde(default)]
    pub parameters: GenerateParameters,
}

impl WireRequest for GenerateRequest {
    const FLAVOR: Flavor = Flavor::Tgi;
}

#[derive(Debug, Default, Deserialize)]
pub struct GenerateParameters {
    pub max_new_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_k: Option<u32>,
    pub top_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub seed: Option<u64>,
    #[serde(default)]
    pub stop: Vec<String>,
    #[serde(default)]
    pub details: bool,
    pub do_sample: Option<bool>,
    #[serde(default)]
    pub ignore_eos: bool,
    #[serde(default)]
    pub top_n_tokens: Option<u32>,
    #[serde(default)]
    pub return_full_text: bool,
}

impl GenerateParameters {
    fn raw(&self) -> RawParams {
        RawParams {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
            top_n_tokens: self.top_n_tokens.unwrap_or(0),
            do_sample: self.do_sample,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct WireToken {
    pub id: u32,
    pub text: String,
    pub logprob: f32,
    pub special: bool,
}

impl WireToken {
    fn from_token(t: &Token) -> Self {
        Self {
            id: t.id,
            text: t.text.clone(),
            logprob: t.logprob,
            special: t.special,
        }
    }

    fn alternatives(t: &Token) -> Vec<WireToken> {
        t.top
            .iter()
            .map(|a| WireToken {
                id: a.id,
                text: a.text.clone(),
                logprob: a.logprob,
                special: false,
            })
            .collect()
    }
}

#[derive(Debug, Serialize)]
pub struct Details {
    pub finish_reason: &'static str,
    pub generated_tokens: usize,
    pub input_length: usize,
    pub seed: Option<u64>,
    pub prefill: Vec<WireToken>,
    pub tokens: Vec<WireToken>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top_tokens: Vec<Vec<WireToken>>,
}

#[derive(Debug, Serialize)]
pub struct GenerateResponse {
    pub generated_text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Details>,
}

fn args(
    req: &GenerateRequest,
    stream: bool,
    parent: Option<opentelemetry::Context>,
) -> DispatchArgs<'static> {
    DispatchArgs {
        operation: Operation::TextCompletion,
        prompt: Prompt::Text(req.inputs.clone()),
        params: req.parameters.raw(),
        names: &TGI_FIELDS,
        flavor: Flavor::Tgi,
        default_max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
        stream,
        parent,
    }
}

/// `POST /generate`
pub async fn generate(
    State(app): State<AppState>,
    parent: Option<Extension<opentelemetry::Context>>,
    JsonBody(req): JsonBody<GenerateRequest>,
) -> Result<Json<GenerateResponse>, ApiError> {
    let parent = parent.map(|p| p.0);
    let d = dispatch(&app, args(&req, false, parent))?;
    let input_length = d.prompt_tokens;
    let seed = d.seed;
    let c = collect(d).await.map_err(|e| e.flavor(Flavor::Tgi))?;
    let mut generated_text = c.text;
    if req.parameters.return_full_text {
        generated_text.insert_str(0, &req.inputs);
    }
    let details = req.parameters.details.then(|| Details {
        finish_reason: c.finish.reason.as_str(),
        generated_tokens: c.finish.generated_tokens,
        input_length,
        seed: Some(seed),
        prefill: Vec::new(),
        tokens: c.tokens.iter().map(WireToken::from_token).collect(),
        top_tokens: if req.parameters.top_n_tokens.unwrap_or(0) > 0 {
            c.tokens.iter().map(WireToken::alternatives).collect()
        } else {
            Vec::new()
        },
    });
    Ok(Json(GenerateResponse {
        generated_text,
        details,
    }))
}

#[derive(Debug, Serialize)]
struct StreamDetails {
    finish_reason: &'static str,
    generated_tokens: usize,
    input_length: usize,
    seed: Option<u64>,
}

#[derive(Debug, Serialize)]
struct StreamResponse {
    index: usize,
    token: WireToken,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    top_tokens: Vec<WireToken>,
    generated_text: Option<String>,
    details: Option<StreamDetails>,
}

/// `POST /generate_stream` (SSE, one event per token; the last carries details).
pub async fn generate_stream(
    State(app): State<AppState>,
    parent: Option<Extension<opentelemetry::Context>>,
    JsonBody(req): JsonBody<GenerateRequest>,
) -> Result<Response, ApiError> {
    let parent = parent.map(|p| p.0);
    let d = dispatch(&app, args(&req, true, parent))?;
    Ok(Sse::new(token_stream(d))
        .keep_alive(KeepAlive::default())
        .into_response())
}

struct StreamState {
    d: Dispatched,
    index: usize,
    text: String,
    done: bool,
}

fn token_stream(d: Dispatched) -> impl Stream<Item = Result<Event, Infallible>> {
    let st = StreamState {
        d,
        index: 0,
        text: String::new(),
        done: false,
    };
    stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let event = match st.d.events.recv().await? {
            GenerationEvent::Token { token, finish } => {
                st.text.push_str(&token.text);
                st.index += 1;
                st.done = finish.is_some();
                let details = finish.map(|f| StreamDetails {
                    finish_reason: f.reason.as_str(),
                    generated_tokens: f.generated_tokens,
                    input_length: st.d.prompt_tokens,
                    seed: Some(st.d.seed),
                });
                json_event(&StreamResponse {
                    index: st.index,
                    top_tokens: WireToken::alternatives(&token),
                    token: WireToken::from_token(&token),
                    generated_text: details.as_ref().map(|_| std::mem::take(&mut st.text)),
                    details,
                })
            }
            GenerationEvent::Failed(f) => {
                st.done = true;
                json_event(&serde_json::json!({"error": f.message, "error_type": "generation"}))
            }
        };
        Some((Ok(event), st))
    })
}

pub fn json_event<T: Serialize>(body: &T) -> Event {
    Event::default().json_data(body).unwrap_or_default()
}

#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    pub inputs: String,
    /// Parse `<|im_start|>` and other special tokens as single ids (default true).
    pub parse_special: Option<bool>,
}

impl WireRequest for TokenizeRequest {
    const FLAVOR: Flavor = Flavor::Tgi;
}

#[derive(Debug, Serialize)]
pub struct TokenizeResponse {
    pub ids: Vec<u32>,
    pub tokens: Vec<String>,
}

/// `POST /tokenize`
pub async fn tokenize(
    State(app): State<AppState>,
    JsonBody(req): JsonBody<TokenizeRequest>,
) -> Result<Json<TokenizeResponse>, ApiError> {
    let engine = app.engine()?;
    let tk = engine.tokenizer();
    let ids = tk
        .encode(&req.inputs, req.parse_special.unwrap_or(true))
        .map_err(|e| ApiError::field("inputs", e))?;
    let tokens = ids.iter().map(|&i| tk.token_text(i)).collect();
    Ok(Json(TokenizeResponse { ids, tokens }))
}
