//! Wiring: telemetry, model loading, the engine thread and the HTTP server.

use std::future::{Future, IntoFuture};

use anyhow::{bail, Context as _};
use tokio::net::TcpListener;

use crate::api::chat::ChatTemplate;
use crate::api::{self, AppState};
use crate::config::{Cli, Command, ServeConfig};
use crate::engine::{kernels, Engine, LoadedModel};
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
    if let Err(e) = kernels::init_thread_pool(config.threads()) {
        // Only possible when a process serves twice (tests); the first pool stays.
        tracing::warn!(error = %e, "compute thread pool already running");
    }
    let model_name = config.model_name.clone().unwrap_or_else(|| {
        config
            .model
            .file_name()
            .and_then(|f| f.to_str())
            .map(crate::engine::model_name_from_file)
            .unwrap_or_else(|| "model".to_owned())
    });
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
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let started = std::time::Instant::now();
            let loaded = LoadedModel::load(&config.model)
                .with_context(|| format!("loading {}", config.model.display()))?;
            let chat = ChatTemplate::new(
                loaded.info.chat_template.as_deref(),
                loaded.info.bos_token.as_deref(),
                loaded.info.eos_token.as_deref(),
            )?;
            let limits = config.limits(loaded.info.context_length);
            tracing::info!(
                model = %config.model.display(),
                quantization = %loaded.info.quantization,
                context = loaded.info.context_length,
                weights_mib = loaded.info.weight_bytes / (1 << 20),
                threads = kernels::num_threads(),
                simd = kernels::simd_level(),
                ?limits,
                secs = started.elapsed().as_secs_f32(),
                "model loaded"
            );
            let engine = Engine::start(loaded, limits, telemetry.observer())?;
            state.set_ready(engine, chat);
            Ok(())
        })
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
