//! The HTTP API (axum): TGI and OpenAI routes, probes, info and metrics.
//! Handlers parse and translate; all generation goes through
//! [`generation::submit`], the one seam to the engine.

pub mod access;
pub mod chat;
pub mod error;
pub mod fields;
pub mod generation;
pub mod json;
pub mod openai;
pub mod tgi;
pub mod validation;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::config::ServeConfig;
use crate::engine::Engine;
use crate::telemetry::Telemetry;

use chat::ChatTemplate;
use error::{ApiError, ErrorKind, Flavor};

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
    /// Set on SIGTERM: readiness fails and new requests are turned away.
    draining: AtomicBool,
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
                draining: AtomicBool::new(false),
            }),
        }
    }

    /// Makes the server ready: from now on `/health` answers 200.
    pub fn set_ready(&self, engine: Engine, chat: ChatTemplate) {
        let _ = self.inner.chat.set(chat);
        let _ = self.inner.engine.set(engine);
    }

    /// Stops taking new work (the first step of a graceful shutdown).
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// The engine, if it can take a request now.
    pub fn engine(&self, flavor: Flavor) -> Result<&Engine, ApiError> {
        let Some(engine) = self.inner.engine.get() else {
            return Err(ApiError::new(
                flavor,
                ErrorKind::Loading,
                "the model is still loading",
            ));
        };
        if self.is_draining() {
            return Err(ApiError::new(
                flavor,
                ErrorKind::ShuttingDown,
                "the server is shutting down; retry on another replica",
            ));
        }
        if !engine.is_alive() {
            return Err(ApiError::new(
                flavor,
                ErrorKind::EngineUnavailable,
                "the inference engine has stopped; the server needs a restart",
            ));
        }
        Ok(engine)
    }

    /// The engine once loaded, whatever its state (for `/info` and shutdown).
    pub fn loaded_engine(&self) -> Option<&Engine> {
        self.inner.engine.get()
    }

    pub fn chat_template(&self, flavor: Flavor) -> Result<&ChatTemplate, ApiError> {
        self.inner
            .chat
            .get()
            .ok_or_else(|| ApiError::new(flavor, ErrorKind::Loading, "the model is still loading"))
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

    pub fn request_timeout(&self) -> Option<Duration> {
        self.inner.config.limits.request_timeout
    }
}

/// All routes with their layers: auth where configured, CORS, body limits and
/// timeouts, telemetry.
pub fn router(state: AppState) -> Router {
    let cfg = &state.inner.config;
    let api = Router::new()
        .route("/generate", post(tgi::generate))
        .route("/generate_stream", post(tgi::generate_stream))
        .route("/tokenize", post(tgi::tokenize))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::models));
    let observability = Router::new()
        .route("/info", get(info))
        .route("/metrics", get(metrics));
    let (api, observability) = match cfg.access.api_key.as_deref() {
        Some(key) => {
            let key = access::ApiKey::new(key);
            let auth = axum::middleware::from_fn_with_state(key, access::require_key);
            let observability = if cfg.access.protect_metrics {
                observability.route_layer(auth.clone())
            } else {
                observability
            };
            (api.route_layer(auth), observability)
        }
        None => (api, observability),
    };
    let probes = Router::new()
        .route("/health", get(health))
        .route("/live", get(live));
    let mut app = api
        .merge(observability)
        .merge(probes)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(RequestBodyTimeoutLayer::new(cfg.limits.body_read_timeout))
        .layer(state.telemetry().http_layer());
    if let Some(cors) = access::cors(&cfg.access.cors_allow_origin) {
        app = app.layer(cors);
    }
    app.with_state(state)
}

/// What a connection over `--max-connections` is served: the probes, and a
/// 503 `too_many_connections` (with `Connection: close`) for everything else.
pub fn overflow_router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/live", get(live))
        .fallback(too_many_connections)
        .with_state(state)
}

async fn too_many_connections(uri: axum::http::Uri) -> Response {
    let e = ApiError::new(
        access::flavor_of(uri.path()),
        ErrorKind::TooManyConnections,
        "the server has too many open connections; retry shortly",
    );
    let mut resp = e.into_response();
    resp.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    resp
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

fn status(code: StatusCode, status: &'static str) -> Response {
    (code, Json(Status { status })).into_response()
}

/// `GET /health` (readiness): 200 while the server takes requests; 503 while
/// the model loads, while draining for shutdown, or when the engine died.
async fn health(State(app): State<AppState>) -> Response {
    match app.engine(Flavor::Tgi) {
        Ok(_) => status(StatusCode::OK, "ok"),
        Err(e) => status(StatusCode::SERVICE_UNAVAILABLE, e.kind.as_str()),
    }
}

/// `GET /live` (liveness): 200 while the process and its engine thread live,
/// loading and draining included. Never behind auth or the connection cap.
async fn live(State(app): State<AppState>) -> Response {
    match app.loaded_engine() {
        Some(engine) if !engine.is_alive() => {
            status(StatusCode::SERVICE_UNAVAILABLE, "engine_unavailable")
        }
        _ => status(StatusCode::OK, "alive"),
    }
}

/// `GET /info`: model, backend, limits, version, live batch and KV figures.
async fn info(State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(engine) = app.loaded_engine() else {
        return Err(ApiError::new(
            Flavor::Tgi,
            ErrorKind::Loading,
            "the model is still loading",
        ));
    };
    let m = engine.info();
    let l = engine.limits();
    let cfg = &app.inner.config;
    let stats = engine.stats();
    let kv = engine.kv_config();
    use std::sync::atomic::Ordering::Relaxed;
    Ok(Json(json!({
        "model_id": app.model_name(),
        "model_file": cfg.model.file_name().map(|f| f.to_string_lossy().into_owned()),
        "model_architecture": m.architecture,
        "quantization": m.quantization,
        "max_context": m.context_length,
        "vocab_size": m.vocab_size,
        "weight_bytes": m.backend.weight_bytes,
        "kv_cache_bytes_per_token": m.kv_bytes_per_token,
        "kv_block_size": kv.block_size,
        "kv_cache_blocks": kv.capacity_blocks,
        "prefix_cache_tokens": kv.prefix_cache_blocks.map(|b| b * kv.block_size),
        "limits": {
            "max_batch_size": l.max_batch_size,
            "max_total_tokens": l.max_total_tokens,
            "max_batch_tokens": l.max_batch_tokens,
            "max_prefill_tokens": l.max_prefill_tokens,
            "max_queue": l.max_queue,
            "max_body_bytes": cfg.max_body_bytes,
            "max_connections": cfg.limits.max_connections,
            "request_timeout_s": cfg.limits.request_timeout.map(|d| d.as_secs_f64()),
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
        "threads": m.backend.threads,
        "kernels": m.backend.kernels,
        "engine_alive": engine.is_alive(),
        "draining": app.is_draining(),
        "auth": cfg.access.api_key.is_some(),
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

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        access::flavor_of(uri.path()),
        ErrorKind::NotFound,
        "no such route",
    )
}
