//! What a diagnosis says: a status, findings with their evidence and remedies,
//! and the evidence of every check that passed or was skipped.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::sweep::SweepVerdict;

/// Trace ids a finding carries at most (the caller fills them).
pub const MAX_TRACE_IDS: usize = 3;

/// Where the runbook lives, relative to the repository root.
pub const RUNBOOK: &str = "docs/diagnosis.md";

/// The closed set of bottlenecks a finding can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bottleneck {
    Cpu,
    Gpu,
    MemoryGrowth,
    IoWait,
    QueueSaturation,
    UnderBatching,
    KvCache,
    PrefillStall,
    Client,
    Interference,
}

impl Bottleneck {
    pub const ALL: [Bottleneck; 10] = [
        Bottleneck::Cpu,
        Bottleneck::Gpu,
        Bottleneck::MemoryGrowth,
        Bottleneck::IoWait,
        Bottleneck::QueueSaturation,
        Bottleneck::UnderBatching,
        Bottleneck::KvCache,
        Bottleneck::PrefillStall,
        Bottleneck::Client,
        Bottleneck::Interference,
    ];

    /// The snake_case name; also the anchor of its section in `docs/diagnosis.md`.
    pub fn as_str(self) -> &'static str {
        match self {
            Bottleneck::Cpu => "cpu",
            Bottleneck::Gpu => "gpu",
            Bottleneck::MemoryGrowth => "memory_growth",
            Bottleneck::IoWait => "io_wait",
            Bottleneck::QueueSaturation => "queue_saturation",
            Bottleneck::UnderBatching => "under_batching",
            Bottleneck::KvCache => "kv_cache",
            Bottleneck::PrefillStall => "prefill_stall",
            Bottleneck::Client => "client",
            Bottleneck::Interference => "interference",
        }
    }

    /// `docs/diagnosis.md#<name>`.
    pub fn runbook(self) -> String {
        format!("{RUNBOOK}#{}", self.as_str())
    }

    /// Which requests show this bottleneck best, for the caller to pick trace ids.
    pub fn trace_criterion(self) -> Option<TraceCriterion> {
        match self {
            Bottleneck::QueueSaturation | Bottleneck::UnderBatching | Bottleneck::KvCache => {
                Some(TraceCriterion::SlowestQueueTime)
            }
            Bottleneck::PrefillStall => Some(TraceCriterion::LargestInterTokenGap),
            Bottleneck::Client => Some(TraceCriterion::LargestSendLag),
            Bottleneck::Cpu | Bottleneck::Gpu | Bottleneck::IoWait | Bottleneck::Interference => {
                Some(TraceCriterion::SlowestE2e)
            }
            Bottleneck::MemoryGrowth => None,
        }
    }
}

impl fmt::Display for Bottleneck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much a finding matters. `Info` notes do not make a run degraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Healthy,
    Degraded,
}

/// Which affected requests a finding wants trace ids of. loadgen, which has no
/// server queue time per request, reads `SlowestQueueTime` as slowest TTFT
/// (queue + prefill); a trace store can sort by the `queue` span itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceCriterion {
    SlowestQueueTime,
    SlowestTtft,
    SlowestE2e,
    LargestInterTokenGap,
    LargestSendLag,
}

/// How a value is compared with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    #[serde(rename = ">")]
    Above,
    #[serde(rename = ">=")]
    AtLeast,
    #[serde(rename = "<")]
    Below,
    #[serde(rename = "<=")]
    AtMost,
}

impl Comparison {
    /// Whether `value <cmp> threshold` holds (never for NaN).
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Above => value > threshold,
            Comparison::AtLeast => value >= threshold,
            Comparison::Below => value < threshold,
            Comparison::AtMost => value <= threshold,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::Above => ">",
            Comparison::AtLeast => ">=",
            Comparison::Below => "<",
            Comparison::AtMost => "<=",
        }
    }

    /// The comparison that holds when this one does not.
    pub fn negated(self) -> Comparison {
        match self {
            Comparison::Above => Comparison::AtMost,
            Comparison::AtLeast => Comparison::Below,
            Comparison::Below => Comparison::AtLeast,
            Comparison::AtMost => Comparison::Above,
        }
    }
}

/// The unit of an evidence value (and of a threshold), for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// A fraction, 0..1 (shown as a percentage).
    Ratio,
    Seconds,
    Bytes,
    BytesPerSecond,
    Requests,
    RequestsPerSecond,
    /// A multiple of something else (shown as `5.0x`).
    Factor,
    /// A plain number (samples, a batch size).
    Count,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Ratio => "ratio",
            Unit::Seconds => "seconds",
            Unit::Bytes => "bytes",
            Unit::BytesPerSecond => "bytes_per_second",
            Unit::Requests => "requests",
            Unit::RequestsPerSecond => "requests_per_second",
            Unit::Factor => "factor",
            Unit::Count => "count",
        }
    }
}

/// The window a value was read over: seconds, or a label ("sweep", "5m").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WindowRef {
    Seconds(f64),
    Label(String),
}

impl fmt::Display for WindowRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowRef::Seconds(s) if *s >= 120.0 => write!(f, "{:.0} min", s / 60.0),
            WindowRef::Seconds(s) => write!(f, "{s:.0} s"),
            WindowRef::Label(l) => f.write_str(l),
        }
    }
}

