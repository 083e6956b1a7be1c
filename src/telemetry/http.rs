//! axum middleware: one HTTP server span per request, W3C trace context in,
//! trace id out.
//!
//! The incoming `traceparent`/`tracestate` are read by the OTel
//! `TraceContextPropagator` (no hand parser), so a client's trace continues
//! here. The server span's [`Context`] is put into the request extensions for
//! handlers (`Extension<opentelemetry::Context>` always succeeds under this
//! layer), and every response carries `x-trace-id`. With telemetry off the
//! header is still set (the client's trace id, or a fresh random one) so clients
//! can always correlate. For `text/event-stream` responses the span ends when
//! the body is done (or the client leaves), not when the headers go out.
//! `/health` and `/metrics` get no span ([`UNTRACED_ROUTES`]).

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::{FromFnLayer, Next};
use axum::response::Response;
use futures::future::BoxFuture;
use futures::StreamExt;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanKind, Status, TraceContextExt, TraceId, Tracer,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use opentelemetry_semantic_conventions::trace as semconv;

use super::names::span::TRACE_ID_HEADER;
use super::Telemetry;

/// Routes answered without a server span (still with `x-trace-id`): probes and
/// scrapes arrive every few seconds and would bury request traces.
pub const UNTRACED_ROUTES: &[&str] = &["/health", "/live", "/metrics"];

/// The middleware function's type, named so that [`HttpLayer`] can be.
pub type MiddlewareFn = fn(State<Telemetry>, Request, Next) -> BoxFuture<'static, Response>;

/// What [`Telemetry::http_layer`] returns: use it as `router.layer(telemetry.http_layer())`.
pub type HttpLayer = FromFnLayer<MiddlewareFn, Telemetry, (State<Telemetry>, Request)>;

pub fn layer(telemetry: Telemetry) -> HttpLayer {
    axum::middleware::from_fn_with_state(telemetry, middleware as MiddlewareFn)
}

fn middleware(
    State(t): State<Telemetry>,
    req: Request,
    next: Next,
) -> BoxFuture<'static, Response> {
    Box::pin(trace_request(t, req, next))
}

/// Reads W3C headers for the propagator.
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The remote parent context from `traceparent`/`tracestate` (empty if absent or invalid).
pub fn extract_parent(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

async fn trace_request(telemetry: Telemetry, mut req: Request, next: Next) -> Response {
    let parent = extract_parent(req.headers());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let untraced = route
        .as_deref()
        .is_some_and(|r| UNTRACED_ROUTES.contains(&r));
    let shared = telemetry.shared().filter(|_| !untraced);
    let Some(shared) = shared else {
        let remote = parent.span().span_context().trace_id();
        let trace_id = if remote == TraceId::INVALID {
            RandomIdGenerator::default().new_trace_id()
        } else {
            remote
        };
        req.extensions_mut().insert(parent);
        let mut response = next.run(req).await;
        set_trace_header(response.headers_mut(), trace_id);
        return response;
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = method_name(req.method());
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    };
    let builder = SpanBuilder::from_name(name)
        .with_kind(SpanKind::Server)
        .with_attributes(request_attributes(&req, method, route));
    let span = shared.spans.tracer.build_with_context(builder, &parent);
    let trace_id = span.span_context().trace_id();
    let cx = parent.with_span(span);
    req.extensions_mut().insert(cx.clone());

    let mut response = next.run(req).await;
    let status = response.status();
    let span = cx.span();
    span.set_attribute(KeyValue::new(
        semconv::HTTP_RESPONSE_STATUS_CODE,
        i64::from(status.as_u16()),
    ));
    if status.is_server_error() {
        span.set_attribute(KeyValue::new(
            semconv::ERROR_TYPE,
            status.as_str().to_owned(),
        ));
        span.set_status(Status::error(status.to_string()));
    }
    set_trace_header(response.headers_mut(), trace_id);
    if is_event_stream(response.headers()) {
        end_with_body(response, cx)
    } else {
        span.end();
        response
    }
}

/// Semantic-convention method name: known methods as-is, others `_OTHER` (bounded).
fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

fn request_attributes(req: &Request, method: &'static str, route: Option<String>) -> Vec<KeyValue> {
    let mut attrs = vec![
        KeyValue::new(semconv::HTTP_REQUEST_METHOD, method),
        KeyValue::new(semconv::URL_PATH, req.uri().path().to_owned()),
        KeyValue::new(
            semconv::URL_SCHEME,
            req.uri().scheme_str().unwrap_or("http").to_owned(),
        ),
        KeyValue::new(semconv::NETWORK_PROTOCOL_VERSION, protocol_version(req)),
    ];
    if let Some(route) = route {
        attrs.push(KeyValue::new(semconv::HTTP_ROUTE, route));
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok());
    if let Some(host) = host {
        attrs.push(KeyValue::new(
            semconv::SERVER_ADDRESS,
            host.host().to_owned(),
        ));
        if let Some(port) = host.port_u16() {
            attrs.push(KeyValue::new(semconv::SERVER_PORT, i64::from(port)));
        }
    }
    if let Some(agent) = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        attrs.push(KeyValue::new(
            semconv::USER_AGENT_ORIGINAL,
            agent.to_owned(),
        ));
    }
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<std::net::SocketAddr>>() {
        attrs.push(KeyValue::new(
            semconv::CLIENT_ADDRESS,
            peer.ip().to_string(),
        ));
    }
    attrs
}

fn protocol_version(req: &Request) -> &'static str {
    match req.version() {
        axum::http::Version::HTTP_09 => "0.9",
        axum::http::Version::HTTP_10 => "1.0",
        axum::http::Version::HTTP_2 => "2",
        axum::http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

fn set_trace_header(headers: &mut HeaderMap, trace_id: TraceId) {
    if let Ok(value) = HeaderValue::from_str(&trace_id.to_string()) {
        headers.insert(TRACE_ID_HEADER, value);
    }
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// Ends the span it holds when dropped.
struct EndOnDrop(Context);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.span().end();
    }
}

/// Keep the server span open until a streamed body is fully sent or dropped.
fn end_with_body(response: Response, cx: Context) -> Response {
    let (parts, body) = response.into_parts();
    let guard = EndOnDrop(cx);
    let stream = body.into_data_stream().map(move |chunk| {
        let _held_until_the_body_drops = &guard;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_extracted_by_the_propagator() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        headers.insert("tracestate", HeaderValue::from_static("vendor=value"));
        let cx = extract_parent(&headers);
        let sc = cx.span().span_context().clone();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(sc.trace_state().get("vendor"), Some("value"));
    }

    #[test]
    fn malformed_traceparent_gives_an_empty_context() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-zz-00f067aa0ba902b7-01"),
        );
        assert!(!extract_parent(&headers).span().span_context().is_valid());
        assert!(!extract_parent(&HeaderMap::new())
            .span()
            .span_context()
            .is_valid());
    }

    #[test]
    fn unknown_methods_are_bounded() {
        assert_eq!(method_name(&Method::POST), "POST");
        let custom = Method::from_bytes(b"BREW").map(|m| method_name(&m));
        assert_eq!(custom.ok(), Some("_OTHER"));
    }
}
