//! A JSON body extractor whose errors name the offending field and use the
//! route's error shape: 400 for text that is not JSON, 422 for JSON of the wrong
//! shape, 413 for a body over the limit.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorKind, Flavor};

/// Request types say which API family they belong to.
pub trait WireRequest: DeserializeOwned {
    const FLAVOR: Flavor;

    /// Parses a request body. Types made of several parts override this to
    /// parse each part with its own field paths (`#[serde(flatten)]` loses them).
    fn from_bytes(bytes: &[u8]) -> Result<Self, ApiError> {
        parse(bytes)
    }
}

pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: WireRequest,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let kind = if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ErrorKind::PayloadTooLarge
            } else {
                ErrorKind::MalformedJson
            };
            ApiError::new(kind, format!("request body: {}", e.body_text())).flavor(T::FLAVOR)
        })?;
        T::from_bytes(&bytes)
            .map(JsonBody)
            .map_err(|e| e.flavor(T::FLAVOR))
    }
}

/// Deserializes `bytes`, reporting the path of the field that failed.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let kind = match inner.classify() {
            serde_json::error::Category::Data => ErrorKind::Schema,
            _ => ErrorKind::MalformedJson,
        };
        // serde_path_to_error says "." for the root and "?" where it lost track.
        if matches!(path.as_str(), "" | "." | "?") {
            return ApiError::new(kind, format!("request body: {inner}"));
        }
        let mut err = ApiError::new(kind, format!("{path}: {inner}"));
        err.param = Some(path);
        err
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Outer {
        #[allow(dead_code)]
        inputs: String,
        #[allow(dead_code)]
        #[serde(default)]
        parameters: Inner,
    }
    #[derive(Debug, Default, serde::Deserialize)]
    struct Inner {
        #[allow(dead_code)]
        temperature: Option<f32>,
    }

    #[test]
    fn a_wrong_type_names_the_nested_field() {
        let e = parse::<Outer>(br#"{"inputs":"x","parameters":{"temperature":"hot"}}"#)
            .expect_err("wrong type");
        assert_eq!(e.kind, ErrorKind::Schema);
        assert!(
            e.message.starts_with("parameters.temperature:"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_missing_field_is_named() {
        let e = parse::<Outer>(br#"{"parameters":{}}"#).expect_err("missing");
        assert_eq!(e.kind, ErrorKind::Schema);
        assert!(e.message.contains("`inputs`"), "{}", e.message);
    }

    #[test]
    fn text_that_is_not_json_is_malformed() {
        let e = parse::<Outer>(b"{inputs: nope").expect_err("syntax");
        assert_eq!(e.kind, ErrorKind::MalformedJson);
        assert_eq!(e.kind.status(), 400);
    }
}
