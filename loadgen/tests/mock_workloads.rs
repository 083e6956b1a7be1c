//! The chat-shaped workloads against loadgen's mock SSE server: multi-turn
//! conversations and shared prefixes, their per-turn and cached-token reports,
//! and their reproducibility. The mock's "prefix cache" reports, in words, the
//! longest prefix an earlier prompt shared, which is all these tests need to
//! check that loadgen carries `cached_tokens` through to every output.

mod common;

use common::{args, loadgen_async as loadgen, mock, read_result, text};
use loadgen::mock::MockConfig;
use serde_json::Value;

fn cached_mock() -> MockConfig {
    MockConfig {
        prefix_cache: true,
        ..MockConfig::default()
    }
}

/// `(conversation, turn, input_tokens, cached_tokens, scheduled_s, end_s)` per request.
fn turns(r: &Value) -> Vec<(u64, u64, u64, u64, f64, f64)> {
    let mut v: Vec<_> = r["requests"]
        .as_array()
        .expect("--save-requests")
        .iter()
        .map(|q| {
            (
                q["conversation"].as_u64().expect("conversation"),
                q["turn"].as_u64().expect("turn"),
                q["input_tokens"].as_u64().unwrap_or(0),
                q["cached_tokens"].as_u64().unwrap_or(0),
                q["scheduled_s"].as_f64().unwrap_or(0.0),
                q["end_s"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    v.sort_by_key(|t| (t.0, t.1));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_turn_conversations_send_history_and_report_each_turn() {
    let url = mock(cached_mock()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let flags = [
        "--api",
        "chat",
        "--multi-turn",
        "3",
        "--system-prompt-len",
        "10",
        "--think-time",
        "50ms",
        "--input-len",
        "6",
        "--output-len",
        "4",
        "--concurrency",
        "2",
        "--requests",
        "6",
        "--save-requests",
    ];
    let out = loadgen(args(&url, dir.path(), &flags)).await;
    assert!(out.status.success(), "{}", text(&out));
    let r = read_result(dir.path());
    let s = &r["steps"][0];
    assert_eq!(s["requests"]["ok"], 6, "{s}");
    let per_turn = s["turns"].as_array().expect("per-turn summaries");
    assert_eq!(per_turn.len(), 3);
    for (i, t) in per_turn.iter().enumerate() {
        assert_eq!(t["turn"], i as u64 + 1);
        assert_eq!(t["counted"], 2, "{t}");
        assert!(t["ttft"]["p50"].as_f64().is_some_and(|v| v > 0.0));
    }
    let reqs = turns(&r);
    assert_eq!(reqs.len(), 6);
    for pair in reqs.windows(2).filter(|w| w[0].0 == w[1].0) {
        let (prev, next) = (pair[0], pair[1]);
        // The whole earlier prompt and its 4-word reply come back, plus 6 new words.
        assert_eq!(
            next.2,
            prev.2 + 4 + 6,
            "history resent: {prev:?} -> {next:?}"
        );
        // (The mock caches prompts only, not the replies it generated.)
        assert!(
            next.3 >= prev.2,
            "the earlier prompt is a cached prefix: {next:?}"
        );
        assert!(next.4 - prev.5 >= 0.049, "think time before the next turn");
    }
    let first_turns: Vec<_> = reqs.iter().filter(|t| t.1 == 1).collect();
    assert_eq!(
        first_turns[0].2, 16,
        "10-word system prompt + 6-word message"
    );
    // The two first turns are sent at once: whichever the mock reads second
    // finds the other's system prompt cached.
    assert!(
        first_turns.iter().any(|t| t.3 >= 10),
        "the system prompt is shared: {first_turns:?}"
    );
    let cached = &s["cached_tokens"];
    assert_eq!(cached["requests"], 6, "{cached}");
    assert!(cached["sum"].as_u64().is_some_and(|v| v > 0));
    let summary = std::fs::read_to_string(dir.path().join("summary.csv")).expect("summary.csv");
    assert_eq!(
        summary.lines().count(),
        1 + 1 + 3,
        "header, step, three turns"
    );
    let csv = std::fs::read_to_string(dir.path().join("requests.csv")).expect("requests.csv");
    let header = csv.lines().next().unwrap_or("");
    assert!(["conversation", "turn", "cached_tokens"]
        .iter()
        .all(|c| header.contains(c)));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("cached prompt tokens") && table.contains("TTFT p50"),
        "{table}"
    );

    // Same seed, same conversations; an open loop starts them on a schedule.
    let again = tempfile::tempdir().expect("temp dir");
    let mut open: Vec<&str> = flags.to_vec();
    open.splice(12..14, ["--rate", "20"]);
    let out = loadgen(args(&url, again.path(), &open)).await;
    assert!(out.status.success(), "{}", text(&out));
    let r2 = read_result(again.path());
    let lengths = |v: &[(u64, u64, u64, u64, f64, f64)]| {
        v.iter().map(|t| (t.0, t.1, t.2)).collect::<Vec<_>>()
    };
    assert_eq!(
        lengths(&turns(&r2)),
        lengths(&reqs),
        "reproducible from the seed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_prefixes_repeat_and_cached_tokens_are_summed() {
    let url = mock(cached_mock()).await;
    // A seed each, so the second run's prompts are not the first run's again.
    for (api, seed) in [("completions", "11"), ("chat", "12")] {
        let dir = tempfile::tempdir().expect("temp dir");
        let flags = [
            "--api",
            api,
            "--shared-prefix",
            "30",
            "--prefixes",
            "2",
            "--input-len",
            "5",
            "--output-len",
            "2",
            "--requests",
            "8",
            "--seed",
            seed,
            "--save-requests",
            "--no-plots",
        ];
        let out = loadgen(args(&url, dir.path(), &flags)).await;
        assert!(out.status.success(), "{}", text(&out));
        let r = read_result(dir.path());
        let reqs = r["requests"].as_array().expect("--save-requests");
        assert!(
            reqs.iter().all(|q| q["input_tokens"] == 35),
            "{api}: 30 + 5 words"
        );
        // After the first use of each prefix, at least the prefix is cached.
        let hits = reqs
            .iter()
            .filter(|q| q["cached_tokens"].as_u64().is_some_and(|c| c >= 30))
            .count();
        assert!(hits >= 6, "{api}: {hits} of 8 requests hit a shared prefix");
        let c = &r["steps"][0]["cached_tokens"];
        assert!(c["sum"].as_u64().is_some_and(|s| s >= 180), "{api}: {c}");
        let fraction = c["input_fraction"].as_f64().unwrap_or(0.0);
        assert!(fraction > 0.5 && fraction < 1.0, "{api}: {c}");
    }
}
