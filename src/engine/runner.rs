//! The engine loop: one thread owns the model and every sequence.
//!
//! Each iteration: take new requests, drop those whose client left, admit what
//! fits, run one prefill step of at most `max_prefill_tokens` prompt tokens
//! (a longer prompt is prefilled in chunks over several iterations, so running
//! streams are never stalled for more than one chunk), then decode every
//! running sequence in one batched forward. Finished and cancelled sequences
//! leave between steps and their KV caches are freed at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::events::{EngineEvent, EngineObserver, FinishReason, RequestId, StepKind, StepMember};
use super::model::{Llama, LogitsFor, SeqInput, Workspace};
use super::request::{Finish, GenerationEvent, GenerationRequest};
use super::sampler::Sampler;
use super::scheduler::{Admittable, Refusal, Scheduler, SchedulerLimits};
use super::sequence::Sequence;
use super::tokenizer::Tokenizer;

/// A request on its way into the engine thread.
pub struct Submission {
    pub id: RequestId,
    pub request: GenerationRequest,
    pub reply: UnboundedSender<GenerationEvent>,
    pub queued_at: Instant,
}

impl Admittable for Submission {
    fn prompt_tokens(&self) -> usize {
        self.request.prompt_ids.len()
    }
    fn token_budget(&self) -> usize {
        self.request.token_budget()
    }
}

pub struct Runner {
    pub model: Arc<Llama>,
    pub tokenizer: Arc<Tokenizer>,
    pub observer: Arc<dyn EngineObserver>,
    pub limits: SchedulerLimits,
    /// Live counters shared with the handle (which refuses submissions when
    /// `queued` reaches the limit) and `/info`.
    pub stats: Arc<EngineStats>,
}

/// Live engine counters, readable from any thread.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Submitted but not yet admitted.
    pub queued: AtomicUsize,
    pub running: AtomicUsize,
    pub kv_cache_used_bytes: AtomicUsize,
    /// Sequences in the most recent step.
    pub last_batch: AtomicUsize,
    /// Most sequences ever decoded in one step.
    pub peak_batch: AtomicUsize,
}

