//! The engine loop: one thread owns the backend and every sequence.
//!
//! Each iteration: take new requests, drop those whose client left or whose
//! deadline passed, start what fits (reserving KV, reusing cached prefixes),
//! then run one step: every decoding sequence's next token plus as many prompt
//! tokens as the step's budget allows, in one forward over the weights.
//! Finished sequences leave between steps; their blocks return to the pool, or
//! stay as prefix cache.
//!
//! The runner talks to compute only through [`Backend`].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use super::backend::{Backend, BackendError, LogitsFor, SeqChunk};
use super::events::{
    EngineEvent, EngineFacts, EngineObserver, FinishReason, LoadReport, StepKind, StepMember,
};
use super::kv::{KvBlocks, KvConfig};
use super::request::{Failure, FailureKind, GenerationEvent};
use super::scheduler::{Scheduler, SchedulerLimits, Start};
use super::sequence::{Sequence, Submission};
use super::tokenizer::Tokenizer;

/// What the engine handle sends the engine thread.
pub enum Control {
    /// Boxed: submissions are large and the channel holds many.
    Submit(Box<Submission>),
    /// End every request now (the shutdown grace period is over).
    AbortAll(FailureKind),
}

/// Live engine counters, readable from any thread.
#[derive(Debug)]
pub struct EngineStats {
    /// Submitted but not yet started (changed only by [`super::QueueSlot`]).
    pub queued: AtomicUsize,
    /// Submitted and not yet ended (changed only by [`super::InFlight`]).
    pub in_flight: AtomicUsize,
    pub running: AtomicUsize,
    pub kv_reserved_bytes: AtomicUsize,
    pub kv_cached_bytes: AtomicUsize,
    /// Sequences in the most recent step.
    pub last_batch: AtomicUsize,
    /// Most sequences ever in one step.
    pub peak_batch: AtomicUsize,
    /// False once the engine thread has stopped (panicked or exited).
    pub alive: AtomicBool,
}

impl Default for EngineStats {
    fn default() -> Self {
        Self {
            queued: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            kv_reserved_bytes: AtomicUsize::new(0),
            kv_cached_bytes: AtomicUsize::new(0),
            last_batch: AtomicUsize::new(0),
            peak_batch: AtomicUsize::new(0),
            alive: AtomicBool::new(true),
        }
    }
}

/// Test-only faults, from environment variables (documented in
/// `docs/diagnosis.md` and the README; never in `--help`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Faults {
    /// `CANDLELIGHT_FAULT_LEAK_BYTES_PER_REQUEST`: bytes kept forever per
    /// finished request (a memory leak for the diagnosis tests).
    pub leak_bytes_per_request: usize,
    /// `CANDLELIGHT_FAULT_ENGINE_PANIC_AFTER_STEPS`: the engine thread panics
    /// after this many steps (a dead engine for the hardening tests).
    pub panic_after_steps: Option<u64>,
}

impl Faults {
    pub fn from_env() -> Self {
        fn read<T: std::str::FromStr>(key: &str) -> Option<T> {
            std::env::var(key).ok().and_then(|v| v.trim().parse().ok())
        }
        Self {
            leak_bytes_per_request: read("CANDLELIGHT_FAULT_LEAK_BYTES_PER_REQUEST").unwrap_or(0),
            panic_after_steps: read("CANDLELIGHT_FAULT_ENGINE_PANIC_AFTER_STEPS"),
        }
    }
}

pub struct Runner {
    backend: Box<dyn Backend>,
    tokenizer: Arc<Tokenizer>,
    observer: Arc<dyn EngineObserver>,
    stats: Arc<EngineStats>,
    limits: SchedulerLimits,
    kv: KvBlocks,
    sched: Scheduler<Submission>,
    /// Started sequences, in admission order (prefilling ones among them).
    running: Vec<Sequence>,
    logits: Vec<f32>,
    kv_bytes_per_block: usize,
    faults: Faults,
    steps: u64,
    /// Memory kept on purpose by the leak fault.
    leaked: Vec<Vec<u8>>,
}

/// One sequence's share of a step.
#[derive(Clone, Copy)]
struct Member {
    index: usize,
    tokens: usize,
    prefill: bool,
}

