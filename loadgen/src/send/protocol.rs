//! The three streaming API shapes loadgen speaks: request bodies and SSE events.
//!
//! Parsing is strict about shape (an event that is not the selected API's is an
//! error, so a wrong `--api` is caught by the preflight probe) and lenient about
//! extras (unknown fields are ignored).

use serde_json::{json, Value};

use crate::plan::workload::Prompt;

/// Which API the target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiKind {
    /// text-generation-inference `POST /generate_stream`.
    Tgi,
    /// OpenAI `POST /v1/completions` with `stream: true`.
    Completions,
    /// OpenAI `POST /v1/chat/completions` with `stream: true`.
    Chat,
}

/// Sampling parameters shared by every request of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GenParams {
    pub model: String,
    pub temperature: f64,
    pub ignore_eos: bool,
    pub seed: Option<u64>,
}

/// What one parsed event contributed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EventInfo {
    /// The event carried generated content (a token or a non-empty text delta).
    pub content: bool,
    /// The event marks the end of the stream.
    pub done: bool,
}

/// Token counts and finish reason gathered over a stream.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StreamTally {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// Prompt tokens the server served from its prefix cache
    /// (`usage.prompt_tokens_details.cached_tokens`, when it says).
    pub cached_tokens: Option<u64>,
    pub finish_reason: Option<String>,
    /// The generated text, gathered only when `Some` (a multi-turn
    /// conversation sends it back in the next turn).
    pub reply: Option<String>,
}

