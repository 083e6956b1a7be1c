//! The final table printed to the terminal.

use std::fmt::Write;

use crate::measure::promtext::Agreement;
use crate::measure::stats::{Dist, StepSummary};
use crate::plan::sweep::SweepResult;

fn ms(v: f64) -> String {
    format!("{:.2}", v * 1e3)
}

fn dist_row(out: &mut String, name: &str, d: &Option<Dist>) {
    let _ = match d {
        Some(d) => writeln!(
            out,
            "  {name:<18}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            ms(d.mean),
            ms(d.p50),
            ms(d.p90),
            ms(d.p95),
            ms(d.p99),
            ms(d.max)
        ),
        None => writeln!(out, "  {name:<18}{:>10}", "n/a"),
    };
}

fn agreement(name: &str, a: &Agreement) -> String {
    let mean = |v: Option<f64>| v.map_or("n/a".to_string(), ms);
    format!(
        "{name} server mean {} ms vs client {} ms over {}/{} requests, within one bucket: {}",
        mean(a.server_mean),
        mean(a.client_mean),
        a.server_count,
        a.client_count,
        if a.within_one_bucket { "yes" } else { "NO" }
    )
}

/// One step: counts, throughput, the latency table, then what else applies.
fn step_block(out: &mut String, s: &StepSummary) {
    let _ = writeln!(
        out,
        "step {}: {}  ({} sent, {} ok, {} errors; {} counted over {:.2} s)",
        s.index,
        s.label,
        s.requests.sent,
        s.requests.ok,
        s.requests.errors,
        s.requests.counted,
        s.window.seconds
    );
    let tok = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.1}"));
    let _ = writeln!(
        out,
        "  throughput: {:.3} req/s, {} output tok/s, {} total tok/s (token counts: {})",
        s.throughput.requests_per_s,
        tok(s.throughput.output_tokens_per_s),
        tok(s.throughput.total_tokens_per_s),
        s.token_counts
    );
    latency_rows(out, s);
    cache_and_turn_lines(out, s);
    outcome_lines(out, s);
    server_lines(out, s);
    for slow in s.slowest.iter().take(3) {
        let _ = writeln!(
            out,
            "  slow: request {} e2e {} ms trace {} (server trace {})",
            slow.id,
            ms(slow.e2e_from_scheduled_s),
            slow.trace_id,
            slow.server_trace_id.as_deref().unwrap_or("none")
        );
    }
    for w in &s.warnings {
        let _ = writeln!(out, "  WARNING: {w}");
    }
}

fn latency_rows(out: &mut String, s: &StepSummary) {
    let _ = writeln!(
        out,
        "  {:<18}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
        "latency (ms)", "mean", "p50", "p90", "p95", "p99", "max"
    );
    dist_row(out, "TTFT", &s.ttft);
    dist_row(out, "TTFT from sched.", &s.ttft_from_scheduled);
    dist_row(out, "ITL", &s.itl);
    dist_row(out, "TPOT", &s.tpot);
    dist_row(out, "E2E", &s.e2e);
    dist_row(out, "E2E from sched.", &s.e2e_from_scheduled);
    dist_row(out, "send lag", &s.send_lag);
}

/// Prefix-cache hits the server reported, and per-turn rows of conversations.
fn cache_and_turn_lines(out: &mut String, s: &StepSummary) {
    if let Some(c) = &s.cached_tokens {
        let pct = c.input_fraction.map_or(String::new(), |f| {
            format!(" ({:.1}% of their prompt tokens)", f * 100.0)
        });
        let _ = writeln!(
            out,
            "  cached prompt tokens: {} in {} requests{pct}, mean {:.1} per request",
            c.sum, c.requests, c.mean
        );
    }
    if s.turns.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "  {:<10}{:>6}{:>8}{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}",
        "turn",
        "ok",
        "errors",
        "TTFT p50",
        "TTFT p99",
        "ITL p50",
        "E2E p50",
        "input tok",
        "cached tok"
    );
    let p = |d: &Option<Dist>, f: fn(&Dist) -> f64| d.as_ref().map_or("n/a".into(), |d| ms(f(d)));
    for t in &s.turns {
        let input = t
            .input_tokens
            .as_ref()
            .map_or("n/a".into(), |d| format!("{:.1}", d.mean));
        let cached = t
            .cached_tokens
            .as_ref()
            .map_or("n/a".into(), |c| format!("{:.1}", c.mean));
        let _ = writeln!(
            out,
            "  {:<10}{:>6}{:>8}{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}",
            t.turn,
            t.counted,
            t.errors,
            p(&t.ttft, |d| d.p50),
            p(&t.ttft, |d| d.p99),
            p(&t.itl, |d| d.p50),
            p(&t.e2e, |d| d.p50),
            input,
            cached
        );
    }
}

