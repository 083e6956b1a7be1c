//! Chat messages: each field checked against its table, each role one the
//! OpenAI API defines, each content part text.

use serde_json::Value;

use super::super::chat::ChatMessage;
use super::super::error::{ApiError, ErrorKind};
use super::super::fields;
use super::F;

/// The roles the OpenAI API defines. The chat template renders each under its
/// own name, except `developer`, OpenAI's newer spelling of `system`, which
/// is rendered as `system` (the role the model was trained on).
pub const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// `messages`: an array of message objects.
pub fn parse(v: Option<&Value>) -> Result<Vec<ChatMessage>, ApiError> {
    let schema = |field: &str, m: &str| ApiError::about(F, ErrorKind::Schema, field, m);
    let Some(v) = v else {
        return Err(schema("messages", "missing field `messages`"));
    };
    let Some(items) = v.as_array() else {
        return Err(schema("messages", "expected an array of messages"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect()
}

fn message(i: usize, m: &Value) -> Result<ChatMessage, ApiError> {
    let path = format!("messages[{i}]");
    let Some(obj) = m.as_object() else {
        return Err(ApiError::about(
            F,
            ErrorKind::Schema,
            &path,
            "expected a message object",
        ));
    };
    fields::check(F, &format!("{path}."), obj, &[fields::MESSAGE])?;
    let role = match obj.get("role") {
        Some(Value::String(r)) if ROLES.contains(&r.as_str()) => r.as_str(),
        Some(Value::String(r)) => {
            return Err(ApiError::field(
                F,
                &format!("{path}.role"),
                format!("`{r}` is not a chat role; use one of {}", ROLES.join(", ")),
            ))
        }
        Some(_) => {
            return Err(ApiError::about(
                F,
                ErrorKind::Schema,
                &format!("{path}.role"),
                "expected a string",
            ))
        }
        None => {
            return Err(ApiError::about(
                F,
                ErrorKind::Schema,
                &format!("{path}.role"),
                "missing field `role`",
            ))
        }
    };
    Ok(ChatMessage {
        role: if role == "developer" { "system" } else { role }.to_owned(),
        content: content(&path, obj.get("content"))?,
    })
}

/// A string, or an array of `{type: "text", text}` parts (joined).
fn content(path: &str, v: Option<&Value>) -> Result<String, ApiError> {
    let field = format!("{path}.content");
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| text_part(&format!("{field}[{j}]"), p))
            .collect(),
        Some(_) => Err(ApiError::about(
            F,
            ErrorKind::Schema,
            &field,
            "expected a string or an array of content parts",
        )),
    }
}

fn text_part(path: &str, p: &Value) -> Result<String, ApiError> {
    let kind = p.get("type").and_then(Value::as_str);
    match (kind, p.get("text").and_then(Value::as_str)) {
        (Some("text"), Some(text)) => Ok(text.to_owned()),
        (Some("text"), None) => Err(ApiError::about(
            F,
            ErrorKind::Schema,
            &format!("{path}.text"),
            "missing field `text`",
        )),
        (Some(other), _) => Err(ApiError::about(
            F,
            ErrorKind::Unsupported,
            &format!("{path}.type"),
            format!("`{other}` content is not supported; this server reads text parts only"),
        )),
        (None, _) => Err(ApiError::about(
            F,
            ErrorKind::Schema,
            &format!("{path}.type"),
            "missing field `type`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_openai_role_is_accepted_and_others_are_named() {
        for role in ROLES {
            let v = serde_json::json!([{"role": role, "content": "hi"}]);
            assert!(parse(Some(&v)).is_ok(), "{role}");
        }
        let v = serde_json::json!([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]);
        let e = parse(Some(&v)).expect_err("unknown role");
        assert_eq!(e.param.as_deref(), Some("messages[1].role"));
        assert_eq!(e.kind, ErrorKind::Validation);
    }

    #[test]
    fn non_text_parts_and_unknown_fields_are_refused_by_path() {
        let v = serde_json::json!([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]);
        let e = parse(Some(&v)).expect_err("image");
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0].type"));
        assert_eq!(e.kind, ErrorKind::Unsupported);
        let v = serde_json::json!([{"role": "user", "content": "x", "name": "bob"}]);
        let e = parse(Some(&v)).expect_err("name");
        assert_eq!(e.param.as_deref(), Some("messages[0].name"));
    }

    #[test]
    fn developer_is_rendered_as_system() {
        let v = serde_json::json!([{"role": "developer", "content": [{"type": "text", "text": "be brief"}]}]);
        let m = parse(Some(&v)).expect("ok");
        assert_eq!(m[0].role, "system");
        assert_eq!(m[0].content, "be brief");
    }
}
