//! API errors: one table maps each error to an HTTP status and an `error_type`
//! string. The same string goes into the JSON body and the `error.type`
//! telemetry attribute. TGI routes answer in TGI's error shape, OpenAI routes in
//! OpenAI's.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::engine::SubmitError;

/// Which wire format an error is rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Tgi,
    OpenAi,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The body is not JSON at all.
    MalformedJson,
    /// JSON of the wrong shape: a missing field or a wrong type.
    Schema,
    /// Well-formed, but a value is out of range.
    Validation,
    /// The `model` field names a model this server does not serve.
    UnknownModel,
    PayloadTooLarge,
    QueueFull,
    /// The model is still loading.
    Loading,
    /// The engine failed while generating.
    Generation,
    /// No such route.
    NotFound,
}

impl ErrorKind {
    pub fn status(&self) -> StatusCode {
        match self {
            ErrorKind::MalformedJson | ErrorKind::UnknownModel => StatusCode::BAD_REQUEST,
            ErrorKind::Schema | ErrorKind::Validation => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::QueueFull => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Loading => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Generation => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
        }
    }

    /// Stable, low-cardinality name (JSON `error_type`, metric `error.type`).
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::MalformedJson => "malformed_json",
            ErrorKind::Schema => "invalid_schema",
            ErrorKind::Validation => "validation",
            ErrorKind::UnknownModel => "model_not_found",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::QueueFull => "queue_full",
            ErrorKind::Loading => "model_loading",
            ErrorKind::Generation => "generation",
            ErrorKind::NotFound => "not_found",
        }
    }
}

/// An error with the field it concerns, ready to be rendered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    /// The request field at fault, e.g. `parameters.temperature`.
    pub param: Option<String>,
    pub flavor: Flavor,
}

/// Seconds a client should wait after a 429.
const RETRY_AFTER_SECS: &str = "1";

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            param: None,
            flavor: Flavor::Tgi,
        }
    }

    /// A validation error about `field`; the message starts with the field name.
    pub fn field(field: &str, message: impl std::fmt::Display) -> Self {
        Self {
            kind: ErrorKind::Validation,
            message: format!("{field}: {message}"),
            param: Some(field.to_owned()),
            flavor: Flavor::Tgi,
        }
    }

    pub fn flavor(mut self, flavor: Flavor) -> Self {
        self.flavor = flavor;
        self
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        let kind = match e {
            SubmitError::QueueFull(_) => ErrorKind::QueueFull,
            SubmitError::TooLarge { .. } | SubmitError::EmptyPrompt => ErrorKind::Validation,
            SubmitError::EngineDead => ErrorKind::Loading,
        };
        ApiError::new(kind, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.kind.status();
        let body = match self.flavor {
            Flavor::Tgi => json!({
                "error": self.message,
                "error_type": self.kind.as_str(),
            }),
            Flavor::OpenAi => json!({
                "error": {
                    "message": self.message,
                    "type": if status.is_server_error() { "server_error" } else { "invalid_request_error" },
                    "param": self.param,
                    "code": self.kind.as_str(),
                }
            }),
        };
        let mut resp = (status, Json(body)).into_response();
        if self.kind == ErrorKind::QueueFull {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        resp
    }
}
