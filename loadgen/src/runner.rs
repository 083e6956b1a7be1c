//! Runs one load step: closed loop (virtual users) or open loop (a schedule).
//!
//! Open-loop sends are timed by a dedicated OS thread sleeping with the kernel's
//! high-resolution timer, not by tokio's millisecond timer wheel, so the send lag
//! can stay well under a millisecond; the request itself then runs on the tokio
//! runtime. A step ends by closing its record channel: every request task holds a
//! sender, and the collector stops when the last one is dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

use crate::client::{execute, Job, Target};
use crate::otel::Tracing;
use crate::record::{ErrorKind, RequestRecord, RunClock};
use crate::schedule::{arrivals, Arrivals, Limit};
use crate::workload::Workload;

/// Consecutive connection failures after which a run stops issuing requests:
/// the server is gone and more attempts would only count the same error.
const UNREACHABLE_AFTER: u64 = 20;

/// The load pattern of one step.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Shape {
    Closed {
        concurrency: usize,
    },
    Open {
        rate: f64,
        arrivals: Arrivals,
        burstiness: f64,
    },
}

/// One step of a run (a plain run has exactly one).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepSpec {
    pub index: usize,
    pub label: String,
    pub shape: Shape,
    pub limit: Limit,
    #[serde(serialize_with = "crate::ser::duration_secs")]
    pub warmup: Duration,
    #[serde(serialize_with = "crate::ser::duration_secs")]
    pub cooldown: Duration,
    /// Set for batch-sweep steps (then equal to the concurrency).
    pub batch_size: Option<usize>,
}

/// Everything a step needs that outlives it.
pub struct RunContext {
    pub target: Arc<Target>,
    pub workload: Arc<Workload>,
    pub tracing: Arc<Tracing>,
    pub clock: RunClock,
    pub seed: u64,
    pub progress: bool,
    /// Request ids are unique across the steps of a run.
    pub next_id: Arc<AtomicU64>,
    /// Set by Ctrl-C: stop issuing, let in-flight requests finish.
    pub interrupted: Arc<AtomicBool>,
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

/// Live counters for the progress bar and the unreachable-server check.
#[derive(Default)]
struct Live {
    in_flight: AtomicU64,
    finished: AtomicU64,
    errors: AtomicU64,
    connect_streak: AtomicU64,
    stop: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Live {
    fn done(&self, rec: &RequestRecord) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.finished.fetch_add(1, Ordering::Relaxed);
        match rec.outcome.error_kind() {
            None => self.connect_streak.store(0, Ordering::Relaxed),
            Some(kind) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                if *kind == ErrorKind::Connect
                    && self.connect_streak.fetch_add(1, Ordering::Relaxed) + 1 >= UNREACHABLE_AFTER
                {
                    self.abort(format!(
                        "server unreachable: {UNREACHABLE_AFTER} connection failures in a row; stopped issuing requests"
                    ));
                }
            }
        }
    }

    fn abort(&self, reason: String) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert(reason);
        }
        self.stop.store(true, Ordering::Relaxed);
    }

    fn stopped(&self, interrupted: &AtomicBool) -> bool {
        if interrupted.load(Ordering::Relaxed) {
            self.abort("interrupted; in-flight requests were allowed to finish".into());
        }
        self.stop.load(Ordering::Relaxed)
    }
}

/// Run one step to completion and return its records.
pub async fn run_step(ctx: &RunContext, spec: &StepSpec) -> anyhow::Result<StepOutcome> {
    let live = Arc::new(Live::default());
    let (tx, mut rx) = mpsc::unbounded_channel::<RequestRecord>();
    let step_start = Instant::now();
    let planned = match &spec.shape {
        Shape::Closed { concurrency } => {
            spawn_closed(ctx, spec, *concurrency, step_start, &live, tx);
            match spec.limit {
                Limit::Requests(n) => Some(n),
                Limit::Duration(_) => None,
            }
        }
        Shape::Open {
            rate,
            arrivals: kind,
            burstiness,
        } => {
            let seed = ctx.seed.wrapping_add(spec.index as u64);
            let schedule = arrivals(*kind, *rate, *burstiness, spec.limit, seed)?;
            let n = schedule.len() as u64;
            spawn_open(ctx, spec, schedule, step_start, &live, tx);
            Some(n)
        }
    };
    let bar = progress_bar(ctx.progress, spec, planned);
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
    let load_end = records
        .iter()
        .map(|r| r.scheduled)
        .max()
        .unwrap_or(end)
        .max(match spec.limit {
            Limit::Duration(d) if live.reason.lock().map(|r| r.is_none()).unwrap_or(true) => {
                ctx.clock.at(step_start) + d
            }
            _ => Duration::ZERO,
        });
    records.sort_by_key(|r| r.id);
    let aborted = live.reason.lock().ok().and_then(|r| r.clone());
    Ok(StepOutcome {
        spec: spec.clone(),
        start: ctx.clock.at(step_start),
        load_end,
        end,
        records,
        aborted,
    })
}

