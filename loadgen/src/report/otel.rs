//! Client spans and W3C trace context.
//!
//! Every request gets a span from a real SDK tracer, so its `traceparent` comes
//! from the OTel propagator and its trace id is the one the server continues. The
//! spans are exported when `--otlp` or the standard `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) names a collector; otherwise they
//! are created and dropped, which costs a few hundred nanoseconds per request.
//!
//! The variables are resolved as the server resolves them
//! (`src/telemetry/setup.rs`): the flag beats the variables, which beat the
//! defaults. `OTEL_EXPORTER_OTLP_PROTOCOL` (or `_TRACES_PROTOCOL`) picks `grpc`
//! or `http/protobuf`; without it, `--otlp` speaks gRPC (as it always has) and
//! an endpoint from the environment speaks the specification's default,
//! `http/protobuf`. `OTEL_TRACES_EXPORTER=none` turns export off unless
//! `--otlp` is given. `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` shape
//! the resource (service name `loadgen` by default).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _};
use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use tokio::runtime::Handle;

use crate::measure::record::RequestRecord;
use crate::plan::workload::TurnOf;

/// The service name when neither `OTEL_SERVICE_NAME` nor the resource
/// attributes give one.
const SERVICE_NAME: &str = "loadgen";

/// Which OTLP transport the spans take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    HttpProtobuf,
}

/// Where the client spans go, if anywhere.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub transport: Transport,
    /// The URL to send to; `None` lets the OTLP crate read
    /// `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` itself (appending `/v1/traces`
    /// to the generic one over HTTP, as the specification says).
    pub endpoint: Option<String>,
}

impl Export {
    /// Resolve the flag and the environment (`env` looks a variable up:
    /// `std::env::var` in production, a map in tests). `None`: no export.
    pub fn resolve(
        flag: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Option<Export>> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let flag = flag.filter(|f| !f.trim().is_empty());
        match var("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
            Some("none") if flag.is_none() => return Ok(None),
            None | Some("none") | Some("otlp") => {}
            Some(other) => bail!("OTEL_TRACES_EXPORTER={other:?}: only otlp or none"),
        }
        let from_env = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .is_some();
        if flag.is_none() && !from_env {
            return Ok(None);
        }
        let transport = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        {
            Some(p) => match p.trim().to_ascii_lowercase().as_str() {
                "grpc" => Transport::Grpc,
                "http/protobuf" | "http" => Transport::HttpProtobuf,
                other => bail!("unsupported OTLP protocol {other:?}: use grpc or http/protobuf"),
            },
            None if flag.is_some() => Transport::Grpc,
            None => Transport::HttpProtobuf,
        };
        let endpoint = flag.map(|f| match transport {
            Transport::Grpc => f.to_string(),
            Transport::HttpProtobuf => format!("{}/v1/traces", f.trim_end_matches('/')),
        });
        Ok(Some(Export {
            transport,
            endpoint,
        }))
    }

    fn exporter(&self) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
        let built = match self.transport {
            Transport::Grpc => {
                let b = opentelemetry_otlp::SpanExporter::builder().with_tonic();
                match &self.endpoint {
                    Some(e) => b.with_endpoint(e.clone()).build(),
                    None => b.build(),
                }
            }
            Transport::HttpProtobuf => {
                let b = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary);
                match &self.endpoint {
                    Some(e) => b.with_endpoint(e.clone()).build(),
                    None => b.build(),
                }
            }
        };
        built.context("building the OTLP span exporter")
    }
}

/// The resource: `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME` apply (the
/// SDK's detectors read them), and `loadgen` replaces `unknown_service`.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let key = opentelemetry::Key::from_static_str("service.name");
    let unnamed = detected
        .get(&key)
        .is_none_or(|v| v.as_str().starts_with("unknown_service"));
    let builder = Resource::builder();
    if unnamed {
        builder.with_service_name(SERVICE_NAME).build()
    } else {
        builder.build()
    }
}

