//! The HTTP API on the real model: TGI and OpenAI shapes, streaming, sampling
//! controls, batching and cancellation, as a client sees them.

mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn base() -> &'static str {
    &common::shared_server().base
}

async fn post(path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", base()))
        .json(&body)
        .send()
        .await
        .expect("request")
}

async fn post_json(path: &str, body: Value) -> Value {
    let r = post(path, body).await;
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.expect("JSON")
}

async fn info() -> Value {
    reqwest::get(format!("{}/info", base()))
        .await
        .expect("info")
        .json()
        .await
        .expect("JSON")
}

#[tokio::test]
async fn a_greedy_chat_completion_reads_like_llama_cpps() {
    let refs: Vec<Value> = common::read_jsonl("greedy.jsonl");
    let haiku = refs
        .iter()
        .find(|r| r["messages"][0]["content"] == "Write a haiku about the ocean.")
        .expect("reference case");
    let v = post_json(
        "/v1/chat/completions",
        json!({
            "model": "SmolLM2-135M-Instruct",
            "messages": haiku["messages"],
            "temperature": 0,
            "max_tokens": 24,
        }),
    )
    .await;
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    let want: Vec<&str> = haiku["greedy_text"]
        .as_str()
        .expect("text")
        .split_whitespace()
        .take(4)
        .collect();
    let got: Vec<&str> = text.split_whitespace().take(4).collect();
    assert_eq!(got, want, "full text: {text:?}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        v["usage"]["prompt_tokens"],
        haiku["prompt_ids"].as_array().map(Vec::len).unwrap_or(0)
    );
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap_or(0) > 0);
}

#[tokio::test]
async fn eight_concurrent_streams_finish_in_one_batch() {
    let started = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            tokio::spawn(async move {
                let r = post(
                    "/generate_stream",
                    json!({"inputs": format!("Story number {i}:"), "parameters": {"max_new_tokens": 24, "ignore_eos": true}}),
                )
                .await;
                assert_eq!(r.status(), 200);
                common::sse_data(r).await
            })
        })
        .collect();
    for t in tasks {
        let events = t.await.expect("task");
        assert_eq!(events.len(), 24, "one event per token");
        let last: Value = serde_json::from_str(events.last().expect("last")).expect("JSON");
        assert_eq!(last["details"]["finish_reason"], "length");
        assert_eq!(last["details"]["generated_tokens"], 24);
        assert!(last["generated_text"].is_string());
    }
    let i = info().await;
    // Other tests share this server, so the peak may include their sequences too.
    let peak = i["peak_batch_size"].as_u64().unwrap_or(0);
    assert!(peak >= 8, "all eight decoded together: {i}");
    eprintln!("8 streams x 24 tokens in {:?}", started.elapsed());
}

#[tokio::test]
async fn generate_and_generate_stream_agree_and_report_details() {
    let body = json!({"inputs": "The capital of France is", "parameters": {"max_new_tokens": 12, "details": true, "top_n_tokens": 3}});
    let v = post_json("/generate", body.clone()).await;
    let details = &v["details"];
    assert!(["length", "eos_token"].contains(&details["finish_reason"].as_str().unwrap_or("")));
    let tokens = details["tokens"].as_array().expect("tokens");
    assert_eq!(
        tokens.len() as u64,
        details["generated_tokens"].as_u64().expect("count")
    );
    assert!(tokens
        .iter()
        .all(|t| t["logprob"].as_f64().is_some_and(|l| l <= 0.0)));
    assert_eq!(details["top_tokens"][0].as_array().map(Vec::len), Some(3));
    // Greedy: the top alternative is the chosen token.
    assert_eq!(details["top_tokens"][0][0]["id"], tokens[0]["id"]);

    let events = common::sse_data(post("/generate_stream", body).await).await;
    let streamed: String = events
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).expect("JSON")["token"]["text"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(streamed, v["generated_text"].as_str().expect("text"));
}

