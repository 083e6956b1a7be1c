//! text-generation-inference's API: `/generate`, `/generate_stream`, `/tokenize`.

use std::convert::Infallible;
use std::time::Instant;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::stream::{self, Stream};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{GenerationEvent, Token};
use crate::telemetry::RequestTelemetry;

use super::error::{ApiError, ErrorKind, Flavor};
use super::fields;
use super::generation::{collect, engine_gone, submit, Generation, Operation, Prompt, Submitted};
use super::json::{self, Body};
use super::validation::{RawParams, TGI_FIELDS};
use super::AppState;

const F: Flavor = Flavor::Tgi;
/// TGI's default when `max_new_tokens` is absent.
const DEFAULT_MAX_NEW_TOKENS: u32 = 100;

#[derive(Debug, Default, Deserialize)]
pub struct GenerateParameters {
    pub max_new_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_k: Option<u32>,
    pub top_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<u64>,
    #[serde(default)]
    pub stop: Vec<String>,
    #[serde(default)]
    pub details: bool,
    pub do_sample: Option<bool>,
    #[serde(default)]
    pub ignore_eos: bool,
    pub top_n_tokens: Option<u32>,
    #[serde(default)]
    pub return_full_text: bool,
    /// Keep only the prompt's last `truncate` tokens.
    pub truncate: Option<usize>,
}

impl GenerateParameters {
    fn raw(&self) -> RawParams {
        RawParams {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            frequency_penalty: self.frequency_penalty,
            seed: self.seed,
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
            top_n_tokens: self.top_n_tokens.unwrap_or(0),
            do_sample: self.do_sample,
            ..Default::default()
        }
    }
}

/// A TGI request: `inputs` and `parameters`, every field checked.
struct GenerateRequest {
    inputs: String,
    parameters: GenerateParameters,
}

fn parse(body: Body) -> Result<GenerateRequest, ApiError> {
    let map = json::object(F, body, &[fields::TGI])?;
    let inputs: String = match map.get("inputs") {
        None => {
            return Err(ApiError::about(
                F,
                ErrorKind::Schema,
                "inputs",
                "missing field `inputs`",
            ))
        }
        Some(v) => json::parse(F, "inputs", v.clone())?,
    };
    let parameters = match map.get("parameters") {
        None | Some(Value::Null) => GenerateParameters::default(),
        Some(Value::Object(p)) => {
            fields::check(F, "parameters.", p, &[fields::TGI_PARAMETERS])?;
            json::parse(F, "parameters.", Value::Object(p.clone()))?
        }
        Some(_) => {
            return Err(ApiError::about(
                F,
                ErrorKind::Schema,
                "parameters",
                "expected an object",
            ))
        }
    };
    if parameters.truncate == Some(0) {
        return Err(ApiError::field(
            F,
            "parameters.truncate",
            "must be at least 1",
        ));
    }
    Ok(GenerateRequest { inputs, parameters })
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

/// Parses and submits a TGI request with telemetry started as it arrived.
fn start(
    app: &AppState,
    tel: &RequestTelemetry,
    body: Body,
    stream: bool,
) -> Result<(GenerateRequest, Submitted), ApiError> {
    let arrived = Instant::now();
    let req = parse(body)?;
    let g = Generation {
        prompt: Prompt::Text(req.inputs.clone()),
        params: req.parameters.raw(),
        names: &TGI_FIELDS,
        default_max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
        stream,
        truncate: req.parameters.truncate,
    };
    let s = submit(app, tel, g, arrived)?;
    Ok((req, s))
}

/// `POST /generate`
pub async fn generate(
    State(app): State<AppState>,
    parent: Option<Extension<opentelemetry::Context>>,
    body: Body,
) -> Response {
    let tel = app.telemetry().start_request(
        parent.as_ref().map(|p| &p.0),
        Operation::TextCompletion.as_str(),
    );
    match generate_inner(&app, &tel, body).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => {
            tel.fail(e.kind.as_str());
            e.into_response()
        }
    }
}

