//! The rules, one per bottleneck. Each reads the signals it needs and either
//! fires a finding or returns what it checked (or why it could not check).

mod client;
mod compute;
mod memory;
mod queue;
mod stall;

#[cfg(test)]
pub(crate) mod testkit;

use crate::finding::{Bottleneck, Evidence, Finding, Severity, Unit, WindowRef};
use crate::signals::{Series, Signals};
use crate::stats;
use crate::sweep::SweepVerdict;

/// `(name, value)` of a threshold constant, for evidence.
macro_rules! th {
    ($name:ident) => {
        (stringify!($name), $crate::thresholds::$name)
    };
}
pub(crate) use th;

/// What one rule concluded.
pub(crate) enum Outcome {
    Fired(Finding),
    /// Did not fire: what was checked, or why it was skipped.
    Clear(Vec<Evidence>),
}

/// A rule: reads the context, concludes.
type Rule = fn(&Ctx) -> Outcome;

/// Every rule, in the order the docs list the bottlenecks.
const RULES: [(Bottleneck, Rule); 10] = [
    (Bottleneck::Cpu, compute::cpu),
    (Bottleneck::Gpu, compute::gpu),
    (Bottleneck::MemoryGrowth, memory::memory_growth),
    (Bottleneck::IoWait, stall::io_wait),
    (Bottleneck::QueueSaturation, queue::queue_saturation),
    (Bottleneck::UnderBatching, queue::under_batching),
    (Bottleneck::KvCache, queue::kv_cache),
    (Bottleneck::PrefillStall, stall::prefill_stall),
    (Bottleneck::Client, client::client),
    (Bottleneck::Interference, compute::interference),
];

/// Findings that explain a queue: with one of them, a queue that neither grows
/// nor refuses requests is their symptom, not a finding of its own.
const EXPLAINS_QUEUE: [Bottleneck; 4] = [
    Bottleneck::UnderBatching,
    Bottleneck::KvCache,
    Bottleneck::Cpu,
    Bottleneck::Gpu,
];

/// Runs every rule: the findings, and the evidence of the rules that did not fire.
pub(crate) fn run_all(cx: &Ctx) -> (Vec<Finding>, Vec<Evidence>) {
    let (mut findings, mut evidence) = (Vec::new(), Vec::new());
    for (bottleneck, rule) in RULES {
        match rule(cx) {
            Outcome::Fired(mut f) => {
                debug_assert_eq!(f.bottleneck, bottleneck);
                tag(&mut f.evidence, bottleneck, cx);
                findings.push(f);
            }
            Outcome::Clear(mut ev) => {
                tag(&mut ev, bottleneck, cx);
                evidence.extend(ev);
            }
        }
    }
    let explained = findings
        .iter()
        .find(|f| EXPLAINS_QUEUE.contains(&f.bottleneck))
        .map(|f| f.bottleneck);
    if let Some(by) = explained {
        let symptom = |f: &Finding| {
            f.bottleneck == Bottleneck::QueueSaturation && f.severity < Severity::Critical
        };
        if let Some(i) = findings.iter().position(symptom) {
            let f = findings.remove(i);
            let note = format!("queue explained by {by}");
            evidence.extend(f.evidence.into_iter().map(|e| match e.met {
                Some(true) => e.with_note(note.clone()),
                _ => e,
            }));
        }
    }
    (findings, evidence)
}

fn tag(ev: &mut [Evidence], b: Bottleneck, cx: &Ctx) {
    for e in ev {
        e.bottleneck = Some(b);
        e.instance.clone_from(&cx.s.instance);
    }
}

/// What every rule reads, computed once.
pub(crate) struct Ctx<'a> {
    pub s: &'a Signals,
    pub window: WindowRef,
    /// Fraction of all cores the server may use.
    pub allowance: f64,
    pub sweep: Option<&'a SweepVerdict>,
}

impl<'a> Ctx<'a> {
    pub fn new(s: &'a Signals, sweep: Option<&'a SweepVerdict>) -> Self {
        let window = match &s.window.label {
            Some(l) => WindowRef::Label(l.clone()),
            None => WindowRef::Seconds(s.window.seconds()),
        };
        Self {
            s,
            window,
            allowance: s.host.cpu_allowance(),
            sweep,
        }
    }

