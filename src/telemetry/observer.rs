//! The engine observer: turns [`EngineEvent`]s into metrics and spans, and the
//! per-request handle the API layer holds ([`RequestTelemetry`]).
//!
//! Runs on the engine thread, so every arm is a few atomic updates plus, for
//! sampled requests, span creation. Per-request state sits behind a mutex that
//! only the engine thread and that request's handler ever touch.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use opentelemetry::trace::{Link, TraceContextExt};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};

use super::metrics::{failure_error_type, Instruments};
use super::names::{attr, span};
use super::traces::{Phase, RequestState, Spans};
use super::RequestParams;
use crate::engine::events::{
    EngineEvent, EngineFacts, EngineObserver, FinishReason, LoadReport, SpanHandle, StepKind,
    StepMember,
};

/// What the observer, the request handles and the HTTP layer share.
#[derive(Debug)]
pub struct Shared {
    pub spans: Spans,
    pub instruments: Instruments,
    pub model: Arc<str>,
}

fn secs(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64()
}

fn state(handle: &SpanHandle) -> Option<&RequestState> {
    (**handle).downcast_ref::<RequestState>()
}

fn with(attrs: &[KeyValue], extra: KeyValue) -> Vec<KeyValue> {
    let mut v = Vec::with_capacity(attrs.len() + 1);
    v.extend_from_slice(attrs);
    v.push(extra);
    v
}

/// The [`EngineObserver`] that feeds OpenTelemetry.
#[derive(Debug)]
pub struct EngineTelemetry {
    pub shared: Arc<Shared>,
}

impl EngineObserver for EngineTelemetry {
    fn on_event(&self, event: &EngineEvent<'_>) {
        let m = &self.shared.instruments;
        match *event {
            EngineEvent::Queued { span, at, .. } => {
                if let Some(s) = state(span) {
                    s.progress().queued_at = Some(at);
                }
            }
            EngineEvent::Admitted {
                span,
                queued_at,
                cached_tokens,
                at,
                ..
            } => self.admitted(span, queued_at, cached_tokens, at),
            EngineEvent::StepDone {
                kind,
                members,
                tokens,
                started,
                ended,
            } => self.step(kind, members, tokens, started, ended),
            EngineEvent::FirstToken { span, at, .. } => self.first_token(span, at),
            EngineEvent::Token { since_previous, .. } => {
                m.inter_token.record(since_previous.as_secs_f64(), &[]);
                m.tokens_generated.add(1, &[]);
            }
            EngineEvent::Finished {
                span,
                reason,
                prompt_tokens,
                output_tokens,
                at,
                ..
            } => self.finished(span, reason, prompt_tokens, output_tokens, at),
            EngineEvent::Cancelled {
                span,
                output_tokens,
                at,
                ..
            } => self.cancelled(span, output_tokens, at),
            EngineEvent::Failed {
                span,
                kind,
                output_tokens,
                at,
                ..
            } => self.ended_early(span, failure_error_type(kind), output_tokens, at),
            EngineEvent::Rejected { reason } => {
                m.rejected
                    .add(1, &[KeyValue::new(attr::ERROR_TYPE, reason.as_str())]);
            }
            EngineEvent::Load(ref load) => self.load(load),
            EngineEvent::Started(ref facts) => self.started(facts),
            EngineEvent::PrefixLookup {
                queried_tokens,
                hit_tokens,
            } => {
                m.prefix_cache_queries.add(queried_tokens as u64, &[]);
                m.prefix_cache_hits.add(hit_tokens as u64, &[]);
            }
        }
    }
}

impl EngineTelemetry {
    fn load(&self, load: &LoadReport) {
        let m = &self.shared.instruments;
        m.running.record(load.running as u64, &[]);
        m.waiting.record(load.waiting as u64, &[]);
        m.kv_cache_usage.record(load.kv_reserved_bytes as u64, &[]);
        m.kv_cache_cached.record(load.kv_cached_bytes as u64, &[]);
        m.kv_cache_resident
            .record(load.kv_touched_bytes as u64, &[]);
        m.kv_cache_capacity
            .record(load.kv_capacity_bytes as u64, &[]);
        let fill = load.kv_reserved_bytes as f64 / load.kv_capacity_bytes.max(1) as f64;
        m.kv_cache_utilization.record(fill, &[]);
    }

