//! The plain-text "Diagnosis" block of a load test report.

use std::fmt::Write as _;

use crate::finding::{
    Bottleneck, Diagnosis, Evidence, Finding, Status, TraceCriterion, Unit, WindowRef,
};
use crate::sweep::SweepVerdict;

/// A value in its unit, short (`83%`, `12 ms`, `1.50 s`, `96.0 MiB`, `5.0x`).
pub fn format_value(v: f64, unit: Unit) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    const MIB: f64 = 1024.0 * 1024.0;
    match unit {
        Unit::Ratio if v.abs() < 0.1 => format!("{:.1}%", v * 100.0),
        Unit::Ratio => format!("{:.0}%", v * 100.0),
        Unit::Seconds if v.abs() < 0.01 => format!("{:.2} ms", v * 1e3),
        Unit::Seconds if v.abs() < 1.0 => format!("{:.0} ms", v * 1e3),
        Unit::Seconds => format!("{v:.2} s"),
        Unit::Bytes if v.abs() < MIB => format!("{:.0} KiB", v / 1024.0),
        Unit::Bytes => format!("{:.1} MiB", v / MIB),
        Unit::BytesPerSecond if v.abs() < MIB => format!("{:.1} KiB/s", v / 1024.0),
        Unit::BytesPerSecond => format!("{:.1} MiB/s", v / MIB),
        Unit::Requests | Unit::Count => format!("{v:.1}"),
        Unit::RequestsPerSecond => format!("{v:.3}/s"),
        Unit::Factor => format!("{v:.1}x"),
    }
}

/// One evidence row: signal, value, the relation that held, threshold, and
/// the window (left out when it is the diagnosis' own) with any note.
fn row(e: &Evidence, window: Option<&WindowRef>) -> [String; 4] {
    let value = e.value.map_or("-".into(), |v| format_value(v, e.unit));
    let rel = match (e.comparison, e.threshold, e.met) {
        (Some(c), Some(t), Some(met)) => {
            let c = if met { c } else { c.negated() };
            format!("{:<2} {}", c.symbol(), format_value(t, e.unit))
        }
        _ => String::new(),
    };
    let mut tail: Vec<String> = Vec::new();
    if Some(&e.window) != window {
        tail.push(format!("over {}", e.window));
    }
    if let Some(n) = &e.note {
        tail.push(if e.value.is_some() {
            format!("({n})")
        } else {
            n.clone()
        });
    }
    if let Some(i) = &e.instance {
        tail.push(format!("[{i}]"));
    }
    [e.signal.clone(), value, rel, tail.join("  ")]
}

/// A table row: an optional leading column, then an evidence row.
type Row = (String, [String; 4]);

