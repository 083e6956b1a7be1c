//! The observer and HTTP layer, driven the way the engine and axum drive them,
//! checked on the spans the SDK exports and on the Prometheus text.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Extension, Router};
use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry::{Context, Value};
use opentelemetry_sdk::trace::SpanData;

use super::names::{self, attr, span, Group};
use super::testing::{self, value, SpanStore};
use super::Telemetry;
use crate::engine::events::{
    EngineEvent, EngineObserver, FinishReason, LoadReport, RejectReason, RequestId, SpanHandle,
    StepKind, StepMember,
};

const GENAI: &str = "chat SmolLM2-135M-Instruct";
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn info(operation: &'static str) -> &'static str {
    operation
}

fn client_context() -> Context {
    let mut headers = axum::http::HeaderMap::new();
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    headers.insert(
        "traceparent",
        traceparent.parse().expect("invariant: valid header"),
    );
    super::http::extract_parent(&headers)
}

fn attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

/// Emit what the engine reports for `reqs` served together: queue, one prefill
/// step, `decode_steps` decode steps (one token each), then finish.
fn run_batch(
    obs: &dyn EngineObserver,
    reqs: &[(RequestId, &SpanHandle)],
    prompt: usize,
    decode_steps: u64,
) {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    for &(req, span) in reqs {
        obs.on_event(&EngineEvent::Queued {
            req,
            span,
            prompt_tokens: prompt,
            at: ms(0),
        });
    }
    for &(req, span) in reqs {
        obs.on_event(&EngineEvent::Admitted {
            cached_tokens: 0,
            req,
            span,
            queued_at: ms(0),
            at: ms(2),
        });
    }
    let members: Vec<StepMember<'_>> = reqs
        .iter()
        .map(|&(req, span)| StepMember {
            prefill: true,
            req,
            span,
            tokens: prompt,
        })
        .collect();
    let tokens = prompt * reqs.len();
    obs.on_event(&EngineEvent::StepDone {
        kind: StepKind::Prefill,
        members: &members,
        tokens,
        started: ms(2),
        ended: ms(10),
    });
    for &(req, span) in reqs {
        obs.on_event(&EngineEvent::FirstToken {
            req,
            span,
            at: ms(10),
        });
    }
    let decode: Vec<StepMember<'_>> = members
        .iter()
        .map(|m| StepMember {
            prefill: false,
            tokens: 1,
            ..m.clone()
        })
        .collect();
    for step in 0..decode_steps {
        let (started, ended) = (ms(10 + 5 * step), ms(15 + 5 * step));
        obs.on_event(&EngineEvent::StepDone {
            kind: StepKind::Decode,
            members: &decode,
            tokens: reqs.len(),
            started,
            ended,
        });
        for &(req, span) in reqs {
            let since_previous = Duration::from_millis(5);
            obs.on_event(&EngineEvent::Token {
                req,
                span,
                since_previous,
                at: ended,
            });
        }
    }
    let at = ms(10 + 5 * decode_steps);
    for &(req, span) in reqs {
        let output_tokens = 1 + decode_steps as usize;
        obs.on_event(&EngineEvent::Finished {
            req,
            span,
            reason: FinishReason::Length,
            prompt_tokens: prompt,
            output_tokens,
            at,
        });
    }
    obs.on_event(&EngineEvent::Load(LoadReport {
        running: 0,
        waiting: 0,
        kv_reserved_bytes: 0,
        kv_cached_bytes: 0,
        kv_touched_bytes: 0,
        kv_capacity_bytes: 1 << 20,
    }));
    obs.on_event(&EngineEvent::Started(crate::engine::events::EngineFacts {
        threads: 2,
        kv_block_size: 16,
        kv_blocks: 64,
    }));
}

#[test]
fn request_spans_nest_under_the_client_trace_and_link_to_steps() {
    let (telemetry, store) = testing::telemetry(16);
    let parent = client_context();
    let a = telemetry.start_request(Some(&parent), info("chat"));
    let b = telemetry.start_request(None, info("chat"));
    let start = Instant::now();
    a.record_tokenize(start, start + Duration::from_millis(1), 7);
    a.record_params(&crate::telemetry::RequestParams {
        max_tokens: 8,
        top_k: Some(40),
        ..Default::default()
    });
    let (ha, hb) = (a.span_handle(), b.span_handle());
    run_batch(&*telemetry.observer(), &[(1, &ha), (2, &hb)], 7, 3);

    let genai: Vec<SpanData> = store.named(GENAI);
    assert_eq!(genai.len(), 2);
    let ga = genai
        .iter()
        .find(|s| s.span_context.trace_id().to_string() == CLIENT_TRACE)
        .expect("one GenAI span continues the client's trace");
    assert_eq!(ga.parent_span_id.to_string(), CLIENT_SPAN);
    for (key, want) in [
        (attr::GEN_AI_OPERATION_NAME, Value::from("chat")),
        (attr::GEN_AI_PROVIDER_NAME, Value::from("candlelight")),
        (
            attr::GEN_AI_REQUEST_MODEL,
            Value::from("SmolLM2-135M-Instruct"),
        ),
        (
            attr::GEN_AI_RESPONSE_MODEL,
            Value::from("SmolLM2-135M-Instruct"),
        ),
        (attr::GEN_AI_REQUEST_MAX_TOKENS, Value::I64(8)),
        (attr::GEN_AI_REQUEST_TOP_K, Value::F64(40.0)),
        (attr::GEN_AI_USAGE_INPUT_TOKENS, Value::I64(7)),
        (attr::GEN_AI_USAGE_OUTPUT_TOKENS, Value::I64(4)),
    ] {
        assert_eq!(attribute(ga, key), Some(want), "{key}");
    }
    let reasons = attribute(ga, attr::GEN_AI_RESPONSE_FINISH_REASONS).map(|v| v.to_string());
    assert_eq!(reasons.as_deref(), Some("[\"length\"]"));
    assert!(
        matches!(attribute(ga, attr::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK), Some(Value::F64(t)) if t > 0.0)
    );

    // tokenize, queue, prefill and decode are children of the GenAI span.
    let id = ga.span_context.span_id();
    let child = |name: &str| -> SpanData {
        let found: Vec<SpanData> = store
            .named(name)
            .into_iter()
            .filter(|s| s.parent_span_id == id)
            .collect();
        assert_eq!(found.len(), 1, "one {name} under the GenAI span");
        found.into_iter().next().expect("invariant: checked above")
    };
    let queue = child(span::QUEUE);
    let took = |s: &SpanData| s.end_time.duration_since(s.start_time).unwrap_or_default();
    assert_eq!(took(&queue), Duration::from_millis(2));
    child(span::TOKENIZE);
    let prefill = child(span::PREFILL);
    let decode = child(span::DECODE);
    assert_eq!(took(&decode), Duration::from_millis(15));
    assert_eq!(attribute(&decode, attr::DECODE_TOKENS), Some(Value::I64(4)));
    assert_eq!(decode.events.events.len(), 1);
    assert_eq!(decode.events.events[0].name, span::EVENT_FIRST_TOKEN);
    assert_eq!(decode.events.events[0].timestamp, decode.start_time);

    // Step spans are roots linked to both requests; requests link back.
    let steps = store.named(span::STEP_DECODE);
    assert_eq!(steps.len(), 3);
    for step in &steps {
        assert_eq!(step.parent_span_id, SpanId::INVALID);
        assert_eq!(attribute(step, attr::BATCH_SIZE), Some(Value::I64(2)));
        assert!(step
            .links
            .links
            .iter()
            .any(|l| l.span_context == ga.span_context));
        assert_eq!(step.links.links.len(), 2);
    }
    let mut linked: Vec<_> = decode
        .links
        .links
        .iter()
        .map(|l| l.span_context.clone())
        .collect();
    let mut stepped: Vec<_> = steps.iter().map(|s| s.span_context.clone()).collect();
    linked.sort_by_key(|c| c.span_id().to_string());
    stepped.sort_by_key(|c| c.span_id().to_string());
    assert_eq!(
        linked, stepped,
        "decode links to exactly the decode steps it rode in"
    );
    let prefill_step = store.one(span::STEP_PREFILL);
    assert_eq!(prefill.links.links.len(), 1);
    assert_eq!(
        prefill.links.links[0].span_context,
        prefill_step.span_context
    );
    assert_eq!(
        attribute(&prefill_step, attr::BATCH_TOKENS),
        Some(Value::I64(14))
    );
}

#[test]
fn engine_events_reach_every_request_and_engine_metric() {
    let (telemetry, _store) = testing::telemetry(16);
    let r = telemetry.start_request(None, info("text_completion"));
    let h = r.span_handle();
    run_batch(&*telemetry.observer(), &[(1, &h)], 5, 2);
    telemetry.observer().on_event(&EngineEvent::Rejected {
        reason: RejectReason::QueueFull,
    });
    let text = telemetry.prometheus_text();

    // Every name in `names` that the observer owns shows up, as derived.
    for m in names::ALL_METRICS
        .iter()
        .filter(|m| matches!(m.group, Group::GenAi | Group::Engine))
    {
        for series in m.prometheus_series() {
            assert!(
                value(&text, &series, "").is_some(),
                "{series} missing from\n{text}"
            );
        }
    }
    let op = "gen_ai_operation_name=\"text_completion\"";
    assert_eq!(
        value(&text, "gen_ai_server_time_to_first_token_seconds_count", op),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "gen_ai_server_token_usage_sum",
            "gen_ai_token_type=\"input\""
        ),
        Some(5.0)
    );
    assert_eq!(
        value(
            &text,
            "gen_ai_server_token_usage_sum",
            "gen_ai_token_type=\"output\""
        ),
        Some(3.0)
    );
    assert_eq!(
        value(&text, "candlelight_tokens_prompt_total", ""),
        Some(5.0)
    );
    assert_eq!(
        value(&text, "candlelight_tokens_generated_total", ""),
        Some(3.0)
    );
    assert_eq!(
        value(
            &text,
            "candlelight_requests_finished_total",
            "finish_reason=\"length\""
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "candlelight_requests_rejected_total",
            "error_type=\"queue_full\""
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "candlelight_batch_size_count",
            "step_kind=\"decode\""
        ),
        Some(2.0)
    );
    assert_eq!(value(&text, "candlelight_batch_limit", ""), Some(16.0));
    assert_eq!(
        value(&text, "candlelight_kv_cache_capacity_bytes", ""),
        Some(1048576.0)
    );
    assert_eq!(
        value(
            &text,
            "candlelight_telemetry_dropped_total",
            "signal=\"spans\""
        ),
        Some(0.0)
    );
    let tpot = value(&text, "gen_ai_server_time_per_output_token_seconds_sum", op);
    assert!(
        (tpot.unwrap_or(0.0) - 0.005).abs() < 1e-9,
        "10 ms over 2 tokens after the first"
    );
}