impl Runner {
    /// Allocates the backend's KV pool for `kv`.
    pub fn new(
        mut backend: Box<dyn Backend>,
        tokenizer: Arc<Tokenizer>,
        observer: Arc<dyn EngineObserver>,
        limits: SchedulerLimits,
        kv: KvConfig,
        stats: Arc<EngineStats>,
    ) -> Result<Self, BackendError> {
        backend.allocate_kv(kv.block_size, kv.capacity_blocks)?;
        let kv_bytes_per_block = backend.config().kv_bytes_per_token() * kv.block_size;
        Ok(Self {
            backend,
            tokenizer,
            observer,
            stats,
            limits,
            kv: KvBlocks::new(kv),
            sched: Scheduler::new(limits),
            running: Vec::new(),
            logits: Vec::new(),
            kv_bytes_per_block,
            faults: Faults::default(),
            steps: 0,
            leaked: Vec::new(),
        })
    }

    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Runs until every handle is dropped and the work is done, or the engine
    /// panics: then every request gets [`FailureKind::EngineDead`] and the
    /// handle refuses new ones.
    pub fn run(mut self, inbox: Receiver<Control>) {
        self.observer.on_event(&EngineEvent::Started(EngineFacts {
            threads: self.backend.info().threads,
            kv_block_size: self.kv.block_size(),
            kv_blocks: self.kv.usage().capacity,
        }));
        self.report_load();
        let mut open = true;
        loop {
            if self.is_idle() {
                if !open {
                    break;
                }
                match inbox.recv() {
                    Ok(msg) => self.handle(msg),
                    Err(_) => break,
                }
            }
            loop {
                match inbox.try_recv() {
                    Ok(msg) => self.handle(msg),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            if catch_unwind(AssertUnwindSafe(|| self.iterate())).is_err() {
                tracing::error!("the engine thread panicked; failing every request");
                self.stats.alive.store(false, Ordering::SeqCst);
                self.abort_all(FailureKind::EngineDead);
                return;
            }
        }
        self.stats.alive.store(false, Ordering::SeqCst);
    }

    fn handle(&mut self, msg: Control) {
        match msg {
            Control::Submit(sub) => self.enqueue(*sub),
            Control::AbortAll(kind) => self.abort_all(kind),
        }
    }

    /// Nothing waiting and nothing running.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.sched.is_empty()
    }

    pub fn enqueue(&mut self, sub: Submission) {
        self.observer.on_event(&EngineEvent::Queued {
            req: sub.id,
            span: &sub.request.span,
            prompt_tokens: sub.request.prompt_ids().len(),
            at: sub.queued_at,
        });
        self.sched.enqueue(sub);
    }

    /// One scheduling iteration: leave, start, step, retire, report.
    pub fn iterate(&mut self) {
        self.drop_gone(Instant::now());
        self.start_waiting();
        self.step();
        self.retire();
        self.report_load();
    }

    /// Removes waiting and running requests whose client left or whose deadline
    /// passed before their first token.
    fn drop_gone(&mut self, now: Instant) {
        let gone = |s: &Submission| {
            s.reply.is_closed() || s.request.stopping.deadline.is_some_and(|d| now >= d)
        };
        for sub in self.sched.drain_waiting(gone) {
            if sub.reply.is_closed() {
                self.observer.on_event(&EngineEvent::Cancelled {
                    req: sub.id,
                    span: &sub.request.span,
                    output_tokens: 0,
                    at: now,
                });
            } else {
                self.fail_waiting(sub, FailureKind::Timeout, now);
            }
        }
        for s in &mut self.running {
            if s.client_gone() {
                s.abort();
                self.observer.on_event(&EngineEvent::Cancelled {
                    req: s.id(),
                    span: s.span(),
                    output_tokens: s.generated(),
                    at: now,
                });
            } else if s.is_prefilling() && s.deadline_passed(now) {
                fail(s, FailureKind::Timeout, self.observer.as_ref(), now);
            }
        }
        self.retire();
    }

    fn fail_waiting(&self, sub: Submission, kind: FailureKind, at: Instant) {
        let _ = sub.reply.send(GenerationEvent::Failed(Failure {
            kind,
            message: failure_message(kind).to_owned(),
        }));
        self.observer.on_event(&EngineEvent::Failed {
            req: sub.id,
            span: &sub.request.span,
            kind,
            output_tokens: 0,
            at,
        });
    }

    /// Starts waiting requests in order while the batch and the KV pool have room.
    fn start_waiting(&mut self) {
        let Self {
            sched,
            kv,
            running,
            observer,
            ..
        } = self;
        sched.admit(running.len(), |sub| {
            let prompt = sub.request.prompt_ids();
            let hit = kv.lookup(prompt);
            let cached = hit.tokens(kv.block_size());
            match kv.reserve(sub.request.token_budget(), hit) {
                Ok(blocks) => {
                    observer.on_event(&EngineEvent::PrefixLookup {
                        queried_tokens: prompt.len(),
                        hit_tokens: cached,
                    });
                    observer.on_event(&EngineEvent::Admitted {
                        req: sub.id,
                        span: &sub.request.span,
                        queued_at: sub.queued_at,
                        cached_tokens: cached,
                        at: Instant::now(),
                    });
                    running.push(Sequence::start(sub, blocks, cached));
                    Start::Started
                }
                Err(_) => Start::NotNow(sub),
            }
        });
    }

    /// Which sequences contribute how many tokens to the next step.
    fn plan(&self) -> Vec<Member> {
        let decoding = self
            .running
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_prefilling());
        let prefilling: Vec<usize> = (0..self.running.len())
            .filter(|&i| self.running[i].is_prefilling())
            .collect();
        let remaining: Vec<usize> = prefilling
            .iter()
            .map(|&i| self.running[i].pending_input().len())
            .collect();
        let decode: Vec<Member> = decoding
            .map(|(index, _)| Member {
                index,
                tokens: 1,
                prefill: false,
            })
            .collect();
        let plan = self.limits.plan_prefill(decode.len(), &remaining);
        let prefill = prefilling.into_iter().zip(plan).filter(|&(_, n)| n > 0);
        decode
            .into_iter()
            .chain(prefill.map(|(index, tokens)| Member {
                index,
                tokens,
                prefill: true,
            }))
            .collect()
    }