impl Runner {
    /// Runs until every handle is dropped and the work is done.
    pub fn run(self, inbox: Receiver<Submission>) {
        let mut sched: Scheduler<Submission> = Scheduler::new(self.limits);
        // Admitted sequences whose prompt is not fully prefilled yet, in order.
        let mut prefilling: Vec<Sequence> = Vec::new();
        let mut running: Vec<Sequence> = Vec::new();
        let mut ws = Workspace::default();
        let mut open = true;
        while open || !sched.is_idle() {
            // Block only when there is nothing to do.
            if sched.is_idle() {
                match inbox.recv() {
                    Ok(sub) => self.enqueue(&mut sched, sub),
                    Err(_) => break,
                }
            }
            loop {
                match inbox.try_recv() {
                    Ok(sub) => self.enqueue(&mut sched, sub),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            for gone in sched.drain_waiting(|s| s.reply.is_closed()) {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                self.observer.on_event(&EngineEvent::Cancelled {
                    req: gone.id,
                    span: &gone.request.span,
                    output_tokens: 0,
                    at: Instant::now(),
                });
            }
            self.drop_cancelled(&mut sched, &mut prefilling);
            self.drop_cancelled(&mut sched, &mut running);

            // New prompts wait until earlier ones are through (first come, first served).
            if prefilling.is_empty() {
                let admitted = sched.admit();
                if !admitted.is_empty() {
                    self.stats
                        .queued
                        .fetch_sub(admitted.len(), Ordering::Relaxed);
                    prefilling = self.admit(admitted);
                }
            }
            if !prefilling.is_empty() {
                self.step(
                    StepKind::Prefill,
                    &mut prefilling,
                    Some(self.limits.max_prefill_tokens),
                    &mut ws,
                );
                self.retire(&mut sched, &mut prefilling);
                // Those whose whole prompt went through have their first token.
                let (done, rest): (Vec<_>, Vec<_>) = prefilling
                    .into_iter()
                    .partition(|s| s.cache.len() >= s.prompt_len);
                running.extend(done);
                prefilling = rest;
            }
            if !running.is_empty() {
                self.step(StepKind::Decode, &mut running, None, &mut ws);
                self.retire(&mut sched, &mut running);
            }
            self.report_load(&sched, &prefilling, &running);
        }
    }

    fn enqueue(&self, sched: &mut Scheduler<Submission>, sub: Submission) {
        let (id, at, prompt_tokens) = (sub.id, sub.queued_at, sub.request.prompt_ids.len());
        let span = sub.request.span.clone();
        match sched.enqueue(sub) {
            Ok(()) => self.observer.on_event(&EngineEvent::Queued {
                req: id,
                span: &span,
                prompt_tokens,
                at,
            }),
            Err((why, sub)) => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                let msg = match why {
                    Refusal::QueueFull => "the queue is full".to_owned(),
                    Refusal::TooLarge { budget, limit } => format!(
                        "prompt + max_new_tokens = {budget} exceeds max_total_tokens = {limit}"
                    ),
                };
                let _ = sub.reply.send(GenerationEvent::Failed(msg));
            }
        }
    }

    /// Allocates caches for newly admitted requests.
    fn admit(&self, admitted: Vec<Submission>) -> Vec<Sequence> {
        let now = Instant::now();
        admitted
            .into_iter()
            .map(|sub| {
                self.observer.on_event(&EngineEvent::Admitted {
                    req: sub.id,
                    span: &sub.request.span,
                    queued_at: sub.queued_at,
                    at: now,
                });
                let cache = self.model.new_cache(sub.request.token_budget());
                let GenerationRequest {
                    prompt_ids,
                    sampling,
                    stopping,
                    span,
                } = sub.request;
                Sequence::new(
                    sub.id,
                    span,
                    sub.reply,
                    prompt_ids,
                    cache,
                    Sampler::new(sampling),
                    stopping,
                    sub.queued_at,
                )
            })
            .collect()
    }

    /// One batched forward over `seqs`' pending tokens, then one sample for
    /// each sequence with no input left. With `budget`, at most that many
    /// tokens go in, taken in order (the last one taken may get part of its
    /// prompt; sequences past the budget sit this step out).
    fn step(
        &self,
        kind: StepKind,
        seqs: &mut [Sequence],
        budget: Option<usize>,
        ws: &mut Workspace,
    ) {
        let started = Instant::now();
        let mut left = budget.unwrap_or(usize::MAX);
        let take: Vec<usize> = seqs
            .iter()
            .map(|s| {
                let n = s.pending_input().len().min(left);
                left -= n;
                n
            })
            .collect();
        // Submissions have prompts and running sequences their last sample, so
        // only the budget leaves a sequence without input: a suffix of `seqs`.
        debug_assert!(budget.is_some() || take.iter().all(|&n| n > 0));
        let stepping = take.iter().take_while(|&&n| n > 0).count();
        let (seqs, take) = (&mut seqs[..stepping], &take[..stepping]);
        if seqs.is_empty() {
            return;
        }
        let tokens: usize = take.iter().sum();
        let result = {
            let mut inputs: Vec<SeqInput<'_>> = seqs
                .iter_mut()
                .zip(take)
                .map(|(s, &n)| {
                    let start = s.cache.len();
                    // Split borrows: tokens are read, the cache is written.
                    let Sequence { tokens, cache, .. } = s;
                    SeqInput {
                        tokens: &tokens[start..start + n],
                        cache,
                    }
                })
                .collect();
            self.model.forward(&mut inputs, ws, LogitsFor::LastToken)
        };
        let ended = Instant::now();
        if let Err(e) = result {
            tracing::error!(error = %e, "forward pass failed");
            for s in seqs.iter_mut() {
                let _ = s.reply.send(GenerationEvent::Failed(e.to_string()));
                self.observer.on_event(&EngineEvent::Cancelled {
                    req: s.id,
                    span: &s.span,
                    output_tokens: s.generated(),
                    at: ended,
                });
                s.done = true;
            }
            return;
        }
        self.stats.last_batch.store(seqs.len(), Ordering::Relaxed);
        self.stats
            .peak_batch
            .fetch_max(seqs.len(), Ordering::Relaxed);
        {
            let members: Vec<StepMember<'_>> = seqs
                .iter()
                .zip(take)
                .map(|(s, &n)| StepMember {
                    req: s.id,
                    span: &s.span,
                    tokens: n,
                })
                .collect();
            self.observer.on_event(&EngineEvent::StepDone {
                kind,
                members: &members,
                tokens,
                started,
                ended,
            });
        }
        let vocab = self.model.config().vocab_size;
        for (s, logits) in seqs.iter_mut().zip(ws.logits.chunks_exact_mut(vocab)) {
            // A prompt still part-way through has nothing to sample yet.
            if s.pending_input().is_empty() {
                self.sample_one(s, logits, ended);
            }
        }
    }

    fn sample_one(&self, s: &mut Sequence, logits: &mut [f32], now: Instant) {
        let (token, reason) = s.accept(logits, &self.tokenizer);
        match s.last_token_at {
            None => {
                s.first_token_at = Some(now);
                self.observer.on_event(&EngineEvent::FirstToken {
                    req: s.id,
                    span: &s.span,
                    at: now,
                });
            }
            Some(prev) => self.observer.on_event(&EngineEvent::Token {
                req: s.id,
                span: &s.span,
                since_previous: now.saturating_duration_since(prev),
                at: now,
            }),
        }
        s.last_token_at = Some(now);
        let finish = reason.map(|reason| self.finish(s, reason, now));
        let _ = s.reply.send(GenerationEvent::Token { token, finish });
    }

    fn finish(&self, s: &mut Sequence, reason: FinishReason, at: Instant) -> Finish {
        self.observer.on_event(&EngineEvent::Finished {
            req: s.id,
            span: &s.span,
            reason,
            prompt_tokens: s.prompt_len,
            output_tokens: s.generated(),
            at,
        });
        // `retire` removes it and frees its cache.
        s.done = true;
        Finish {
            reason,
            prompt_tokens: s.prompt_len,
            generated_tokens: s.generated(),
            seed: s.sampler.params().seed,
            queued_at: s.queued_at,
            first_token_at: s.first_token_at,
        }
    }

    /// Removes sequences that finished (or failed) in the last step.
    fn retire(&self, sched: &mut Scheduler<Submission>, running: &mut Vec<Sequence>) {
        running.retain(|s| {
            if s.done {
                sched.release(s.token_budget());
            }
            !s.done
        });
    }

    /// Frees sequences whose client disconnected, before spending a step on them.
    fn drop_cancelled(&self, sched: &mut Scheduler<Submission>, running: &mut Vec<Sequence>) {
        running.retain(|s| {
            if !s.client_gone() {
                return true;
            }
            sched.release(s.token_budget());
            self.observer.on_event(&EngineEvent::Cancelled {
                req: s.id,
                span: &s.span,
                output_tokens: s.generated(),
                at: Instant::now(),
            });
            false
        });
    }

    fn report_load(
        &self,
        sched: &Scheduler<Submission>,
        prefilling: &[Sequence],
        running: &[Sequence],
    ) {
        let per_token = self.model.config().kv_bytes_per_token();
        let admitted = prefilling.iter().chain(running);
        let used: usize = admitted.map(|s| s.cache.size_bytes()).sum();
        let running = prefilling.len() + running.len();
        self.stats.running.store(running, Ordering::Relaxed);
        self.stats
            .kv_cache_used_bytes
            .store(used, Ordering::Relaxed);
        self.observer.on_event(&EngineEvent::Load {
            running,
            waiting: sched.waiting(),
            kv_cache_used_bytes: used,
            kv_cache_capacity_bytes: self.limits.max_total_tokens * per_token,
        });
    }
}