    fn started(&self, facts: &EngineFacts) {
        let m = &self.shared.instruments;
        let geometry = [
            KeyValue::new(attr::KV_BLOCK_SIZE, facts.kv_block_size.to_string()),
            KeyValue::new(attr::KV_BLOCKS, facts.kv_blocks.to_string()),
        ];
        m.cache_config.record(1, &geometry);
        m.compute_threads.record(facts.threads as u64, &[]);
    }

    fn admitted(&self, handle: &SpanHandle, queued_at: Instant, cached: usize, at: Instant) {
        self.shared
            .instruments
            .queue_duration
            .record(secs(queued_at, at), &[]);
        let Some(s) = state(handle) else { return };
        let mut p = s.progress();
        p.admitted_at = Some(at);
        p.cached_tokens = cached;
        drop(p);
        if let Some(cx) = &s.cx {
            self.shared
                .spans
                .child(cx, span::QUEUE, Phase::new(queued_at, at));
        }
    }

    fn step(
        &self,
        kind: StepKind,
        members: &[StepMember<'_>],
        tokens: usize,
        started: Instant,
        ended: Instant,
    ) {
        let m = &self.shared.instruments;
        let kind_attr = [KeyValue::new(attr::STEP_KIND, kind.as_str())];
        m.step_duration.record(secs(started, ended), &kind_attr);
        m.batch_size.record(members.len() as u64, &kind_attr);
        m.batch_tokens.record(tokens as u64, &kind_attr);
        let prompt: usize = members.iter().filter(|x| x.prefill).map(|x| x.tokens).sum();
        if prompt > 0 {
            m.tokens_prompt.add(prompt as u64, &[]);
        }
        // Link the step to every sampled request it served, and each back.
        let sampled: Vec<(&RequestState, Link)> = members
            .iter()
            .filter_map(|member| {
                let s = state(member.span)?;
                let sc = s.span_context()?;
                let link = Link::new(
                    sc,
                    vec![KeyValue::new(attr::BATCH_TOKENS, member.tokens as i64)],
                    0,
                );
                Some((s, link))
            })
            .collect();
        if sampled.is_empty() {
            return; // nobody would ever look this step up
        }
        let (states, links): (Vec<&RequestState>, Vec<Link>) = sampled.into_iter().unzip();
        let Some(step) = self
            .shared
            .spans
            .step(kind, links, tokens, (started, ended))
        else {
            return;
        };
        for s in states {
            s.progress().link_step(&step);
        }
    }

    fn first_token(&self, handle: &SpanHandle, at: Instant) {
        let m = &self.shared.instruments;
        m.tokens_generated.add(1, &[]);
        let Some(s) = state(handle) else { return };
        let ttft = secs(s.started, at);
        m.time_to_first_token.record(ttft, &s.attrs);
        if let Some(cx) = &s.cx {
            cx.span().set_attribute(KeyValue::new(
                attr::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
                ttft,
            ));
        }
        let mut p = s.progress();
        p.first_token_at = Some(at);
        let Some(admitted) = p.admitted_at else {
            return;
        };
        m.prefill_duration.record(secs(admitted, at), &[]);
        if let Some(cx) = &s.cx {
            let cached = KeyValue::new(attr::PROMPT_CACHED_TOKENS, p.cached_tokens as i64);
            let phase = Phase::new(admitted, at)
                .with_links(p.take_links())
                .with_attribute(cached);
            drop(p);
            self.shared.spans.child(cx, span::PREFILL, phase);
        }
    }

    fn finished(
        &self,
        handle: &SpanHandle,
        reason: FinishReason,
        prompt: usize,
        output: usize,
        at: Instant,
    ) {
        let m = &self.shared.instruments;
        m.finished
            .add(1, &[KeyValue::new(attr::FINISH_REASON, reason.as_str())]);
        let Some(s) = state(handle) else { return };
        let mut p = s.progress();
        if std::mem::replace(&mut p.done, true) {
            return;
        }
        m.request_duration.record(secs(s.started, at), &s.attrs);
        let input_attrs = with(
            &s.attrs,
            KeyValue::new(attr::GEN_AI_TOKEN_TYPE, attr::TOKEN_INPUT),
        );
        m.token_usage.record(prompt as u64, &input_attrs);
        let output_attrs = with(
            &s.attrs,
            KeyValue::new(attr::GEN_AI_TOKEN_TYPE, attr::TOKEN_OUTPUT),
        );
        m.token_usage.record(output as u64, &output_attrs);
        if let Some(first) = p.first_token_at {
            m.decode_duration.record(secs(first, at), &[]);
            if output > 1 {
                m.time_per_output_token
                    .record(secs(first, at) / (output - 1) as f64, &s.attrs);
            }
        }
        let Some(cx) = &s.cx else { return };
        if let Some(first) = p.first_token_at {
            let phase = Phase::new(first, at)
                .with_links(p.take_links())
                .with_attribute(KeyValue::new(attr::DECODE_TOKENS, output as i64))
                .with_event(self.shared.spans.event(span::EVENT_FIRST_TOKEN, first));
            drop(p);
            self.shared.spans.child(cx, span::DECODE, phase);
        }
        let reasons = Value::Array(Array::String(vec![StringValue::from(reason.as_str())]));
        let outcome = vec![
            KeyValue::new(attr::GEN_AI_RESPONSE_FINISH_REASONS, reasons),
            KeyValue::new(attr::GEN_AI_RESPONSE_MODEL, self.shared.model.to_string()),
            KeyValue::new(attr::GEN_AI_USAGE_INPUT_TOKENS, prompt as i64),
            KeyValue::new(attr::GEN_AI_USAGE_OUTPUT_TOKENS, output as i64),
        ];
        self.shared.spans.end_request(cx, outcome, None, at);
    }

    fn cancelled(&self, handle: &SpanHandle, output: usize, at: Instant) {
        self.shared.instruments.cancelled.add(1, &[]);
        self.close_early(handle, attr::ERROR_CANCELLED, output, at);
    }

    /// The engine ended a request early (shutdown, timeout, failure).
    fn ended_early(
        &self,
        handle: &SpanHandle,
        error_type: &'static str,
        output: usize,
        at: Instant,
    ) {
        let failed = KeyValue::new(attr::ERROR_TYPE, error_type);
        self.shared.instruments.failed.add(1, &[failed]);
        self.close_early(handle, error_type, output, at);
    }

    /// Ends the request span and its open phase with `error_type`.
    fn close_early(
        &self,
        handle: &SpanHandle,
        error_type: &'static str,
        output: usize,
        at: Instant,
    ) {
        let m = &self.shared.instruments;
        let Some(s) = state(handle) else { return };
        let mut p = s.progress();
        if std::mem::replace(&mut p.done, true) {
            return;
        }
        let error_attrs = with(&s.attrs, KeyValue::new(attr::ERROR_TYPE, error_type));
        m.request_duration.record(secs(s.started, at), &error_attrs);
        let Some(cx) = &s.cx else { return };
        // Close whichever phase the request was in when its client left.
        let open = match (p.queued_at, p.admitted_at, p.first_token_at) {
            (_, _, Some(first)) => Some((span::DECODE, first)),
            (_, Some(admitted), None) => Some((span::PREFILL, admitted)),
            (Some(queued), None, None) => Some((span::QUEUE, queued)),
            (None, None, None) => None,
        };
        if let Some((name, start)) = open {
            let phase = Phase::new(start, at)
                .with_links(p.take_links())
                .failed(error_type);
            drop(p);
            self.shared.spans.child(cx, name, phase);
        }
        let outcome = vec![KeyValue::new(
            attr::GEN_AI_USAGE_OUTPUT_TOKENS,
            output as i64,
        )];
        self.shared
            .spans
            .end_request(cx, outcome, Some(error_type), at);
    }
}

/// One request's telemetry, held by the API handler. The engine gets its
/// [`span_handle`](Self::span_handle); the GenAI span ends when the engine
/// reports the request finished or cancelled, or when [`fail`](Self::fail) is called.
#[derive(Debug)]
pub struct RequestTelemetry {
    shared: Option<Arc<Shared>>,
    state: Arc<RequestState>,
}

/// The handle given out when telemetry is off: one shared empty state.
fn disabled_state() -> Arc<RequestState> {
    static STATE: OnceLock<Arc<RequestState>> = OnceLock::new();
    STATE
        .get_or_init(|| Arc::new(RequestState::new(Instant::now(), Vec::new(), None)))
        .clone()
}

impl RequestTelemetry {
    pub(crate) fn start(
        shared: &Arc<Shared>,
        parent: Option<&Context>,
        operation: &'static str,
    ) -> Self {
        let started = Instant::now();
        let attrs = vec![
            KeyValue::new(attr::GEN_AI_OPERATION_NAME, operation),
            KeyValue::new(
                attr::GEN_AI_REQUEST_MODEL,
                StringValue::from(shared.model.clone()),
            ),
            KeyValue::new(attr::GEN_AI_PROVIDER_NAME, attr::PROVIDER),
        ];
        let cx = shared
            .spans
            .start_request(parent, operation, &shared.model, started);
        RequestTelemetry {
            shared: Some(shared.clone()),
            state: Arc::new(RequestState::new(started, attrs, cx)),
        }
    }

