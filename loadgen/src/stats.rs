//! From records to a step summary. Every metric definition lives here.
//!
//! Percentiles are exact, nearest-rank on sorted samples (all samples are kept,
//! so there is no histogram error to explain).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::promtext::Agreement;
use crate::record::RequestRecord;
use crate::runner::{Shape, StepOutcome};

/// Summary statistics of one metric, in its unit (seconds or tokens).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dist {
    pub count: usize,
    pub mean: f64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// Nearest-rank percentile of sorted samples: the smallest value with at least
/// `q` of the samples at or below it.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn dist(mut v: Vec<f64>) -> Option<Dist> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(Dist {
        count: v.len(),
        mean: v.iter().sum::<f64>() / v.len() as f64,
        min: v[0],
        p50: percentile(&v, 0.50),
        p90: percentile(&v, 0.90),
        p95: percentile(&v, 0.95),
        p99: percentile(&v, 0.99),
        max: v[v.len() - 1],
    })
}

/// Service-level objective: per-request latency ceilings in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Slo {
    pub ttft: Option<f64>,
    pub tpot: Option<f64>,
    pub e2e: Option<f64>,
}

impl FromStr for Slo {
    type Err = String;
    /// `ttft=500ms,tpot=0.05,e2e=10s` (bare numbers are seconds).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut slo = Slo::default();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}': expected NAME=VALUE"))?;
            let secs = crate::ser::parse_secs(v.trim())?;
            match k.trim() {
                "ttft" => slo.ttft = Some(secs),
                "tpot" => slo.tpot = Some(secs),
                "e2e" => slo.e2e = Some(secs),
                other => return Err(format!("unknown SLO metric '{other}' (ttft, tpot, e2e)")),
            }
        }
        if slo == Slo::default() {
            return Err("empty SLO".into());
        }
        Ok(slo)
    }
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [("ttft", self.ttft), ("tpot", self.tpot), ("e2e", self.e2e)]
            .iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}={v}s")))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl Slo {
    /// Whether a request met every objective. Latencies are taken from the
    /// scheduled send, so client-side queueing counts against the objective.
    pub fn met_by(&self, r: &RequestRecord) -> bool {
        if !r.outcome.is_ok() {
            return false;
        }
        let ttft_ok = self
            .ttft
            .is_none_or(|max| r.ttft_from_scheduled().is_some_and(|v| v <= max));
        let tpot_ok = self
            .tpot
            .is_none_or(|max| r.tpot().is_some_and(|v| v <= max));
        let e2e_ok = self.e2e.is_none_or(|max| r.e2e_from_scheduled() <= max);
        ttft_ok && tpot_ok && e2e_ok
    }
}

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

/// The server's own view of the step, from `/metrics` deltas.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerView {
    pub ttft: Option<Agreement>,
    pub e2e: Option<Agreement>,
    /// Mean sequences per decode step: what batch size the server really ran.
    pub decode_batch_size_mean: Option<f64>,
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

