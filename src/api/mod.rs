//! The HTTP API (axum): TGI and OpenAI routes, health, info and metrics.
//! Handlers validate and translate; all generation goes through
//! [`dispatch`], the one seam to the engine.

pub mod chat;
pub mod dispatch;
pub mod error;
pub mod json;
pub mod openai;
pub mod tgi;
pub mod validation;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::config::ServeConfig;
use crate::engine::Engine;
use crate::telemetry::Telemetry;

use chat::ChatTemplate;
use error::{ApiError, ErrorKind};

/// Shared state of all handlers. The engine arrives once the model has loaded.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<AppInner>,
}

struct AppInner {
    engine: OnceLock<Engine>,
    chat: OnceLock<ChatTemplate>,
    telemetry: Telemetry,
    model_name: String,
    config: ServeConfig,
    started_unix: u64,
    next_response_id: AtomicU64,
}

impl AppState {
    pub fn new(config: ServeConfig, model_name: String, telemetry: Telemetry) -> Self {
        Self {
            inner: Arc::new(AppInner {
                engine: OnceLock::new(),
                chat: OnceLock::new(),
                telemetry,
                model_name,
                config,
                started_unix: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                next_response_id: AtomicU64::new(1),
            }),
        }
    }

    /// Makes the server ready: from now on `/health` answers 200.
    pub fn set_ready(&self, engine: Engine, chat: ChatTemplate) {
        let _ = self.inner.chat.set(chat);
        let _ = self.inner.engine.set(engine);
    }

    pub fn engine(&self) -> Result<&Engine, ApiError> {
        self.inner
            .engine
            .get()
            .ok_or_else(|| ApiError::new(ErrorKind::Loading, "the model is still loading"))
    }

    pub fn chat_template(&self) -> Result<&ChatTemplate, ApiError> {
        self.inner
            .chat
            .get()
            .ok_or_else(|| ApiError::new(ErrorKind::Loading, "the model is still loading"))
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.inner.telemetry
    }

    pub fn model_name(&self) -> &str {
        &self.inner.model_name
    }

    pub fn started_unix(&self) -> u64 {
        self.inner.started_unix
    }

    pub fn next_response_id(&self) -> u64 {
        self.inner.next_response_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// All routes, with body limit and telemetry layers.
pub fn router(state: AppState) -> Router {
    let body_limit = state.inner.config.max_body_bytes;
    let telemetry = state.telemetry().clone();
    Router::new()
        .route("/generate", post(tgi::generate))
        .route("/generate_stream", post(tgi::generate_stream))
        .route("/tokenize", post(tgi::tokenize))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::models))
        .route("/health", get(health))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(telemetry.http_layer())
        .with_state(state)
}

/// `GET /health`: 503 while the model loads, 200 once requests are served.
async fn health(State(app): State<AppState>) -> Response {
    match app.engine() {
        Ok(_) => (StatusCode::OK, Json(json!({"status": "ok"}))).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading"})),
        )
            .into_response(),
    }
}

/// `GET /info`: model, quantization, context, limits, version, live batch facts.
async fn info(State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let engine = app.engine()?;
    let m = engine.info();
    let l = engine.limits();
    let cfg = &app.inner.config;
    let stats = engine.stats();
    let kv = engine.kv_config();
    use std::sync::atomic::Ordering::Relaxed;
    Ok(Json(json!({
        "model_id": app.model_name(),
        "model_path": cfg.model.display().to_string(),
        "model_architecture": m.architecture,
        "quantization": m.quantization,
        "max_context": m.context_length,
        "vocab_size": m.vocab_size,
        "weight_bytes": m.backend.weight_bytes,
        "kv_cache_bytes_per_token": m.kv_bytes_per_token,
        "kv_block_size": kv.block_size,
        "kv_cache_blocks": kv.capacity_blocks,
        "prefix_cache": kv.prefix_cache_blocks.map(|b| b * kv.block_size),
        "limits": {
            "max_batch_size": l.max_batch_size,
            "max_total_tokens": l.max_total_tokens,
            "max_batch_tokens": l.max_batch_tokens,
            "max_prefill_tokens": l.max_prefill_tokens,
            "max_queue": l.max_queue,
            "max_body_bytes": cfg.max_body_bytes,
        },
        "queued_requests": stats.queued.load(Relaxed),
        "running_requests": stats.running.load(Relaxed),
        "kv_cache_reserved_bytes": stats.kv_reserved_bytes.load(Relaxed),
        "kv_cache_cached_bytes": stats.kv_cached_bytes.load(Relaxed),
        "last_batch_size": stats.last_batch.load(Relaxed),
        "peak_batch_size": stats.peak_batch.load(Relaxed),
        "backend": m.backend.backend,
        "backend_reason": m.backend_reason,
        "device": m.backend.device,
        "device_name": m.backend.device_name,
        "compute": m.backend.compute,
        "simd": m.backend.compute,
        "threads": m.backend.threads,
        "kernels": m.backend.kernels,
        "telemetry": app.telemetry().is_enabled(),
        "version": env!("CARGO_PKG_VERSION"),
        "git_commit": option_env!("CANDLELIGHT_GIT_COMMIT"),
        "git_branch": option_env!("CANDLELIGHT_GIT_BRANCH"),
        "router": "candlelight",
    })))
}

/// `GET /metrics`: Prometheus text, the same instruments the OTLP exporter sends.
async fn metrics(State(app): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.telemetry().prometheus_text(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorKind::NotFound, "no such route")
}
