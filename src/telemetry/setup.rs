//! OpenTelemetry providers: resource, OTLP exporters, the Prometheus registry.
//!
//! Precedence for every setting: CLI flag ([`TelemetryConfig`]) > standard
//! `OTEL_*` environment variable > default. The SDK and the OTLP crate already
//! read most variables themselves (endpoint, headers, timeout, sampler, batch
//! sizes, export interval, resource attributes), so this module only decides what
//! they cannot: the transport, the service-name fallback, `OTEL_*_EXPORTER=none`.
//!
//! Export must never block serving. Both exporters run on the SDK's own
//! background threads; [`BoundedSpanProcessor`] caps the spans waiting for export
//! and counts the ones it turns away, and the exporter wrappers count spans and
//! metric points lost to a failed export ([`DropStats`]), logging a warning at
//! most every [`WARN_EVERY`].

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use opentelemetry::Context;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, Span, SpanData,
    SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use tokio::runtime::Handle;

use super::names::attr;
use super::TelemetryConfig;

/// Shortest gap between two "telemetry is being dropped" warnings.
pub const WARN_EVERY: Duration = Duration::from_secs(30);
/// Default service name when neither the CLI nor `OTEL_*` names one.
pub const DEFAULT_SERVICE_NAME: &str = "candlelight";
const DEFAULT_SPAN_QUEUE: usize = 2048;

/// Counts of telemetry lost on the way out, shared by the span processor, the
/// exporters and the `candlelight.telemetry.dropped` instrument.
#[derive(Debug, Default)]
pub struct DropStats {
    spans: AtomicU64,
    metric_points: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

impl DropStats {
    pub fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }

    pub fn metric_points(&self) -> u64 {
        self.metric_points.load(Ordering::Relaxed)
    }

    /// Count `n` lost items of `signal` and warn if the last warning is old enough.
    pub fn record(&self, signal: &'static str, n: u64, why: &dyn fmt::Display) {
        if n == 0 {
            return;
        }
        let counter = match signal {
            attr::SIGNAL_SPANS => &self.spans,
            _ => &self.metric_points,
        };
        counter.fetch_add(n, Ordering::Relaxed);
        let Ok(mut last) = self.last_warning.try_lock() else {
            return; // another thread is warning right now
        };
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
            return;
        }
        *last = Some(now);
        tracing::warn!(
            dropped_spans = self.spans(),
            dropped_metric_points = self.metric_points(),
            "telemetry export is dropping {signal} ({why}); serving continues"
        );
    }
}

/// Which OTLP transport a signal uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    HttpProtobuf,
}

impl Transport {
    /// Parse the spec's spelling (`grpc`, `http/protobuf`); `http` is accepted too.
    pub fn parse(value: &str) -> anyhow::Result<Transport> {
        match value.trim().to_ascii_lowercase().as_str() {
            "grpc" => Ok(Transport::Grpc),
            "http/protobuf" | "http" => Ok(Transport::HttpProtobuf),
            other => bail!("unsupported OTLP protocol {other:?}: use grpc or http/protobuf"),
        }
    }
}

/// What to export, resolved from the config and the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportPlan {
    /// `None`: `OTEL_TRACES_EXPORTER=none`.
    pub traces: Option<Transport>,
    /// `None`: `OTEL_METRICS_EXPORTER=none` (the `/metrics` endpoint still works).
    pub metrics: Option<Transport>,
    /// Base URL from the CLI; `None` lets the OTLP crate read `OTEL_EXPORTER_OTLP_*ENDPOINT`.
    pub endpoint: Option<String>,
    pub metric_interval: Option<Duration>,
    pub span_queue: usize,
}

