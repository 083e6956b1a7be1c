//! From records to a step summary. Every metric definition lives here (and in
//! [`dist`] and [`slo`]); the records themselves hold only raw instants.

mod dist;
mod slo;
mod turns;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::measure::record::{Outcome, RequestRecord};
use crate::measure::server::ServerView;
use crate::plan::step::Shape;
use crate::send::runner::StepOutcome;

pub use dist::{dist, Dist};
pub use slo::Slo;
pub use turns::{CachedTokens, TurnSummary};

#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// First counted send and last counted completion, seconds since the run start.
    pub start_s: f64,
    pub end_s: f64,
    pub warmup_s: f64,
    pub cooldown_s: f64,
    /// First counted send to last counted completion: the throughput denominator.
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    /// Every request sent in the step, warmup and cooldown included.
    pub sent: usize,
    pub ok: usize,
    pub errors: usize,
    /// Successful requests inside the measurement window (the latency samples).
    pub counted: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub requests_per_s: f64,
    /// None when the server reported no token counts.
    pub output_tokens_per_s: Option<f64>,
    pub total_tokens_per_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Goodput {
    pub slo: Slo,
    pub requests_per_s: f64,
    /// Fraction of the window's requests (errors included) that met the SLO.
    pub attainment: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Slow {
    pub id: u64,
    pub e2e_from_scheduled_s: f64,
    pub ttft_s: Option<f64>,
    pub trace_id: String,
    pub server_trace_id: Option<String>,
}

/// loadgen's own resource use during the step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClientUsage {
    /// Percent of all cores of this machine (100 = every core busy).
    pub cpu_mean_pct: Option<f64>,
    pub cpu_max_pct: Option<f64>,
    pub cores: usize,
}

/// Everything reported for one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepSummary {
    pub index: usize,
    pub label: String,
    pub shape: Shape,
    pub batch_size: Option<usize>,
    pub window: Window,
    pub requests: Counts,
    pub ttft: Option<Dist>,
    pub ttft_from_scheduled: Option<Dist>,
    pub itl: Option<Dist>,
    pub tpot: Option<Dist>,
    pub e2e: Option<Dist>,
    pub e2e_from_scheduled: Option<Dist>,
    pub send_lag: Option<Dist>,
    pub input_tokens: Option<Dist>,
    pub output_tokens: Option<Dist>,
    /// "server" (every counted request had counts), "partial" or "missing".
    pub token_counts: String,
    /// Prompt tokens served from the server's prefix cache, when it says.
    pub cached_tokens: Option<CachedTokens>,
    pub throughput: Throughput,
    pub goodput: Option<Goodput>,
    pub errors: BTreeMap<String, usize>,
    /// One message per error kind, to see what went wrong.
    pub error_examples: BTreeMap<String, String>,
    pub slowest: Vec<Slow>,
    pub client: ClientUsage,
    pub server: Option<ServerView>,
    /// throughput(b) / (b × throughput(b0)) in a batch sweep, b0 the smallest level.
    pub batch_efficiency: Option<f64>,
    pub aborted: Option<String>,
    pub warnings: Vec<String>,
    /// Per turn index, for multi-turn conversations.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub turns: Vec<TurnSummary>,
    /// What limited this step ([`crate::measure::diagnose`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<diagnosis::Diagnosis>,
}

/// Records inside the measurement window: sent (as scheduled) after the warmup
/// and before the cooldown.
pub fn in_window(step: &StepOutcome) -> impl Iterator<Item = &RequestRecord> {
    let from = step.start + step.spec.warmup;
    let to = step.load_end.saturating_sub(step.spec.cooldown);
    let whole = step.spec.cooldown.is_zero();
    step.records
        .iter()
        .filter(move |r| r.scheduled >= from && (whole || r.scheduled < to))
}

/// The records a step's statistics are computed over, and the span they cover.
struct Counted<'a> {
    /// Every request scheduled inside the window, errors included.
    window: Vec<&'a RequestRecord>,
    /// The successful ones: the latency samples.
    ok: Vec<&'a RequestRecord>,
    /// From the first counted send to the last counted completion.
    window_stats: Window,
}

impl<'a> Counted<'a> {
    fn of(step: &'a StepOutcome) -> Self {
        let window: Vec<&RequestRecord> = in_window(step).collect();
        let ok = window
            .iter()
            .copied()
            .filter(|r| r.outcome.is_ok())
            .collect();
        let first = window.iter().map(|r| r.sent).min().unwrap_or(step.start);
        let last = window.iter().map(|r| r.end).max().unwrap_or(step.end);
        let window_stats = Window {
            start_s: first.as_secs_f64(),
            end_s: last.as_secs_f64(),
            warmup_s: step.spec.warmup.as_secs_f64(),
            cooldown_s: step.spec.cooldown.as_secs_f64(),
            seconds: last.saturating_sub(first).as_secs_f64(),
        };
        Counted {
            window,
            ok,
            window_stats,
        }
    }

