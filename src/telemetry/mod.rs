//! Telemetry: OTLP traces and metrics, the same metrics on `GET /metrics`, and
//! host/GPU monitors. It observes the engine through [`crate::engine::events`];
//! it never steers it.
//!
//! # How the server wires it
//! ```ignore
//! // Inside the tokio runtime (the gRPC exporter needs one):
//! let telemetry = if cli.no_telemetry { Telemetry::disabled() }
//!                 else { Telemetry::init(&cfg, "SmolLM2-135M-Instruct", max_batch_size)? };
//! telemetry.init_logging()?;                  // or add telemetry.tracing_layer() to your own subscriber
//! let engine = Engine::start(.., telemetry.observer());
//! let app = Router::new()./* routes */.layer(telemetry.http_layer());
//! // in a handler (the layer always inserts a Context):
//! //   Extension(cx): Extension<opentelemetry::Context>
//! let req_tel = telemetry.start_request(Some(&cx), "chat");   // as the request arrives
//! req_tel.record_tokenize(t0, t1, prompt_len);
//! req_tel.record_params(&RequestParams { max_tokens, .. });  // after validation
//! engine.submit(.., req_tel.span_handle());   // the GenAI span ends on Finished/Cancelled
//! // on a validation error or 429: req_tel.fail("validation")
//! // GET /metrics: telemetry.prometheus_text()
//! telemetry.shutdown().await;                 // flush on shutdown
//! ```
//!
//! # Spans
//! - HTTP server span `{method} {route}` ([`http`]), child of a client's `traceparent`.
//! - GenAI span `{operation} {model}`, child of the HTTP span, with `gen_ai.*`
//!   request and response attributes and TTFT (`gen_ai.response.time_to_first_chunk`).
//! - Its children with real times: `tokenize`, `queue`, `prefill`, `decode`
//!   (token count, `first_token` event, links to the step spans it rode in).
//! - `engine.step prefill|decode`: one root span per engine step, with batch size
//!   and tokens, linked to the GenAI spans it served.
//!
//! # Configuration
//! CLI flags ([`TelemetryConfig`]) beat `OTEL_*` variables, which beat defaults:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (and the per-signal `_TRACES_`/`_METRICS_` forms),
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc` | `http/protobuf`, default
//! `http/protobuf` as the specification says), `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`/`_ARG`,
//! `OTEL_METRIC_EXPORT_INTERVAL` (ms), `OTEL_BSP_*`, and
//! `OTEL_TRACES_EXPORTER`/`OTEL_METRICS_EXPORTER=none` to silence one signal.
//! Export never blocks serving; drops are counted in `candlelight.telemetry.dropped`.

pub mod gpu;
pub mod host;
pub mod http;
pub mod metrics;
pub mod names;
mod observer;
#[cfg(test)]
mod observer_tests;
pub mod setup;
#[cfg(test)]
mod testing;
pub mod traces;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::metrics::{MeterProvider as _, ObservableCounter};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use crate::engine::events::{EngineObserver, NoopObserver};
pub use http::HttpLayer;
pub use observer::RequestTelemetry;
use observer::{EngineTelemetry, Shared};
use setup::DropStats;

/// Log filter for [`Telemetry::init_logging`] when `RUST_LOG` is unset. The OTel
/// crates' own logs are off: when a collector is down they would repeat every
/// export, and candlelight logs its own rate-limited warning instead.
pub const DEFAULT_LOG_FILTER: &str = "info,opentelemetry=off,h2=warn,hyper=warn,tonic=warn";

/// Instrumentation scope of every span and metric candlelight emits.
pub const SCOPE: &str = "candlelight";

/// Telemetry settings from the CLI. `None` fields fall back to `OTEL_*`
/// variables, then to defaults (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// `false` (`--no-telemetry`): no spans, no metrics, no host monitor.
    pub enabled: bool,
    /// Base OTLP URL, like `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    pub otlp_protocol: Option<String>,
    pub service_name: Option<String>,
    pub metric_export_interval: Option<Duration>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            enabled: true,
            otlp_endpoint: None,
            otlp_protocol: None,
            service_name: None,
            metric_export_interval: None,
        }
    }
}

