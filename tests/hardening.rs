//! Production hardening against the real server on the real model: drain on
//! SIGTERM with streams in flight (real signals to a real process), a dead
//! engine that fails fast (through the test-only fault switch), the API key,
//! CORS, the connection cap, header timeouts, the per-request timeout, and the
//! fields a request may carry.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::process::start_server;
use futures::StreamExt;
use serde_json::{json, Value};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn long_stream(max_tokens: u32) -> Value {
    json!({"messages": [{"role": "user", "content": "Tell me a long story."}],
           "max_tokens": max_tokens, "stream": true, "ignore_eos": true})
}

/// Opens a chat stream and returns it once its first event arrived.
async fn open_stream(base: &str, body: &Value) -> reqwest::Response {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .expect("stream request");
    assert_eq!(r.status(), 200);
    r
}

/// Reads a stream to its end: its `data:` payloads.
async fn drain(r: reqwest::Response) -> Vec<String> {
    let mut body = String::new();
    let mut chunks = r.bytes_stream();
    while let Some(c) = chunks.next().await {
        match c {
            Ok(c) => body.push_str(&String::from_utf8_lossy(&c)),
            Err(_) => break,
        }
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim().to_owned())
        .collect()
}

async fn status(base: &str, path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{base}{path}")).await.expect("GET");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[test]
fn sigterm_drains_running_streams_then_exits_zero() {
    let mut server = start_server(&["--shutdown-grace", "60s"], &[]);
    let base = server.url.clone();
    let rt = runtime();
    let streams = rt.block_on(async {
        let a = open_stream(&base, &long_stream(60)).await;
        let b = open_stream(&base, &long_stream(60)).await;
        (a, b)
    });
    server.signal("TERM").expect("kill");
    rt.block_on(async {
        // Readiness fails at once, liveness holds, new work is turned away.
        let deadline = Instant::now() + Duration::from_secs(5);
        while status(&base, "/health").await.0 != 503 {
            assert!(
                Instant::now() < deadline,
                "/health still 200 while draining"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status(&base, "/health").await.1["status"], "shutting_down");
        assert_eq!(status(&base, "/live").await.0, 200);
        let r = reqwest::Client::new()
            .post(format!("{base}/generate"))
            .json(&json!({"inputs": "hi"}))
            .send()
            .await
            .expect("POST while draining");
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
        let body: Value = r.json().await.expect("JSON");
        assert_eq!(body["error_type"], "shutting_down");
        // The running streams finish normally.
        for s in [streams.0, streams.1] {
            let events = drain(s).await;
            assert_eq!(
                events.last().map(String::as_str),
                Some("[DONE]"),
                "{events:?}"
            );
        }
    });
    assert_eq!(server.wait_exit(Duration::from_secs(30)), Some(0));
}

#[test]
fn after_the_grace_period_streams_end_with_a_shutdown_event() {
    let mut server = start_server(&["--shutdown-grace", "1s"], &[]);
    let base = server.url.clone();
    let rt = runtime();
    let stream = rt.block_on(open_stream(&base, &long_stream(4000)));
    let signalled = Instant::now();
    server.signal("TERM").expect("kill");
    let events = rt.block_on(drain(stream));
    let last: Value = serde_json::from_str(events.last().expect("events")).expect("JSON event");
    assert_eq!(
        last["error"]["code"],
        "shutdown",
        "{} events, log:\n{}",
        events.len(),
        server.log()
    );
    assert_eq!(server.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(15));
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut server = start_server(&["--shutdown-grace", "120s"], &[]);
    let rt = runtime();
    let _stream = rt.block_on(open_stream(&server.url, &long_stream(4000)));
    server.signal("TERM").expect("kill");
    std::thread::sleep(Duration::from_millis(300));
    server.signal("INT").expect("kill");
    assert_eq!(server.wait_exit(Duration::from_secs(5)), Some(130));
}

#[test]
fn a_dead_engine_fails_in_flight_and_new_requests_at_once() {
    let server = start_server(&[], &[("CANDLELIGHT_FAULT_ENGINE_PANIC_AFTER_STEPS", "5")]);
    let base = server.url.clone();
    runtime().block_on(async {
        let s = open_stream(&base, &long_stream(200)).await;
        let events = tokio::time::timeout(Duration::from_secs(30), drain(s))
            .await
            .expect("the stream ends, it does not hang");
        let last: Value = serde_json::from_str(events.last().expect("events")).expect("JSON");
        assert_eq!(last["error"]["code"], "engine_unavailable", "{last}");
        let started = Instant::now();
        let r = reqwest::Client::new()
            .post(format!("{base}/v1/completions"))
            .json(&json!({"prompt": "hi", "max_tokens": 2}))
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), 503);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "refused at once"
        );
        let body: Value = r.json().await.expect("JSON");
        assert_eq!(body["error"]["code"], "engine_unavailable");
        assert_eq!(status(&base, "/health").await.0, 503);
        assert_eq!(status(&base, "/live").await.0, 503);
    });
}