impl StreamTally {
    fn content(&mut self, text: &str) {
        if let Some(reply) = &mut self.reply {
            reply.push_str(text);
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EventError {
    #[error("event is not {api} shape: {detail}")]
    Shape { api: &'static str, detail: String },
    #[error("server error in stream ({kind}): {message}")]
    Server { kind: String, message: String },
}

impl ApiKind {
    pub fn name(self) -> &'static str {
        match self {
            ApiKind::Tgi => "TGI generate_stream",
            ApiKind::Completions => "OpenAI completions",
            ApiKind::Chat => "OpenAI chat completions",
        }
    }

    /// The GenAI semantic-convention `gen_ai.operation.name` of this API.
    pub fn operation(self) -> &'static str {
        match self {
            ApiKind::Chat => "chat",
            ApiKind::Tgi | ApiKind::Completions => "text_completion",
        }
    }

    pub fn default_path(self) -> &'static str {
        match self {
            ApiKind::Tgi => "/generate_stream",
            ApiKind::Completions => "/v1/completions",
            ApiKind::Chat => "/v1/chat/completions",
        }
    }

    /// The JSON body for one streamed request asking for `max_tokens` tokens.
    pub fn body(self, prompt: &Prompt, max_tokens: u32, p: &GenParams) -> Value {
        match self {
            ApiKind::Tgi => {
                let mut params = json!({"max_new_tokens": max_tokens, "details": true});
                // TGI rejects temperature 0; greedy is its default.
                if p.temperature > 0.0 {
                    params["temperature"] = json!(p.temperature);
                    params["do_sample"] = json!(true);
                }
                if p.ignore_eos {
                    params["ignore_eos"] = json!(true);
                }
                if let Some(seed) = p.seed {
                    params["seed"] = json!(seed);
                }
                json!({"inputs": prompt.as_text(), "parameters": params})
            }
            ApiKind::Completions | ApiKind::Chat => {
                let mut body = json!({
                    "model": p.model,
                    "max_tokens": max_tokens,
                    "temperature": p.temperature,
                    "stream": true,
                    "stream_options": {"include_usage": true},
                });
                if self == ApiKind::Chat {
                    body["messages"] = json!(prompt.as_messages());
                } else {
                    body["prompt"] = json!(prompt.as_text());
                }
                if p.ignore_eos {
                    body["ignore_eos"] = json!(true);
                }
                if let Some(seed) = p.seed {
                    body["seed"] = json!(seed);
                }
                body
            }
        }
    }

    /// Parse one SSE `data:` payload, updating `tally`.
    pub fn parse_event(self, data: &str, tally: &mut StreamTally) -> Result<EventInfo, EventError> {
        let shape = |detail: String| EventError::Shape {
            api: self.name(),
            detail,
        };
        if data.trim() == "[DONE]" {
            return match self {
                ApiKind::Tgi => Err(shape("unexpected [DONE]".into())),
                _ => Ok(EventInfo {
                    content: false,
                    done: true,
                }),
            };
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| shape(format!("not JSON ({e}): {}", clip(data))))?;
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            return Err(server_error(err, &v));
        }
        match self {
            ApiKind::Tgi => parse_tgi(&v, tally).ok_or_else(|| shape(clip(data))),
            ApiKind::Completions | ApiKind::Chat => {
                parse_openai(self, &v, tally).ok_or_else(|| shape(clip(data)))
            }
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(120).collect()
}

/// TGI puts `{"error": "...", "error_type": "..."}`; OpenAI `{"error": {"message", "type"}}`.
fn server_error(err: &Value, whole: &Value) -> EventError {
    let (message, kind) = match err {
        Value::String(s) => (
            s.clone(),
            whole
                .get("error_type")
                .and_then(Value::as_str)
                .unwrap_or("error"),
        ),
        other => (
            other
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)")
                .to_string(),
            other.get("type").and_then(Value::as_str).unwrap_or("error"),
        ),
    };
    EventError::Server {
        kind: kind.to_string(),
        message,
    }
}

fn parse_tgi(v: &Value, tally: &mut StreamTally) -> Option<EventInfo> {
    let token = v.get("token")?.as_object()?;
    let special = token
        .get("special")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut info = EventInfo {
        content: !special,
        done: false,
    };
    if !special {
        tally.content(token.get("text").and_then(Value::as_str).unwrap_or(""));
    }
    if let Some(details) = v.get("details").filter(|d| !d.is_null()) {
        tally.output_tokens = details.get("generated_tokens").and_then(Value::as_u64);
        tally.input_tokens = details.get("input_length").and_then(Value::as_u64);
        tally.finish_reason = details
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    if v.get("generated_text").is_some_and(|t| !t.is_null()) {
        info.done = true;
    }
    Some(info)
}

fn parse_openai(api: ApiKind, v: &Value, tally: &mut StreamTally) -> Option<EventInfo> {
    let choices = v.get("choices")?.as_array()?;
    let mut info = EventInfo::default();
    for choice in choices {
        let text = match api {
            ApiKind::Chat => choice.get("delta")?.get("content"),
            _ => choice.get("text"),
        };
        if let Some(t) = text.and_then(Value::as_str).filter(|t| !t.is_empty()) {
            info.content = true;
            tally.content(t);
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            tally.finish_reason = Some(reason.to_string());
        }
    }
    if let Some(usage) = v.get("usage").filter(|u| !u.is_null()) {
        tally.input_tokens = usage.get("prompt_tokens").and_then(Value::as_u64);
        tally.output_tokens = usage.get("completion_tokens").and_then(Value::as_u64);
        tally.cached_tokens = usage
            .pointer("/prompt_tokens_details/cached_tokens")
            .and_then(Value::as_u64);
    }
    Some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> GenParams {
        GenParams {
            model: "m".into(),
            temperature: 0.0,
            ignore_eos: true,
            seed: None,
        }
    }

    #[test]
    fn tgi_stream_yields_tokens_then_details() {
        let mut t = StreamTally::default();
        let ev = r#"{"index":1,"token":{"id":5,"text":"Hi","logprob":-0.1,"special":false},"generated_text":null,"details":null}"#;
        assert_eq!(
            ApiKind::Tgi.parse_event(ev, &mut t),
            Ok(EventInfo {
                content: true,
                done: false
            })
        );
        let last = r#"{"index":2,"token":{"id":2,"text":"","special":true},"generated_text":"Hi","details":{"finish_reason":"length","generated_tokens":2,"input_length":7,"seed":null}}"#;
        let info = ApiKind::Tgi.parse_event(last, &mut t);
        assert_eq!(
            info,
            Ok(EventInfo {
                content: false,
                done: true
            })
        );
        assert_eq!(t.output_tokens, Some(2));
        assert_eq!(t.input_tokens, Some(7));
        assert_eq!(t.finish_reason.as_deref(), Some("length"));
    }

    #[test]
    fn openai_chunks_usage_and_done() {
        let mut t = StreamTally::default();
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
        let info = ApiKind::Chat.parse_event(role, &mut t);
        assert_eq!(
            info,
            Ok(EventInfo::default()),
            "a role-only delta is not content"
        );
        let tok = r#"{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"length"}]}"#;
        assert!(ApiKind::Chat
            .parse_event(tok, &mut t)
            .is_ok_and(|i| i.content));
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13,"prompt_tokens_details":{"cached_tokens":8}}}"#;
        assert!(ApiKind::Chat.parse_event(usage, &mut t).is_ok());
        assert_eq!((t.input_tokens, t.output_tokens), (Some(9), Some(4)));
        assert_eq!(t.cached_tokens, Some(8));
        assert_eq!(
            ApiKind::Chat.parse_event("[DONE]", &mut t),
            Ok(EventInfo {
                content: false,
                done: true
            })
        );
    }

