//! Headers sent with every request: `--header 'Name: value'` and `--api-key`
//! (as `Authorization: Bearer KEY`), for servers that require auth.
//!
//! They go on the HTTP client itself, so the preflight, `/tokenize`,
//! `/metrics` and the load all carry them. Secrets never reach the output:
//! `result.json` records the key as `<redacted>`, header values whose name
//! looks secret likewise, and the values are marked sensitive for reqwest.

use std::fmt;
use std::str::FromStr;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use serde::{Serialize, Serializer};

/// What secret values are replaced with in `result.json`.
pub const REDACTED: &str = "<redacted>";

/// One `--header 'Name: value'`.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    pub value: HeaderValue,
}

impl Header {
    /// Whether the value may be a credential (then it is never written out).
    fn is_secret(&self) -> bool {
        let name = self.name.as_str();
        name == "authorization"
            || name == "proxy-authorization"
            || name == "cookie"
            || ["key", "token", "secret", "auth", "password"]
                .iter()
                .any(|s| name.contains(s))
    }
}

impl FromStr for Header {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, value) = s
            .split_once(':')
            .ok_or_else(|| "expected 'Name: value'".to_string())?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("'{}' is not a valid header name", name.trim()))?;
        let mut value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("the value of header {name} is not a valid header value"))?;
        value.set_sensitive(true);
        Ok(Header { name, value })
    }
}

/// Debug never shows a value that may be secret.
impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.shown())
    }
}

impl Header {
    fn shown(&self) -> &str {
        if self.is_secret() {
            REDACTED
        } else {
            self.value.to_str().unwrap_or(REDACTED)
        }
    }
}

impl Serialize for Header {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}: {}", self.name, self.shown()))
    }
}

/// Serialize an API key as `<redacted>` (or null when absent).
pub fn redact<S: Serializer>(key: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match key {
        Some(_) => s.serialize_str(REDACTED),
        None => s.serialize_none(),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("--api-key is not a valid header value")]
pub struct BadKey;

/// The headers every request carries; `--api-key` wins over a `--header
/// Authorization`.
pub fn default_headers(headers: &[Header], api_key: Option<&str>) -> Result<HeaderMap, BadKey> {
    let mut map = HeaderMap::new();
    for h in headers {
        map.append(h.name.clone(), h.value.clone());
    }
    if let Some(key) = api_key {
        let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| BadKey)?;
        value.set_sensitive(true);
        map.insert(AUTHORIZATION, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_and_secrets_stay_hidden() {
        let h: Header = "X-Tenant: blue".parse().expect("valid");
        assert_eq!(serde_json::to_value(&h).ok(), Some("x-tenant: blue".into()));
        let secret: Header = "X-Api-Key: s3cr3t".parse().expect("valid");
        let shown = serde_json::to_string(&secret).unwrap_or_default();
        assert!(
            !shown.contains("s3cr3t") && shown.contains(REDACTED),
            "{shown}"
        );
        assert!(!format!("{secret:?}").contains("s3cr3t"));
        for bad in ["no colon", "bad name: v", ": v"] {
            assert!(bad.parse::<Header>().is_err(), "{bad}");
        }
        let map = default_headers(&[h, secret], Some("k")).expect("valid");
        assert_eq!(
            map.get(AUTHORIZATION).map(|v| v.as_bytes()),
            Some(&b"Bearer k"[..])
        );
        assert!(map
            .get(AUTHORIZATION)
            .is_some_and(HeaderValue::is_sensitive));
        assert!(default_headers(&[], Some("bad\nkey")).is_err());
    }
}
