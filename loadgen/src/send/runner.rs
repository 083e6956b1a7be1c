//! Runs one load step: closed loop (virtual users) or open loop (a schedule).
//!
//! The unit of work is one request, or with `--multi-turn` one conversation,
//! whose turns go one after another (each after the previous reply and the
//! think time). Closed-loop users take units one after another; open-loop
//! arrivals each start one.
//!
//! Open-loop sends are timed by a dedicated OS thread sleeping with the kernel's
//! high-resolution timer, not by tokio's millisecond timer wheel, so the send lag
//! can stay well under a millisecond; the request itself then runs on the tokio
//! runtime. A step ends by closing its record channel: every request task holds a
//! sender, and the collector stops when the last one is dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::measure::record::{RequestRecord, RunClock};
use crate::plan::schedule::{arrivals, Limit};
use crate::plan::share::Share;
use crate::plan::step::{Shape, StepSpec};
use crate::plan::workload::{Conversation, TurnOf, Workload};
use crate::report::otel::Tracing;
use crate::send::client::{execute, Executed, Job, Target};
use crate::send::progress::{progress_bar, spawn_ticker, Live};

/// Everything a step needs that outlives it.
pub struct RunContext {
    pub target: Arc<Target>,
    pub workload: Arc<Workload>,
    pub tracing: Arc<Tracing>,
    pub clock: RunClock,
    pub seed: u64,
    pub progress: bool,
    /// Request and conversation ids, unique across the steps of a run (and,
    /// mapped through the share, across workers).
    pub ids: Arc<Ids>,
    /// Set by Ctrl-C: stop issuing, let in-flight requests finish.
    pub interrupted: Arc<AtomicBool>,
}

/// Hands out this worker's request and conversation ids.
#[derive(Debug)]
pub struct Ids {
    share: Share,
    requests: AtomicU64,
    conversations: AtomicU64,
}

impl Ids {
    pub fn new(share: Share) -> Self {
        Ids {
            share,
            requests: AtomicU64::new(0),
            conversations: AtomicU64::new(0),
        }
    }

    pub fn share(&self) -> Share {
        self.share
    }

    fn request(&self) -> u64 {
        self.share
            .global(self.requests.fetch_add(1, Ordering::Relaxed))
    }

    fn conversation(&self) -> u64 {
        self.share
            .global(self.conversations.fetch_add(1, Ordering::Relaxed))
    }
}

/// What a step produced.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    pub spec: StepSpec,
    /// Offsets from the run start.
    pub start: Duration,
    /// When the step stopped issuing new requests.
    pub load_end: Duration,
    pub end: Duration,
    pub records: Vec<RequestRecord>,
    /// Why the step stopped early, if it did.
    pub aborted: Option<String>,
}

/// What every sending task of a step shares.
#[derive(Clone)]
struct Sender {
    target: Arc<Target>,
    workload: Arc<Workload>,
    tracing: Arc<Tracing>,
    clock: RunClock,
    ids: Arc<Ids>,
    interrupted: Arc<AtomicBool>,
    live: Arc<Live>,
    tx: mpsc::UnboundedSender<RequestRecord>,
    step: usize,
    /// No request is sent after this (duration-limited steps).
    deadline: Option<Instant>,
}