    /// One batched forward, then one sample for every sequence whose input ran out.
    fn step(&mut self) {
        let members = self.plan();
        if members.is_empty() {
            return;
        }
        self.steps += 1;
        if self
            .faults
            .panic_after_steps
            .is_some_and(|n| self.steps > n)
        {
            panic!("fault injection: CANDLELIGHT_FAULT_ENGINE_PANIC_AFTER_STEPS");
        }
        for m in &members {
            let s = &mut self.running[m.index];
            let upto = s.computed() + m.tokens;
            self.kv
                .grow(s.blocks_mut(), upto)
                .expect("invariant: a sequence never outgrows its reservation");
        }
        let started = Instant::now();
        let result = self.forward(&members);
        let ended = Instant::now();
        if let Err(e) = result {
            tracing::error!(error = %e, "forward pass failed");
            for m in &members {
                let s = &mut self.running[m.index];
                s.send_at_retire(GenerationEvent::Failed(Failure {
                    kind: FailureKind::Engine,
                    message: e.to_string(),
                }));
                fail_quietly(s, self.observer.as_ref(), ended);
            }
            return;
        }
        for m in &members {
            let s = &mut self.running[m.index];
            s.advance(m.tokens);
            s.commit_blocks(&mut self.kv);
        }
        self.report_step(&members, started, ended);
        self.sample(&members, ended);
    }

    fn forward(&mut self, members: &[Member]) -> Result<(), BackendError> {
        let chunks: Vec<SeqChunk<'_>> = members
            .iter()
            .map(|m| {
                let s = &self.running[m.index];
                let input = &s.pending_input()[..m.tokens];
                SeqChunk {
                    tokens: input,
                    start: s.computed(),
                    blocks: s.blocks().table(),
                    // Logits only where the input runs out: a decode, or a prompt's end.
                    logits: if m.tokens == s.pending_input().len() {
                        LogitsFor::LastToken
                    } else {
                        LogitsFor::Nothing
                    },
                }
            })
            .collect();
        self.backend.forward(&chunks, &mut self.logits)
    }

    fn report_step(&self, members: &[Member], started: Instant, ended: Instant) {
        let n = members.len();
        self.stats.last_batch.store(n, Ordering::Relaxed);
        self.stats.peak_batch.fetch_max(n, Ordering::Relaxed);
        let prefill: usize = members.iter().filter(|m| m.prefill).map(|m| m.tokens).sum();
        let decode = members.iter().filter(|m| !m.prefill).count();
        let step_members: Vec<StepMember<'_>> = members
            .iter()
            .map(|m| StepMember {
                req: self.running[m.index].id(),
                span: self.running[m.index].span(),
                tokens: m.tokens,
                prefill: m.prefill,
            })
            .collect();
        self.observer.on_event(&EngineEvent::StepDone {
            kind: StepKind::of(prefill, decode),
            members: &step_members,
            tokens: prefill + decode,
            started,
            ended,
        });
    }

    fn sample(&mut self, members: &[Member], now: Instant) {
        let vocab = self.backend.config().vocab_size;
        let mut rows = self.logits.chunks_exact_mut(vocab);
        for m in members {
            let s = &mut self.running[m.index];
            // A prompt still part-way through has nothing to sample yet.
            if !s.pending_input().is_empty() {
                continue;
            }
            let Some(logits) = rows.next() else {
                tracing::error!("the backend returned fewer logit rows than asked");
                return;
            };
            sample_one(s, logits, &self.tokenizer, self.observer.as_ref(), now);
        }
    }

