//! A full queue answers 429 with Retry-After, and the server recovers.

mod common;

use serde_json::{json, Value};

#[tokio::test]
async fn requests_beyond_the_queue_get_429_with_retry_after() {
    let server = common::server_with(&[
        "--no-telemetry",
        "--max-batch-size",
        "1",
        "--max-queue",
        "1",
    ]);
    let base = server.base.clone();
    let body = json!({"inputs": "Tell me a long story", "parameters": {"max_new_tokens": 64, "ignore_eos": true}});
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let (base, body) = (base.clone(), body.clone());
            tokio::spawn(async move {
                let r = reqwest::Client::new()
                    .post(format!("{base}/generate"))
                    .json(&body)
                    .send()
                    .await
                    .expect("request");
                let status = r.status().as_u16();
                let retry = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap_or("").to_owned());
                let body: Value = r.json().await.expect("JSON");
                (status, retry, body)
            })
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let (status, retry, body) = t.await.expect("task");
        match status {
            200 => ok += 1,
            429 => {
                refused += 1;
                assert!(
                    retry.is_some_and(|r| r.parse::<u64>().is_ok()),
                    "Retry-After seconds"
                );
                assert_eq!(body["error_type"], "queue_full");
                assert!(body["error"].as_str().unwrap_or("").contains("queue"));
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    // At most one runs and one waits at any time: the others are refused.
    assert!(ok >= 1, "{ok} served");
    assert!(refused >= 1, "{refused} refused");
    assert_eq!(ok + refused, 6);

    let r = reqwest::Client::new()
        .post(format!("{base}/generate"))
        .json(&json!({"inputs": "Hi", "parameters": {"max_new_tokens": 2}}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200, "serves again once the queue drains");
}