impl Sender {
    /// Whether to stop issuing: aborted, interrupted, or past the deadline.
    fn stopped(&self) -> bool {
        self.live.stopped(&self.interrupted) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Send one request and hand its record to the step.
    async fn send(&self, job: Job) -> Executed {
        self.live.started();
        let done = execute(&self.target, &self.clock, &self.tracing, job).await;
        self.live.done(&done.record);
        let _ = self.tx.send(done.record.clone());
        done
    }

    /// The next unit of work, meant to start at `scheduled`: its ids and
    /// prompt are drawn before it is due, so the send lag stays small.
    fn prepare(&self, scheduled: Instant) -> Unit {
        if self.workload.turns() > 1 {
            let c = self.ids.conversation();
            if let Some(conv) = self.workload.conversation(c) {
                return Unit::Conversation(c, conv, scheduled);
            }
        }
        let id = self.ids.request();
        Unit::Request(Job {
            id,
            step: self.step,
            scheduled,
            item: self.workload.item(id),
            turn: None,
        })
    }

    /// Send one unit; returns when it is done.
    async fn run(&self, unit: Unit) {
        match unit {
            Unit::Request(job) => {
                self.send(job).await;
            }
            Unit::Conversation(c, conv, scheduled) => self.conversation(c, conv, scheduled).await,
        }
    }

    /// The turns of one conversation; a failed turn ends it (there is no reply
    /// to continue from).
    async fn conversation(&self, c: u64, mut conv: Conversation, scheduled: Instant) {
        let think = match &*self.workload {
            Workload::MultiTurn(w) => w.think_time,
            _ => Duration::ZERO,
        };
        let (mut due, mut turn) = (scheduled, 0);
        while let Some(item) = conv.next_turn() {
            turn += 1;
            if turn > 1 {
                tokio::time::sleep_until(due.into()).await;
                if self.stopped() {
                    break;
                }
            }
            let job = Job {
                id: self.ids.request(),
                step: self.step,
                scheduled: due,
                item,
                turn: Some(TurnOf {
                    conversation: c,
                    turn,
                }),
            };
            let done = self.send(job).await;
            match done.reply {
                Some(reply) if done.record.outcome.is_ok() => conv.reply(reply),
                _ => break,
            }
            due = Instant::now() + think;
        }
    }
}

/// One unit of work: a request, or a conversation (its id, turns and start).
enum Unit {
    Request(Job),
    Conversation(u64, Conversation, Instant),
}

/// Units of work in a step of `requests` requests: whole conversations.
fn units(requests: u64, turns: u32) -> u64 {
    requests.div_ceil(u64::from(turns.max(1)))
}

/// Run one step to completion and return its records.
pub async fn run_step(ctx: &RunContext, spec: &StepSpec) -> anyhow::Result<StepOutcome> {
    let live = Arc::new(Live::default());
    let (tx, mut rx) = mpsc::unbounded_channel::<RequestRecord>();
    let step_start = Instant::now();
    let sender = Sender {
        target: ctx.target.clone(),
        workload: ctx.workload.clone(),
        tracing: ctx.tracing.clone(),
        clock: ctx.clock,
        ids: ctx.ids.clone(),
        interrupted: ctx.interrupted.clone(),
        live: live.clone(),
        tx,
        step: spec.index,
        deadline: match spec.limit {
            Limit::Duration(d) => Some(step_start + d),
            Limit::Requests(_) => None,
        },
    };
    let planned = plan_units(ctx, spec, sender, step_start)?;
    let turns = u64::from(ctx.workload.turns());
    let bar = progress_bar(ctx.progress, spec, planned.map(|u| u * turns));
    let by_time = matches!(spec.limit, Limit::Duration(_));
    let ticker = spawn_ticker(bar.clone(), live.clone(), by_time, step_start);
    let mut records = Vec::new();
    while let Some(rec) = rx.recv().await {
        records.push(rec);
        if !by_time {
            bar.set_position(records.len() as u64);
        }
    }
    ticker.abort();
    bar.finish_and_clear();
    let end = ctx.clock.elapsed();
    let aborted = live.reason();
    let load_end = records
        .iter()
        .map(|r| r.scheduled)
        .max()
        .unwrap_or(end)
        .max(match spec.limit {
            Limit::Duration(d) if aborted.is_none() => ctx.clock.at(step_start) + d,
            _ => Duration::ZERO,
        });
    records.sort_by_key(|r| r.id);
    Ok(StepOutcome {
        spec: spec.clone(),
        start: ctx.clock.at(step_start),
        load_end,
        end,
        records,
        aborted,
    })
}

/// Start the step's senders; returns the units planned, when known.
fn plan_units(
    ctx: &RunContext,
    spec: &StepSpec,
    sender: Sender,
    step_start: Instant,
) -> anyhow::Result<Option<u64>> {
    let share = ctx.ids.share();
    let turns = ctx.workload.turns();
    Ok(match &spec.shape {
        Shape::Closed { concurrency } => {
            let limit = match spec.limit {
                Limit::Requests(n) => Some(share.count(units(n, turns))),
                Limit::Duration(_) => None,
            };
            let users = share.count(*concurrency as u64);
            spawn_closed(sender, users, limit, step_start);
            limit
        }
        Shape::Open {
            rate,
            arrivals: kind,
            burstiness,
        } => {
            let seed = ctx.seed.wrapping_add(spec.index as u64);
            let limit = match spec.limit {
                Limit::Requests(n) => Limit::Requests(units(n, turns)),
                d @ Limit::Duration(_) => d,
            };
            let schedule: Vec<Duration> = arrivals(*kind, *rate, *burstiness, limit, seed)?
                .into_iter()
                .enumerate()
                .filter(|(i, _)| share.owns(*i as u64))
                .map(|(_, t)| t)
                .collect();
            let n = schedule.len() as u64;
            spawn_open(sender, schedule, step_start);
            Some(n)
        }
    })
}

/// `users` virtual users, each taking the next unit as soon as it is free,
/// until `limit` units are issued (or the deadline passes).
fn spawn_closed(sender: Sender, users: u64, limit: Option<u64>, step_start: Instant) {
    let issued = Arc::new(AtomicU64::new(0));
    for _ in 0..users {
        let (sender, issued) = (sender.clone(), issued.clone());
        tokio::spawn(async move {
            // A virtual user means to send as soon as it is free.
            let mut intended = step_start;
            loop {
                if sender.stopped() {
                    break;
                }
                if limit.is_some_and(|n| issued.fetch_add(1, Ordering::Relaxed) >= n) {
                    break;
                }
                sender.run(sender.prepare(intended)).await;
                intended = Instant::now();
                if sender.tx.is_closed() {
                    break;
                }
            }
        });
    }
}

/// One unit per arrival, each sent at its offset from `step_start`.
fn spawn_open(sender: Sender, schedule: Vec<Duration>, step_start: Instant) {
    let handle = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("loadgen-dispatch".into())
        .spawn(move || {
            for offset in schedule {
                let due = step_start + offset;
                let unit = sender.prepare(due);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                if sender.live.stopped(&sender.interrupted) {
                    break;
                }
                let sender = sender.clone();
                handle.spawn(async move { sender.run(unit).await });
            }
        })
        .expect("invariant: the OS can start one thread");
}
