//! Every kind of bad input gets a JSON error with the right status and a
//! message naming the field; afterwards the server still serves.

mod common;

use serde_json::{json, Value};

struct Case {
    name: &'static str,
    path: &'static str,
    body: Vec<u8>,
    status: u16,
    /// Text the error message must contain (the field's name).
    names: &'static str,
}

fn case(
    name: &'static str,
    path: &'static str,
    body: Value,
    status: u16,
    names: &'static str,
) -> Case {
    Case {
        name,
        path,
        body: serde_json::to_vec(&body).expect("JSON"),
        status,
        names,
    }
}

fn raw(
    name: &'static str,
    path: &'static str,
    body: &str,
    status: u16,
    names: &'static str,
) -> Case {
    Case {
        name,
        path,
        body: body.as_bytes().to_vec(),
        status,
        names,
    }
}

fn cases() -> Vec<Case> {
    let too_long_prompt = "hello ".repeat(9000);
    vec![
        raw(
            "malformed JSON",
            "/generate",
            "{\"inputs\": \"hi\", ",
            400,
            "request body",
        ),
        raw(
            "not JSON at all",
            "/v1/completions",
            "prompt=hi",
            400,
            "request body",
        ),
        raw(
            "NaN is not JSON",
            "/generate",
            r#"{"inputs":"hi","parameters":{"temperature":NaN}}"#,
            400,
            "parameters.temperature",
        ),
        case(
            "missing inputs",
            "/generate",
            json!({"parameters": {}}),
            422,
            "inputs",
        ),
        case(
            "missing prompt",
            "/v1/completions",
            json!({"max_tokens": 3}),
            422,
            "prompt",
        ),
        case(
            "missing messages",
            "/v1/chat/completions",
            json!({"model": "SmolLM2-135M-Instruct"}),
            422,
            "messages",
        ),
        case(
            "wrongly typed max_new_tokens",
            "/generate",
            json!({"inputs": "hi", "parameters": {"max_new_tokens": "ten"}}),
            422,
            "parameters.max_new_tokens",
        ),
        case(
            "wrongly typed messages",
            "/v1/chat/completions",
            json!({"messages": "hi"}),
            422,
            "messages",
        ),
        case(
            "negative top_k",
            "/generate",
            json!({"inputs": "hi", "parameters": {"top_k": -1}}),
            422,
            "parameters.top_k",
        ),
        case(
            "negative max_tokens",
            "/v1/completions",
            json!({"prompt": "hi", "max_tokens": -5}),
            422,
            "max_tokens",
        ),
        case(
            "empty inputs",
            "/generate",
            json!({"inputs": ""}),
            422,
            "inputs",
        ),
        case(
            "empty prompt",
            "/v1/completions",
            json!({"prompt": ""}),
            422,
            "prompt",
        ),
        case(
            "no messages",
            "/v1/chat/completions",
            json!({"messages": []}),
            422,
            "messages",
        ),
        case(
            "prompt longer than the context",
            "/generate",
            json!({"inputs": too_long_prompt}),
            422,
            "inputs",
        ),
        case(
            "max_new_tokens over the context",
            "/generate",
            json!({"inputs": "hi", "parameters": {"max_new_tokens": 100000}}),
            422,
            "parameters.max_new_tokens",
        ),
        case(
            "max_tokens over the context",
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9000}),
            422,
            "max_tokens",
        ),
        case(
            "zero max_new_tokens",
            "/generate",
            json!({"inputs": "hi", "parameters": {"max_new_tokens": 0}}),
            422,
            "parameters.max_new_tokens",
        ),
        case(
            "negative temperature",
            "/generate",
            json!({"inputs": "hi", "parameters": {"temperature": -0.5}}),
            422,
            "parameters.temperature",
        ),
        case(
            "negative temperature (OpenAI)",
            "/v1/completions",
            json!({"prompt": "hi", "temperature": -1}),
            422,
            "temperature",
        ),
        case(
            "top_p above one",
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "top_p": 1.5}),
            422,
            "top_p",
        ),
        case(
            "negative repetition penalty",
            "/generate",
            json!({"inputs": "hi", "parameters": {"repetition_penalty": -1.0}}),
            422,
            "parameters.repetition_penalty",
        ),
        case(
            "too many alternatives",
            "/generate",
            json!({"inputs": "hi", "parameters": {"top_n_tokens": 500}}),
            422,
            "parameters.top_n_tokens",
        ),
        case(
            "n > 1",
            "/v1/completions",
            json!({"prompt": "hi", "n": 3}),
            422,
            "n",
        ),
        case(
            "unknown model",
            "/v1/chat/completions",
            json!({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}),
            400,
            "model",
        ),
        case(
            "unknown model (completions)",
            "/v1/completions",
            json!({"model": "nope", "prompt": "hi"}),
            400,
            "model",
        ),
        case(
            "unknown chat role",
            "/v1/chat/completions",
            json!({"messages": [{"role": "robot", "content": "hi"}]}),
            422,
            "messages[0].role",
        ),
        case(
            "tools are not silently dropped",
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}]}),
            422,
            "tools",
        ),
        case(
            "json response_format is refused",
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}),
            422,
            "response_format",
        ),
        case(
            "an unknown field is refused",
            "/v1/completions",
            json!({"prompt": "hi", "temperatur": 0.5}),
            422,
            "temperatur",
        ),
        case(
            "an unknown TGI parameter is refused",
            "/generate",
            json!({"inputs": "hi", "parameters": {"grammar": {"type": "json"}}}),
            422,
            "parameters.grammar",
        ),
        case(
            "image content is refused",
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            422,
            "messages[0].content[0].type",
        ),
        case(
            "token ids outside the vocabulary",
            "/v1/completions",
            json!({"prompt": [1, 2, 999999], "max_tokens": 2}),
            422,
            "prompt[2]",
        ),
        case(
            "presence_penalty out of range",
            "/v1/completions",
            json!({"prompt": "hi", "presence_penalty": 3.0}),
            422,
            "presence_penalty",
        ),
        case(
            "logit_bias keys are token ids",
            "/v1/completions",
            json!({"prompt": "hi", "logit_bias": {"abc": 1.0}}),
            422,
            "logit_bias.abc",
        ),
    ]
}