#[test]
fn an_api_key_guards_every_route_but_the_probes() {
    let server = start_server(&[], &[("CANDLELIGHT_API_KEY", "s3cret-key")]);
    let base = server.url.clone();
    let http = reqwest::Client::new();
    runtime().block_on(async {
        let post = |path: &str, key: Option<&str>, body: Value| {
            let mut r = http.post(format!("{base}{path}")).json(&body);
            if let Some(k) = key {
                r = r.bearer_auth(k);
            }
            r.send()
        };
        let chat = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
        let r = post("/v1/chat/completions", None, chat.clone())
            .await
            .expect("POST");
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let body: Value = r.json().await.expect("JSON");
        assert_eq!(
            body["error"]["code"], "unauthorized",
            "OpenAI's shape: {body}"
        );
        let r = post("/generate", Some("wrong"), json!({"inputs": "hi"}))
            .await
            .expect("POST");
        assert_eq!(r.status(), 401);
        let body = r.text().await.expect("body");
        assert!(
            body.contains("\"error_type\":\"unauthorized\""),
            "TGI's shape: {body}"
        );
        assert!(
            !body.contains("wrong") && !body.contains("s3cret"),
            "no key echoed: {body}"
        );
        let r = post("/v1/chat/completions", Some("s3cret-key"), chat)
            .await
            .expect("POST");
        assert_eq!(r.status(), 200);
        for open in ["/health", "/live", "/metrics", "/info"] {
            assert_eq!(status(&base, open).await.0, 200, "{open} stays open");
        }
    });
    let guarded = start_server(&["--api-key", "k", "--protect-metrics"], &[]);
    runtime().block_on(async {
        assert_eq!(status(&guarded.url, "/metrics").await.0, 401);
        assert_eq!(status(&guarded.url, "/info").await.0, 401);
        assert_eq!(status(&guarded.url, "/live").await.0, 200);
    });
}

#[test]
fn cors_is_off_by_default_and_answers_preflights_when_enabled() {
    let preflight = |base: &str| {
        let base = base.to_owned();
        runtime().block_on(async move {
            reqwest::Client::new()
                .request(
                    reqwest::Method::OPTIONS,
                    format!("{base}/v1/chat/completions"),
                )
                .header("origin", "https://app.example")
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization, content-type",
                )
                .send()
                .await
                .expect("OPTIONS")
        })
    };
    let plain = start_server(&[], &[]);
    let r = preflight(&plain.url);
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    let cors = start_server(
        &[
            "--cors-allow-origin",
            "https://app.example",
            "--api-key",
            "k",
        ],
        &[],
    );
    let r = preflight(&cors.url);
    assert!(
        r.status().is_success(),
        "preflight needs no key: {}",
        r.status()
    );
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let methods = r.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap_or("");
    assert!(methods.contains("POST"), "{methods}");
}

