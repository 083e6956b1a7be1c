//! Property tests of every parser that reads what a server (or a file) sends:
//! the SSE event stream of each API shape, the JSON events inside it, the
//! Prometheus text format, dataset lines, error bodies and the duration and
//! length flags. On arbitrary input and on mutations of valid input, each
//! returns a value or a typed error; none panics.
//!
//! Case counts are small by default so CI stays fast; `PROPTEST_CASES=N`
//! runs N cases per property instead (e.g. `PROPTEST_CASES=100000 cargo
//! test -p loadgen --lib fuzz`).

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::measure::promtext::{agreement, Scrape};
use crate::send::client::{error_message, follow, Progress};
use crate::send::protocol::{ApiKind, EventError, StreamTally};

/// Cases per property: `PROPTEST_CASES`, else a CI-sized default.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96);
    ProptestConfig {
        cases,
        // Failures print their minimal input; no files land in the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn api() -> impl Strategy<Value = ApiKind> {
    prop_oneof![
        Just(ApiKind::Tgi),
        Just(ApiKind::Completions),
        Just(ApiKind::Chat)
    ]
}

/// Keys the parsers look for, so arbitrary JSON reaches their deep paths.
const KEYS: &[&str] = &[
    "token",
    "special",
    "text",
    "details",
    "generated_tokens",
    "input_length",
    "finish_reason",
    "generated_text",
    "choices",
    "delta",
    "content",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "prompt_tokens_details",
    "cached_tokens",
    "error",
    "error_type",
    "message",
    "type",
    "prompt",
    "messages",
    "conversations",
    "from",
    "value",
    "role",
    "max_tokens",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(KEYS).prop_map(str::to_string),
        1 => "[a-z_]{0,8}",
    ]
}

/// Arbitrary JSON, biased towards the shapes the parsers expect.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        Just(json!("[DONE]")),
    ];
    leaf.prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(key(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A complete, valid stream of `api` (like the servers send), as SSE text.
fn valid_stream(api: ApiKind, tokens: usize) -> String {
    let mut events: Vec<Value> = Vec::new();
    for i in 0..tokens {
        let last = i + 1 == tokens;
        events.push(match api {
            ApiKind::Tgi => json!({
                "index": i, "token": {"id": i, "text": " a", "special": false},
                "generated_text": if last { Some("a") } else { None },
                "details": if last { Some(json!({"finish_reason": "length", "generated_tokens": tokens, "input_length": 3})) } else { None },
            }),
            ApiKind::Completions => json!({"choices": [{"index": 0, "text": " a", "finish_reason": if last { Some("length") } else { None }}]}),
            ApiKind::Chat => json!({"choices": [{"index": 0, "delta": {"content": " a"}, "finish_reason": if last { Some("length") } else { None }}]}),
        });
    }
    let mut out: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    if api != ApiKind::Tgi {
        let usage = json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": tokens, "prompt_tokens_details": {"cached_tokens": 1}}});
        out.push_str(&format!("data: {usage}\n\ndata: [DONE]\n\n"));
    }
    out
}

/// Feed `bytes` to the client's stream follower in the given chunk sizes.
fn follow_bytes(
    api: ApiKind,
    bytes: &[u8],
    cuts: &[usize],
) -> (crate::measure::record::Outcome, Progress) {
    let mut chunks = Vec::new();
    let mut rest = bytes;
    for cut in cuts {
        let n = (*cut).min(rest.len());
        let (head, tail) = rest.split_at(n);
        chunks.push(Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(head)));
        rest = tail;
    }
    chunks.push(Ok(bytes::Bytes::copy_from_slice(rest)));
    let mut p = Progress::default();
    let outcome = futures::executor::block_on(follow(api, futures::stream::iter(chunks), &mut p));
    (outcome, p)
}

/// A byte-level mutation of `bytes`: overwrite, insert or delete at positions.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        match m {
            Mutation::Set(i, b) if !bytes.is_empty() => {
                let i = at(*i, bytes.len());
                bytes[i] = *b;
            }
            Mutation::Insert(i, b) => {
                let i = at(*i, bytes.len() + 1);
                bytes.splice(i..i, b.iter().copied());
            }
            Mutation::Delete(i, n) if !bytes.is_empty() => {
                let i = at(*i, bytes.len());
                let end = (i + n).min(bytes.len());
                bytes.drain(i..end);
            }
            _ => {}
        }
    }
    bytes
}