    #[test]
    fn replies_are_gathered_only_when_asked() {
        let chunk = |text: &str| {
            format!(
                r#"{{"choices":[{{"index":0,"delta":{{"content":"{text}"}},"finish_reason":null}}]}}"#
            )
        };
        let mut off = StreamTally::default();
        let mut on = StreamTally {
            reply: Some(String::new()),
            ..StreamTally::default()
        };
        for t in [&mut off, &mut on] {
            for piece in ["Hel", "lo", ""] {
                assert!(ApiKind::Chat.parse_event(&chunk(piece), t).is_ok());
            }
        }
        assert_eq!(off.reply, None);
        assert_eq!(on.reply.as_deref(), Some("Hello"));
        let mut tgi = StreamTally {
            reply: Some(String::new()),
            ..StreamTally::default()
        };
        let special = r#"{"token":{"id":2,"text":"</s>","special":true},"generated_text":null}"#;
        let word = r#"{"token":{"id":5,"text":"Hi","special":false},"generated_text":null}"#;
        for ev in [word, special] {
            assert!(ApiKind::Tgi.parse_event(ev, &mut tgi).is_ok());
        }
        assert_eq!(tgi.reply.as_deref(), Some("Hi"));
    }

    #[test]
    fn wrong_shape_and_server_errors_are_told_apart() {
        let mut t = StreamTally::default();
        let tgi = r#"{"token":{"id":1,"text":"a","special":false},"generated_text":null}"#;
        assert!(matches!(
            ApiKind::Completions.parse_event(tgi, &mut t),
            Err(EventError::Shape { .. })
        ));
        let err = r#"{"error":"Input validation error","error_type":"validation"}"#;
        assert_eq!(
            ApiKind::Tgi.parse_event(err, &mut t),
            Err(EventError::Server {
                kind: "validation".into(),
                message: "Input validation error".into()
            })
        );
        assert!(ApiKind::Tgi.parse_event("not json", &mut t).is_err());
    }

    #[test]
    fn bodies_follow_each_api() {
        let prompt = Prompt::Text("hello".into());
        let tgi = ApiKind::Tgi.body(&prompt, 8, &params());
        assert_eq!(tgi["parameters"]["max_new_tokens"], 8);
        assert_eq!(tgi["parameters"]["ignore_eos"], true);
        assert!(tgi["parameters"].get("temperature").is_none());
        let chat = ApiKind::Chat.body(&prompt, 8, &params());
        assert_eq!(chat["messages"][0]["role"], "user");
        assert_eq!(chat["stream_options"]["include_usage"], true);
        let cmpl = ApiKind::Completions.body(&prompt, 8, &params());
        assert_eq!(cmpl["prompt"], "hello");
    }
}