#[test]
fn cancelled_and_failed_requests_end_with_error_type() {
    let (telemetry, store) = testing::telemetry(4);
    let obs = telemetry.observer();
    let cancelled = telemetry.start_request(None, info("chat"));
    let h = cancelled.span_handle();
    let t = Instant::now();
    obs.on_event(&EngineEvent::Queued {
        req: 1,
        span: &h,
        prompt_tokens: 3,
        at: t,
    });
    obs.on_event(&EngineEvent::Admitted {
        cached_tokens: 0,
        req: 1,
        span: &h,
        queued_at: t,
        at: t,
    });
    obs.on_event(&EngineEvent::Cancelled {
        req: 1,
        span: &h,
        output_tokens: 0,
        at: t + Duration::from_millis(4),
    });
    cancelled.fail("validation"); // too late: the engine already ended it

    telemetry
        .start_request(None, info("chat"))
        .fail("validation");

    let genai = store.named(GENAI);
    assert_eq!(genai.len(), 2);
    let mut errors: Vec<String> = genai
        .iter()
        .map(|s| {
            assert!(matches!(s.status, Status::Error { .. }));
            attribute(s, attr::ERROR_TYPE)
                .map(|v| v.to_string())
                .unwrap_or_default()
        })
        .collect();
    errors.sort();
    assert_eq!(errors, ["cancelled", "validation"]);
    let prefill = store.one(span::PREFILL);
    assert!(
        matches!(prefill.status, Status::Error { .. }),
        "the open phase ends failed"
    );

    let text = telemetry.prometheus_text();
    assert_eq!(
        value(&text, "candlelight_requests_cancelled_total", ""),
        Some(1.0)
    );
    for error in ["cancelled", "validation"] {
        let label = format!("error_type=\"{error}\"");
        assert_eq!(
            value(
                &text,
                "gen_ai_server_request_duration_seconds_count",
                &label
            ),
            Some(1.0),
            "{error}"
        );
    }
}