pub fn summarize(
    step: &StepOutcome,
    slo: Option<&Slo>,
    client: ClientUsage,
    server: Option<ServerView>,
) -> StepSummary {
    let window: Vec<&RequestRecord> = in_window(step).collect();
    let ok: Vec<&RequestRecord> = window
        .iter()
        .copied()
        .filter(|r| r.outcome.is_ok())
        .collect();
    let first = window.iter().map(|r| r.sent).min().unwrap_or(step.start);
    let last = window.iter().map(|r| r.end).max().unwrap_or(step.end);
    let secs = last.saturating_sub(first).as_secs_f64();
    let per_s = |n: f64| if secs > 0.0 { n / secs } else { 0.0 };
    let with_counts = ok.iter().filter(|r| r.output_tokens.is_some()).count();
    let token_counts = match with_counts {
        n if n == ok.len() && n > 0 => "server",
        0 => "missing",
        _ => "partial",
    };
    let out_tokens: Option<u64> =
        (token_counts == "server").then(|| ok.iter().filter_map(|r| r.output_tokens).sum());
    let in_tokens: Option<u64> = ok.iter().map(|r| r.input_tokens).sum();
    let (errors, error_examples) = errors_by_kind(&step.records);
    let mut s = StepSummary {
        index: step.spec.index,
        label: step.spec.label.clone(),
        shape: step.spec.shape.clone(),
        batch_size: step.spec.batch_size,
        window: Window {
            start_s: first.as_secs_f64(),
            end_s: last.as_secs_f64(),
            warmup_s: step.spec.warmup.as_secs_f64(),
            cooldown_s: step.spec.cooldown.as_secs_f64(),
            seconds: secs,
        },
        requests: Counts {
            sent: step.records.len(),
            ok: step.records.iter().filter(|r| r.outcome.is_ok()).count(),
            errors: errors.values().sum(),
            counted: ok.len(),
        },
        ttft: dist(ok.iter().filter_map(|r| r.ttft()).collect()),
        ttft_from_scheduled: dist(ok.iter().filter_map(|r| r.ttft_from_scheduled()).collect()),
        itl: dist(ok.iter().flat_map(|r| r.itl()).collect()),
        tpot: dist(ok.iter().filter_map(|r| r.tpot()).collect()),
        e2e: dist(ok.iter().map(|r| r.e2e()).collect()),
        e2e_from_scheduled: dist(ok.iter().map(|r| r.e2e_from_scheduled()).collect()),
        send_lag: dist(window.iter().map(|r| r.send_lag()).collect()),
        input_tokens: dist(
            ok.iter()
                .filter_map(|r| r.input_tokens.map(|v| v as f64))
                .collect(),
        ),
        output_tokens: dist(
            ok.iter()
                .filter_map(|r| r.output_tokens.map(|v| v as f64))
                .collect(),
        ),
        token_counts: token_counts.to_string(),
        throughput: Throughput {
            requests_per_s: per_s(ok.len() as f64),
            output_tokens_per_s: out_tokens.map(|n| per_s(n as f64)),
            total_tokens_per_s: out_tokens
                .zip(in_tokens)
                .map(|(o, i)| per_s((o + i) as f64)),
        },
        goodput: slo.map(|slo| {
            let met = window.iter().filter(|r| slo.met_by(r)).count();
            Goodput {
                slo: slo.clone(),
                requests_per_s: per_s(met as f64),
                attainment: if window.is_empty() {
                    0.0
                } else {
                    met as f64 / window.len() as f64
                },
            }
        }),
        errors,
        error_examples,
        slowest: slowest(&ok),
        client,
        server,
        batch_efficiency: None,
        aborted: step.aborted.clone(),
        warnings: Vec::new(),
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
        if let crate::record::Outcome::Error { kind, message } = &r.outcome {
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

    #[test]
    fn nearest_rank_percentiles() {
        let d = dist((1..=100).map(f64::from).collect()).expect("samples");
        assert_eq!(
            (d.p50, d.p90, d.p99, d.max, d.min),
            (50.0, 90.0, 99.0, 100.0, 1.0)
        );
        assert!((d.mean - 50.5).abs() < 1e-12);
        let one = dist(vec![3.0]).expect("one sample");
        assert_eq!((one.p50, one.p99), (3.0, 3.0));
        assert!(dist(vec![]).is_none());
    }

    fn step(warmup: u64, cooldown: u64) -> StepOutcome {
        use crate::record::Outcome;
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
                chunks: 1,
                finish_reason: None,
                outcome: if i == 9 {
                    Outcome::Error {
                        kind: crate::record::ErrorKind::Truncated,
                        message: "cut".into(),
                    }
                } else {
                    Outcome::Ok
                },
                http_status: Some(200),
                trace_id: String::new(),
                server_trace_id: None,
            })
            .collect();
        StepOutcome {
            spec: crate::runner::StepSpec {
                index: 0,
                label: "t".into(),
                shape: Shape::Closed { concurrency: 1 },
                limit: crate::schedule::Limit::Duration(secs(10)),
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

    #[test]
    fn slo_parses_units_and_rejects_unknown_metrics() {
        let slo: Slo = "ttft=500ms,tpot=0.05,e2e=2s".parse().expect("valid");
        assert_eq!(slo.ttft, Some(0.5));
        assert_eq!(slo.tpot, Some(0.05));
        assert_eq!(slo.e2e, Some(2.0));
        assert!("itl=1".parse::<Slo>().is_err());
        assert!("ttft".parse::<Slo>().is_err());
    }
}
