//! Wiring: telemetry, model loading, the engine thread and the HTTP server.

use std::future::{Future, IntoFuture};

use anyhow::{bail, Context as _};
use tokio::net::TcpListener;

use crate::api::chat::ChatTemplate;
use crate::api::{self, AppState};
use crate::config::{Cli, Command, ServeConfig};
use crate::engine::{Engine, LoadOptions, LoadedModel};
use crate::telemetry::{Telemetry, TelemetryConfig};

/// Entry point of the `candlelight` binary.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(config) => {
            let addr = format!("{}:{}", config.host, config.port);
            check_model_file(&config)?;
            let listener = TcpListener::bind(&addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            serve(config, listener, shutdown_signal()).await
        }
    }
}

/// Fails with one clear line when the model file is missing.
fn check_model_file(config: &ServeConfig) -> anyhow::Result<()> {
    if !config.model.is_file() {
        bail!(
            "model file {} not found; fetch the default model with `scripts/fetch-model.sh` or pass --model PATH",
            config.model.display()
        );
    }
    Ok(())
}

/// Serves on `listener` until `shutdown` resolves. The model loads in the
/// background; `/health` answers 503 until it is ready.
pub async fn serve(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    check_model_file(&config)?;
    let model_name = config.model_name();
    let telemetry = if config.telemetry.no_telemetry {
        Telemetry::disabled()
    } else {
        Telemetry::init(
            &telemetry_config(&config),
            &model_name,
            config.max_batch_size,
        )
        .context("starting telemetry")?
    };
    // Logs go to stderr and, through tracing-opentelemetry, to the same tracer.
    // A second server in one process (tests) keeps the first subscriber.
    let _ = telemetry.init_logging();
    let state = AppState::new(config.clone(), model_name, telemetry.clone());

    let loader = {
        let state = state.clone();
        let telemetry = telemetry.clone();
        tokio::task::spawn_blocking(move || load_engine(&config, &state, &telemetry))
    };

    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    let app = api::router(state);
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .into_future();
    tokio::pin!(server);
    // Serve while the model loads; a failed load stops the server.
    let result = tokio::select! {
        served = &mut server => served.context("HTTP server failed"),
        loaded = loader => match loaded {
            Ok(Ok(())) => server.await.context("HTTP server failed"),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("model loader panicked: {e}")),
        },
    };
    telemetry.shutdown().await;
    result
}

/// Loads the model, starts the engine and makes `state` ready.
fn load_engine(
    config: &ServeConfig,
    state: &AppState,
    telemetry: &Telemetry,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let options = LoadOptions {
        device: config.device,
        backend: config.backend,
        threads: config.threads(),
    };
    let loaded = LoadedModel::load(&config.model, options)
        .with_context(|| format!("loading {}", config.model.display()))?;
    let info = &loaded.info;
    let chat = ChatTemplate::new(
        info.chat_template.as_deref(),
        info.bos_token.as_deref(),
        info.eos_token.as_deref(),
    )?;
    let limits = config.limits(
        info.context_length,
        info.kv_bytes_per_token,
        loaded.backend.free_memory_bytes(),
    );
    let kv = config.kv_config(&limits);
    let b = &info.backend;
    tracing::info!(
        model = %config.model.display(),
        quantization = %info.quantization,
        context = info.context_length,
        backend = b.backend,
        device = %b.device,
        compute = %b.compute,
        threads = b.threads,
        weights_mib = b.weight_bytes >> 20,
        why = %info.backend_reason,
        ?limits,
        kv_blocks = kv.capacity_blocks,
        prefix_cache_blocks = ?kv.prefix_cache_blocks,
        secs = started.elapsed().as_secs_f32(),
        "model loaded"
    );
    for k in &b.kernels {
        tracing::info!(
            tensor_type = %k.tensor_type,
            kernel = %k.kernel,
            tensors = k.tensors,
            mib = k.bytes >> 20,
            "weights"
        );
    }
    let engine = Engine::start(loaded, limits, kv, telemetry.observer())?;
    state.set_ready(engine, chat);
    Ok(())
}

fn telemetry_config(config: &ServeConfig) -> TelemetryConfig {
    let t = &config.telemetry;
    TelemetryConfig {
        enabled: !t.no_telemetry,
        otlp_endpoint: t.otlp_endpoint.clone(),
        otlp_protocol: t.otlp_protocol.clone(),
        service_name: t.service_name.clone(),
        metric_export_interval: t.metric_export_interval(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