/// A request's parameters once validated: `max_tokens` is the cap that applies.
#[derive(Debug, Clone, Default)]
pub struct RequestParams {
    pub max_tokens: usize,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub stream: bool,
}

/// The telemetry handle: cheap to clone; a disabled one does nothing.
#[derive(Clone, Debug)]
pub struct Telemetry {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    observer: Arc<EngineTelemetry>,
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    registry: prometheus::Registry,
    drops: Arc<DropStats>,
    _dropped: ObservableCounter<u64>,
    monitor: Mutex<Option<host::MonitorThread>>,
}

impl Telemetry {
    /// Build providers, exporters and the host monitor. Call inside the tokio runtime:
    /// exporters run their I/O on it. `cfg.enabled == false` gives [`Telemetry::disabled`].
    pub fn init(
        cfg: &TelemetryConfig,
        model: &str,
        max_batch_size: usize,
    ) -> anyhow::Result<Telemetry> {
        if !cfg.enabled {
            return Ok(Telemetry::disabled());
        }
        let runtime = tokio::runtime::Handle::try_current()
            .context("Telemetry::init must be called inside the tokio runtime")?;
        let plan = setup::ExportPlan::resolve(cfg, &|k| std::env::var(k).ok())?;
        let resource = setup::resource(cfg);
        let drops = Arc::new(DropStats::default());
        let tracer_provider = setup::tracer_provider(&plan, resource.clone(), &drops, &runtime)?;
        let registry = prometheus::Registry::new();
        let meter_provider = setup::meter_provider(&plan, resource, &registry, &drops, &runtime)?;
        let telemetry = Telemetry::from_providers(
            tracer_provider,
            meter_provider,
            registry,
            drops,
            model,
            max_batch_size,
        );
        telemetry.start_monitor(host::SAMPLE_EVERY)?;
        tracing::debug!(?plan, "telemetry on");
        Ok(telemetry)
    }

    /// Telemetry off: every call is a no-op, [`Self::observer`] is a `NoopObserver`,
    /// and the HTTP layer only sets `x-trace-id`.
    pub fn disabled() -> Telemetry {
        Telemetry { inner: None }
    }

    /// Assemble from ready providers (also how tests plug in their exporters).
    pub(crate) fn from_providers(
        tracer_provider: SdkTracerProvider,
        meter_provider: SdkMeterProvider,
        registry: prometheus::Registry,
        drops: Arc<DropStats>,
        model: &str,
        max_batch_size: usize,
    ) -> Telemetry {
        let meter = meter_provider.meter(SCOPE);
        let instruments = metrics::Instruments::new(&meter);
        instruments.publish_zeros(max_batch_size);
        let dropped = dropped_counter(&meter, &drops);
        let tracer = tracer_provider.tracer(SCOPE);
        let shared = Arc::new(Shared {
            spans: traces::Spans {
                tracer,
                time: traces::TimeBase::now(),
            },
            instruments,
            model: Arc::from(model),
        });
        let observer = Arc::new(EngineTelemetry {
            shared: shared.clone(),
        });
        Telemetry {
            inner: Some(Arc::new(Inner {
                shared,
                observer,
                tracer_provider,
                meter_provider,
                registry,
                drops,
                _dropped: dropped,
                monitor: Mutex::new(None),
            })),
        }
    }

    /// Start the host and GPU monitor thread.
    fn start_monitor(&self, every: Duration) -> anyhow::Result<()> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let meter = inner.meter_provider.meter(SCOPE);
        let host = host::HostMonitor::new(&meter)
            .map_err(|e| tracing::warn!("no host metrics: {e}"))
            .ok();
        let gpu = gpu::GpuMonitor::new(&meter);
        let monitor = host::MonitorThread::spawn(host, gpu, every)
            .context("starting the host monitor thread")?;
        *inner.monitor.lock().unwrap_or_else(|p| p.into_inner()) = Some(monitor);
        Ok(())
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    pub(crate) fn shared(&self) -> Option<&Arc<Shared>> {
        self.inner.as_ref().map(|i| &i.shared)
    }

