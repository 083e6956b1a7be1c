//! API errors: one table maps each error to an HTTP status and an `error_type`
//! string. The same string goes into the JSON body, the SSE error event and
//! the `error.type` telemetry attribute. An error is made in its route's
//! shape ([`Flavor`]): TGI routes answer `{"error", "error_type"}`, OpenAI
//! routes `{"error": {"message", "type", "param", "code"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::engine::{Failure, FailureKind, SubmitError};

/// Which wire format an error is rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Tgi,
    OpenAi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The body is not JSON at all.
    MalformedJson,
    /// JSON of the wrong shape: a missing field or a wrong type.
    Schema,
    /// Well-formed, but a value is out of range.
    Validation,
    /// A field this server does not implement, sent with a value that matters.
    Unsupported,
    /// The `model` field names a model this server does not serve.
    UnknownModel,
    /// Missing or wrong API key.
    Unauthorized,
    PayloadTooLarge,
    QueueFull,
    /// The model is still loading.
    Loading,
    /// The server is draining for shutdown; new requests go elsewhere.
    ShuttingDown,
    /// The engine thread has stopped; the process should be restarted.
    EngineUnavailable,
    /// A generation ended by the shutdown's grace period running out.
    Shutdown,
    /// `--request-timeout` passed before the request could start.
    RequestTimeout,
    /// Every connection slot is taken (`--max-connections`).
    TooManyConnections,
    /// The engine failed while generating.
    Generation,
    /// No such route.
    NotFound,
}

impl ErrorKind {
    pub fn status(&self) -> StatusCode {
        use ErrorKind::*;
        match self {
            MalformedJson | UnknownModel => StatusCode::BAD_REQUEST,
            Schema | Validation | Unsupported => StatusCode::UNPROCESSABLE_ENTITY,
            Unauthorized => StatusCode::UNAUTHORIZED,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            QueueFull => StatusCode::TOO_MANY_REQUESTS,
            Loading | ShuttingDown | EngineUnavailable | Shutdown | TooManyConnections => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            Generation => StatusCode::INTERNAL_SERVER_ERROR,
            NotFound => StatusCode::NOT_FOUND,
        }
    }

    /// Stable, low-cardinality name (JSON `error_type`, metric `error.type`).
    pub fn as_str(&self) -> &'static str {
        use ErrorKind::*;
        match self {
            MalformedJson => "malformed_json",
            Schema => "invalid_schema",
            Validation => "validation",
            Unsupported => "unsupported",
            UnknownModel => "model_not_found",
            Unauthorized => "unauthorized",
            PayloadTooLarge => "payload_too_large",
            QueueFull => "queue_full",
            Loading => "model_loading",
            ShuttingDown => "shutting_down",
            EngineUnavailable => "engine_unavailable",
            Shutdown => "shutdown",
            RequestTimeout => "request_timeout",
            TooManyConnections => "too_many_connections",
            Generation => "generation",
            NotFound => "not_found",
        }
    }

    /// Seconds a client should wait before retrying, where retrying helps.
    fn retry_after(&self) -> Option<&'static str> {
        match self {
            ErrorKind::QueueFull | ErrorKind::TooManyConnections => Some("1"),
            ErrorKind::Loading | ErrorKind::ShuttingDown => Some("5"),
            _ => None,
        }
    }
}

/// An error with the field it concerns, in its route's shape.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    /// The request field at fault, e.g. `parameters.temperature`.
    pub param: Option<String>,
    pub flavor: Flavor,
}

impl ApiError {
    pub fn new(flavor: Flavor, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            param: None,
            flavor,
        }
    }

    /// A validation error about `field`; the message starts with the field name.
    pub fn field(flavor: Flavor, field: &str, message: impl std::fmt::Display) -> Self {
        Self::about(flavor, ErrorKind::Validation, field, message)
    }

    /// An error of `kind` about `field`; the message starts with the field name.
    pub fn about(
        flavor: Flavor,
        kind: ErrorKind,
        field: &str,
        message: impl std::fmt::Display,
    ) -> Self {
        Self {
            kind,
            message: format!("{field}: {message}"),
            param: Some(field.to_owned()),
            flavor,
        }
    }

    pub fn from_submit(flavor: Flavor, e: SubmitError) -> Self {
        let kind = match e {
            SubmitError::QueueFull(_) => ErrorKind::QueueFull,
            SubmitError::TooLarge { .. } | SubmitError::EmptyPrompt => ErrorKind::Validation,
            SubmitError::EngineDead => ErrorKind::EngineUnavailable,
        };
        Self::new(flavor, kind, e.to_string())
    }

    pub fn from_failure(flavor: Flavor, f: Failure) -> Self {
        let kind = match f.kind {
            FailureKind::Engine => ErrorKind::Generation,
            FailureKind::Shutdown => ErrorKind::Shutdown,
            FailureKind::Timeout => ErrorKind::RequestTimeout,
            FailureKind::EngineDead => ErrorKind::EngineUnavailable,
        };
        Self::new(flavor, kind, f.message)
    }

    fn body(&self) -> serde_json::Value {
        match self.flavor {
            Flavor::Tgi => serde_json::to_value(TgiError {
                error: &self.message,
                error_type: self.kind.as_str(),
            }),
            Flavor::OpenAi => serde_json::to_value(OpenAiErrorBody {
                error: OpenAiError {
                    message: &self.message,
                    kind: if self.kind.status().is_server_error() {
                        "server_error"
                    } else {
                        "invalid_request_error"
                    },
                    param: self.param.as_deref(),
                    code: self.kind.as_str(),
                },
            }),
        }
        .unwrap_or_default()
    }

    /// The error as the last event of an SSE stream that already started
    /// (its status can no longer change): the same JSON as the response body.
    pub fn sse_event(&self) -> Event {
        Event::default()
            .json_data(self.body())
            .unwrap_or_else(|_| Event::default().data(self.kind.as_str()))
    }
}

/// TGI's error body.
#[derive(Serialize)]
struct TgiError<'a> {
    error: &'a str,
    error_type: &'static str,
}

/// OpenAI's error body.
#[derive(Serialize)]
struct OpenAiErrorBody<'a> {
    error: OpenAiError<'a>,
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
    code: &'static str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.kind.status();
        let mut resp = (status, Json(self.body())).into_response();
        if let Some(secs) = self.kind.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
        }
        if self.kind == ErrorKind::Unauthorized {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_flavor_has_its_shape() {
        let e = ApiError::field(Flavor::OpenAi, "temperature", "must be >= 0");
        let body = e.body();
        assert_eq!(body["error"]["param"], "temperature");
        assert_eq!(body["error"]["code"], "validation");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        let e = ApiError::new(Flavor::Tgi, ErrorKind::Shutdown, "bye");
        assert_eq!(e.body()["error_type"], "shutdown");
    }

    #[test]
    fn retryable_errors_say_when() {
        let r = ApiError::new(Flavor::Tgi, ErrorKind::QueueFull, "full").into_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let r = ApiError::new(Flavor::Tgi, ErrorKind::Unauthorized, "no").into_response();
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