async fn send(base: &str, path: &str, body: Vec<u8>) -> (u16, Option<String>, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, ctype, body)
}

fn message(body: &Value) -> &str {
    body["error"]["message"]
        .as_str()
        .or_else(|| body["error"].as_str())
        .unwrap_or("")
}

#[tokio::test]
async fn bad_requests_get_json_errors_naming_the_field_and_the_server_keeps_serving() {
    let base = &common::shared_server().base;
    for c in cases() {
        let (status, ctype, body) = send(base, c.path, c.body).await;
        assert_eq!(status, c.status, "{}: {body}", c.name);
        assert_eq!(ctype.as_deref(), Some("application/json"), "{}", c.name);
        let msg = message(&body);
        assert!(
            msg.contains(c.names),
            "{}: message {msg:?} should name {:?}",
            c.name,
            c.names
        );
    }

    // An oversized body is refused with 413 before it is parsed.
    let huge = json!({"inputs": "x".repeat(3 * 1024 * 1024)});
    let (status, _, body) = send(base, "/generate", serde_json::to_vec(&huge).expect("JSON")).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error_type"], "payload_too_large");

    // An unknown route is a JSON 404, not a crash.
    let (status, _, _) = send(base, "/v2/nothing", b"{}".to_vec()).await;
    assert_eq!(status, 404);

    // Still serving, with nothing left running or reserved.
    let (status, _, body) = send(
        base,
        "/generate",
        serde_json::to_vec(&json!({"inputs": "Hello", "parameters": {"max_new_tokens": 4}}))
            .expect("JSON"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["generated_text"].is_string());
    let info: Value = reqwest::get(format!("{base}/info"))
        .await
        .expect("info")
        .json()
        .await
        .expect("JSON");
    assert_eq!(info["running_requests"], 0);
    assert_eq!(info["kv_cache_reserved_bytes"], 0);
}
