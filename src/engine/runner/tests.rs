//! The runner's loop against a small fake backend: scheduling, KV accounting,
//! prefix reuse and failure paths. The fake's logits are fixed (the next token
//! is the last input token plus one), so these tests are about the loop, not
//! the model.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::*;
use crate::engine::backend::BackendInfo;
use crate::engine::config::ModelConfig;
use crate::engine::events::NoopObserver;
use crate::engine::request::{Finish, GenerationRequest, StoppingCriteria};
use crate::engine::sampler::SamplingParams;
use crate::engine::tokenizer::TokenizerSpec;
use crate::engine::{InFlight, QueueSlot};

const VOCAB: usize = 8;
const EOS: u32 = 7;

/// What one forward call saw: (tokens, start, wanted logits) per chunk.
type StepLog = Vec<(usize, usize, bool)>;

struct FakeBackend {
    cfg: ModelConfig,
    log: Arc<Mutex<Vec<StepLog>>>,
    fail: Arc<Mutex<bool>>,
}

impl Backend for FakeBackend {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            backend: "fake",
            device: "cpu".into(),
            device_name: "test".into(),
            compute: "none".into(),
            threads: 1,
            kernels: Vec::new(),
            weight_bytes: 0,
        }
    }

    fn allocate_kv(&mut self, _block_size: usize, _blocks: usize) -> Result<(), BackendError> {
        Ok(())
    }

    fn forward(
        &mut self,
        chunks: &[SeqChunk<'_>],
        logits: &mut Vec<f32>,
    ) -> Result<(), BackendError> {
        if *self.fail.lock().expect("lock") {
            return Err(BackendError::Device("injected failure".into()));
        }
        self.log.lock().expect("lock").push(
            chunks
                .iter()
                .map(|c| (c.tokens.len(), c.start, c.logits != LogitsFor::Nothing))
                .collect(),
        );
        logits.clear();
        for c in chunks.iter().filter(|c| c.logits != LogitsFor::Nothing) {
            let last = *c.tokens.last().expect("chunks carry tokens");
            let mut row = vec![0.0; VOCAB];
            row[((last + 1) % EOS) as usize] = 10.0;
            logits.extend(row);
        }
        Ok(())
    }
}

fn tokenizer() -> Arc<Tokenizer> {
    let mut tokens: Vec<String> = "abcdefg".chars().map(String::from).collect();
    tokens.push("</s>".into());
    let mut types = vec![1; 7];
    types.push(3);
    let spec = TokenizerSpec {
        tokens,
        types,
        pre: "default".into(),
        eos_id: EOS,
        ..Default::default()
    };
    Arc::new(Tokenizer::from_spec(spec).expect("tiny tokenizer"))
}

struct Harness {
    runner: Runner,
    log: Arc<Mutex<Vec<StepLog>>>,
    fail: Arc<Mutex<bool>>,
    stats: Arc<EngineStats>,
    next_id: u64,
}

fn limits() -> SchedulerLimits {
    SchedulerLimits {
        max_batch_size: 4,
        max_total_tokens: 256,
        max_batch_tokens: 8,
        max_prefill_tokens: 8,
        max_queue: 16,
    }
}

fn harness(limits: SchedulerLimits, cache: bool) -> Harness {
    let log = Arc::new(Mutex::new(Vec::new()));
    let fail = Arc::new(Mutex::new(false));
    let mut cfg = ModelConfig::smollm2_135m();
    cfg.vocab_size = VOCAB;
    let backend = FakeBackend {
        cfg,
        log: log.clone(),
        fail: fail.clone(),
    };
    let capacity_blocks = limits.max_total_tokens / 4;
    let kv = KvConfig {
        block_size: 4,
        capacity_blocks,
        prefix_cache_blocks: cache.then_some(capacity_blocks),
    };
    let stats = Arc::new(EngineStats::default());
    let runner = Runner::new(
        Box::new(backend),
        tokenizer(),
        Arc::new(NoopObserver),
        limits,
        kv,
        stats.clone(),
    )
    .expect("runner");
    Harness {
        runner,
        log,
        fail,
        stats,
        next_id: 1,
    }
}

impl Harness {
    fn submit(&mut self, prompt: Vec<u32>, max_new: usize) -> UnboundedReceiver<GenerationEvent> {
        self.submit_with(prompt, max_new, None)
    }

