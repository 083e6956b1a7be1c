//! What a step shows while it runs, and when it stops early: live counters,
//! the progress bar, and the unreachable-server check.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::measure::record::{ErrorKind, RequestRecord};
use crate::plan::schedule::Limit;
use crate::plan::step::StepSpec;

/// Consecutive connection failures after which a run stops issuing requests:
/// the server is gone and more attempts would only count the same error.
const UNREACHABLE_AFTER: u64 = 20;

/// Live counters for the progress bar and the unreachable-server check.
#[derive(Default)]
pub struct Live {
    in_flight: AtomicU64,
    finished: AtomicU64,
    errors: AtomicU64,
    connect_streak: AtomicU64,
    stop: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Live {
    pub fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn done(&self, rec: &RequestRecord) {
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

    pub fn abort(&self, reason: String) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert(reason);
        }
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn stopped(&self, interrupted: &AtomicBool) -> bool {
        if interrupted.load(Ordering::Relaxed) {
            self.abort("interrupted; in-flight requests were allowed to finish".into());
        }
        self.stop.load(Ordering::Relaxed)
    }

    /// Why the step stopped early, if it did.
    pub fn reason(&self) -> Option<String> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }
}

pub fn progress_bar(enabled: bool, spec: &StepSpec, planned: Option<u64>) -> ProgressBar {
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
pub fn spawn_ticker(
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
