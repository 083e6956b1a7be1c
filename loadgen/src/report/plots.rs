//! SVG plots: latency CDFs, TTFT and ITL over time, and sweep curves.
//!
//! SVG keeps text as text, so no font files are needed on the machine.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::measure::record::RequestRecord;
use crate::measure::stats::StepSummary;
use crate::plan::step::Shape;

/// At most this many points per scatter plot (evenly strided), to keep files small.
const MAX_POINTS: usize = 20_000;

type Series = (String, Vec<(f64, f64)>);

fn cdf(mut v: Vec<f64>) -> Vec<(f64, f64)> {
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    let stride = (v.len() / MAX_POINTS).max(1);
    v.iter()
        .enumerate()
        .filter(|(i, _)| i % stride == 0 || *i + 1 == v.len())
        .map(|(i, x)| (x * 1e3, (i + 1) as f64 / n))
        .collect()
}

fn thin(v: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    let stride = (v.len() / MAX_POINTS).max(1);
    v.into_iter().step_by(stride).collect()
}

fn upper(series: &[Series], f: impl Fn(&(f64, f64)) -> f64) -> f64 {
    let m = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(&f))
        .fold(0.0, f64::max);
    if m > 0.0 {
        m * 1.05
    } else {
        1.0
    }
}

/// Per step (named by its label), the points `f` gives for each successful request.
fn by_step<P>(
    records: &[RequestRecord],
    steps: &[StepSummary],
    f: impl Fn(&RequestRecord) -> Vec<P>,
) -> Vec<(String, Vec<P>)> {
    steps
        .iter()
        .map(|s| {
            let pts = records
                .iter()
                .filter(|r| r.step == s.index && r.outcome.is_ok())
                .flat_map(&f)
                .collect();
            (s.label.clone(), pts)
        })
        .collect()
}

/// One chart: lines (`lines = true`) or points per series.
fn chart(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[Series],
    lines: bool,
    y_max: Option<f64>,
) -> anyhow::Result<()> {
    let x_max = upper(series, |p| p.0);
    let y_max = y_max.unwrap_or_else(|| upper(series, |p| p.1));
    let mut c = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    c.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw()?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        if lines {
            c.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
        } else {
            c.draw_series(pts.iter().map(|p| Circle::new(*p, 2, color.filled())))?
        }
        .label(name.clone())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    if series.len() > 1 || lines {
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
    }
    Ok(())
}

/// Write every plot that applies; returns the files written.
pub fn write_plots(
    dir: &Path,
    records: &[RequestRecord],
    steps: &[StepSummary],
) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = vec![
        latency_cdfs(dir, records, steps)?,
        ttft_over_time(dir, records, steps)?,
        itl_over_time(dir, records, steps)?,
    ];
    if steps.len() > 1 {
        written.extend(sweep_plots(dir, steps)?);
    }
    Ok(written)
}

/// `latency_cdf.svg`: TTFT, ITL and E2E CDFs, one line per step.
fn latency_cdfs(
    dir: &Path,
    records: &[RequestRecord],
    steps: &[StepSummary],
) -> anyhow::Result<PathBuf> {
    let path = dir.join("latency_cdf.svg");
    draw_cdfs(&path, records, steps)?;
    Ok(path)
}

fn draw_cdfs(path: &Path, records: &[RequestRecord], steps: &[StepSummary]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 1050)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((3, 1));
    let ttft = by_step(records, steps, |r| r.ttft().into_iter().collect());
    let itl = by_step(records, steps, |r| r.itl().collect());
    let e2e = by_step(records, steps, |r| vec![r.e2e()]);
    for (area, (title, data)) in areas.iter().zip([
        ("TTFT", ttft),
        ("Inter-token latency", itl),
        ("End-to-end latency", e2e),
    ]) {
        let cdfs: Vec<Series> = data.into_iter().map(|(n, p)| (n, cdf(p))).collect();
        chart(
            area,
            &format!("{title} CDF"),
            ("ms", "fraction of requests"),
            &cdfs,
            true,
            Some(1.0),
        )?;
    }
    root.present()?;
    Ok(())
}

