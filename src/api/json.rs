//! Request bodies: read, checked field by field against the route's table
//! ([`super::fields`]), then deserialized with errors that name the failing
//! field, in the route's error shape: 400 for text that is not JSON, 422 for
//! JSON of the wrong shape or an unsupported field, 413 for a body over the limit.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::{ApiError, ErrorKind, Flavor};
use super::fields::{self, Field};

/// The body of a request, as an axum handler receives it.
pub type Body = Result<Bytes, BytesRejection>;

/// The body as a JSON object whose keys `tables` all accept.
pub fn object(
    flavor: Flavor,
    body: Body,
    tables: &[&[Field]],
) -> Result<Map<String, Value>, ApiError> {
    let bytes = body.map_err(|e| {
        let kind = if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ErrorKind::PayloadTooLarge
        } else {
            ErrorKind::MalformedJson
        };
        ApiError::new(flavor, kind, format!("request body: {}", e.body_text()))
    })?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| syntax_error(flavor, &bytes, e))?;
    let Value::Object(map) = value else {
        return Err(ApiError::new(
            flavor,
            ErrorKind::Schema,
            "request body: expected a JSON object",
        ));
    };
    fields::check(flavor, "", &map, tables)?;
    Ok(map)
}

/// A syntax error, named by the field it is in (`"temperature": NaN` says
/// `parameters.temperature`): the body is walked again to find the path.
fn syntax_error(flavor: Flavor, bytes: &[u8], e: serde_json::Error) -> ApiError {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let path = match serde_path_to_error::deserialize::<_, PathProbe>(de) {
        Err(probe) => probe.path().to_string(),
        Ok(_) => String::new(),
    };
    match path.as_str() {
        "" | "." | "?" => ApiError::new(
            flavor,
            ErrorKind::MalformedJson,
            format!("request body: {e}"),
        ),
        _ => ApiError::about(flavor, ErrorKind::MalformedJson, &path, e),
    }
}

/// Walks any JSON, reading map keys as strings so serde_path_to_error can
/// follow them (`Value` reads its keys in a way it cannot see).
struct PathProbe;

impl<'de> serde::Deserialize<'de> for PathProbe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ProbeVisitor)
    }
}

struct ProbeVisitor;

impl<'de> serde::de::Visitor<'de> for ProbeVisitor {
    type Value = PathProbe;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<PathProbe, A::Error> {
        while map.next_key::<String>()?.is_some() {
            map.next_value::<PathProbe>()?;
        }
        Ok(PathProbe)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<PathProbe, A::Error> {
        while seq.next_element::<PathProbe>()?.is_some() {}
        Ok(PathProbe)
    }

    fn visit_bool<E>(self, _: bool) -> Result<PathProbe, E> {
        Ok(PathProbe)
    }
    fn visit_i64<E>(self, _: i64) -> Result<PathProbe, E> {
        Ok(PathProbe)
    }
    fn visit_u64<E>(self, _: u64) -> Result<PathProbe, E> {
        Ok(PathProbe)
    }
    fn visit_f64<E>(self, _: f64) -> Result<PathProbe, E> {
        Ok(PathProbe)
    }
    fn visit_str<E>(self, _: &str) -> Result<PathProbe, E> {
        Ok(PathProbe)
    }
    fn visit_unit<E>(self) -> Result<PathProbe, E> {
        Ok(PathProbe)
    }
}

/// Deserializes `value`, reporting the path of the field that failed under
/// `prefix` (`parameters.` for a nested object).
pub fn parse<T: DeserializeOwned>(
    flavor: Flavor,
    prefix: &str,
    value: Value,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde_path_to_error says "." for the root and "?" where it lost track.
        let field = if matches!(path.as_str(), "" | "." | "?") {
            prefix.trim_end_matches('.').to_owned()
        } else {
            format!("{prefix}{path}")
        };
        if field.is_empty() {
            return ApiError::new(flavor, ErrorKind::Schema, format!("request body: {inner}"));
        }
        ApiError::about(flavor, ErrorKind::Schema, &field, inner)
    })
}

/// One field of `body` (`null` when absent), deserialized and named in errors.
pub fn field<T: DeserializeOwned>(
    flavor: Flavor,
    body: &Map<String, Value>,
    name: &str,
) -> Result<T, ApiError> {
    parse(flavor, name, body.get(name).cloned().unwrap_or(Value::Null))
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

    fn body(text: &str) -> Body {
        Ok(Bytes::from(text.to_owned()))
    }

    #[test]
    fn a_wrong_type_names_the_nested_field() {
        let v = serde_json::json!({"inputs": "x", "parameters": {"temperature": "hot"}});
        let e = parse::<Outer>(Flavor::Tgi, "", v).expect_err("wrong type");
        assert_eq!(e.kind, ErrorKind::Schema);
        assert!(
            e.message.starts_with("parameters.temperature:"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_missing_field_is_named() {
        let v = serde_json::json!({"parameters": {}});
        let e = parse::<Outer>(Flavor::Tgi, "", v).expect_err("missing");
        assert_eq!(e.kind, ErrorKind::Schema);
        assert!(e.message.contains("`inputs`"), "{}", e.message);
    }

    #[test]
    fn text_that_is_not_json_is_malformed() {
        let e = object(Flavor::Tgi, body("{inputs: nope"), &[fields::TGI]).expect_err("syntax");
        assert_eq!(e.kind, ErrorKind::MalformedJson);
        assert_eq!(e.kind.status(), 400);
        let e = object(Flavor::Tgi, body("[1]"), &[fields::TGI]).expect_err("array");
        assert_eq!(e.kind, ErrorKind::Schema);
    }
}