/// One signal read against one threshold, or a note that a signal was missing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// What was read, e.g. `process_cpu_of_allowance` (names listed in docs/diagnosis.md).
    pub signal: String,
    /// `None`: the signal was missing and the check was skipped (see `note`).
    pub value: Option<f64>,
    pub unit: Unit,
    pub threshold: Option<f64>,
    /// The constant in [`crate::thresholds`] the threshold comes from.
    pub threshold_name: Option<String>,
    pub comparison: Option<Comparison>,
    /// Whether `value <comparison> threshold` held.
    pub met: Option<bool>,
    pub window: WindowRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The rule that read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bottleneck: Option<Bottleneck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

impl Evidence {
    /// A value checked against a named threshold.
    pub fn check(
        signal: &str,
        value: f64,
        unit: Unit,
        cmp: Comparison,
        threshold: (&str, f64),
        window: WindowRef,
    ) -> Self {
        Self {
            signal: signal.to_string(),
            value: Some(value),
            unit,
            threshold: Some(threshold.1),
            threshold_name: Some(threshold.0.to_string()),
            comparison: Some(cmp),
            met: Some(cmp.holds(value, threshold.1)),
            window,
            note: None,
            bottleneck: None,
            instance: None,
        }
    }

    /// A value shown for context, compared with nothing.
    pub fn info(signal: &str, value: f64, unit: Unit, window: WindowRef) -> Self {
        Self {
            signal: signal.to_string(),
            value: Some(value),
            unit,
            threshold: None,
            threshold_name: None,
            comparison: None,
            met: None,
            window,
            note: None,
            bottleneck: None,
            instance: None,
        }
    }

    /// A check that could not run, with the reason (e.g. "no GPU signal").
    pub fn missing(signal: &str, unit: Unit, note: &str, window: WindowRef) -> Self {
        Self {
            value: None,
            note: Some(note.to_string()),
            ..Self::info(signal, 0.0, unit, window)
        }
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    /// Whether the check held (`false` for context values and skipped checks).
    pub fn is_met(&self) -> bool {
        self.met == Some(true)
    }
}

/// One named bottleneck with what shows it and what to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub bottleneck: Bottleneck,
    pub severity: Severity,
    /// One line, plain words, with the key numbers.
    pub summary: String,
    pub evidence: Vec<Evidence>,
    /// Plain words, with candlelight flags where one applies.
    pub remedies: Vec<String>,
    /// `docs/diagnosis.md#<bottleneck>`.
    pub runbook: String,
    /// Which requests the caller should take trace ids from.
    pub wants_traces: Option<TraceCriterion>,
    /// Up to [`MAX_TRACE_IDS`] trace ids of affected requests, filled by the caller.
    #[serde(default)]
    pub trace_ids: Vec<String>,
    /// The replica, where the signals named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// The verdict on one window of signals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub status: Status,
    /// The window judged (of the first replica, after a merge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowRef>,
    /// Worst first.
    pub findings: Vec<Finding>,
    /// What was checked and did not fire, and what was skipped for want of a signal.
    pub evidence: Vec<Evidence>,
    /// The batch sweep's verdict, when the signals held a sweep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepVerdict>,
}

impl Diagnosis {
    /// Builds a diagnosis: degraded when any finding is a warning or worse.
    pub fn from_parts(
        mut findings: Vec<Finding>,
        evidence: Vec<Evidence>,
        sweep: Option<SweepVerdict>,
    ) -> Self {
        findings.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(a.bottleneck.cmp(&b.bottleneck))
        });
        let degraded = findings.iter().any(|f| f.severity >= Severity::Warning);
        Self {
            status: if degraded {
                Status::Degraded
            } else {
                Status::Healthy
            },
            window: None,
            findings,
            evidence,
            sweep,
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.status == Status::Healthy
    }

    /// The finding about one bottleneck, if any.
    pub fn finding(&self, b: Bottleneck) -> Option<&Finding> {
        self.findings.iter().find(|f| f.bottleneck == b)
    }

    /// Fills each finding's `trace_ids` from `pick(criterion, instance)`,
    /// keeping at most [`MAX_TRACE_IDS`].
    pub fn attach_traces(
        &mut self,
        mut pick: impl FnMut(TraceCriterion, Option<&str>) -> Vec<String>,
    ) {
        for f in &mut self.findings {
            if let Some(c) = f.wants_traces {
                let mut ids = pick(c, f.instance.as_deref());
                ids.truncate(MAX_TRACE_IDS);
                f.trace_ids = ids;
            }
        }
    }

    /// One diagnosis for several replicas (each finding keeps its instance).
    pub fn merge(parts: impl IntoIterator<Item = Diagnosis>) -> Diagnosis {
        let (mut findings, mut evidence, mut sweep, mut window) =
            (Vec::new(), Vec::new(), None, None);
        for d in parts {
            findings.extend(d.findings);
            evidence.extend(d.evidence);
            sweep = sweep.or(d.sweep);
            window = window.or(d.window);
        }
        Self {
            window,
            ..Self::from_parts(findings, evidence, sweep)
        }
    }
}