#[test]
fn disabled_telemetry_is_silent() {
    let telemetry = Telemetry::disabled();
    let r = telemetry.start_request(None, info("chat"));
    let h = r.span_handle();
    run_batch(&*telemetry.observer(), &[(1, &h)], 3, 1);
    r.fail("validation");
    assert!(telemetry.prometheus_text().is_empty());
    assert!(!telemetry.is_enabled());
}

/// Serve `telemetry.http_layer()` on a real socket; the handler plays the API:
/// it starts the GenAI span under the HTTP span and drives the engine events.
async fn serve(telemetry: Telemetry) -> std::io::Result<String> {
    async fn chat(State(t): State<Telemetry>, Extension(cx): Extension<Context>) -> &'static str {
        let r = t.start_request(Some(&cx), info("chat"));
        let h = r.span_handle();
        run_batch(&*t.observer(), &[(1, &h)], 4, 1);
        "ok"
    }
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/health", axum::routing::get(|| async { "ok" }))
        .layer(telemetry.http_layer())
        .with_state(telemetry);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/chat/completions", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

#[tokio::test]
async fn http_layer_continues_the_client_trace_and_returns_its_id() -> anyhow::Result<()> {
    let (telemetry, store): (Telemetry, SpanStore) = testing::telemetry(4);
    let url = serve(telemetry).await?;
    let response = reqwest::Client::new()
        .post(&url)
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .header("user-agent", "observer-test")
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let header = response
        .headers()
        .get(span::TRACE_ID_HEADER)
        .map(|v| v.to_str().map(str::to_owned));
    assert_eq!(header.transpose()?.as_deref(), Some(CLIENT_TRACE));

    let server = store.one("POST /v1/chat/completions");
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(server.parent_span_id.to_string(), CLIENT_SPAN);
    assert_eq!(
        attribute(&server, "http.route"),
        Some(Value::from("/v1/chat/completions"))
    );
    assert_eq!(
        attribute(&server, "http.request.method"),
        Some(Value::from("POST"))
    );
    assert_eq!(
        attribute(&server, "http.response.status_code"),
        Some(Value::I64(200))
    );
    assert_eq!(
        attribute(&server, "user_agent.original"),
        Some(Value::from("observer-test"))
    );
    assert!(attribute(&server, "server.port").is_some());
    let genai = store.one(GENAI);
    assert_eq!(genai.parent_span_id, server.span_context.span_id());

    let health = reqwest::get(url.replace("/v1/chat/completions", "/health")).await?;
    assert_eq!(
        health.headers().get(span::TRACE_ID_HEADER).map(|v| v.len()),
        Some(32)
    );
    assert!(
        store.named("GET /health").is_empty(),
        "probes make no spans"
    );
    Ok(())
}