/// The follower's invariants, whatever it was fed.
fn check_progress(p: &Progress) {
    assert_eq!(p.chunks as usize, p.token_times.len());
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn events_of_any_text_parse_or_fail_typed(api in api(), data in ".{0,200}") {
        let mut tally = StreamTally { reply: Some(String::new()), ..StreamTally::default() };
        match api.parse_event(&data, &mut tally) {
            Ok(_) | Err(EventError::Shape { .. }) | Err(EventError::Server { .. }) => {}
        }
    }

    #[test]
    fn events_of_any_json_parse_or_fail_typed(api in api(), v in json_value()) {
        let mut tally = StreamTally::default();
        let _ = api.parse_event(&v.to_string(), &mut tally);
        // Valid shapes with arbitrary values: wrap the value where each API looks.
        for wrapped in [
            json!({"token": v.clone(), "details": v.clone(), "generated_text": v.clone()}),
            json!({"choices": [{"delta": v.clone(), "text": v.clone(), "finish_reason": v.clone()}], "usage": v.clone()}),
            json!({"choices": v.clone(), "error": v.clone()}),
        ] {
            let _ = api.parse_event(&wrapped.to_string(), &mut tally);
        }
    }

    #[test]
    fn any_byte_stream_ends_in_an_outcome(api in api(), bytes in vec(any::<u8>(), 0..600), cuts in vec(0usize..64, 0..8)) {
        let (_, p) = follow_bytes(api, &bytes, &cuts);
        check_progress(&p);
    }

    #[test]
    fn mutated_valid_streams_end_in_an_outcome(
        api in api(),
        tokens in 1usize..6,
        mutations in vec(mutation(), 0..6),
        cuts in vec(1usize..40, 0..8),
    ) {
        let valid = valid_stream(api, tokens).into_bytes();
        if mutations.is_empty() {
            let (outcome, p) = follow_bytes(api, &valid, &cuts);
            prop_assert!(outcome.is_ok(), "{outcome:?}");
            prop_assert_eq!(p.chunks as usize, tokens);
        }
        let (_, p) = follow_bytes(api, &mutate(valid, &mutations), &cuts);
        check_progress(&p);
    }

    #[test]
    fn prometheus_text_parses_or_fails_typed(text in "(?s).{0,400}") {
        if let Ok(s) = Scrape::parse(&text) {
            exercise(&s);
        }
    }

    #[test]
    fn mutated_prometheus_text_parses_or_fails_typed(mutations in vec(mutation(), 1..8), client in vec(any::<f64>(), 0..6)) {
        let bytes = mutate(PROM_TEXT.as_bytes().to_vec(), &mutations);
        if let Ok(s) = Scrape::parse(&String::from_utf8_lossy(&bytes)) {
            exercise(&s);
            if let Some(h) = s.histogram("x_seconds", &[]) {
                let _ = agreement(&client, &h);
            }
        }
    }

    #[test]
    fn dataset_lines_and_error_bodies_parse_or_fail(line in ".{0,200}", v in json_value()) {
        let _ = crate::plan::workload::parse_line_for_fuzz(&line);
        let _ = crate::plan::workload::parse_line_for_fuzz(&v.to_string());
        let _ = error_message(&line);
        let _ = error_message(&json!({"error": v}).to_string());
    }

    #[test]
    fn flag_values_parse_or_fail(s in ".{0,24}", n in any::<f64>()) {
        for text in [s.clone(), n.to_string(), format!("{n}s"), format!("ttft={n}")] {
            if let Ok(secs) = crate::durations::parse_secs(&text) {
                let _ = std::time::Duration::from_secs_f64(secs);
            }
            let _ = text.parse::<crate::measure::stats::Slo>();
            let _ = text.parse::<crate::plan::workload::LenDist>();
            let _ = format!("uniform:{text}:{n}").parse::<crate::plan::workload::LenDist>();
        }
    }
}

/// Every query the reports make of a scrape.
fn exercise(s: &Scrape) {
    for sample in &s.samples {
        let base = sample.name.trim_end_matches("_bucket");
        if let Some(h) = s.histogram(base, &[]) {
            let _ = h.mean();
            let _ = h.since(Some(&h));
            let _ = agreement(&[0.1, 0.5], &h);
        }
        let _ = s.sum(&[sample.name.as_str()]);
        let _ = s.mean(&[sample.name.as_str()]);
    }
}

const PROM_TEXT: &str = r#"# TYPE x_seconds histogram
x_seconds_bucket{op="chat",le="0.1"} 1
x_seconds_bucket{op="chat",le="0.5"} 3
x_seconds_bucket{op="chat",le="+Inf"} 4
x_seconds_sum{op="chat"} 1.6
x_seconds_count{op="chat"} 4
hw_gpu_utilization_ratio{hw_id="gpu0",hw_name="NVIDIA H100, \"SXM\""} 0.5
process_memory_usage_bytes 2.5e8
"#;
