//! Wiring: telemetry, model loading, the engine thread, the HTTP server and
//! its shutdown.
//!
//! Connections are accepted here rather than by `axum::serve`, for what it
//! does not offer: a cap on open connections (beyond it, a connection gets a
//! router that still answers `/live` and `/health` and turns everything else
//! away with 503), a deadline for request headers, and a graceful drain.

mod connections;

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::chat::ChatTemplate;
use crate::api::{self, AppState};
use crate::config::{Cli, Command, ServeConfig};
use crate::engine::{Engine, FailureKind, LoadOptions, LoadedModel};
use crate::telemetry::{Telemetry, TelemetryConfig};

/// After the grace period ends streams, how long they get to write their
/// last event before connections close.
const FINAL_EVENTS: Duration = Duration::from_secs(2);

/// Entry point of the `candlelight` binary.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(config) => {
            let addr = format!("{}:{}", config.host, config.port);
            check_model_file(&config)?;
            let listener = TcpListener::bind(&addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            serve(*config, listener, shutdown_signal()).await
        }
        Command::Diagnose(args) => crate::diagnose::run(args).await,
        Command::CompareLogits(args) => {
            tokio::task::spawn_blocking(move || crate::engine::backend::candle::compare::run(&args))
                .await?
        }
        Command::ExtractMetadata { input, output } => {
            let bytes =
                crate::engine::backend::candle::synthetic::extract_metadata(&input, &output)?;
            println!("{}: {bytes} bytes", output.display());
            Ok(())
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

/// Serves on `listener` until `shutdown` resolves, then drains: readiness
/// fails, new requests get 503, running ones get `--shutdown-grace` to finish,
/// the rest are ended with a `shutdown` error, telemetry is flushed.
pub async fn serve(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    check_model_file(&config)?;
    let telemetry = if config.telemetry.no_telemetry {
        Telemetry::disabled()
    } else {
        Telemetry::init(
            &telemetry_config(&config),
            &config.model_name(),
            config.max_batch_size,
        )
        .context("starting telemetry")?
    };
    // Logs go to stderr and, through tracing-opentelemetry, to the same tracer.
    // A second server in one process (tests) keeps the first subscriber.
    let _ = telemetry.init_logging();
    let state = AppState::new(config.clone(), config.model_name(), telemetry.clone());
    let loader = {
        let (config, state, telemetry) = (config.clone(), state.clone(), telemetry.clone());
        tokio::task::spawn_blocking(move || load_engine(&config, &state, &telemetry))
    };
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let (stop, stopped) = watch::channel(false);
    let server = tokio::spawn(connections::accept(
        listener,
        api::router(state.clone()),
        api::overflow_router(state.clone()),
        config.limits.clone(),
        stopped,
    ));
    // Serve while the model loads; a failed load stops the server, and so
    // does a signal, loaded or not.
    tokio::pin!(shutdown);
    let loaded = tokio::select! {
        loaded = loader => Some(loaded),
        _ = &mut shutdown => None,
    };
    let result = match loaded {
        None => Ok(()),
        Some(Ok(Ok(()))) => {
            shutdown.await;
            Ok(())
        }
        Some(Ok(Err(e))) => Err(e),
        Some(Err(e)) => Err(anyhow::anyhow!("model loader panicked: {e}")),
    };
    drain(&state, config.limits.shutdown_grace).await;
    let _ = stop.send(true);
    let _ = server.await;
    telemetry.shutdown().await;
    result
}

/// Stops admitting work and lets running requests finish within `grace`;
/// then ends what is left with a `shutdown` error.
async fn drain(state: &AppState, grace: Duration) {
    state.start_draining();
    let Some(engine) = state.loaded_engine() else {
        return;
    };
    let left = wait_idle(engine, Instant::now() + grace).await;
    if left > 0 {
        tracing::warn!(
            requests = left,
            ?grace,
            "shutdown grace over: ending requests"
        );
        engine.abort_all(FailureKind::Shutdown);
        wait_idle(engine, Instant::now() + FINAL_EVENTS).await;
    }
    tracing::info!("drained");
}

/// Waits until nothing is queued or running, or `deadline`; returns what is left.
async fn wait_idle(engine: &Engine, deadline: Instant) -> usize {
    loop {
        let left = engine.in_flight();
        if left == 0 || Instant::now() >= deadline || !engine.is_alive() {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let loaded = match config.synthetic {
        Some(seed) => LoadedModel::load_synthetic(&config.model, options, seed),
        None => LoadedModel::load(&config.model, options),
    }
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
        synthetic_seed = ?config.synthetic,
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

/// Resolves on the first SIGTERM or SIGINT; a second one exits at once.
pub async fn shutdown_signal() {
    wait_for_signal().await;
    tracing::info!("shutting down: draining (send the signal again to exit at once)");
    tokio::spawn(async {
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
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
}