#[tokio::test]
async fn the_same_seed_gives_the_same_sample_and_ignore_eos_gives_exact_lengths() {
    let body = json!({"inputs": "Once upon a time", "parameters": {"max_new_tokens": 20, "temperature": 1.2, "top_p": 0.95, "seed": 42, "ignore_eos": true, "details": true}});
    let a = post_json("/generate", body.clone()).await;
    let b = post_json("/generate", body).await;
    assert_eq!(a["generated_text"], b["generated_text"]);
    assert_eq!(a["details"]["generated_tokens"], 20);
    assert_eq!(a["details"]["finish_reason"], "length");
    assert_eq!(a["details"]["seed"], 42);
}

#[tokio::test]
async fn a_stop_sequence_ends_the_text_before_it() {
    let v = post_json(
        "/v1/completions",
        json!({"prompt": "1, 2, 3, 4,", "max_tokens": 30, "temperature": 0, "stop": [" 7"]}),
    )
    .await;
    let text = v["choices"][0]["text"].as_str().expect("text");
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "text: {text:?}");
    assert!(!text.contains(" 7"), "{text:?}");
    assert!(text.contains('6'), "{text:?}");
}

#[tokio::test]
async fn openai_streams_end_with_usage_and_done() {
    for (path, body) in [
        (
            "/v1/completions",
            json!({"prompt": "Hello", "max_tokens": 8, "ignore_eos": true}),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8, "ignore_eos": true}),
        ),
    ] {
        let mut body = body;
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let r = post(path, body).await;
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/event-stream"));
        let data = common::sse_data(r).await;
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{path}");
        let usage: Value = serde_json::from_str(&data[data.len() - 2]).expect("usage chunk");
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], 8);
        let chunks: Vec<Value> = data[..data.len() - 2]
            .iter()
            .map(|d| serde_json::from_str(d).expect("chunk"))
            .collect();
        let finish = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
            .collect::<Vec<_>>();
        assert_eq!(finish, vec!["length"], "{path}");
    }
}