/// A scatter of points over the run's time, one colour per step.
fn over_time(
    path: PathBuf,
    title: &str,
    y_desc: &str,
    series: Vec<Series>,
) -> anyhow::Result<PathBuf> {
    {
        let root = SVGBackend::new(&path, (900, 450)).into_drawing_area();
        root.fill(&WHITE)?;
        let pts: Vec<Series> = series.into_iter().map(|(n, p)| (n, thin(p))).collect();
        chart(
            &root,
            title,
            ("seconds since start", y_desc),
            &pts,
            false,
            None,
        )?;
        root.present()?;
    }
    Ok(path)
}

/// `ttft_over_time.svg`: each request's TTFT at the time its first token came.
fn ttft_over_time(
    dir: &Path,
    records: &[RequestRecord],
    steps: &[StepSummary],
) -> anyhow::Result<PathBuf> {
    let pts = by_step(records, steps, |r| {
        r.first_token()
            .zip(r.ttft())
            .map(|(t, v)| (t.as_secs_f64(), v * 1e3))
            .into_iter()
            .collect()
    });
    over_time(
        dir.join("ttft_over_time.svg"),
        "TTFT over time",
        "TTFT (ms)",
        pts,
    )
}

/// `itl_over_time.svg`: every inter-token gap at the time it ended.
fn itl_over_time(
    dir: &Path,
    records: &[RequestRecord],
    steps: &[StepSummary],
) -> anyhow::Result<PathBuf> {
    let pts = by_step(records, steps, |r| {
        r.token_times
            .windows(2)
            .map(|w| (w[1].as_secs_f64(), (w[1] - w[0]).as_secs_f64() * 1e3))
            .collect()
    });
    over_time(
        dir.join("itl_over_time.svg"),
        "Inter-token latency over time",
        "gap (ms)",
        pts,
    )
}

/// Throughput and latency against the swept variable: concurrency (batch size)
/// when every step is closed-loop, else the achieved request rate.
fn sweep_plots(dir: &Path, steps: &[StepSummary]) -> anyhow::Result<Vec<PathBuf>> {
    let closed = steps
        .iter()
        .all(|s| matches!(s.shape, Shape::Closed { .. }));
    let x = |s: &StepSummary| match (&s.shape, closed) {
        (Shape::Closed { concurrency }, true) => *concurrency as f64,
        _ => s.throughput.requests_per_s,
    };
    let x_desc = if closed {
        "concurrency (batch size)"
    } else {
        "achieved requests/s"
    };
    let mut sorted: Vec<&StepSummary> = steps.iter().collect();
    sorted.sort_by(|a, b| x(a).total_cmp(&x(b)));
    let line = |f: &dyn Fn(&StepSummary) -> Option<f64>| -> Vec<(f64, f64)> {
        sorted
            .iter()
            .filter_map(|s| f(s).map(|v| (x(s), v)))
            .collect()
    };
    let thr: Vec<Series> = vec![
        (
            "requests/s".into(),
            line(&|s| Some(s.throughput.requests_per_s)),
        ),
        (
            "output tokens/s / 100".into(),
            line(&|s| s.throughput.output_tokens_per_s.map(|v| v / 100.0)),
        ),
    ];
    let lat: Vec<Series> = vec![
        (
            "TTFT p99".into(),
            line(&|s| s.ttft.as_ref().map(|d| d.p99 * 1e3)),
        ),
        (
            "ITL p99".into(),
            line(&|s| s.itl.as_ref().map(|d| d.p99 * 1e3)),
        ),
        (
            "E2E p50".into(),
            line(&|s| s.e2e.as_ref().map(|d| d.p50 * 1e3)),
        ),
        (
            "E2E p99".into(),
            line(&|s| s.e2e.as_ref().map(|d| d.p99 * 1e3)),
        ),
    ];
    let mut out = Vec::new();
    for (name, title, y, series) in [
        ("sweep_throughput.svg", "Throughput", "per second", thr),
        ("sweep_latency.svg", "Latency", "ms", lat),
    ] {
        let path = dir.join(name);
        {
            let root = SVGBackend::new(&path, (900, 500)).into_drawing_area();
            root.fill(&WHITE)?;
            chart(
                &root,
                &format!("{title} against {x_desc}"),
                (x_desc, y),
                &series,
                true,
                None,
            )?;
            root.present()?;
        }
        out.push(path);
    }
    Ok(out)
}