/// One request on a raw connection; the status line's code.
fn raw_get(stream: &mut TcpStream, path: &str) -> Option<u16> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    stream.write_all(req.as_bytes()).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn connections_beyond_the_cap_are_turned_away_but_probes_answer() {
    let server = start_server(&["--max-connections", "1"], &[]);
    let addr = format!("127.0.0.1:{}", server.port);
    let mut first = TcpStream::connect(&addr).expect("connect");
    assert_eq!(
        raw_get(&mut first, "/info"),
        Some(200),
        "the first keeps its slot"
    );
    let mut second = TcpStream::connect(&addr).expect("connect");
    assert_eq!(raw_get(&mut second, "/info"), Some(503));
    let mut third = TcpStream::connect(&addr).expect("connect");
    assert_eq!(
        raw_get(&mut third, "/live"),
        Some(200),
        "liveness is never capped"
    );
    drop(first);
    std::thread::sleep(Duration::from_millis(300));
    let mut fourth = TcpStream::connect(&addr).expect("connect");
    assert_eq!(
        raw_get(&mut fourth, "/info"),
        Some(200),
        "a freed slot is reused"
    );
}

#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let server = start_server(&["--header-read-timeout", "1s"], &[]);
    let mut slow = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n")
        .expect("half a request");
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the server closed the connection after its header timeout"
    );
}

#[test]
fn the_request_timeout_has_its_own_finish_reason_and_error() {
    // One prompt step may take the whole prompt, so a long prompt holds the
    // engine past the deadline of a request queued behind it.
    let server = start_server(
        &[
            "--request-timeout",
            "2s",
            "--max-batch-size",
            "1",
            "--max-batch-tokens",
            "8192",
            "--max-prefill-tokens",
            "8192",
        ],
        &[],
    );
    let base = server.url.clone();
    runtime().block_on(async {
        let http = reqwest::Client::new();
        // A long generation ends at its deadline with finish_reason "timeout".
        let r = http
            .post(format!("{base}/generate"))
            .json(&json!({"inputs": "Once upon a time",
                          "parameters": {"max_new_tokens": 4000, "ignore_eos": true, "details": true}}))
            .send()
            .await
            .expect("POST");
        let done: Value = r.json().await.expect("JSON");
        assert_eq!(done["details"]["finish_reason"], "timeout", "{done}");
        // A request still waiting at its deadline never starts: 504.
        let long_prompt = "hello ".repeat(2500);
        let blocker = tokio::spawn({
            let (http, base) = (http.clone(), base.clone());
            async move {
                http.post(format!("{base}/v1/completions"))
                    .json(&json!({"prompt": long_prompt, "max_tokens": 2}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = http
            .post(format!("{base}/v1/completions"))
            .json(&json!({"prompt": "hi", "max_tokens": 2}))
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), 504);
        let body: Value = r.json().await.expect("JSON");
        assert_eq!(body["error"]["code"], "request_timeout");
        let _ = blocker.await;
    });
}

#[test]
fn fields_with_no_op_defaults_and_token_id_prompts_are_accepted() {
    let base = &common::shared_server().base;
    runtime().block_on(async {
        let http = reqwest::Client::new();
        let chat = json!({
            "messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            "max_tokens": 4, "n": 1, "presence_penalty": 0.5, "frequency_penalty": 0.5,
            "tools": [], "tool_choice": "none", "response_format": {"type": "text"},
            "store": false, "user": "u1", "logit_bias": {"28": -5},
            "stream_options": null, "min_tokens": 2, "stop_token_ids": [2]
        });
        let r = http.post(format!("{base}/v1/chat/completions")).json(&chat).send().await.expect("POST");
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        let ids = json!({"prompt": [1, 504, 505, 506], "max_tokens": 3, "ignore_eos": true});
        let r = http.post(format!("{base}/v1/completions")).json(&ids).send().await.expect("POST");
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.expect("JSON");
        assert_eq!(body["usage"]["prompt_tokens"], 4);
        assert_eq!(body["usage"]["completion_tokens"], 3);
        assert!(body["usage"]["prompt_tokens_details"]["cached_tokens"].is_u64());
    });
}
