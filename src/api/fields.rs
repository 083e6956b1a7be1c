//! What this server does with every field of the OpenAI and TGI request
//! shapes, written once. A field is honoured, accepted as a no-op (it cannot
//! change the output here), or refused with 422 `unsupported` unless it carries
//! its no-op default. A field in no table is refused too: nothing is silently
//! dropped. The README's field table is generated from these lists.

use serde_json::{Map, Value};

use super::error::{ApiError, ErrorKind, Flavor};

/// The decision for one field.
#[derive(Clone, Copy)]
pub enum Decision {
    /// Implemented.
    Honoured,
    /// Accepted with any value; it has no effect on the output, for the reason given.
    NoOp(&'static str),
    /// Accepted only with a value `accepts` allows (its no-op default, described
    /// by the string); anything else gets 422 `unsupported`.
    Refused(fn(&Value) -> bool, &'static str),
}

/// One field of a request shape.
#[derive(Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub decision: Decision,
}

const fn honoured(name: &'static str) -> Field {
    Field {
        name,
        decision: Decision::Honoured,
    }
}

const fn no_op(name: &'static str, why: &'static str) -> Field {
    Field {
        name,
        decision: Decision::NoOp(why),
    }
}

const fn refused(name: &'static str, accepts: fn(&Value) -> bool, default: &'static str) -> Field {
    Field {
        name,
        decision: Decision::Refused(accepts, default),
    }
}

fn is_null(v: &Value) -> bool {
    v.is_null()
}
fn null_or_false(v: &Value) -> bool {
    v.is_null() || v == &Value::Bool(false)
}
fn null_or_one(v: &Value) -> bool {
    v.is_null() || v.as_f64() == Some(1.0)
}
fn null_or_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}
fn null_or_none(v: &Value) -> bool {
    v.is_null() || v.as_str() == Some("none")
}
fn text_format(v: &Value) -> bool {
    v.is_null() || v.get("type").and_then(Value::as_str) == Some("text")
}
fn text_modality(v: &Value) -> bool {
    v.is_null() || v.as_array().is_some_and(|a| a.iter().all(|m| m == "text"))
}
fn default_tier(v: &Value) -> bool {
    v.is_null() || matches!(v.as_str(), Some("auto" | "default"))
}

/// Fields both OpenAI endpoints share.
pub const OPENAI_COMMON: &[Field] = &[
    honoured("model"),
    honoured("max_tokens"),
    honoured("temperature"),
    honoured("top_p"),
    refused("n", null_or_one, "absent or 1"),
    honoured("stream"),
    honoured("stream_options"),
    honoured("stop"),
    honoured("seed"),
    honoured("presence_penalty"),
    honoured("frequency_penalty"),
    honoured("logit_bias"),
    honoured("logprobs"),
    no_op(
        "user",
        "an end-user id for abuse tracking; it does not change the output",
    ),
    // Extensions vLLM also accepts.
    honoured("top_k"),
    honoured("min_p"),
    honoured("repetition_penalty"),
    honoured("ignore_eos"),
    honoured("min_tokens"),
    honoured("stop_token_ids"),
];

/// `POST /v1/chat/completions` (OpenAI's request shape, plus the common list).
pub const CHAT: &[Field] = &[
    honoured("messages"),
    honoured("max_completion_tokens"),
    honoured("top_logprobs"),
    no_op(
        "safety_identifier",
        "an end-user id for abuse tracking; it does not change the output",
    ),
    no_op(
        "prompt_cache_key",
        "a cache routing hint; prefix caching here is automatic",
    ),
    no_op(
        "parallel_tool_calls",
        "only matters with tools, which are refused",
    ),
    refused("tools", null_or_empty, "absent or []"),
    refused("tool_choice", null_or_none, "absent or \"none\""),
    refused("functions", null_or_empty, "absent or []"),
    refused("function_call", null_or_none, "absent or \"none\""),
    refused(
        "response_format",
        text_format,
        "absent or {\"type\": \"text\"}",
    ),
    refused("modalities", text_modality, "absent or [\"text\"]"),
    refused("audio", is_null, "absent"),
    refused("prediction", is_null, "absent"),
    refused("reasoning_effort", is_null, "absent"),
    refused("verbosity", is_null, "absent"),
    refused("web_search_options", is_null, "absent"),
    refused(
        "service_tier",
        default_tier,
        "absent, \"auto\" or \"default\"",
    ),
    refused("store", null_or_false, "absent or false"),
    refused("metadata", null_or_empty, "absent or {}"),
];

/// `POST /v1/completions` (legacy completions, plus the common list).
pub const COMPLETIONS: &[Field] = &[
    honoured("prompt"),
    refused("best_of", null_or_one, "absent or 1"),
    refused("echo", null_or_false, "absent or false"),
    refused("suffix", null_or_empty, "absent or \"\""),
];