    /// `n` events over the window, per second.
    fn per_s(&self, n: f64) -> f64 {
        let secs = self.window_stats.seconds;
        if secs > 0.0 {
            n / secs
        } else {
            0.0
        }
    }

    /// "server" when every counted request had the server's token counts.
    fn token_counts(&self) -> &'static str {
        match self.ok.iter().filter(|r| r.output_tokens.is_some()).count() {
            n if n == self.ok.len() && n > 0 => "server",
            0 => "missing",
            _ => "partial",
        }
    }

    fn throughput(&self) -> Throughput {
        let out: Option<u64> = (self.token_counts() == "server")
            .then(|| self.ok.iter().filter_map(|r| r.output_tokens).sum());
        let input: Option<u64> = self.ok.iter().map(|r| r.input_tokens).sum();
        Throughput {
            requests_per_s: self.per_s(self.ok.len() as f64),
            output_tokens_per_s: out.map(|n| self.per_s(n as f64)),
            total_tokens_per_s: out.zip(input).map(|(o, i)| self.per_s((o + i) as f64)),
        }
    }

    fn goodput(&self, slo: &Slo) -> Goodput {
        let met = self.window.iter().filter(|r| slo.met_by(r)).count();
        Goodput {
            slo: slo.clone(),
            requests_per_s: self.per_s(met as f64),
            attainment: if self.window.is_empty() {
                0.0
            } else {
                met as f64 / self.window.len() as f64
            },
        }
    }

    /// The distribution of `f` over the successful requests.
    fn dist_ok<I: IntoIterator<Item = f64>>(
        &self,
        f: impl Fn(&RequestRecord) -> I,
    ) -> Option<Dist> {
        dist(self.ok.iter().flat_map(|r| f(r)).collect())
    }
}

/// Summarize one step: counts, latency distributions, throughput, goodput,
/// errors by kind, the slowest requests, and the warnings that apply.
pub fn summarize(
    step: &StepOutcome,
    slo: Option<&Slo>,
    client: ClientUsage,
    server: Option<ServerView>,
) -> StepSummary {
    let c = Counted::of(step);
    let (errors, error_examples) = errors_by_kind(&step.records);
    let tokens = |v: Option<u64>| v.map(|v| v as f64);
    let mut s = StepSummary {
        index: step.spec.index,
        label: step.spec.label.clone(),
        shape: step.spec.shape.clone(),
        batch_size: step.spec.batch_size,
        window: c.window_stats.clone(),
        requests: Counts {
            sent: step.records.len(),
            ok: step.records.iter().filter(|r| r.outcome.is_ok()).count(),
            errors: errors.values().sum(),
            counted: c.ok.len(),
        },
        ttft: c.dist_ok(|r| r.ttft()),
        ttft_from_scheduled: c.dist_ok(|r| r.ttft_from_scheduled()),
        itl: c.dist_ok(|r| r.itl().collect::<Vec<_>>()),
        tpot: c.dist_ok(|r| r.tpot()),
        e2e: c.dist_ok(|r| Some(r.e2e())),
        e2e_from_scheduled: c.dist_ok(|r| Some(r.e2e_from_scheduled())),
        send_lag: dist(c.window.iter().map(|r| r.send_lag()).collect()),
        input_tokens: c.dist_ok(|r| tokens(r.input_tokens)),
        output_tokens: c.dist_ok(|r| tokens(r.output_tokens)),
        token_counts: c.token_counts().to_string(),
        cached_tokens: turns::cached_tokens(&c.ok),
        throughput: c.throughput(),
        goodput: slo.map(|slo| c.goodput(slo)),
        errors,
        error_examples,
        slowest: slowest(&c.ok),
        client,
        server,
        batch_efficiency: None,
        aborted: step.aborted.clone(),
        warnings: Vec::new(),
        turns: turns::by_turn(&c.window),
        diagnosis: None,
    };
    s.warnings = warnings(&s);
    s
}

/// Error counts by kind over every request of the step, with one example each.
type ErrorTables = (BTreeMap<String, usize>, BTreeMap<String, String>);

