//! A trivial SSE server speaking the three streaming APIs, for loadgen's own
//! unit tests and its 1,000-stream bench. It is not a stand-in for a real server
//! in the end-to-end tests: it only produces tokens on a timer.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// How the mock behaves.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Delay before the first token.
    pub first_token_delay: Duration,
    /// Delay between tokens.
    pub token_delay: Duration,
    /// Answer every generation request with plain JSON instead of SSE.
    pub wrong_shape: bool,
    /// Leave token counts out of the stream (no usage, no details).
    pub no_usage: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            first_token_delay: Duration::from_millis(5),
            token_delay: Duration::from_millis(2),
            wrong_shape: false,
            no_usage: false,
        }
    }
}

#[derive(Clone)]
struct Mock {
    cfg: Arc<MockConfig>,
    requests: Arc<AtomicU64>,
}

#[derive(Clone, Copy, PartialEq)]
enum Api {
    Tgi,
    Completions,
    Chat,
}

/// Serve until the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, cfg: MockConfig) -> std::io::Result<()> {
    let state = Mock {
        cfg: Arc::new(cfg),
        requests: Arc::new(AtomicU64::new(0)),
    };
    let app = Router::new()
        .route(
            "/generate_stream",
            post(|s, h, b| generate(s, h, b, Api::Tgi)),
        )
        .route(
            "/v1/completions",
            post(|s, h, b| generate(s, h, b, Api::Completions)),
        )
        .route(
            "/v1/chat/completions",
            post(|s, h, b| generate(s, h, b, Api::Chat)),
        )
        .route("/health", get(|| async { "ok" }))
        .route(
            "/info",
            get(|| async { Json(json!({"model_id": "mock", "version": "0"})) }),
        )
        .route(
            "/v1/models",
            get(|| async { Json(json!({"object": "list", "data": [{"id": "mock"}]})) }),
        )
        .route("/tokenize", post(tokenize))
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(listener, app).await
}

async fn tokenize(Json(body): Json<Value>) -> Json<Value> {
    let text = body.get("inputs").and_then(Value::as_str).unwrap_or("");
    let tokens: Vec<Value> = text
        .split_whitespace()
        .map(|w| json!({"text": w}))
        .collect();
    Json(Value::Array(tokens))
}

async fn metrics(State(m): State<Mock>) -> String {
    format!(
        "# TYPE mock_requests_total counter\nmock_requests_total {}\nprocess_cpu_utilization_ratio 0.25\nprocess_memory_usage_bytes 12000000\n",
        m.requests.load(Ordering::Relaxed)
    )
}

fn event(api: Api, i: u64, n: u64, prompt_tokens: u64, no_usage: bool) -> String {
    let last = i + 1 == n;
    let v = match api {
        Api::Tgi => {
            let details = (last && !no_usage).then(|| {
                json!({"finish_reason": "length", "generated_tokens": n, "input_length": prompt_tokens, "seed": null})
            });
            json!({
                "index": i,
                "token": {"id": 100 + i, "text": " tok", "logprob": -0.5, "special": false},
                "generated_text": if last { Some(" tok".repeat(n as usize)) } else { None },
                "details": details,
            })
        }
        Api::Completions => json!({
            "id": "cmpl-mock", "object": "text_completion", "created": 0, "model": "mock",
            "choices": [{"index": 0, "text": " tok", "finish_reason": if last { Some("length") } else { None }}],
        }),
        Api::Chat => json!({
            "id": "chat-mock", "object": "chat.completion.chunk", "created": 0, "model": "mock",
            "choices": [{"index": 0, "delta": {"content": " tok"}, "finish_reason": if last { Some("length") } else { None }}],
        }),
    };
    let mut out = format!("data: {v}\n\n");
    if last && api != Api::Tgi {
        if !no_usage {
            let usage = json!({"choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n}});
            out.push_str(&format!("data: {usage}\n\n"));
        }
        out.push_str("data: [DONE]\n\n");
    }
    out
}

async fn generate(
    State(m): State<Mock>,
    headers: HeaderMap,
    Json(body): Json<Value>,
    api: Api,
) -> Response {
    m.requests.fetch_add(1, Ordering::Relaxed);
    let n = body
        .pointer("/parameters/max_new_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(16)
        .max(1);
    let prompt = match api {
        Api::Chat => body.pointer("/messages/0/content"),
        Api::Tgi => body.get("inputs"),
        Api::Completions => body.get("prompt"),
    };
    let prompt_tokens = prompt
        .and_then(Value::as_str)
        .map_or(0, |p| p.split_whitespace().count() as u64);
    let trace_id = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.split('-').nth(1))
        .unwrap_or("00000000000000000000000000000000")
        .to_string();
    if m.cfg.wrong_shape {
        return (StatusCode::OK, Json(json!({"generated_text": "tok"}))).into_response();
    }
    let cfg = m.cfg.clone();
    let stream = futures::stream::unfold(0u64, move |i| {
        let cfg = cfg.clone();
        async move {
            if i >= n {
                return None;
            }
            let delay = if i == 0 {
                cfg.first_token_delay
            } else {
                cfg.token_delay
            };
            tokio::time::sleep(delay).await;
            let chunk = Bytes::from(event(api, i, n, prompt_tokens, cfg.no_usage));
            Some((Ok::<_, Infallible>(chunk), i + 1))
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header("x-trace-id", trace_id)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