    fn submit_with(
        &mut self,
        prompt: Vec<u32>,
        max_new: usize,
        deadline: Option<Instant>,
    ) -> UnboundedReceiver<GenerationEvent> {
        let (reply, rx) = unbounded_channel();
        let stopping = StoppingCriteria {
            max_new_tokens: max_new,
            stop_sequences: Vec::new(),
            ignore_eos: true,
            min_new_tokens: 0,
            stop_token_ids: Vec::new(),
            deadline,
        };
        let request =
            GenerationRequest::new(prompt, SamplingParams::default(), stopping, Arc::new(()));
        let slot = QueueSlot::take(&self.stats, 16).expect("room in the queue");
        self.runner.enqueue(Submission {
            id: self.next_id,
            request,
            reply,
            queued_at: Instant::now(),
            slot,
            held: InFlight::take(&self.stats),
        });
        self.next_id += 1;
        rx
    }

    /// Iterates until idle (at most `max` iterations).
    fn run(&mut self, max: usize) {
        for _ in 0..max {
            if self.runner.is_idle() {
                return;
            }
            self.runner.iterate();
        }
        panic!("not idle after {max} iterations");
    }

    fn steps(&self) -> Vec<StepLog> {
        self.log.lock().expect("lock").clone()
    }
}

/// Generated ids and how the request ended.
fn collect(
    rx: &mut UnboundedReceiver<GenerationEvent>,
) -> (Vec<u32>, Option<Finish>, Option<Failure>) {
    let mut ids = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        match ev {
            GenerationEvent::Token { token, finish } => {
                ids.push(token.id);
                if finish.is_some() {
                    return (ids, finish, None);
                }
            }
            GenerationEvent::Failed(f) => return (ids, None, Some(f)),
        }
    }
    (ids, None, None)
}

#[test]
fn a_request_generates_until_its_length_and_frees_its_kv() {
    let mut h = harness(limits(), false);
    let mut rx = h.submit(vec![0, 1, 2], 4);
    h.run(20);
    let (ids, finish, failure) = collect(&mut rx);
    assert_eq!(ids, [3, 4, 5, 6]);
    assert_eq!(finish.expect("finished").reason, FinishReason::Length);
    assert!(failure.is_none());
    assert_eq!(h.runner.kv_usage().reserved, 0);
    assert_eq!(h.stats.queued.load(Ordering::Relaxed), 0);
    assert_eq!(h.stats.in_flight.load(Ordering::SeqCst), 0);
}

#[test]
fn decodes_continue_while_a_long_prompt_prefills_in_bounded_chunks() {
    let mut h = harness(limits(), false);
    let mut a = h.submit(vec![0, 1, 2], 10);
    h.runner.iterate(); // a's prompt and first token
    let mut b = h.submit((0..20).map(|i| i % 7).collect(), 2);
    h.run(30);
    for step in h.steps().iter().skip(1) {
        let tokens: usize = step.iter().map(|c| c.0).sum();
        assert!(tokens <= 8, "a step exceeded --max-batch-tokens: {step:?}");
    }
    // While b prefilled (20 tokens, at most 7 a step beside a's decode), a decoded
    // in every one of those steps.
    let steps = h.steps();
    let b_chunks: Vec<&StepLog> = steps[1..].iter().filter(|s| s.len() == 2).collect();
    assert!(
        b_chunks.len() >= 3,
        "b's prompt went in chunks: {:?}",
        h.steps()
    );
    assert!(b_chunks.iter().all(|s| s[0] == (1, s[0].1, true)));
    assert_eq!(collect(&mut a).0.len(), 10);
    assert_eq!(collect(&mut b).0.len(), 2);
    assert_eq!(h.runner.kv_usage().reserved, 0);
}

#[test]
fn the_batch_size_caps_running_sequences_and_the_rest_wait_in_order() {
    let mut h = harness(
        SchedulerLimits {
            max_batch_size: 2,
            ..limits()
        },
        false,
    );
    let mut rxs: Vec<_> = (0..3).map(|i| h.submit(vec![i], 3)).collect();
    h.runner.iterate();
    assert_eq!(h.stats.running.load(Ordering::Relaxed), 2);
    assert_eq!(h.stats.queued.load(Ordering::Relaxed), 1);
    h.run(30);
    assert!(h.steps().iter().all(|s| s.len() <= 2));
    for rx in &mut rxs {
        assert_eq!(collect(rx).0.len(), 3);
    }
}

#[test]
fn a_request_that_does_not_fit_the_kv_pool_waits_for_room() {
    let mut h = harness(
        SchedulerLimits {
            max_total_tokens: 16,
            ..limits()
        },
        false,
    );
    let mut a = h.submit(vec![0; 6], 6); // 12 positions: 3 of 4 blocks
    let mut b = h.submit(vec![1; 4], 4); // 2 blocks: must wait for a
    h.runner.iterate();
    assert_eq!(h.stats.running.load(Ordering::Relaxed), 1);
    h.run(30);
    assert_eq!(collect(&mut a).0.len(), 6);
    assert_eq!(collect(&mut b).0.len(), 4);
}

