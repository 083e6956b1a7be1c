//! Who may call what: the API key and CORS.
//!
//! With `--api-key`, every route needs `Authorization: Bearer <key>` except
//! `/health` and `/live` (probes), and `/metrics` and `/info` unless
//! `--protect-metrics`. Keys are compared as SHA-256 digests in constant time,
//! so neither the key's bytes nor its length leak through timing, and no error
//! ever repeats what the client sent. CORS is off unless
//! `--cors-allow-origin` names origins; then preflights are answered before
//! authentication, as browsers send them without credentials.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use super::error::{ApiError, ErrorKind, Flavor};

/// The configured key, kept only as its digest.
#[derive(Clone)]
pub struct ApiKey {
    digest: [u8; 32],
}

impl ApiKey {
    pub fn new(key: &str) -> Self {
        Self {
            digest: Sha256::digest(key.as_bytes()).into(),
        }
    }

    /// Whether `presented` is the key, in time independent of both.
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.digest.ct_eq(&digest).into()
    }
}

/// The error shape of a route: OpenAI's under `/v1/`, TGI's elsewhere.
pub fn flavor_of(path: &str) -> Flavor {
    if path.starts_with("/v1/") {
        Flavor::OpenAi
    } else {
        Flavor::Tgi
    }
}

/// Middleware: 401 unless the request carries the key.
pub async fn require_key(State(key): State<ApiKey>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(k) if key.matches(k) => next.run(req).await,
        Some(_) => unauthorized(req.uri().path(), "the API key is not valid"),
        None => unauthorized(
            req.uri().path(),
            "this server requires an API key: send `Authorization: Bearer <key>`",
        ),
    }
}

fn unauthorized(path: &str, message: &str) -> Response {
    ApiError::new(flavor_of(path), ErrorKind::Unauthorized, message).into_response()
}

/// CORS for `origins` (`*` allows any), or `None` when CORS is off.
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers(Any)
            .expose_headers([
                header::HeaderName::from_static("x-trace-id"),
                header::RETRY_AFTER,
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_exactly() {
        let k = ApiKey::new("s3cret");
        assert!(k.matches("s3cret"));
        assert!(!k.matches("s3cret "));
        assert!(!k.matches("s3cre"));
        assert!(!k.matches(""));
    }

    #[test]
    fn openai_routes_get_openai_errors() {
        assert_eq!(flavor_of("/v1/chat/completions"), Flavor::OpenAi);
        assert_eq!(flavor_of("/generate"), Flavor::Tgi);
    }
}