/// Runs the exporter's future on loadgen's tokio runtime. The SDK's batch
/// processor calls exporters from its own plain thread, but tonic and the async
/// HTTP client need a tokio reactor.
#[derive(Debug)]
struct OnRuntime<E> {
    inner: E,
    runtime: Handle,
}

impl<E: SpanExporter> SpanExporter for OnRuntime<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let export = self.inner.export(batch);
        if Handle::try_current().is_ok() {
            // Already on a runtime thread (cannot nest block_on).
            futures::executor::block_on(export)
        } else {
            self.runtime.block_on(export)
        }
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
    /// Build the tracer, exporting to `export` when given. Must run inside
    /// loadgen's tokio runtime: the exporter runs its requests there.
    pub fn new(export: Option<&Export>) -> anyhow::Result<Self> {
        let mut builder = SdkTracerProvider::builder().with_resource(resource());
        if let Some(export) = export {
            let exporter = OnRuntime {
                inner: export.exporter()?,
                runtime: Handle::current(),
            };
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
    pub fn start(&self, api: &'static str, step: usize, turn: Option<TurnOf>) -> RequestTrace {
        let mut attrs = vec![
            KeyValue::new("gen_ai.operation.name", api),
            KeyValue::new("loadgen.step", step as i64),
        ];
        if let Some(t) = turn {
            attrs.push(KeyValue::new(
                "gen_ai.conversation.id",
                t.conversation.to_string(),
            ));
            attrs.push(KeyValue::new("loadgen.turn", i64::from(t.turn)));
        }
        let span = self
            .tracer
            .span_builder("loadgen.request")
            .with_kind(SpanKind::Client)
            .with_attributes(attrs)
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

    /// Flush and stop the exporter (bounded, so a dead collector cannot hang
    /// us). The flush blocks, so it runs off the async workers: the export it
    /// waits for needs them.
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        let _ = tokio::task::spawn_blocking(move || {
            provider.shutdown_with_timeout(Duration::from_secs(5))
        })
        .await;
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
        if let Some(cached) = rec.cached_tokens {
            attrs.push(KeyValue::new("loadgen.cached_tokens", cached as i64));
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
        let a = t.start("chat", 0, None);
        let b = t.start("chat", 0, None);
        let tp = a.headers.get("traceparent").expect("traceparent set");
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!(parts[1], a.trace_id);
        assert_eq!(parts[1].len(), 32);
        assert_eq!(parts[3], "01", "sampled");
        assert_ne!(a.trace_id, b.trace_id);
        t.shutdown().await;
    }

    fn resolve(flag: Option<&str>, vars: &[(&str, &str)]) -> anyhow::Result<Option<Export>> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Export::resolve(flag, &|k| map.get(k).cloned())
    }

    #[test]
    fn the_flag_beats_the_environment_which_beats_the_defaults() {
        assert_eq!(
            resolve(None, &[]).ok(),
            Some(None),
            "no endpoint: no export"
        );
        let grpc = resolve(Some("http://c:4317"), &[]).expect("valid");
        assert_eq!(
            grpc,
            Some(Export {
                transport: Transport::Grpc,
                endpoint: Some("http://c:4317".into())
            })
        );
        let env_only = resolve(None, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]);
        assert_eq!(
            env_only.expect("valid"),
            Some(Export {
                transport: Transport::HttpProtobuf,
                endpoint: None
            }),
            "the OTLP crate reads the variable and appends /v1/traces"
        );
        let http_flag = resolve(
            Some("http://c:4318/"),
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")],
        );
        assert_eq!(
            http_flag
                .expect("valid")
                .and_then(|e| e.endpoint)
                .as_deref(),
            Some("http://c:4318/v1/traces")
        );
        let traces_grpc = resolve(
            None,
            &[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ],
        );
        assert_eq!(
            traces_grpc.expect("valid").map(|e| e.transport),
            Some(Transport::Grpc)
        );
        let off = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ];
        assert_eq!(resolve(None, &off).ok(), Some(None));
        assert!(resolve(Some("http://c:4317"), &off).is_ok_and(|e| e.is_some()));
        let bad = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ];
        assert!(resolve(None, &bad).is_err());
    }
}