impl ExportPlan {
    /// `env` looks a variable up (`std::env::var` in production; a map in tests).
    pub fn resolve(
        cfg: &TelemetryConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<ExportPlan> {
        let transport = |signal: &str| -> anyhow::Result<Option<Transport>> {
            let exporter = env(&format!("OTEL_{signal}_EXPORTER"));
            match exporter.as_deref().map(str::trim) {
                Some("none") => return Ok(None),
                None | Some("") | Some("otlp") => {}
                Some(other) => bail!("OTEL_{signal}_EXPORTER={other:?}: only otlp or none"),
            }
            let chosen = cfg
                .otlp_protocol
                .clone()
                .or_else(|| env(&format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")))
                .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
                .filter(|p| !p.trim().is_empty());
            // The specification's default transport.
            chosen
                .map_or(Ok(Transport::HttpProtobuf), |p| Transport::parse(&p))
                .map(Some)
        };
        let span_queue = match env("OTEL_BSP_MAX_QUEUE_SIZE") {
            Some(v) => v.trim().parse().context("OTEL_BSP_MAX_QUEUE_SIZE")?,
            None => DEFAULT_SPAN_QUEUE,
        };
        Ok(ExportPlan {
            traces: transport("TRACES")?,
            metrics: transport("METRICS")?,
            endpoint: cfg.otlp_endpoint.clone().filter(|e| !e.trim().is_empty()),
            metric_interval: cfg.metric_export_interval,
            span_queue: span_queue.max(1),
        })
    }

    /// The URL a signal is sent to when the CLI gave a base endpoint: OTLP/HTTP
    /// appends the signal path (as `OTEL_EXPORTER_OTLP_ENDPOINT` does), gRPC does not.
    fn signal_endpoint(&self, transport: Transport, path: &str) -> Option<String> {
        let base = self.endpoint.as_deref()?;
        Some(match transport {
            Transport::Grpc => base.to_string(),
            Transport::HttpProtobuf => format!("{}/{path}", base.trim_end_matches('/')),
        })
    }
}

/// The service's resource: `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME`
/// apply, the CLI name wins, and `candlelight` replaces the SDK's `unknown_service`.
pub fn resource(cfg: &TelemetryConfig) -> Resource {
    let detected = Resource::builder().build();
    let key = opentelemetry::Key::from_static_str("service.name");
    let unnamed = detected
        .get(&key)
        .is_none_or(|v| v.as_str().starts_with("unknown_service"));
    let mut builder = Resource::builder();
    if let Some(name) = cfg.service_name.clone().filter(|n| !n.is_empty()) {
        builder = builder.with_service_name(name);
    } else if unnamed {
        builder = builder.with_service_name(DEFAULT_SERVICE_NAME);
    }
    if detected.get(&"service.version".into()).is_none() {
        builder = builder.with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ));
    }
    for (key, value) in instance_identity(&detected, &|k| std::env::var(k).ok()) {
        builder = builder.with_attribute(opentelemetry::KeyValue::new(key, value));
    }
    builder.build()
}

/// Who this replica is, unless `OTEL_RESOURCE_ATTRIBUTES` already says:
/// `service.instance.id` (the pod name, else the host name) and, on
/// Kubernetes (`K8S_POD_NAME` or `POD_NAME` from the downward API), `k8s.pod.name`.
/// Per-instance dashboards and `candlelight diagnose` name replicas by it.
fn instance_identity(
    detected: &Resource,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<(&'static str, String)> {
    let pod = env("K8S_POD_NAME")
        .or_else(|| env("POD_NAME"))
        .filter(|p| !p.is_empty());
    let mut out = Vec::new();
    if detected.get(&"service.instance.id".into()).is_none() {
        let host = sysinfo::System::host_name().unwrap_or_else(|_| "candlelight".into());
        out.push(("service.instance.id", pod.clone().unwrap_or(host)));
    }
    if let Some(pod) = pod.filter(|_| detected.get(&"k8s.pod.name".into()).is_none()) {
        out.push(("k8s.pod.name", pod));
    }
    out
}

/// Build the tracer provider; spans go nowhere when traces are off.
pub fn tracer_provider(
    plan: &ExportPlan,
    resource: Resource,
    drops: &Arc<DropStats>,
    runtime: &Handle,
) -> anyhow::Result<SdkTracerProvider> {
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let Some(transport) = plan.traces else {
        // Nothing would export spans: record none (trace ids still exist for x-trace-id).
        return Ok(builder.with_sampler(Sampler::AlwaysOff).build());
    };
    let endpoint = plan.signal_endpoint(transport, "v1/traces");
    let exporter = match transport {
        Transport::Grpc => {
            let b = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            match endpoint {
                Some(e) => b.with_endpoint(e).build(),
                None => b.build(),
            }
        }
        Transport::HttpProtobuf => {
            let b = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary);
            match endpoint {
                Some(e) => b.with_endpoint(e).build(),
                None => b.build(),
            }
        }
    }
    .context("building the OTLP span exporter")?;
    let processor = BoundedSpanProcessor::new(exporter, plan.span_queue, drops, runtime);
    Ok(builder.with_span_processor(processor).build())
}

/// Build the meter provider: the Prometheus registry always, OTLP unless off.
pub fn meter_provider(
    plan: &ExportPlan,
    resource: Resource,
    registry: &prometheus::Registry,
    drops: &Arc<DropStats>,
    runtime: &Handle,
) -> anyhow::Result<SdkMeterProvider> {
    let prometheus = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .build()
        .context("building the Prometheus exporter")?;
    let builder = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(prometheus);
    let Some(transport) = plan.metrics else {
        return Ok(builder.build());
    };
    let endpoint = plan.signal_endpoint(transport, "v1/metrics");
    let exporter = match transport {
        Transport::Grpc => {
            let b = opentelemetry_otlp::MetricExporter::builder().with_tonic();
            match endpoint {
                Some(e) => b.with_endpoint(e).build(),
                None => b.build(),
            }
        }
        Transport::HttpProtobuf => {
            let b = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary);
            match endpoint {
                Some(e) => b.with_endpoint(e).build(),
                None => b.build(),
            }
        }
    }
    .context("building the OTLP metric exporter")?;
    let exporter = CountingMetricExporter {
        inner: exporter,
        drops: drops.clone(),
        runtime: runtime.clone(),
    };
    let mut reader = PeriodicReader::builder(exporter);
    if let Some(interval) = plan.metric_interval {
        reader = reader.with_interval(interval);
    }
    Ok(builder.with_reader(reader.build()).build())
}