/// Goodput, batch efficiency, errors and loadgen's own CPU.
fn outcome_lines(out: &mut String, s: &StepSummary) {
    if let Some(g) = &s.goodput {
        let _ = writeln!(
            out,
            "  goodput ({}): {:.3} req/s, {:.1}% of requests met the SLO",
            g.slo,
            g.requests_per_s,
            g.attainment * 100.0
        );
    }
    if let Some(e) = s.batch_efficiency {
        let _ = writeln!(out, "  batch efficiency: {e:.3}");
    }
    for (kind, n) in &s.errors {
        let example = s.error_examples.get(kind).map(String::as_str).unwrap_or("");
        let _ = writeln!(out, "  errors {kind}: {n} (e.g. {example})");
    }
    if let (Some(mean), Some(max)) = (s.client.cpu_mean_pct, s.client.cpu_max_pct) {
        let _ = writeln!(
            out,
            "  loadgen CPU: mean {mean:.1}%, max {max:.1}% of {} cores",
            s.client.cores
        );
    }
}

/// What the server's own metrics said about the step.
fn server_lines(out: &mut String, s: &StepSummary) {
    let Some(v) = &s.server else {
        return;
    };
    if let Some(a) = &v.ttft {
        let _ = writeln!(out, "  {}", agreement("TTFT:", a));
    }
    if let Some(a) = &v.e2e {
        let _ = writeln!(out, "  {}", agreement("E2E: ", a));
    }
    if let Some(b) = v.decode_batch_size_mean {
        let _ = writeln!(out, "  server decode batch size mean: {b:.2}");
    }
}

/// The whole table: one block per step, then a comparison for sweeps.
pub fn render_table(steps: &[StepSummary], sweep: &SweepResult) -> String {
    let mut out = String::new();
    for s in steps {
        step_block(&mut out, s);
        out.push('\n');
    }
    if steps.len() > 1 {
        let _ = writeln!(
            out,
            "{:<36}{:>10}{:>12}{:>12}{:>12}{:>12}{:>10}{:>8}",
            "step", "req/s", "out tok/s", "TTFT p99", "ITL p99", "E2E p99", "goodput", "eff."
        );
        for s in steps {
            let p99 = |d: &Option<Dist>| d.as_ref().map_or("n/a".into(), |d| ms(d.p99));
            let opt = |v: Option<f64>, p: usize| v.map_or("n/a".into(), |v| format!("{v:.p$}"));
            let _ = writeln!(
                out,
                "{:<36}{:>10.3}{:>12}{:>12}{:>12}{:>12}{:>10}{:>8}",
                s.label.chars().take(35).collect::<String>(),
                s.throughput.requests_per_s,
                opt(s.throughput.output_tokens_per_s, 1),
                p99(&s.ttft),
                p99(&s.itl),
                p99(&s.e2e),
                opt(s.goodput.as_ref().map(|g| g.requests_per_s), 3),
                opt(s.batch_efficiency, 3),
            );
        }
    }
    if let Some(m) = sweep.max_requests_per_s {
        let _ = writeln!(out, "maximum throughput: {m:.3} req/s");
    }
    if sweep.kind == "slo_search" {
        let _ = match sweep.slo_max_rate {
            Some(r) => writeln!(out, "highest rate meeting the SLO: {r:.3} req/s"),
            None => writeln!(out, "no tested rate met the SLO"),
        };
    }
    out
}
