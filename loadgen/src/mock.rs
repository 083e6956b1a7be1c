//! A trivial SSE server speaking the three streaming APIs, for loadgen's own
//! unit tests and its 1,000-stream bench. It is not a stand-in for a real server
//! in the end-to-end tests: it only produces tokens on a timer.

use std::collections::HashSet;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Require `Authorization: Bearer KEY` on every route but `/health`.
    pub api_key: Option<String>,
    /// Report `usage.prompt_tokens_details.cached_tokens` (OpenAI APIs): the
    /// longest prefix, in words, that an earlier prompt shared.
    pub prefix_cache: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            first_token_delay: Duration::from_millis(5),
            token_delay: Duration::from_millis(2),
            wrong_shape: false,
            no_usage: false,
            api_key: None,
            prefix_cache: false,
        }
    }
}

#[derive(Clone)]
struct Mock {
    cfg: Arc<MockConfig>,
    requests: Arc<AtomicU64>,
    /// Requests that passed the key check (shown in /metrics).
    authorized: Arc<AtomicU64>,
    /// Hashes of every word prefix of every prompt seen (`prefix_cache`).
    prefixes: Arc<Mutex<HashSet<u64>>>,
}

impl Mock {
    /// Words of the prompt already seen as a prefix of an earlier prompt;
    /// then remembers this prompt's prefixes.
    fn cached(&self, words: &[&str]) -> u64 {
        let Ok(mut seen) = self.prefixes.lock() else {
            return 0;
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let mut cached = 0;
        for (i, w) in words.iter().enumerate() {
            w.hash(&mut hasher);
            if !seen.insert(hasher.finish()) && cached == i as u64 {
                cached = i as u64 + 1;
            }
        }
        cached
    }
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
        authorized: Arc::new(AtomicU64::new(0)),
        prefixes: Arc::new(Mutex::new(HashSet::new())),
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
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .route("/health", get(|| async { "ok" }))
        .with_state(state);
    axum::serve(listener, app).await
}

/// 401 without the configured bearer key, as an auth-requiring server answers.
async fn auth(
    State(m): State<Mock>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(key) = &m.cfg.api_key else {
        return next.run(req).await;
    };
    let expected = format!("Bearer {key}");
    let given = req.headers().get(header::AUTHORIZATION);
    if given.is_some_and(|v| v.as_bytes() == expected.as_bytes()) {
        m.authorized.fetch_add(1, Ordering::Relaxed);
        next.run(req).await
    } else {
        let body = json!({"error": {"message": "missing or wrong API key", "type": "authentication_error"}});
        (StatusCode::UNAUTHORIZED, Json(body)).into_response()
    }
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
        "# TYPE mock_requests_total counter\nmock_requests_total {}\nmock_authorized_total {}\nprocess_cpu_utilization_ratio 0.25\nprocess_memory_usage_bytes 12000000\n",
        m.requests.load(Ordering::Relaxed),
        m.authorized.load(Ordering::Relaxed)
    )
}

/// The token counts a stream reports (none with `no_usage`).
#[derive(Clone, Copy)]
struct Usage {
    prompt: u64,
    cached: Option<u64>,
    none: bool,
}

fn event(api: Api, i: u64, n: u64, usage: Usage) -> String {
    let (prompt_tokens, no_usage) = (usage.prompt, usage.none);
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
            let mut counts = json!({"choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n}});
            if let Some(cached) = usage.cached {
                counts["usage"]["prompt_tokens_details"] = json!({"cached_tokens": cached});
            }
            out.push_str(&format!("data: {counts}\n\n"));
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
    let prompt: String = match api {
        Api::Chat => body
            .get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| m.get("content")?.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        Api::Tgi => body
            .get("inputs")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
        Api::Completions => body
            .get("prompt")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
    };
    let words: Vec<&str> = prompt.split_whitespace().collect();
    let usage = Usage {
        prompt: words.len() as u64,
        cached: (m.cfg.prefix_cache && api != Api::Tgi).then(|| m.cached(&words)),
        none: m.cfg.no_usage,
    };
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
            let chunk = Bytes::from(event(api, i, n, usage));
            Some((Ok::<_, Infallible>(chunk), i + 1))
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header("x-trace-id", trace_id)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