/// Rows with aligned columns (an optional first column), each indented.
fn table(out: &mut String, rows: &[Row], indent: &str) {
    let w = |f: &dyn Fn(&Row) -> usize| rows.iter().map(f).max().unwrap_or(0);
    let wl = w(&|r| r.0.chars().count());
    let (w0, w1, w2) = (
        w(&|r| r.1[0].len()),
        w(&|r| r.1[1].chars().count()),
        w(&|r| r.1[2].len()),
    );
    for (lead, [sig, val, rel, tail]) in rows {
        let lead = if wl > 0 {
            format!("{lead:<wl$}  ")
        } else {
            String::new()
        };
        let line = format!("{indent}{lead}{sig:<w0$}  {val:>w1$}  {rel:<w2$}  {tail}");
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

fn evidence_table(out: &mut String, ev: &[Evidence], window: Option<&WindowRef>, indent: &str) {
    let rows: Vec<(String, [String; 4])> =
        ev.iter().map(|e| (String::new(), row(e, window))).collect();
    table(out, &rows, indent);
}

/// One line per rule that did not fire: the first check that kept it from
/// firing, or why it was skipped (the JSON has every check).
fn checked(out: &mut String, ev: &[Evidence], window: Option<&WindowRef>) {
    let mut rows = Vec::new();
    for b in Bottleneck::ALL {
        let mine: Vec<&Evidence> = ev.iter().filter(|e| e.bottleneck == Some(b)).collect();
        let valued = mine.iter().any(|e| e.value.is_some());
        let blockers: Vec<&&Evidence> = mine
            .iter()
            .filter(|e| e.met == Some(false) || (!valued && e.value.is_none()))
            .collect();
        if let Some(e) = blockers.first().copied().or(mine.first()) {
            rows.push((b.as_str().to_string(), row(e, window)));
        }
    }
    let untagged = ev.iter().filter(|e| e.bottleneck.is_none());
    rows.extend(untagged.map(|e| (String::new(), row(e, window))));
    table(out, &rows, "      ");
}

fn criterion(c: TraceCriterion) -> &'static str {
    match c {
        TraceCriterion::SlowestQueueTime => "slowest queue time",
        TraceCriterion::SlowestTtft => "slowest TTFT",
        TraceCriterion::SlowestE2e => "slowest end-to-end",
        TraceCriterion::LargestInterTokenGap => "largest inter-token gap",
        TraceCriterion::LargestSendLag => "largest send lag",
    }
}

fn finding(out: &mut String, f: &Finding, window: Option<&WindowRef>) {
    let who = f
        .instance
        .as_deref()
        .map(|i| format!(" [{i}]"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  {:<8}  {}{who}: {}",
        f.severity.as_str().to_uppercase(),
        f.bottleneck,
        f.summary
    );
    evidence_table(out, &f.evidence, window, "      ");
    for r in &f.remedies {
        let _ = writeln!(out, "      fix: {r}");
    }
    if let (Some(c), false) = (f.wants_traces, f.trace_ids.is_empty()) {
        let _ = writeln!(
            out,
            "      traces ({}): {}",
            criterion(c),
            f.trace_ids.join(", ")
        );
    }
    let _ = writeln!(out, "      runbook: {}", f.runbook);
}

/// The sweep's verdict with its levels.
pub fn render_sweep_text(v: &SweepVerdict) -> String {
    let mut out = format!("Batch sweep: {}\n", v.summary);
    let _ = writeln!(
        out,
        "  {:>6}  {:>12}  {:>10}  {:>6}",
        "batch", "throughput", "efficiency", "gain"
    );
    for l in &v.levels {
        let opt = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.2}"));
        let knee = if v.knee == Some(l.batch_size) {
            "  <- knee"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {:>6}  {:>12.1}  {:>10}  {:>6}{knee}",
            l.batch_size,
            l.throughput,
            opt(l.efficiency),
            opt(l.gain)
        );
    }
    let sweep = WindowRef::Label("sweep".into());
    evidence_table(&mut out, &v.evidence, Some(&sweep), "  ");
    out
}

/// The "Diagnosis" block: status, each finding with its evidence, remedies,
/// trace ids and runbook, then what else was checked (or skipped).
pub fn render_text(d: &Diagnosis) -> String {
    let mut out = String::new();
    let window = d.window.as_ref();
    let over = window.map(|w| format!(" (window {w})")).unwrap_or_default();
    match d.status {
        Status::Healthy if d.findings.is_empty() => {
            let _ = writeln!(out, "Diagnosis: healthy, no bottleneck found{over}");
        }
        Status::Healthy => {
            let _ = writeln!(out, "Diagnosis: healthy, notes only{over}");
        }
        Status::Degraded => {
            let n = d.findings.len();
            let s = if n == 1 { "" } else { "s" };
            let _ = writeln!(out, "Diagnosis: DEGRADED, {n} finding{s}{over}");
        }
    }
    for f in &d.findings {
        finding(&mut out, f, window);
    }
    if !d.evidence.is_empty() {
        out.push_str("  checked, no finding:\n");
        checked(&mut out, &d.evidence, window);
    }
    if let Some(v) = &d.sweep {
        out.push_str(&render_sweep_text(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_in_their_units() {
        assert_eq!(format_value(0.834, Unit::Ratio), "83%");
        assert_eq!(format_value(0.045, Unit::Ratio), "4.5%");
        assert_eq!(format_value(0.0123, Unit::Seconds), "12 ms");
        assert_eq!(format_value(0.0012, Unit::Seconds), "1.20 ms");
        assert_eq!(format_value(2.5, Unit::Seconds), "2.50 s");
        assert_eq!(format_value(33554432.0, Unit::Bytes), "32.0 MiB");
        assert_eq!(format_value(2048.0, Unit::BytesPerSecond), "2.0 KiB/s");
        assert_eq!(format_value(5.04, Unit::Factor), "5.0x");
        assert_eq!(format_value(f64::NAN, Unit::Count), "n/a");
    }

    #[test]
    fn a_sweep_table_marks_its_knee() {
        use crate::signals::SweepPoint;
        let pts: Vec<SweepPoint> = [(1.0, 100.0), (2.0, 190.0), (4.0, 195.0)]
            .iter()
            .map(|&(b, t)| SweepPoint::new(b, t))
            .collect();
        let v = crate::judge_sweep(&pts, 1.0).expect("verdict");
        let text = render_sweep_text(&v);
        let knee_line = text
            .lines()
            .find(|l| l.contains("<- knee"))
            .expect("knee marked");
        assert!(knee_line.trim_start().starts_with('2'), "{text}");
        assert!(text.contains("sweep_gain_beyond_knee"), "{text}");
    }
}