    /// Removes sequences that finished or failed; frees or caches their
    /// blocks, updates the gauges, and only then sends their last event: a
    /// client that has its answer sees the engine without its sequence.
    fn retire(&mut self) {
        if !self.running.iter().any(Sequence::is_done) {
            return;
        }
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(Sequence::is_done);
        self.running = running;
        let mut done = done;
        for s in &mut done {
            self.kv.release(s.take_blocks());
            if self.faults.leak_bytes_per_request > 0 {
                // Written, so the pages are resident like a real leak's.
                self.leaked
                    .push(vec![0xA5; self.faults.leak_bytes_per_request]);
            }
        }
        self.report_load();
        for s in &mut done {
            s.send_last();
        }
    }

    /// Ends every waiting and running request with `kind`.
    pub fn abort_all(&mut self, kind: FailureKind) {
        let now = Instant::now();
        for sub in self.sched.drain_waiting(|_| true) {
            self.fail_waiting(sub, kind, now);
        }
        for s in &mut self.running {
            fail(s, kind, self.observer.as_ref(), now);
        }
        self.retire();
        self.report_load();
    }

    fn report_load(&self) {
        let usage = self.kv.usage();
        let report = LoadReport {
            running: self.running.len(),
            waiting: self.sched.waiting(),
            kv_reserved_bytes: usage.reserved * self.kv_bytes_per_block,
            kv_cached_bytes: usage.cached * self.kv_bytes_per_block,
            kv_touched_bytes: usage.touched * self.kv_bytes_per_block,
            kv_capacity_bytes: usage.capacity * self.kv_bytes_per_block,
        };
        self.stats.running.store(report.running, Ordering::Relaxed);
        self.stats
            .kv_reserved_bytes
            .store(report.kv_reserved_bytes, Ordering::Relaxed);
        self.stats
            .kv_cached_bytes
            .store(report.kv_cached_bytes, Ordering::Relaxed);
        self.observer.on_event(&EngineEvent::Load(report));
    }

    /// KV block usage (for tests).
    pub fn kv_usage(&self) -> super::kv::KvUsage {
        self.kv.usage()
    }
}

/// Samples `s`'s next token, reports it, and finishes `s` if it is done.
fn sample_one(
    s: &mut Sequence,
    logits: &mut [f32],
    tokenizer: &Tokenizer,
    observer: &dyn EngineObserver,
    now: Instant,
) {
    let (mut token, mut reason) = s.accept(logits, tokenizer);
    if reason.is_none() && s.deadline_passed(now) {
        token.text.push_str(&s.flush_text());
        reason = Some(FinishReason::Timeout);
    }
    match s.mark_token(now) {
        None => observer.on_event(&EngineEvent::FirstToken {
            req: s.id(),
            span: s.span(),
            at: now,
        }),
        Some(gap) => observer.on_event(&EngineEvent::Token {
            req: s.id(),
            span: s.span(),
            since_previous: gap,
            at: now,
        }),
    }
    let finish = reason.map(|reason| {
        let finish = s.finish(reason);
        observer.on_event(&EngineEvent::Finished {
            req: s.id(),
            span: s.span(),
            reason,
            prompt_tokens: finish.prompt_tokens,
            output_tokens: finish.generated_tokens,
            at: now,
        });
        finish
    });
    let event = GenerationEvent::Token { token, finish };
    if s.is_done() {
        s.send_at_retire(event);
    } else {
        s.send(event);
    }
}

/// Ends `s` with a failure the client is told about.
fn fail(s: &mut Sequence, kind: FailureKind, observer: &dyn EngineObserver, at: Instant) {
    s.send_at_retire(GenerationEvent::Failed(Failure {
        kind,
        message: failure_message(kind).to_owned(),
    }));
    observer.on_event(&EngineEvent::Failed {
        req: s.id(),
        span: s.span(),
        kind,
        output_tokens: s.generated(),
        at,
    });
    s.abort();
}

/// Ends `s` after a failure already sent to its client.
fn fail_quietly(s: &mut Sequence, observer: &dyn EngineObserver, at: Instant) {
    observer.on_event(&EngineEvent::Failed {
        req: s.id(),
        span: s.span(),
        kind: FailureKind::Engine,
        output_tokens: s.generated(),
        at,
    });
    s.abort();
}

pub fn failure_message(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::Engine => "the forward pass failed",
        FailureKind::Shutdown => "the server is shutting down; the request was ended",
        FailureKind::Timeout => "the request timed out before it could start (--request-timeout)",
        FailureKind::EngineDead => "the inference engine stopped; the request could not finish",
    }
}

#[cfg(test)]
mod tests;