    /// The engine observer (metrics and queue/prefill/decode/step spans).
    pub fn observer(&self) -> Arc<dyn EngineObserver> {
        match &self.inner {
            Some(inner) => inner.observer.clone(),
            None => Arc::new(NoopObserver),
        }
    }

    /// axum middleware: `router.layer(telemetry.http_layer())`.
    pub fn http_layer(&self) -> HttpLayer {
        http::layer(self.clone())
    }

    /// Start the GenAI span `{operation} {model}` under `parent` (the HTTP span's
    /// context from the request extensions) and the request's timers, as the
    /// request arrives: a request refused later keeps its span and metrics.
    /// `operation` is `chat` or `text_completion` (`gen_ai.operation.name`).
    pub fn start_request(
        &self,
        parent: Option<&opentelemetry::Context>,
        operation: &'static str,
    ) -> RequestTelemetry {
        match self.shared() {
            Some(shared) => RequestTelemetry::start(shared, parent, operation),
            None => RequestTelemetry::disabled(),
        }
    }

    /// Body of `GET /metrics`: the same instruments OTLP exports, in Prometheus
    /// text format (empty when telemetry is off).
    pub fn prometheus_text(&self) -> String {
        let Some(inner) = &self.inner else {
            return String::new();
        };
        prometheus::TextEncoder::new()
            .encode_to_string(&inner.registry.gather())
            .unwrap_or_else(|e| {
                tracing::warn!("encoding /metrics failed: {e}");
                String::new()
            })
    }

    /// Telemetry lost so far: (spans, metric points).
    pub fn dropped(&self) -> (u64, u64) {
        self.inner
            .as_ref()
            .map_or((0, 0), |i| (i.drops.spans(), i.drops.metric_points()))
    }

    /// A `tracing` layer sending `tracing` spans to the same OTel tracer (via
    /// tracing-opentelemetry). `None` when telemetry is off.
    pub fn tracing_layer<S>(
        &self,
    ) -> Option<tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        let inner = self.inner.as_ref()?;
        Some(tracing_opentelemetry::layer().with_tracer(inner.shared.spans.tracer.clone()))
    }

    /// Install the global `tracing` subscriber: `RUST_LOG` (else
    /// [`DEFAULT_LOG_FILTER`]), human-readable output on stderr, and
    /// [`Self::tracing_layer`].
    pub fn init_logging(&self) -> anyhow::Result<()> {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
        tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .with(self.tracing_layer())
            .try_init()
            .context("a global tracing subscriber is already installed")
    }

    /// Stop the monitors and flush spans and metrics. Runs the blocking SDK
    /// shutdown off the async workers (the exporters need the runtime meanwhile).
    pub async fn shutdown(&self) {
        let Some(inner) = self.inner.clone() else {
            return;
        };
        let done = tokio::task::spawn_blocking(move || inner.shutdown_blocking()).await;
        if let Err(e) = done {
            tracing::warn!("telemetry shutdown failed: {e}");
        }
    }
}

impl Inner {
    fn shutdown_blocking(&self) {
        if let Some(mut monitor) = self
            .monitor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            monitor.stop();
        }
        if let Err(e) = self.tracer_provider.shutdown() {
            tracing::debug!("tracer provider shutdown: {e}");
        }
        if let Err(e) = self.meter_provider.shutdown() {
            tracing::debug!("meter provider shutdown: {e}");
        }
    }
}

/// `candlelight.telemetry.dropped`, read from the shared counts at collection.
fn dropped_counter(
    meter: &opentelemetry::metrics::Meter,
    drops: &Arc<DropStats>,
) -> ObservableCounter<u64> {
    let def = &names::TELEMETRY_DROPPED;
    let drops = drops.clone();
    meter
        .u64_observable_counter(def.name)
        .with_unit(def.unit)
        .with_description(def.description)
        .with_callback(move |observer| {
            let spans = [KeyValue::new(
                names::attr::SIGNAL,
                names::attr::SIGNAL_SPANS,
            )];
            let points = [KeyValue::new(
                names::attr::SIGNAL,
                names::attr::SIGNAL_METRICS,
            )];
            observer.observe(drops.spans(), &spans);
            observer.observe(drops.metric_points(), &points);
        })
        .build()
}