    /// The values of a series while the load ran (`None`: missing or no points).
    pub fn values(&self, series: &Option<Series>) -> Option<Vec<f64>> {
        let w = &self.s.window;
        let v: Vec<f64> = series
            .as_ref()?
            .between(w.start_s, w.load_end())
            .iter()
            .map(|p| p.1)
            .collect();
        (!v.is_empty()).then_some(v)
    }

    pub fn mean(&self, series: &Option<Series>) -> Option<f64> {
        stats::mean(self.values(series)?)
    }

    /// The level the series held [`crate::thresholds::STEADY_FRACTION`] of the time.
    pub fn steady(&self, series: &Option<Series>) -> Option<f64> {
        stats::steady_level(&self.values(series)?)
    }

    pub fn waiting_mean(&self) -> Option<f64> {
        self.mean(&self.s.server.requests_waiting)
    }

    pub fn running_mean(&self) -> Option<f64> {
        self.mean(&self.s.server.requests_running)
    }

    /// Mean decode batch: the server's own figure, else the running gauge's mean.
    pub fn batch_mean(&self) -> Option<f64> {
        self.s
            .server
            .decode_batch_mean
            .or_else(|| self.running_mean())
    }

    /// Server CPU as a fraction of the cores it may use, steady level.
    pub fn cpu_of_allowance(&self) -> Option<f64> {
        let v = self.values(&self.s.host.process_cpu)?;
        let share: Vec<f64> = v.iter().map(|c| c / self.allowance).collect();
        stats::steady_level(&share)
    }

    pub fn missing(&self, signal: &str, unit: Unit, note: &str) -> Evidence {
        Evidence::missing(signal, unit, note, self.window.clone())
    }

    pub fn info(&self, signal: &str, value: f64, unit: Unit) -> Evidence {
        Evidence::info(signal, value, unit, self.window.clone())
    }

    /// A finding about `b` with its runbook, trace criterion and instance filled.
    pub fn finding(
        &self,
        b: Bottleneck,
        severity: Severity,
        summary: String,
        evidence: Vec<Evidence>,
        remedies: Vec<String>,
    ) -> Finding {
        Finding {
            bottleneck: b,
            severity,
            summary,
            evidence,
            remedies,
            runbook: b.runbook(),
            wants_traces: b.trace_criterion(),
            trace_ids: Vec::new(),
            instance: self.s.instance.clone(),
        }
    }
}

/// Builds a checked evidence row in the context's window.
macro_rules! check {
    ($cx:expr, $signal:expr, $value:expr, $unit:ident, $cmp:ident, $name:ident) => {
        $crate::finding::Evidence::check(
            $signal,
            $value,
            $crate::finding::Unit::$unit,
            $crate::finding::Comparison::$cmp,
            $crate::rules::th!($name),
            $cx.window.clone(),
        )
    };
}
pub(crate) use check;

/// Owned remedy lines.
pub(crate) fn remedies(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|r| r.to_string()).collect()
}

/// Formats a fraction as a whole percentage for summaries.
pub(crate) fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use crate::finding::{Bottleneck, Status};

    #[test]
    fn the_rule_tests_baseline_is_healthy_and_every_rule_checked_it() {
        let d = crate::diagnose(&baseline());
        assert_eq!(d.status, Status::Healthy, "{}", crate::render_text(&d));
        for b in Bottleneck::ALL {
            let checked = d
                .evidence
                .iter()
                .any(|e| e.bottleneck == Some(b) && e.value.is_some());
            // The baseline has every signal but a GPU.
            assert_eq!(checked, b != Bottleneck::Gpu, "{b}");
        }
    }

    #[test]
    fn a_queue_that_only_grows_critical_is_kept_beside_its_cause() {
        // Under-batched and the queue keeps growing: both are reported.
        let mut s = baseline();
        s.server.batch_limit = Some(1.0);
        s.server.decode_batch_mean = Some(1.0);
        s.server.requests_running = flat(1.0);
        s.server.requests_waiting = ramp(7.0, 40.0);
        let d = crate::diagnose(&s);
        assert!(d.finding(Bottleneck::UnderBatching).is_some());
        assert!(d.finding(Bottleneck::QueueSaturation).is_some());
    }
}