#[tokio::test]
async fn http_layer_sets_a_trace_id_even_when_telemetry_is_off() -> anyhow::Result<()> {
    let url = serve(Telemetry::disabled()).await?;
    let client = reqwest::Client::new();
    let own = client.post(&url).send().await?;
    let id = own
        .headers()
        .get(span::TRACE_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()) && id != "0".repeat(32));
    let continued = client
        .post(&url)
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .send()
        .await?;
    let id = continued
        .headers()
        .get(span::TRACE_ID_HEADER)
        .and_then(|v| v.to_str().ok());
    assert_eq!(id, Some(CLIENT_TRACE));
    Ok(())
}

/// The engine thread's telemetry cost, free of machine noise:
/// `cargo test --release -p candlelight --lib observer_cost -- --ignored --nocapture`.
/// Prints only (no timed assertion); compare with a decode step's duration.
#[test]
#[ignore = "prints the observer's cost per engine step"]
fn observer_cost_per_decode_step() {
    let (telemetry, _store) = testing::telemetry(8);
    let reqs: Vec<_> = (0..8)
        .map(|_| telemetry.start_request(None, info("chat")))
        .collect();
    let handles: Vec<SpanHandle> = reqs.iter().map(|r| r.span_handle()).collect();
    let members: Vec<StepMember<'_>> = (0..)
        .zip(&handles)
        .map(|(req, span)| StepMember {
            prefill: false,
            req,
            span,
            tokens: 1,
        })
        .collect();
    let obs = telemetry.observer();
    let steps = 20_000;
    let t = Instant::now();
    for _ in 0..steps {
        let now = Instant::now();
        obs.on_event(&EngineEvent::StepDone {
            kind: StepKind::Decode,
            members: &members,
            tokens: members.len(),
            started: now,
            ended: now,
        });
        for m in &members {
            let since_previous = Duration::from_millis(5);
            obs.on_event(&EngineEvent::Token {
                req: m.req,
                span: m.span,
                since_previous,
                at: now,
            });
        }
    }
    let per_step = t.elapsed().as_secs_f64() * 1e6 / f64::from(steps);
    eprintln!(
        "observer: {per_step:.2} us per decode step of 8 sequences (step span, 8 links, 8 tokens)"
    );
}