#[test]
fn a_client_that_leaves_frees_its_sequence() {
    let mut h = harness(limits(), false);
    let rx = h.submit(vec![0, 1], 50);
    h.runner.iterate();
    drop(rx);
    h.run(5);
    assert_eq!(h.runner.kv_usage().reserved, 0);
}

#[test]
fn a_repeated_prompt_reuses_its_cached_prefix_and_generates_the_same() {
    let prompt: Vec<u32> = (0..14).map(|i| i % 7).collect();
    let mut outputs = Vec::new();
    for cache in [false, true] {
        let mut h = harness(limits(), cache);
        let mut first = h.submit(prompt.clone(), 3);
        h.run(20);
        let before = h.steps().len();
        let mut second = h.submit(prompt.clone(), 3);
        h.run(20);
        let (ids, finish, _) = collect(&mut second);
        let cached = finish.expect("finished").cached_tokens;
        let prefill: usize = h.steps()[before..]
            .iter()
            .flat_map(|s| s.iter().filter(|c| c.0 > 1 || c.1 < 14).map(|c| c.0))
            .sum();
        outputs.push((collect(&mut first).0, ids, cached, prefill));
        assert_eq!(h.runner.kv_usage().reserved, 0);
    }
    let (off, on) = (&outputs[0], &outputs[1]);
    assert_eq!(off.0, on.0, "the first request is unaffected");
    assert_eq!(off.1, on.1, "same output with and without the cache");
    assert_eq!(off.2, 0);
    // 14 tokens in blocks of 4: 3 full blocks are reusable (13 = 14 - 1 usable).
    assert_eq!(on.2, 12);
    assert!(
        on.3 < off.3,
        "fewer prompt tokens computed: {on:?} vs {off:?}"
    );
}

#[test]
fn abort_all_ends_waiting_and_running_requests_with_the_reason() {
    let mut h = harness(
        SchedulerLimits {
            max_batch_size: 1,
            ..limits()
        },
        false,
    );
    let mut a = h.submit(vec![0], 100);
    let mut b = h.submit(vec![1], 100);
    h.runner.iterate();
    h.runner.abort_all(FailureKind::Shutdown);
    for rx in [&mut a, &mut b] {
        let (_, finish, failure) = collect(rx);
        assert!(finish.is_none());
        assert_eq!(failure.expect("failed").kind, FailureKind::Shutdown);
    }
    assert!(h.runner.is_idle());
    assert_eq!(h.runner.kv_usage().reserved, 0);
    assert_eq!(h.stats.queued.load(Ordering::Relaxed), 0);
}

#[test]
fn a_deadline_ends_a_waiting_request_with_a_timeout_and_a_running_one_with_its_reason() {
    let mut h = harness(
        SchedulerLimits {
            max_batch_size: 1,
            ..limits()
        },
        false,
    );
    let soon = Instant::now() + Duration::from_millis(30);
    let mut running = h.submit_with(vec![0], 200, Some(soon));
    let mut waiting = h.submit_with(vec![1], 5, Some(soon));
    h.runner.iterate();
    std::thread::sleep(Duration::from_millis(40));
    h.run(10);
    let (ids, finish, _) = collect(&mut running);
    assert!(!ids.is_empty() && ids.len() < 200);
    assert_eq!(finish.expect("finished").reason, FinishReason::Timeout);
    let (_, _, failure) = collect(&mut waiting);
    assert_eq!(failure.expect("failed").kind, FailureKind::Timeout);
    assert_eq!(h.runner.kv_usage().reserved, 0);
}

#[test]
fn a_failed_forward_fails_its_requests_and_frees_their_kv() {
    let mut h = harness(limits(), false);
    let mut rx = h.submit(vec![0, 1], 5);
    *h.fail.lock().expect("lock") = true;
    h.run(5);
    let (_, _, failure) = collect(&mut rx);
    assert_eq!(failure.expect("failed").kind, FailureKind::Engine);
    assert_eq!(h.runner.kv_usage().reserved, 0);
}

#[test]
fn a_panicking_engine_fails_every_request_and_reports_itself_dead() {
    let mut h = harness(limits(), false);
    let mut rx = h.submit(vec![0, 1], 50);
    let stats = h.stats.clone();
    let runner = h.runner.with_faults(Faults {
        panic_after_steps: Some(2),
        ..Faults::default()
    });
    let (tx, inbox) = std::sync::mpsc::channel::<Control>();
    let thread = std::thread::spawn(move || runner.run(inbox));
    thread.join().expect("run returns after the panic");
    drop(tx);
    assert!(!stats.alive.load(Ordering::SeqCst));
    let (ids, _, failure) = collect(&mut rx);
    assert_eq!(ids.len(), 2, "two steps ran");
    assert_eq!(failure.expect("failed").kind, FailureKind::EngineDead);
}