#[tokio::test]
async fn logprobs_are_reported_in_openai_shapes() {
    let v = post_json(
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4, "logprobs": true, "top_logprobs": 2}),
    )
    .await;
    let content = v["choices"][0]["logprobs"]["content"]
        .as_array()
        .expect("logprobs");
    assert!(!content.is_empty());
    assert_eq!(content[0]["top_logprobs"].as_array().map(Vec::len), Some(2));
    let v = post_json(
        "/v1/completions",
        json!({"prompt": "Hi", "max_tokens": 3, "logprobs": 2}),
    )
    .await;
    assert_eq!(
        v["choices"][0]["logprobs"]["token_logprobs"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
}

#[tokio::test]
async fn a_client_that_disconnects_frees_its_sequence() {
    let r = post(
        "/generate_stream",
        json!({"inputs": "Count to one thousand:", "parameters": {"max_new_tokens": 2000, "ignore_eos": true}}),
    )
    .await;
    let mut r = r;
    let first = r.chunk().await.expect("read").expect("a first event");
    assert!(!first.is_empty());
    drop(r);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let i = info().await;
        if i["running_requests"] == 0 && i["kv_cache_reserved_bytes"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sequence still running after disconnect: {i}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn info_models_health_and_tokenize_describe_the_server() {
    let i = info().await;
    assert_eq!(i["model_id"], "SmolLM2-135M-Instruct");
    assert_eq!(i["quantization"], "Q4_1");
    assert_eq!(i["max_context"], 8192);
    assert!(i["limits"]["max_batch_size"].as_u64().is_some());
    assert!(i["version"].is_string());
    let m: Value = reqwest::get(format!("{}/v1/models", base()))
        .await
        .expect("models")
        .json()
        .await
        .expect("JSON");
    assert_eq!(m["data"][0]["id"], "SmolLM2-135M-Instruct");
    let h = reqwest::get(format!("{}/health", base()))
        .await
        .expect("health");
    assert_eq!(h.status(), 200);
    let t = post_json("/tokenize", json!({"inputs": "Hello, world!"})).await;
    assert_eq!(t["ids"], json!([19556, 28, 905, 17]));
}

/// Reads `candlelight_step_duration_seconds_count{step_kind="prefill"}` (or
/// whatever the kind label is called) from a server's /metrics.
async fn prefill_steps(base: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .filter(|l| {
            l.starts_with("candlelight_step_duration_seconds_count") && l.contains("prefill")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_prompt_over_the_prefill_budget_is_prefilled_in_chunks_with_the_same_output() {
    let chunked = common::server_with(&["--max-prefill-tokens", "8"]);
    let body = json!({
        "model": "SmolLM2-135M-Instruct",
        "prompt": "The lighthouse keeper climbed the narrow stairs every evening, lit the great lamp, and watched the ships pass far out at sea. One night,",
        "temperature": 0,
        "max_tokens": 12,
    });
    let before = prefill_steps(&chunked.base).await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/completions", chunked.base))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let in_chunks: Value = r.json().await.expect("JSON");
    let whole = post_json("/v1/completions", body).await;

    let prompt_tokens = in_chunks["usage"]["prompt_tokens"].as_u64().expect("usage");
    assert!(
        prompt_tokens > 16,
        "prompt of {prompt_tokens} tokens spans several 8-token chunks"
    );
    for count in ["prompt_tokens", "completion_tokens"] {
        assert_eq!(in_chunks["usage"][count], whole["usage"][count]);
    }
    assert_eq!(
        in_chunks["choices"][0]["text"], whole["choices"][0]["text"],
        "chunked prefill must compute what one whole prefill does"
    );
    let steps = prefill_steps(&chunked.base).await - before;
    assert!(
        steps >= prompt_tokens.div_ceil(8) as f64,
        "{steps} prefill steps for {prompt_tokens} prompt tokens at 8 per step"
    );
}

/// Posts `body` to `base`'s chat route; returns (text, cached prompt tokens).
async fn chat_on(base: &str, body: &Value) -> (String, u64) {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("JSON");
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("text")
        .to_owned();
    let cached = v["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .expect("usage.prompt_tokens_details.cached_tokens");
    (text, cached)
}

#[tokio::test]
async fn a_repeated_prompt_reuses_its_cached_prefix_with_identical_greedy_output() {
    let cached = common::server_on(&[]);
    let uncached = common::server_on(&["--no-prefix-cache"]);
    let system = "You are a careful assistant. ".repeat(30);
    let body = json!({
        "messages": [{"role": "system", "content": system},
                     {"role": "user", "content": "Name three rivers in Europe."}],
        "temperature": 0,
        "max_tokens": 16,
    });
    let (first, hit) = chat_on(&cached.base, &body).await;
    assert_eq!(hit, 0, "nothing cached yet");
    let (second, hit) = chat_on(&cached.base, &body).await;
    assert!(
        hit >= 160,
        "the shared prefix came from the cache: {hit} tokens"
    );
    assert_eq!(hit % 16, 0, "whole KV blocks are reused");
    assert_eq!(first, second, "cached KV computes what fresh KV does");
    for _ in 0..2 {
        let (text, hit) = chat_on(&uncached.base, &body).await;
        assert_eq!(hit, 0);
        assert_eq!(text, first, "the same greedy output with the cache off");
    }
    let info = |base: String| async move {
        reqwest::get(format!("{base}/info"))
            .await
            .expect("info")
            .json::<Value>()
            .await
            .expect("JSON")
    };
    let on = info(cached.base.clone()).await;
    let off = info(uncached.base.clone()).await;
    assert_eq!(
        on["kv_cache_reserved_bytes"], 0,
        "reserved KV is exact: {on}"
    );
    assert!(on["kv_cache_cached_bytes"].as_u64() > Some(0), "{on}");
    assert_eq!(off["kv_cache_cached_bytes"], 0, "{off}");
    let metrics = reqwest::get(format!("{}/metrics", cached.base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let hits = metrics
        .lines()
        .find(|l| l.starts_with("candlelight_prefix_cache_hits_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(hits.is_some_and(|h| h >= 160.0), "{hits:?}");
}
