//! Property-based fuzzing of the request path, against the real server on
//! the real model: arbitrary JSON, byte mutations of valid bodies, and valid
//! bodies with one field replaced by arbitrary JSON, for every route. Each
//! case must get a JSON 4xx or a valid answer: never another 5xx, never a
//! hang, and afterwards no KV reservation is left.
//!
//! Cases per property: `PROPTEST_CASES` (default 48, enough for CI); run
//! longer with e.g. `PROPTEST_CASES=5000 cargo test --test fuzz_api`.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Value};

const ROUTES: &[&str] = &[
    "/generate",
    "/generate_stream",
    "/v1/completions",
    "/v1/chat/completions",
    "/tokenize",
];

/// A server whose generations are short whatever a case asks for: few KV
/// positions, and a wall-clock limit per request.
fn server() -> &'static common::TestServer {
    static SERVER: OnceLock<common::TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        common::server_with(&[
            "--no-telemetry",
            "--max-total-tokens",
            "256",
            "--request-timeout",
            "3s",
        ])
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn valid_body(route: &str) -> Value {
    match route {
        "/generate" | "/generate_stream" => {
            json!({"inputs": "Hello there", "parameters": {"max_new_tokens": 3, "details": true}})
        }
        "/v1/completions" => json!({"prompt": "Hello there", "max_tokens": 3, "logprobs": 1}),
        "/v1/chat/completions" => json!({"messages": [{"role": "user", "content": "Hi"}],
                                         "max_tokens": 3, "stream": true}),
        _ => json!({"inputs": "Hello there"}),
    }
}

/// Sends `body` to `route` and checks the answer's shape; `Err` describes a violation.
fn check(route: &str, body: Vec<u8>) -> Result<(), String> {
    let url = format!("{}{route}", server().base);
    runtime().block_on(async move {
        let sent = reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        let status = sent.status().as_u16();
        let ctype = sent
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = sent.text().await.map_err(|e| format!("body cut: {e}"))?;
        match status {
            200 if ctype.starts_with("text/event-stream") => Ok(()),
            200 => serde_json::from_str::<Value>(&text)
                .map(|_| ())
                .map_err(|e| format!("200 without JSON ({e}): {text}")),
            400..=499 => {
                let v: Value = serde_json::from_str(&text)
                    .map_err(|e| format!("{status} without JSON ({e}): {text}"))?;
                if v.get("error").is_some() {
                    Ok(())
                } else {
                    Err(format!("{status} without an error: {text}"))
                }
            }
            // The documented 503 of a request that timed out in the queue is a 504.
            504 if text.contains("request_timeout") => Ok(()),
            _ => Err(format!("{status}: {text}")),
        }
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-z_]{0,12}".prop_map(Value::String),
        ".{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A field name a request of `route` uses, so replacements hit real fields.
fn known_field() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "inputs",
        "parameters",
        "prompt",
        "messages",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "stop",
        "stream",
        "stream_options",
        "logprobs",
        "top_logprobs",
        "seed",
        "n",
        "presence_penalty",
        "logit_bias",
        "min_tokens",
        "stop_token_ids",
        "tools",
    ])
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(48);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_json_gets_a_json_answer(route in prop::sample::select(ROUTES), body in json_value()) {
        let bytes = serde_json::to_vec(&body).expect("JSON");
        prop_assert_eq!(check(route, bytes), Ok(()));
    }

    #[test]
    fn mutated_valid_bodies_get_a_json_answer(
        route in prop::sample::select(ROUTES),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut bytes = serde_json::to_vec(&valid_body(route)).expect("JSON");
        for (at, byte, op) in edits {
            let i = at.index(bytes.len().max(1));
            match op {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i.min(bytes.len()), byte),
                _ if i < bytes.len() => { bytes.remove(i); }
                _ => {}
            }
        }
        prop_assert_eq!(check(route, bytes), Ok(()));
    }

    #[test]
    fn a_field_replaced_by_anything_gets_a_json_answer(
        route in prop::sample::select(ROUTES),
        field in known_field(),
        value in json_value(),
    ) {
        let mut body = valid_body(route);
        body[field] = value;
        prop_assert_eq!(check(route, serde_json::to_vec(&body).expect("JSON")), Ok(()));
    }
}

#[test]
fn after_the_fuzzing_no_kv_is_reserved() {
    // Runs with the properties in the same binary; repeated here so it also
    // holds when run alone.
    let _ = check(
        "/generate",
        serde_json::to_vec(&valid_body("/generate")).expect("JSON"),
    );
    let url = format!("{}/info", server().base);
    let idle = runtime().block_on(async {
        for _ in 0..100 {
            let info: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            if info["running_requests"] == 0 && info["queued_requests"] == 0 {
                return Some(info);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    });
    let info = idle.expect("the server goes idle");
    assert_eq!(info["kv_cache_reserved_bytes"], 0, "{info}");
}