/// Run an exporter future on the tokio runtime. The SDK calls exporters from its
/// own plain threads, but tonic and the async reqwest client need a runtime.
fn run_on<F: std::future::Future>(runtime: &Handle, future: F) -> F::Output {
    if Handle::try_current().is_ok() {
        // Already inside a runtime (cannot nest block_on): block this thread only.
        futures::executor::block_on(future)
    } else {
        runtime.block_on(future)
    }
}

/// A batch span processor whose queue bound is enforced (and counted) here, so
/// that every span turned away shows up in `candlelight.telemetry.dropped`.
#[derive(Debug)]
pub struct BoundedSpanProcessor {
    inner: BatchSpanProcessor,
    in_flight: Arc<AtomicUsize>,
    capacity: usize,
    drops: Arc<DropStats>,
}

impl BoundedSpanProcessor {
    pub fn new<E: SpanExporter + 'static>(
        exporter: E,
        capacity: usize,
        drops: &Arc<DropStats>,
        runtime: &Handle,
    ) -> Self {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let exporter = CountingSpanExporter {
            inner: exporter,
            in_flight: in_flight.clone(),
            drops: drops.clone(),
            runtime: runtime.clone(),
        };
        // The batch processor's own queue is as large as ours, so it never drops
        // silently: ours fills first.
        let config = BatchConfigBuilder::default()
            .with_max_queue_size(capacity)
            .build();
        BoundedSpanProcessor {
            inner: BatchSpanProcessor::new(exporter, config),
            in_flight,
            capacity,
            drops: drops.clone(),
        }
    }
}