    pub(crate) fn disabled() -> Self {
        RequestTelemetry {
            shared: None,
            state: disabled_state(),
        }
    }

    /// The opaque value the engine carries with the request and hands back in events.
    pub fn span_handle(&self) -> SpanHandle {
        self.state.clone()
    }

    /// The context of the GenAI span (for spans of your own under it), if sampled.
    pub fn context(&self) -> Option<&Context> {
        self.state.cx.as_ref()
    }

    /// Record the validated parameters (`max_tokens` is the cap that applies).
    pub fn record_params(&self, params: &RequestParams) {
        if let (Some(shared), Some(cx)) = (&self.shared, &self.state.cx) {
            shared.spans.record_params(cx, params);
        }
    }

    /// Record the `tokenize` child span (prompt rendering and tokenization).
    pub fn record_tokenize(&self, start: Instant, end: Instant, prompt_tokens: usize) {
        if let (Some(shared), Some(cx)) = (&self.shared, &self.state.cx) {
            let phase = Phase::new(start, end)
                .with_attribute(KeyValue::new(attr::PROMPT_TOKENS, prompt_tokens as i64));
            shared.spans.child(cx, span::TOKENIZE, phase);
        }
    }

    /// The request failed before the engine finished it (validation error,
    /// rejection, internal error). `error_type` must come from the API's closed
    /// error table (it becomes a metric label). Ends the GenAI span with error
    /// status and records `gen_ai.server.request.duration` with `error.type`.
    /// Does nothing if the engine already finished or cancelled the request.
    pub fn fail(&self, error_type: &'static str) {
        let Some(shared) = &self.shared else { return };
        let s = &self.state;
        if std::mem::replace(&mut s.progress().done, true) {
            return;
        }
        let now = Instant::now();
        let error_attrs = with(&s.attrs, KeyValue::new(attr::ERROR_TYPE, error_type));
        shared
            .instruments
            .request_duration
            .record(secs(s.started, now), &error_attrs);
        if let Some(cx) = &s.cx {
            shared
                .spans
                .end_request(cx, Vec::new(), Some(error_type), now);
        }
    }
}
