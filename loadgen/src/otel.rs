//! Client spans and W3C trace context.
//!
//! Every request gets a span from a real SDK tracer, so its `traceparent` comes
//! from the OTel propagator and its trace id is the one the server continues. The
//! spans are exported only with `--otlp`; without it they are created and dropped,
//! which costs a few hundred nanoseconds per request.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::record::RequestRecord;

pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

/// The headers to send and the context holding the request's span.
pub struct RequestTrace {
    pub headers: HashMap<String, String>,
    pub trace_id: String,
    cx: Context,
}

struct MapInjector<'a>(&'a mut HashMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

impl Tracing {
    /// Build the tracer; with an endpoint, spans are batched to it over OTLP/gRPC.
    /// Must run inside the tokio runtime (the gRPC exporter needs it). OTLP/HTTP
    /// is not offered: its async client needs a tokio reactor on the SDK's own
    /// export thread.
    pub fn new(otlp: Option<&str>) -> anyhow::Result<Self> {
        let resource = Resource::builder().with_service_name("loadgen").build();
        let mut builder = SdkTracerProvider::builder().with_resource(resource);
        if let Some(endpoint) = otlp {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()?;
            builder = builder.with_batch_exporter(exporter);
        }
        let provider = builder.build();
        let tracer = provider.tracer("loadgen");
        Ok(Self {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
        })
    }

    /// Start the client span of one request and render its `traceparent`.
    pub fn start(&self, api: &'static str, step: usize) -> RequestTrace {
        let span = self
            .tracer
            .span_builder("loadgen.request")
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("gen_ai.operation.name", api),
                KeyValue::new("loadgen.step", step as i64),
            ])
            .start(&self.tracer);
        let trace_id = span.span_context().trace_id().to_string();
        let cx = Context::new().with_span(span);
        let mut headers = HashMap::new();
        self.propagator
            .inject_context(&cx, &mut MapInjector(&mut headers));
        RequestTrace {
            headers,
            trace_id,
            cx,
        }
    }

    /// Flush and stop the exporter (bounded, so a dead collector cannot hang us).
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown_with_timeout(Duration::from_secs(5));
    }
}

impl RequestTrace {
    /// End the span with what the request measured.
    pub fn finish(self, rec: &RequestRecord, start_wall: SystemTime) {
        let span = self.cx.span();
        let mut attrs = vec![
            KeyValue::new("loadgen.request.id", rec.id as i64),
            KeyValue::new("loadgen.send_lag_s", rec.send_lag()),
            KeyValue::new("loadgen.e2e_s", rec.e2e()),
        ];
        if let Some(ttft) = rec.ttft() {
            attrs.push(KeyValue::new("loadgen.ttft_s", ttft));
        }
        if let Some(out) = rec.output_tokens {
            attrs.push(KeyValue::new("gen_ai.usage.output_tokens", out as i64));
        }
        if let Some(inp) = rec.input_tokens {
            attrs.push(KeyValue::new("gen_ai.usage.input_tokens", inp as i64));
        }
        if let Some(first) = rec.first_token() {
            span.add_event_with_timestamp("first_token", start_wall + first, vec![]);
        }
        if let Some(kind) = rec.outcome.error_kind() {
            attrs.push(KeyValue::new("error.type", kind.to_string()));
            span.set_status(Status::error(kind.to_string()));
        }
        span.set_attributes(attrs);
        span.end_with_timestamp(start_wall + rec.end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_request_gets_a_fresh_valid_traceparent() {
        let t = Tracing::new(None).expect("tracer");
        let a = t.start("chat", 0);
        let b = t.start("chat", 0);
        let tp = a.headers.get("traceparent").expect("traceparent set");
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!(parts[1], a.trace_id);
        assert_eq!(parts[1].len(), 32);
        assert_eq!(parts[3], "01", "sampled");
        assert_ne!(a.trace_id, b.trace_id);
        t.shutdown();
    }
}