impl SpanProcessor for BoundedSpanProcessor {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.drops
                .record(attr::SIGNAL_SPANS, 1, &"export queue full");
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Releases queue slots as batches leave, and counts batches that fail.
#[derive(Debug)]
struct CountingSpanExporter<E> {
    inner: E,
    in_flight: Arc<AtomicUsize>,
    drops: Arc<DropStats>,
    runtime: Handle,
}

impl<E: SpanExporter> SpanExporter for CountingSpanExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        self.in_flight.fetch_sub(n, Ordering::AcqRel);
        let result = run_on(&self.runtime, self.inner.export(batch));
        if let Err(e) = &result {
            self.drops.record(attr::SIGNAL_SPANS, n as u64, e);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Counts the data points of exports that fail.
struct CountingMetricExporter<E> {
    inner: E,
    drops: Arc<DropStats>,
    runtime: Handle,
}

impl<E: PushMetricExporter> PushMetricExporter for CountingMetricExporter<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = run_on(&self.runtime, self.inner.export(metrics));
        if let Err(e) = &result {
            self.drops
                .record(attr::SIGNAL_METRICS, count_points(metrics), e);
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// Data points in one export (one per metric and attribute set).
pub fn count_points(metrics: &ResourceMetrics) -> u64 {
    fn points<T>(data: &MetricData<T>) -> usize {
        match data {
            MetricData::Gauge(g) => g.data_points().count(),
            MetricData::Sum(s) => s.data_points().count(),
            MetricData::Histogram(h) => h.data_points().count(),
            MetricData::ExponentialHistogram(h) => h.data_points().count(),
        }
    }
    let mut n = 0;
    for scope in metrics.scope_metrics() {
        for metric in scope.metrics() {
            n += match metric.data() {
                AggregatedMetrics::F64(d) => points(d),
                AggregatedMetrics::U64(d) => points(d),
                AggregatedMetrics::I64(d) => points(d),
            };
        }
    }
    n as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn plan(cfg: &TelemetryConfig, vars: &[(&str, &str)]) -> anyhow::Result<ExportPlan> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ExportPlan::resolve(cfg, &|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_specification() -> anyhow::Result<()> {
        let p = plan(&TelemetryConfig::default(), &[])?;
        assert_eq!(p.traces, Some(Transport::HttpProtobuf));
        assert_eq!(p.metrics, Some(Transport::HttpProtobuf));
        assert_eq!(p.endpoint, None);
        assert_eq!(p.span_queue, DEFAULT_SPAN_QUEUE);
        Ok(())
    }

    #[test]
    fn cli_beats_env_and_signal_env_beats_generic() -> anyhow::Result<()> {
        let vars = [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
        ];
        let p = plan(&TelemetryConfig::default(), &vars)?;
        assert_eq!(p.traces, Some(Transport::HttpProtobuf));
        assert_eq!(p.metrics, Some(Transport::Grpc));
        let cli = TelemetryConfig {
            otlp_protocol: Some("grpc".into()),
            otlp_endpoint: Some("http://collector:4317".into()),
            ..TelemetryConfig::default()
        };
        let p = plan(&cli, &vars)?;
        assert_eq!(p.traces, Some(Transport::Grpc));
        assert_eq!(
            p.signal_endpoint(Transport::Grpc, "v1/traces").as_deref(),
            Some("http://collector:4317")
        );
        Ok(())
    }

    #[test]
    fn http_endpoint_from_cli_gets_the_signal_path() -> anyhow::Result<()> {
        let cli = TelemetryConfig {
            otlp_endpoint: Some("http://collector:4318/".into()),
            ..TelemetryConfig::default()
        };
        let p = plan(&cli, &[])?;
        assert_eq!(
            p.signal_endpoint(Transport::HttpProtobuf, "v1/metrics")
                .as_deref(),
            Some("http://collector:4318/v1/metrics")
        );
        Ok(())
    }

    #[test]
    fn every_replica_names_itself() {
        let none = Resource::builder_empty().build();
        let env = |k: &str| (k == "K8S_POD_NAME").then(|| "server-0".to_owned());
        let ids = instance_identity(&none, &env);
        assert!(ids.contains(&("service.instance.id", "server-0".to_owned())));
        assert!(ids.contains(&("k8s.pod.name", "server-0".to_owned())));
        let ids = instance_identity(&none, &|_| None);
        assert_eq!(ids.len(), 1, "the host name, and no pod: {ids:?}");
        let given = Resource::builder_empty()
            .with_attribute(opentelemetry::KeyValue::new("service.instance.id", "r1"))
            .build();
        assert!(instance_identity(&given, &|_| None).is_empty());
    }

    #[test]
    fn exporter_none_switches_a_signal_off_and_bad_values_fail() -> anyhow::Result<()> {
        let p = plan(
            &TelemetryConfig::default(),
            &[("OTEL_TRACES_EXPORTER", "none")],
        )?;
        assert_eq!(p.traces, None);
        assert!(p.metrics.is_some());
        assert!(plan(
            &TelemetryConfig::default(),
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]
        )
        .is_err());
        assert!(plan(
            &TelemetryConfig::default(),
            &[("OTEL_METRICS_EXPORTER", "zipkin")]
        )
        .is_err());
        Ok(())
    }

    /// An exporter whose collector is always down.
    #[derive(Debug)]
    struct Unreachable;

    impl SpanExporter for Unreachable {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                "connection refused".into(),
            ))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_span_lost_to_a_dead_collector_is_counted() {
        use opentelemetry::trace::{Tracer as _, TracerProvider as _};
        let drops = Arc::new(DropStats::default());
        let processor = BoundedSpanProcessor::new(Unreachable, 4, &drops, &Handle::current());
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("test");
        for _ in 0..50 {
            tracer.in_span("work", |_| {}); // never blocks, whatever the exporter does
        }
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        assert!(flushed.is_ok());
        assert_eq!(
            drops.spans(),
            50,
            "queue-full and failed-export drops add up"
        );
    }

    #[test]
    fn drop_stats_count_per_signal() {
        let d = DropStats::default();
        d.record(attr::SIGNAL_SPANS, 3, &"test");
        d.record(attr::SIGNAL_METRICS, 5, &"test");
        d.record(attr::SIGNAL_SPANS, 0, &"test");
        assert_eq!((d.spans(), d.metric_points()), (3, 5));
    }
}
