//! Which steps a run has: one step, a batch sweep, a rate sweep, or an SLO search.
//!
//! Rate sweeps and the SLO search first measure the maximum sustainable
//! throughput with a saturating closed-loop step, then choose open-loop rates
//! from it, so the rates fit the server rather than a guess.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::measure::stats::StepSummary;
use crate::plan::cli::Cli;
use crate::plan::schedule::{Arrivals, Limit};
use crate::plan::step::{Shape, StepSpec};

/// Runs one step and returns its summary (implemented by the app, which adds
/// server scrapes and CPU accounting around `send::runner::run_step`).
pub trait StepRunner {
    fn step(
        &mut self,
        spec: StepSpec,
    ) -> impl std::future::Future<Output = anyhow::Result<StepSummary>>;
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct SweepResult {
    /// single, batch, rate or slo_search.
    pub kind: String,
    /// Request throughput of the saturating step (rate sweep, SLO search).
    pub max_requests_per_s: Option<f64>,
    /// Highest tested rate whose SLO attainment passed (SLO search).
    pub slo_max_rate: Option<f64>,
    pub slo_attainment_target: Option<f64>,
}

fn limit(cli: &Cli) -> Limit {
    match (cli.duration, cli.requests) {
        (Some(d), _) => Limit::Duration(Duration::from_secs_f64(d)),
        (None, Some(n)) => Limit::Requests(n),
        (None, None) => Limit::Requests(100),
    }
}

fn spec(
    cli: &Cli,
    index: usize,
    label: String,
    shape: Shape,
    batch_size: Option<usize>,
) -> StepSpec {
    StepSpec {
        index,
        label,
        shape,
        limit: limit(cli),
        warmup: Duration::from_secs_f64(cli.warmup),
        cooldown: Duration::from_secs_f64(cli.cooldown),
        batch_size,
    }
}

fn open(cli: &Cli, rate: f64) -> Shape {
    Shape::Open {
        rate,
        arrivals: cli.arrivals(),
        burstiness: cli.burstiness.unwrap_or(1.0),
    }
}

fn rate_label(rate: f64, arrivals: Arrivals) -> String {
    let kind = match arrivals {
        Arrivals::Constant => "const",
        Arrivals::Poisson => "poisson",
        Arrivals::Gamma => "gamma",
    };
    format!("rate={rate:.3}/s {kind}")
}

/// Run every step the flags ask for, in order.
pub async fn run<R: StepRunner>(cli: &Cli, r: &mut R) -> anyhow::Result<SweepResult> {
    if let Some(sizes) = &cli.batch_sizes {
        for (i, b) in sizes.iter().enumerate() {
            let shape = Shape::Closed { concurrency: *b };
            r.step(spec(cli, i, format!("batch={b}"), shape, Some(*b)))
                .await?;
        }
        return Ok(SweepResult {
            kind: "batch".into(),
            ..Default::default()
        });
    }
    if cli.rate_sweep || cli.slo_search {
        return rate_search(cli, r).await;
    }
    let (label, shape) = match (cli.rate, cli.concurrency) {
        (Some(rate), _) => (rate_label(rate, cli.arrivals()), open(cli, rate)),
        (None, c) => {
            let c = c.unwrap_or(1);
            (format!("concurrency={c}"), Shape::Closed { concurrency: c })
        }
    };
    r.step(spec(cli, 0, label, shape, None)).await?;
    Ok(SweepResult {
        kind: "single".into(),
        ..Default::default()
    })
}

async fn rate_search<R: StepRunner>(cli: &Cli, r: &mut R) -> anyhow::Result<SweepResult> {
    let c = cli.sweep_concurrency;
    let max = r
        .step(spec(
            cli,
            0,
            format!("max concurrency={c}"),
            Shape::Closed { concurrency: c },
            None,
        ))
        .await?;
    let max_rate = max.throughput.requests_per_s;
    let mut result = SweepResult {
        kind: if cli.slo_search { "slo_search" } else { "rate" }.into(),
        max_requests_per_s: Some(max_rate),
        ..Default::default()
    };
    anyhow::ensure!(
        max_rate > 0.0,
        "the maximum-throughput step completed no request; cannot choose sweep rates"
    );
    if cli.rate_sweep {
        for (i, f) in cli.sweep_fractions.iter().enumerate() {
            let rate = f * max_rate;
            let label = format!(
                "{} ({:.0}% of max)",
                rate_label(rate, cli.arrivals()),
                f * 100.0
            );
            r.step(spec(cli, i + 1, label, open(cli, rate), None))
                .await?;
        }
        return Ok(result);
    }
    // Bisection on the rate: lo always passes (0 trivially), hi is the ceiling.
    let (target, mut lo, mut hi) = (cli.slo_attainment, 0.0f64, max_rate);
    for i in 0..cli.slo_search_steps {
        let rate = if i == 0 { hi } else { (lo + hi) / 2.0 };
        let s = r
            .step(spec(
                cli,
                i as usize + 1,
                format!("slo {}", rate_label(rate, cli.arrivals())),
                open(cli, rate),
                None,
            ))
            .await?;
        let passed = s.goodput.as_ref().is_some_and(|g| g.attainment >= target);
        if passed {
            lo = rate;
            if i == 0 {
                break; // the server meets the SLO even at its maximum rate
            }
        } else {
            hi = rate;
        }
    }
    result.slo_max_rate = (lo > 0.0).then_some(lo);
    result.slo_attainment_target = Some(target);
    Ok(result)
}

/// Batch efficiency = throughput(b) / (b/b0 × throughput(b0)), b0 the smallest
/// level (normally 1). Output tokens/s when the server counts tokens, else requests/s.
pub fn batch_efficiency(steps: &mut [StepSummary]) {
    let thr = |s: &StepSummary| {
        s.throughput
            .output_tokens_per_s
            .unwrap_or(s.throughput.requests_per_s)
    };
    let Some(base) = steps
        .iter()
        .filter(|s| s.batch_size.is_some())
        .min_by_key(|s| s.batch_size)
        .map(|s| (s.batch_size.unwrap_or(1) as f64, thr(s)))
    else {
        return;
    };
    for s in steps.iter_mut() {
        if let Some(b) = s.batch_size {
            if base.1 > 0.0 {
                s.batch_efficiency = Some(thr(s) / (b as f64 / base.0 * base.1));
            }
        }
    }
}
