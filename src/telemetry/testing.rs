//! Test helpers: a span exporter that keeps what it is given, a meter provider
//! wired to a Prometheus registry, and a reader for Prometheus text.
//!
//! The span exporter is a real `SpanExporter` implementation (the SDK's
//! `InMemorySpanExporter` needs the `testing` feature, which this crate does not
//! enable); spans reach it through the SDK's ordinary span processor.

use std::sync::{Arc, Mutex};

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};

use super::setup::DropStats;
use super::Telemetry;

/// Keeps every exported span.
#[derive(Debug, Clone, Default)]
pub struct SpanStore(Arc<Mutex<Vec<SpanData>>>);

impl SpanStore {
    pub fn spans(&self) -> Vec<SpanData> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn named(&self, name: &str) -> Vec<SpanData> {
        self.spans()
            .into_iter()
            .filter(|s| s.name == name)
            .collect()
    }

    /// The one span called `name`; panics (failing the test) otherwise.
    pub fn one(&self, name: &str) -> SpanData {
        let mut found = self.named(name);
        assert_eq!(found.len(), 1, "expected one {name:?} span, got {found:#?}");
        found.remove(0)
    }
}

impl SpanExporter for SpanStore {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(batch);
        Ok(())
    }
}

/// A meter provider whose only reader is a fresh Prometheus registry.
pub fn prometheus_meter() -> (SdkMeterProvider, prometheus::Registry) {
    let registry = prometheus::Registry::new();
    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .build()
        .expect("invariant: a fresh registry accepts the exporter");
    (
        SdkMeterProvider::builder().with_reader(exporter).build(),
        registry,
    )
}

pub fn scrape(registry: &prometheus::Registry) -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .expect("invariant: gathered metrics encode")
}

/// The value of the first sample of series `name` whose labels contain `labels`.
pub fn value(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Telemetry with every span synchronously exported to a [`SpanStore`] and
/// metrics readable as Prometheus text. No samplers, no network.
pub fn telemetry(max_batch_size: usize) -> (Telemetry, SpanStore) {
    let store = SpanStore::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_simple_exporter(store.clone())
        .build();
    let registry = prometheus::Registry::new();
    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .build()
        .expect("invariant: a fresh registry accepts the exporter");
    let meter_provider = SdkMeterProvider::builder().with_reader(exporter).build();
    let telemetry = Telemetry::from_providers(
        tracer_provider,
        meter_provider,
        registry,
        Arc::new(DropStats::default()),
        "SmolLM2-135M-Instruct",
        max_batch_size,
    );
    (telemetry, store)
}