async fn generate_inner(
    app: &AppState,
    tel: &RequestTelemetry,
    body: Body,
) -> Result<GenerateResponse, ApiError> {
    let (req, s) = start(app, tel, body, false)?;
    let (input_length, seed) = (s.prompt_tokens, s.seed);
    let prompt_text = s.prompt_text.clone();
    let c = collect(s, &TGI_FIELDS).await?;
    let p = &req.parameters;
    let mut generated_text = c.text;
    if p.return_full_text {
        generated_text.insert_str(0, prompt_text.as_deref().unwrap_or(&req.inputs));
    }
    let details = p.details.then(|| Details {
        finish_reason: c.finish.reason.as_str(),
        generated_tokens: c.finish.generated_tokens,
        input_length,
        seed: Some(seed),
        prefill: Vec::new(),
        tokens: c.tokens.iter().map(WireToken::from_token).collect(),
        top_tokens: if p.top_n_tokens.unwrap_or(0) > 0 {
            c.tokens.iter().map(WireToken::alternatives).collect()
        } else {
            Vec::new()
        },
    });
    Ok(GenerateResponse {
        generated_text,
        details,
    })
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
    body: Body,
) -> Response {
    let tel = app.telemetry().start_request(
        parent.as_ref().map(|p| &p.0),
        Operation::TextCompletion.as_str(),
    );
    match start(&app, &tel, body, true) {
        Ok((_, s)) => Sse::new(token_stream(s))
            .keep_alive(KeepAlive::default())
            .into_response(),
        Err(e) => {
            tel.fail(e.kind.as_str());
            e.into_response()
        }
    }
}

struct StreamState {
    s: Submitted,
    index: usize,
    text: String,
    done: bool,
}

fn token_stream(s: Submitted) -> impl Stream<Item = Result<Event, Infallible>> {
    let st = StreamState {
        s,
        index: 0,
        text: String::new(),
        done: false,
    };
    stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let event = match st.s.events.recv().await {
            Some(GenerationEvent::Token { token, finish }) => {
                st.text.push_str(&token.text);
                st.index += 1;
                st.done = finish.is_some();
                let details = finish.map(|f| StreamDetails {
                    finish_reason: f.reason.as_str(),
                    generated_tokens: f.generated_tokens,
                    input_length: st.s.prompt_tokens,
                    seed: Some(st.s.seed),
                });
                json_event(&StreamResponse {
                    index: st.index,
                    top_tokens: WireToken::alternatives(&token),
                    token: WireToken::from_token(&token),
                    generated_text: details.as_ref().map(|_| std::mem::take(&mut st.text)),
                    details,
                })
            }
            Some(GenerationEvent::Failed(f)) => {
                st.done = true;
                ApiError::from_failure(F, f).sse_event()
            }
            None => {
                st.done = true;
                engine_gone(F).sse_event()
            }
        };
        Some((Ok(event), st))
    })
}

fn json_event<T: Serialize>(body: &T) -> Event {
    Event::default().json_data(body).unwrap_or_default()
}

#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    pub inputs: String,
    /// Parse `<|im_start|>` and other special tokens as single ids (default true).
    pub parse_special: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct TokenizeResponse {
    pub ids: Vec<u32>,
    pub tokens: Vec<String>,
}

/// `POST /tokenize`
pub async fn tokenize(
    State(app): State<AppState>,
    body: Body,
) -> Result<Json<TokenizeResponse>, ApiError> {
    const TOKENIZE: &[fields::Field] = &[
        fields::Field {
            name: "inputs",
            decision: fields::Decision::Honoured,
        },
        fields::Field {
            name: "parse_special",
            decision: fields::Decision::Honoured,
        },
    ];
    let map = json::object(F, body, &[TOKENIZE])?;
    let req: TokenizeRequest = json::parse(F, "", Value::Object(map))?;
    let engine = app.engine(F)?;
    let tk = engine.tokenizer();
    let ids = tk
        .encode(&req.inputs, req.parse_special.unwrap_or(true))
        .map_err(|e| ApiError::field(F, "inputs", e))?;
    let tokens = ids.iter().map(|&i| tk.token_text(i)).collect();
    Ok(Json(TokenizeResponse { ids, tokens }))
}
