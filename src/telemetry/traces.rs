//! Request and engine-step spans, built with explicit start and end times.
//!
//! The engine reports what happened after the fact, with `Instant`s, so spans
//! are created when a phase ends (`SpanBuilder::with_start_time`,
//! `end_with_timestamp`). That also lets a `prefill` or `decode` span carry
//! links to every step span it rode in: OTel wants links at creation time, and
//! by then they are all known. [`TimeBase`] turns the engine's monotonic
//! instants into wall-clock times with one offset fixed at startup, so spans
//! line up with each other even if the system clock is stepped later.

use std::borrow::Cow;
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use opentelemetry::trace::{
    Event, Link, Span as _, SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt, Tracer,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;

use super::names::{attr, span};
use super::RequestParams;
use crate::engine::events::StepKind;

/// Fixed mapping from `Instant` to `SystemTime`, captured once at startup.
#[derive(Debug, Clone, Copy)]
pub struct TimeBase {
    instant: Instant,
    system: SystemTime,
}

impl TimeBase {
    pub fn now() -> TimeBase {
        TimeBase {
            instant: Instant::now(),
            system: SystemTime::now(),
        }
    }

    /// The wall-clock time of `at`.
    pub fn system(&self, at: Instant) -> SystemTime {
        match at.checked_duration_since(self.instant) {
            Some(after) => self.system + after,
            None => self
                .system
                .checked_sub(self.instant.duration_since(at))
                .unwrap_or(self.system),
        }
    }
}

/// What telemetry knows about one request. The engine carries it, type-erased,
/// as the request's `SpanHandle`; the observer downcasts it back.
#[derive(Debug)]
pub struct RequestState {
    /// When the server started handling the request (TTFT and duration start here).
    pub started: Instant,
    /// Metric attributes: operation, model, provider (bounded values only).
    pub attrs: Vec<KeyValue>,
    /// Context holding the GenAI span, when it is being recorded (sampled).
    pub cx: Option<Context>,
    progress: Mutex<Progress>,
}

/// The moving parts of a request, updated from the engine thread.
#[derive(Debug, Default)]
pub struct Progress {
    pub queued_at: Option<Instant>,
    pub admitted_at: Option<Instant>,
    /// Prompt tokens whose KV came from the prefix cache.
    pub cached_tokens: usize,
    pub first_token_at: Option<Instant>,
    /// Links to the step spans of the current phase (prefill, then decode).
    pub step_links: Vec<Link>,
    pub dropped_links: u32,
    /// Set by the first terminal event (finished, cancelled, failed).
    pub done: bool,
}

impl Progress {
    /// Remember a step this request rode in, up to [`span::MAX_STEP_LINKS`].
    pub fn link_step(&mut self, step: &SpanContext) {
        if self.step_links.len() < span::MAX_STEP_LINKS {
            self.step_links.push(Link::with_context(step.clone()));
        } else {
            self.dropped_links += 1;
        }
    }

    /// Take the collected links (and the count left out) for the phase that ends.
    pub fn take_links(&mut self) -> (Vec<Link>, u32) {
        let dropped = std::mem::take(&mut self.dropped_links);
        (std::mem::take(&mut self.step_links), dropped)
    }
}

impl RequestState {
    pub fn new(started: Instant, attrs: Vec<KeyValue>, cx: Option<Context>) -> RequestState {
        RequestState {
            started,
            attrs,
            cx,
            progress: Mutex::new(Progress::default()),
        }
    }

    /// Lock the progress; a poisoned lock (a panic elsewhere) still yields the data,
    /// because telemetry must never take the engine down.
    pub fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The recording GenAI span's context, if any.
    pub fn span_context(&self) -> Option<SpanContext> {
        self.cx.as_ref().map(|cx| cx.span().span_context().clone())
    }
}

/// Builds candlelight's spans on one tracer with one time base.
#[derive(Debug, Clone)]
pub struct Spans {
    pub tracer: SdkTracer,
    pub time: TimeBase,
}

impl Spans {
    /// Start the GenAI span `{operation} {model}`; `None` when it is not sampled.
    pub fn start_request(
        &self,
        parent: Option<&Context>,
        operation: &'static str,
        model: &str,
        started: Instant,
    ) -> Option<Context> {
        let attributes = vec![
            KeyValue::new(attr::GEN_AI_OPERATION_NAME, operation),
            KeyValue::new(attr::GEN_AI_PROVIDER_NAME, attr::PROVIDER),
            KeyValue::new(attr::GEN_AI_REQUEST_MODEL, model.to_string()),
        ];
        let builder = SpanBuilder::from_name(format!("{operation} {model}"))
            .with_kind(SpanKind::Internal)
            .with_start_time(self.time.system(started))
            .with_attributes(attributes);
        let parent = parent.cloned().unwrap_or_default();
        let span = self.tracer.build_with_context(builder, &parent);
        span.is_recording().then(|| parent.with_span(span))
    }

    /// The request's validated parameters on its GenAI span.
    pub fn record_params(&self, cx: &Context, p: &RequestParams) {
        let span = cx.span();
        span.set_attribute(KeyValue::new(
            attr::GEN_AI_REQUEST_MAX_TOKENS,
            p.max_tokens as i64,
        ));
        span.set_attribute(KeyValue::new(attr::GEN_AI_REQUEST_STREAM, p.stream));
        if let Some(t) = p.temperature {
            span.set_attribute(KeyValue::new(
                attr::GEN_AI_REQUEST_TEMPERATURE,
                f64::from(t),
            ));
        }
        if let Some(t) = p.top_p {
            span.set_attribute(KeyValue::new(attr::GEN_AI_REQUEST_TOP_P, f64::from(t)));
        }
        if let Some(k) = p.top_k {
            span.set_attribute(KeyValue::new(attr::GEN_AI_REQUEST_TOP_K, f64::from(k)));
        }
    }

    /// A finished child span of `parent` with real start and end times.
    pub fn child(&self, parent: &Context, name: &'static str, phase: Phase) {
        let builder = SpanBuilder::from_name(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(self.time.system(phase.start))
            .with_attributes(phase.attributes)
            .with_links(phase.links)
            .with_events(phase.events);
        let mut span = self.tracer.build_with_context(builder, parent);
        if let Some(error) = phase.error {
            span.set_status(Status::error(error));
        }
        span.end_with_timestamp(self.time.system(phase.end));
    }

    /// One engine step: a root span linked to the request spans it served.
    /// Returns its context when it was sampled, so requests can link back.
    pub fn step(
        &self,
        kind: StepKind,
        links: Vec<Link>,
        tokens: usize,
        phase: (Instant, Instant),
    ) -> Option<SpanContext> {
        let name = match kind {
            StepKind::Prefill => span::STEP_PREFILL,
            StepKind::Decode => span::STEP_DECODE,
            StepKind::Mixed => span::STEP_MIXED,
        };
        let attributes = vec![
            KeyValue::new(attr::STEP_KIND, kind.as_str()),
            KeyValue::new(attr::BATCH_SIZE, links.len() as i64),
            KeyValue::new(attr::BATCH_TOKENS, tokens as i64),
        ];
        let builder = SpanBuilder::from_name(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(self.time.system(phase.0))
            .with_attributes(attributes)
            .with_links(links);
        let mut span = self.tracer.build_with_context(builder, &Context::new());
        let sampled = span
            .span_context()
            .is_sampled()
            .then(|| span.span_context().clone());
        span.end_with_timestamp(self.time.system(phase.1));
        sampled
    }

    /// End the GenAI span in `cx` at `end`, with outcome attributes and, for a
    /// failure, error status and `error.type`.
    pub fn end_request(
        &self,
        cx: &Context,
        attributes: Vec<KeyValue>,
        error: Option<&str>,
        end: Instant,
    ) {
        let span = cx.span();
        span.set_attributes(attributes);
        if let Some(error) = error {
            span.set_attribute(KeyValue::new(attr::ERROR_TYPE, error.to_string()));
            span.set_status(Status::error(error.to_string()));
        }
        span.end_with_timestamp(self.time.system(end));
    }

    /// An event at `at` (for example the first token on the `decode` span).
    pub fn event(&self, name: &'static str, at: Instant) -> Event {
        Event::new(name, self.time.system(at), Vec::new(), 0)
    }
}

/// One finished phase of a request, ready to become a child span.
#[derive(Debug)]
pub struct Phase {
    pub start: Instant,
    pub end: Instant,
    pub attributes: Vec<KeyValue>,
    pub links: Vec<Link>,
    pub events: Vec<Event>,
    pub error: Option<Cow<'static, str>>,
}

impl Phase {
    pub fn new(start: Instant, end: Instant) -> Phase {
        Phase {
            start,
            end,
            attributes: Vec::new(),
            links: Vec::new(),
            events: Vec::new(),
            error: None,
        }
    }

    pub fn with_links(mut self, (links, dropped): (Vec<Link>, u32)) -> Phase {
        self.links = links;
        if dropped > 0 {
            self.attributes
                .push(KeyValue::new(attr::DROPPED_STEP_LINKS, i64::from(dropped)));
        }
        self
    }

    pub fn with_attribute(mut self, kv: KeyValue) -> Phase {
        self.attributes.push(kv);
        self
    }

    pub fn with_event(mut self, event: Event) -> Phase {
        self.events.push(event);
        self
    }

    pub fn failed(mut self, error: &'static str) -> Phase {
        self.error = Some(Cow::Borrowed(error));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_base_keeps_instant_differences() {
        let base = TimeBase::now();
        let later = Instant::now() + Duration::from_millis(250);
        let earlier = base.instant.checked_sub(Duration::from_millis(100));
        let gap = base
            .system(later)
            .duration_since(base.system)
            .unwrap_or_default();
        assert_eq!(gap, later.duration_since(base.instant));
        if let Some(earlier) = earlier {
            assert_eq!(
                base.system(earlier) + Duration::from_millis(100),
                base.system
            );
        }
    }

    #[test]
    fn step_links_are_bounded() {
        let mut p = Progress::default();
        let sc = SpanContext::empty_context();
        for _ in 0..span::MAX_STEP_LINKS + 5 {
            p.link_step(&sc);
        }
        let (links, dropped) = p.take_links();
        assert_eq!((links.len(), dropped), (span::MAX_STEP_LINKS, 5));
        assert!(p.take_links().0.is_empty());
    }
}