fn spawn_closed(
    ctx: &RunContext,
    spec: &StepSpec,
    concurrency: usize,
    step_start: Instant,
    live: &Arc<Live>,
    tx: mpsc::UnboundedSender<RequestRecord>,
) {
    let issued = Arc::new(AtomicU64::new(0));
    for _ in 0..concurrency {
        let (target, workload, tracing) = (
            ctx.target.clone(),
            ctx.workload.clone(),
            ctx.tracing.clone(),
        );
        let (clock, next_id, interrupted) =
            (ctx.clock, ctx.next_id.clone(), ctx.interrupted.clone());
        let (live, issued, tx, limit, step) = (
            live.clone(),
            issued.clone(),
            tx.clone(),
            spec.limit,
            spec.index,
        );
        tokio::spawn(async move {
            // A virtual user means to send as soon as it is free.
            let mut intended = step_start;
            loop {
                if live.stopped(&interrupted) {
                    break;
                }
                match limit {
                    Limit::Duration(d) if Instant::now() >= step_start + d => break,
                    Limit::Requests(n) if issued.fetch_add(1, Ordering::Relaxed) >= n => break,
                    _ => {}
                }
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let item = workload.item(id);
                live.in_flight.fetch_add(1, Ordering::Relaxed);
                let job = Job {
                    id,
                    step,
                    scheduled: intended,
                    item,
                };
                let rec = execute(&target, &clock, &tracing, job).await;
                intended = Instant::now();
                live.done(&rec);
                if tx.send(rec).is_err() {
                    break;
                }
            }
        });
    }
}

fn spawn_open(
    ctx: &RunContext,
    spec: &StepSpec,
    schedule: Vec<Duration>,
    step_start: Instant,
    live: &Arc<Live>,
    tx: mpsc::UnboundedSender<RequestRecord>,
) {
    let handle = tokio::runtime::Handle::current();
    let (target, workload, tracing) = (
        ctx.target.clone(),
        ctx.workload.clone(),
        ctx.tracing.clone(),
    );
    let (clock, next_id, interrupted) = (ctx.clock, ctx.next_id.clone(), ctx.interrupted.clone());
    let (live, step) = (live.clone(), spec.index);
    std::thread::Builder::new()
        .name("loadgen-dispatch".into())
        .spawn(move || {
            for offset in schedule {
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let item = workload.item(id);
                let due = step_start + offset;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                if live.stopped(&interrupted) {
                    break;
                }
                live.in_flight.fetch_add(1, Ordering::Relaxed);
                let job = Job {
                    id,
                    step,
                    scheduled: due,
                    item,
                };
                let (target, tracing, live, tx) =
                    (target.clone(), tracing.clone(), live.clone(), tx.clone());
                handle.spawn(async move {
                    let rec = execute(&target, &clock, &tracing, job).await;
                    live.done(&rec);
                    let _ = tx.send(rec);
                });
            }
        })
        .expect("invariant: the OS can start one thread");
}

fn progress_bar(enabled: bool, spec: &StepSpec, planned: Option<u64>) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = match (planned, spec.limit) {
        (_, Limit::Duration(d)) => ProgressBar::new(d.as_secs().max(1)),
        (Some(n), _) => ProgressBar::new(n),
        (None, _) => ProgressBar::no_length(),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
    let unit = if matches!(spec.limit, Limit::Duration(_)) {
        "s"
    } else {
        "req"
    };
    let style = ProgressStyle::with_template(&format!(
        "{{prefix}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit} | {{msg}}"
    ))
    .expect("invariant: the template is valid");
    bar.set_style(style);
    bar.set_prefix(spec.label.clone());
    bar
}

/// Refresh the bar's message (completion rate, in flight, errors) and, for a
/// time-limited step, its position in seconds.
fn spawn_ticker(
    bar: ProgressBar,
    live: Arc<Live>,
    by_time: bool,
    start: Instant,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut last = (Instant::now(), 0u64);
        loop {
            tick.tick().await;
            let finished = live.finished.load(Ordering::Relaxed);
            let now = Instant::now();
            let rate =
                (finished - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
            last = (now, finished);
            if by_time {
                bar.set_position(
                    start
                        .elapsed()
                        .as_secs()
                        .min(bar.length().unwrap_or(u64::MAX)),
                );
            }
            bar.set_message(format!(
                "{rate:.1} req/s | in flight {} | done {finished} | errors {}",
                live.in_flight.load(Ordering::Relaxed),
                live.errors.load(Ordering::Relaxed)
            ));
        }
    })
}