fn errors_by_kind(records: &[RequestRecord]) -> ErrorTables {
    let mut errors = BTreeMap::new();
    let mut examples = BTreeMap::new();
    for r in records {
        if let Outcome::Error { kind, message } = &r.outcome {
            *errors.entry(kind.to_string()).or_insert(0) += 1;
            examples
                .entry(kind.to_string())
                .or_insert_with(|| message.clone());
        }
    }
    (errors, examples)
}

/// The five slowest successful requests (from scheduled), with their trace ids.
fn slowest(ok: &[&RequestRecord]) -> Vec<Slow> {
    let mut sorted = ok.to_vec();
    sorted.sort_by(|a, b| b.e2e_from_scheduled().total_cmp(&a.e2e_from_scheduled()));
    sorted
        .iter()
        .take(5)
        .map(|r| Slow {
            id: r.id,
            e2e_from_scheduled_s: r.e2e_from_scheduled(),
            ttft_s: r.ttft(),
            trace_id: r.trace_id.clone(),
            server_trace_id: r.server_trace_id.clone(),
        })
        .collect()
}

/// The honesty checks: say when the numbers describe loadgen rather than the server.
fn warnings(s: &StepSummary) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(lag) = &s.send_lag {
        if matches!(s.shape, Shape::Open { .. }) && lag.p99 > 0.001 {
            w.push(format!(
                "send lag p99 is {:.2} ms (> 1 ms): loadgen fell behind its schedule; latencies from scheduled include the slip",
                lag.p99 * 1e3
            ));
        }
    }
    if let (Some(mean), Some(max)) = (s.client.cpu_mean_pct, s.client.cpu_max_pct) {
        if mean > 75.0 || max > 95.0 {
            w.push(format!(
                "loadgen used {mean:.0}% (max {max:.0}%) of this machine's {} cores: it may be the bottleneck, not the server",
                s.client.cores
            ));
        }
    }
    if s.token_counts != "server" && s.requests.counted > 0 {
        w.push(format!(
            "server token counts {}: token throughput and TPOT are not reported for this step (loadgen does not guess)",
            s.token_counts
        ));
    }
    if let Some(reason) = &s.aborted {
        w.push(format!("step stopped early: {reason}"));
    }
    if s.requests.errors > 0 {
        w.push(format!(
            "{} of {} requests failed",
            s.requests.errors, s.requests.sent
        ));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(warmup: u64, cooldown: u64) -> StepOutcome {
        use crate::measure::record::Outcome;
        use std::time::Duration;
        let secs = Duration::from_secs;
        let records = (0..10)
            .map(|i| RequestRecord {
                id: i,
                step: 0,
                scheduled: secs(i),
                sent: secs(i),
                token_times: vec![secs(i) + Duration::from_millis(100)],
                end: secs(i) + Duration::from_millis(500),
                input_tokens: Some(4),
                output_tokens: Some(1),
                cached_tokens: None,
                chunks: 1,
                finish_reason: None,
                outcome: if i == 9 {
                    Outcome::Error {
                        kind: crate::measure::record::ErrorKind::Truncated,
                        message: "cut".into(),
                    }
                } else {
                    Outcome::Ok
                },
                http_status: Some(200),
                trace_id: String::new(),
                server_trace_id: None,
                conversation: None,
                turn: None,
            })
            .collect();
        StepOutcome {
            spec: crate::plan::step::StepSpec {
                index: 0,
                label: "t".into(),
                shape: Shape::Closed { concurrency: 1 },
                limit: crate::plan::schedule::Limit::Duration(secs(10)),
                warmup: secs(warmup),
                cooldown: secs(cooldown),
                batch_size: None,
            },
            start: Duration::ZERO,
            load_end: secs(10),
            end: secs(10),
            records,
            aborted: None,
        }
    }

    #[test]
    fn warmup_and_cooldown_leave_out_latencies_but_not_errors() {
        let s = summarize(&step(2, 2), None, ClientUsage::default(), None);
        // Scheduled in [2 s, 8 s): requests 2..=7.
        assert_eq!(s.requests.counted, 6);
        assert_eq!(s.ttft.as_ref().map(|d| d.count), Some(6));
        // The failure at 9 s is in the cooldown, and still counted as an error.
        assert_eq!(s.requests.errors, 1);
        assert_eq!(s.errors.get("stream_truncated"), Some(&1));
        // Window: first counted send (2 s) to last counted end (7.5 s).
        assert!((s.window.seconds - 5.5).abs() < 1e-9);
        assert!((s.throughput.requests_per_s - 6.0 / 5.5).abs() < 1e-9);
        let all = summarize(&step(0, 0), None, ClientUsage::default(), None);
        assert_eq!(all.requests.counted, 9);
    }
}
