//! Prompts from a JSONL file: bare strings, `{"prompt"}`, `{"messages"}` or
//! ShareGPT `{"conversations"}` per line.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Message, Prompt};

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {detail}")]
    Line {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error("{0}: no prompts in file")]
    Empty(PathBuf),
}

/// One dataset entry: the prompt and, if the line gave one, its output length.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub prompt: Prompt,
    pub max_tokens: Option<u32>,
}

/// Load a JSONL file: one prompt or message list per line.
///
/// Accepted lines: a JSON string; `{"prompt": "..."}`; `{"messages": [{role, content}]}`;
/// ShareGPT `{"conversations": [{"from": "human"|"gpt"|"system", "value": "..."}]}`.
/// An optional `max_tokens` (or `output_len`) fixes that line's output length.
/// For ShareGPT, the turns before the last assistant turn form the prompt.
pub fn load_jsonl(path: &Path) -> Result<Vec<Entry>, WorkloadError> {
    let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry = parse_line(line).map_err(|detail| WorkloadError::Line {
            path: path.to_path_buf(),
            line: n + 1,
            detail,
        })?;
        entries.push(entry);
    }
    if entries.is_empty() {
        return Err(WorkloadError::Empty(path.to_path_buf()));
    }
    Ok(entries)
}

pub(crate) fn parse_line(line: &str) -> Result<Entry, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let prompt = match &v {
        Value::String(s) => Prompt::Text(s.clone()),
        Value::Object(o) => {
            if let Some(p) = o.get("prompt") {
                Prompt::Text(p.as_str().ok_or("\"prompt\" must be a string")?.to_string())
            } else if let Some(m) = o.get("messages") {
                Prompt::Messages(
                    serde_json::from_value(m.clone())
                        .map_err(|e| format!("\"messages\" must be [{{role, content}}]: {e}"))?,
                )
            } else if let Some(c) = o.get("conversations") {
                Prompt::Messages(sharegpt(c)?)
            } else {
                return Err("expected \"prompt\", \"messages\" or \"conversations\"".into());
            }
        }
        _ => return Err("expected a string or an object".into()),
    };
    if let Prompt::Messages(m) = &prompt {
        if m.is_empty() {
            return Err("empty message list".into());
        }
    }
    let max_tokens = ["max_tokens", "output_len"]
        .iter()
        .find_map(|k| v.get(k))
        .map(|n| {
            n.as_u64()
                .filter(|n| *n >= 1 && *n <= u32::MAX as u64)
                .map(|n| n as u32)
                .ok_or("\"max_tokens\" must be a positive integer")
        })
        .transpose()?;
    Ok(Entry { prompt, max_tokens })
}

fn sharegpt(c: &Value) -> Result<Vec<Message>, String> {
    let turns = c.as_array().ok_or("\"conversations\" must be an array")?;
    let mut messages = Vec::new();
    for t in turns {
        let from = t
            .get("from")
            .and_then(Value::as_str)
            .ok_or("turn without \"from\"")?;
        let value = t
            .get("value")
            .and_then(Value::as_str)
            .ok_or("turn without \"value\"")?;
        let role = match from {
            "human" | "user" => "user",
            "gpt" | "assistant" | "chatgpt" | "bard" => "assistant",
            "system" => "system",
            other => return Err(format!("unknown ShareGPT speaker '{other}'")),
        };
        messages.push(Message {
            role: role.into(),
            content: value.into(),
        });
    }
    // The prompt is everything before the final assistant answer.
    if let Some(last) = messages.iter().rposition(|m| m.role == "assistant") {
        messages.truncate(last);
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn jsonl_accepts_every_documented_line_shape() {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        let lines = [
            r#""plain string""#,
            r#"{"prompt": "p", "max_tokens": 5}"#,
            r#"{"messages": [{"role": "user", "content": "hi"}]}"#,
            r#"{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}"#,
        ];
        writeln!(f, "{}", lines.join("\n")).expect("write");
        let entries = load_jsonl(f.path()).expect("valid file");
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[1].max_tokens, Some(5));
        assert_eq!(
            entries[3].prompt.as_messages().len(),
            1,
            "answer turn dropped"
        );
    }

    #[test]
    fn malformed_jsonl_names_file_and_line() {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(f, "{{\"prompt\": \"ok\"}}\n{{\"prompt\": 3}}").expect("write");
        let err = load_jsonl(f.path()).expect_err("bad line").to_string();
        assert!(err.contains(":2:"), "{err}");
        assert!(!err.contains('\n'));
    }
}