/// Fields of one chat message.
pub const MESSAGE: &[Field] = &[
    honoured("role"),
    honoured("content"),
    no_op(
        "tool_call_id",
        "the chat template has no slot for it; the message's content is rendered",
    ),
    refused("name", null_or_empty, "absent"),
    refused("tool_calls", null_or_empty, "absent or []"),
    refused("function_call", is_null, "absent"),
    refused("refusal", is_null, "absent"),
    refused("audio", is_null, "absent"),
];

/// TGI's top level.
pub const TGI: &[Field] = &[
    honoured("inputs"),
    honoured("parameters"),
    refused(
        "stream",
        null_or_false,
        "absent or false (use /generate_stream)",
    ),
];

/// TGI's `parameters`.
pub const TGI_PARAMETERS: &[Field] = &[
    honoured("max_new_tokens"),
    honoured("temperature"),
    honoured("top_k"),
    honoured("top_p"),
    honoured("repetition_penalty"),
    honoured("frequency_penalty"),
    honoured("seed"),
    honoured("stop"),
    honoured("do_sample"),
    honoured("details"),
    honoured("return_full_text"),
    honoured("top_n_tokens"),
    honoured("truncate"),
    honoured("ignore_eos"),
    refused("best_of", null_or_one, "absent or 1"),
    refused("decoder_input_details", null_or_false, "absent or false"),
    refused("typical_p", is_null, "absent"),
    refused("watermark", null_or_false, "absent or false"),
    refused("grammar", is_null, "absent"),
    refused("adapter_id", null_or_empty, "absent"),
];

/// Refuses any key of `object` the tables do not accept. `path` prefixes field
/// names in messages (`parameters.`, `messages[2].`).
pub fn check(
    flavor: Flavor,
    path: &str,
    object: &Map<String, Value>,
    tables: &[&[Field]],
) -> Result<(), ApiError> {
    for (key, value) in object {
        let field = tables.iter().flat_map(|t| t.iter()).find(|f| f.name == key);
        let name = format!("{path}{key}");
        match field.map(|f| f.decision) {
            None => {
                return Err(ApiError::about(
                    flavor,
                    ErrorKind::Unsupported,
                    &name,
                    "unknown field; this server does not implement it",
                ))
            }
            Some(Decision::Refused(accepts, default)) if !accepts(value) => {
                return Err(ApiError::about(
                    flavor,
                    ErrorKind::Unsupported,
                    &name,
                    format!("not supported by this server (accepted: {default})"),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The README's table of every field and what happens to it.
pub fn markdown_table() -> String {
    let sections: [(&str, &[&[Field]]); 5] = [
        ("`/v1/chat/completions`", &[OPENAI_COMMON, CHAT]),
        ("`/v1/completions`", &[OPENAI_COMMON, COMPLETIONS]),
        ("chat message", &[MESSAGE]),
        ("`/generate`, `/generate_stream`", &[TGI]),
        ("TGI `parameters`", &[TGI_PARAMETERS]),
    ];
    let mut out = String::from("| request | field | decision |\n| --- | --- | --- |\n");
    for (request, tables) in sections {
        for f in tables.iter().flat_map(|t| t.iter()) {
            let decision = match f.decision {
                Decision::Honoured => "honoured".to_owned(),
                Decision::NoOp(why) => format!("accepted, no effect: {why}"),
                Decision::Refused(_, default) => {
                    format!("422 `unsupported` unless {default}")
                }
            };
            out.push_str(&format!("| {request} | `{}` | {decision} |\n", f.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn no_op_defaults_pass_and_real_values_are_refused_by_name() {
        let ok = obj(
            serde_json::json!({"model": "m", "n": 1, "tools": [], "store": false,
            "response_format": {"type": "text"}}),
        );
        assert!(check(Flavor::OpenAi, "", &ok, &[OPENAI_COMMON, CHAT]).is_ok());
        let bad = obj(serde_json::json!({"response_format": {"type": "json_object"}}));
        let e = check(Flavor::OpenAi, "", &bad, &[OPENAI_COMMON, CHAT]).expect_err("refused");
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert_eq!(e.param.as_deref(), Some("response_format"));
    }

    #[test]
    fn an_unknown_field_is_refused_with_its_path() {
        let bad = obj(serde_json::json!({"typo_temperature": 1}));
        let e = check(Flavor::Tgi, "parameters.", &bad, &[TGI_PARAMETERS]).expect_err("unknown");
        assert_eq!(e.param.as_deref(), Some("parameters.typo_temperature"));
        assert!(e.message.starts_with("parameters.typo_temperature:"));
    }

    #[test]
    fn the_readme_lists_every_decision() {
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&markdown_table()),
            "README's field table is stale; paste api::fields::markdown_table():\n{}",
            markdown_table()
        );
    }
}
