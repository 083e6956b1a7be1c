//! Judging a batch sweep: where throughput stops rising with batch size, and why.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::finding::{Comparison, Evidence, Unit, WindowRef};
use crate::signals::SweepPoint;
use crate::thresholds::*;

/// Why throughput stopped rising.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepLimit {
    /// The server did not batch what was offered (its batch limit or KV space capped it).
    UnderBatched,
    GpuSaturated,
    CpuSaturated,
    /// Compute has room and batches are full, yet the added requests only wait.
    Queueing,
    Unknown,
}

impl SweepLimit {
    pub fn as_str(self) -> &'static str {
        match self {
            SweepLimit::UnderBatched => "under_batched",
            SweepLimit::GpuSaturated => "gpu_saturated",
            SweepLimit::CpuSaturated => "cpu_saturated",
            SweepLimit::Queueing => "queueing",
            SweepLimit::Unknown => "unknown",
        }
    }

    fn explain(self) -> &'static str {
        match self {
            SweepLimit::UnderBatched => {
                "the server does not batch what is offered (raise --max-batch-size, or --max-total-tokens if KV space binds)"
            }
            SweepLimit::GpuSaturated => "the GPU is saturated",
            SweepLimit::CpuSaturated => "the CPU is saturated",
            SweepLimit::Queueing => "the added requests only queue (latency grows with the batch)",
            SweepLimit::Unknown => "no signal says why (CPU, GPU and server batch size unknown or unremarkable)",
        }
    }
}

impl fmt::Display for SweepLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One level of the sweep as judged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SweepLevel {
    pub batch_size: f64,
    pub throughput: f64,
    /// throughput(b) / (b/b0 × throughput(b0)), b0 the smallest level (loadgen's definition).
    pub efficiency: Option<f64>,
    /// Throughput gained from the previous level, as a share of linear scaling.
    pub gain: Option<f64>,
}

/// The verdict on a batch sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepVerdict {
    pub levels: Vec<SweepLevel>,
    /// The largest batch size worth running: beyond it every level adds less than
    /// [`SWEEP_FLAT_GAIN`] of linear scaling. `None`: still rising at the largest level.
    pub knee: Option<f64>,
    pub limit: Option<SweepLimit>,
    pub summary: String,
    pub evidence: Vec<Evidence>,
}

fn window() -> WindowRef {
    WindowRef::Label("sweep".into())
}

fn check(signal: &str, value: f64, unit: Unit, cmp: Comparison, t: (&str, f64)) -> Evidence {
    Evidence::check(signal, value, unit, cmp, t, window())
}

/// Valid levels in batch order (one per batch size, the last given wins).
fn levels(points: &[SweepPoint]) -> Vec<SweepPoint> {
    let mut v: Vec<SweepPoint> = points
        .iter()
        .copied()
        .filter(|p| p.batch_size.is_finite() && p.batch_size > 0.0)
        .filter(|p| p.throughput.is_finite() && p.throughput >= 0.0)
        .collect();
    v.sort_by(|a, b| a.batch_size.total_cmp(&b.batch_size));
    v.dedup_by(|later, earlier| {
        let same = later.batch_size == earlier.batch_size;
        if same {
            *earlier = *later;
        }
        same
    });
    v
}

/// The first level beyond which no level gains [`SWEEP_FLAT_GAIN`] of linear scaling.
fn knee_index(v: &[SweepPoint]) -> Option<usize> {
    (0..v.len().saturating_sub(1)).find(|&i| {
        let k = v[i];
        v[i + 1..].iter().all(|p| {
            p.throughput
                <= k.throughput * (1.0 + SWEEP_FLAT_GAIN * (p.batch_size / k.batch_size - 1.0))
        })
    })
}

/// Why throughput stopped between the knee `k` and the next level `p`.
fn why(k: &SweepPoint, p: &SweepPoint, cpu_allowance: f64) -> (SweepLimit, Vec<Evidence>) {
    use Comparison::*;
    let mut ev = Vec::new();
    if let Some(b) = p.server_batch_mean {
        let e = check(
            "sweep_offered_over_server_batch",
            p.batch_size / b.max(f64::MIN_POSITIVE),
            Unit::Factor,
            AtLeast,
            ("UNDER_BATCHING_DEMAND_RATIO", UNDER_BATCHING_DEMAND_RATIO),
        );
        let hit = e.is_met();
        ev.push(e);
        if hit {
            return (SweepLimit::UnderBatched, ev);
        }
    }
    if let Some(g) = p.gpu_utilization {
        let e = check(
            "sweep_gpu_utilization",
            g,
            Unit::Ratio,
            AtLeast,
            ("GPU_SATURATION", GPU_SATURATION),
        );
        let hit = e.is_met();
        ev.push(e);
        if hit {
            return (SweepLimit::GpuSaturated, ev);
        }
    }
    if let Some(c) = p.process_cpu {
        let e = check(
            "sweep_process_cpu_of_allowance",
            c / cpu_allowance,
            Unit::Ratio,
            AtLeast,
            ("CPU_SATURATION", CPU_SATURATION),
        );
        let hit = e.is_met();
        ev.push(e);
        if hit {
            return (SweepLimit::CpuSaturated, ev);
        }
    }
    if let (Some(lk), Some(lp)) = (k.latency_p50_s, p.latency_p50_s) {
        if lk > 0.0 {
            // Latency growth as a share of the batch growth.
            let share = (lp / lk - 1.0) / (p.batch_size / k.batch_size - 1.0);
            let e = check(
                "sweep_latency_growth_share",
                share,
                Unit::Ratio,
                AtLeast,
                ("SWEEP_LATENCY_GROWTH", SWEEP_LATENCY_GROWTH),
            );
            let hit = e.is_met();
            ev.push(e);
            if hit {
                return (SweepLimit::Queueing, ev);
            }
        }
    }
    (SweepLimit::Unknown, ev)
}

/// Judges a batch sweep; `None` with fewer than two valid levels.
/// `cpu_allowance` is the fraction of all cores the server may use (1 when unknown).
pub fn judge_sweep(points: &[SweepPoint], cpu_allowance: f64) -> Option<SweepVerdict> {
    let v = levels(points);
    if v.len() < 2 {
        return None;
    }
    let allowance = if cpu_allowance > 0.0 {
        cpu_allowance.min(1.0)
    } else {
        1.0
    };
    let base = v[0];
    let judged: Vec<SweepLevel> = v
        .iter()
        .enumerate()
        .map(|(i, p)| SweepLevel {
            batch_size: p.batch_size,
            throughput: p.throughput,
            efficiency: (base.throughput > 0.0)
                .then(|| p.throughput / (p.batch_size / base.batch_size * base.throughput)),
            gain: (i > 0 && v[i - 1].throughput > 0.0).then(|| {
                (p.throughput / v[i - 1].throughput - 1.0)
                    / (p.batch_size / v[i - 1].batch_size - 1.0)
            }),
        })
        .collect();
    let Some(i) = knee_index(&v) else {
        let last = judged[judged.len() - 1];
        let summary = format!(
            "Throughput still rises at the largest batch ({:.0}, efficiency {}): try larger batches.",
            last.batch_size,
            last.efficiency.map_or("n/a".into(), |e| format!("{e:.2}"))
        );
        return Some(SweepVerdict {
            levels: judged,
            knee: None,
            limit: None,
            summary,
            evidence: Vec::new(),
        });
    };
    let (k, p) = (v[i], v[i + 1]);
    let gain = (p.throughput / k.throughput.max(f64::MIN_POSITIVE) - 1.0)
        / (p.batch_size / k.batch_size - 1.0);
    let mut evidence = vec![
        Evidence::info("sweep_knee_batch_size", k.batch_size, Unit::Count, window()),
        check(
            "sweep_gain_beyond_knee",
            gain,
            Unit::Ratio,
            Comparison::Below,
            ("SWEEP_FLAT_GAIN", SWEEP_FLAT_GAIN),
        ),
    ];
    let (limit, why_ev) = why(&k, &p, allowance);
    evidence.extend(why_ev);
    let summary = format!(
        "Throughput stops rising beyond batch {:.0} ({:.1}/s; {:.0} adds {:.0}% of linear scaling): {}.",
        k.batch_size,
        k.throughput,
        p.batch_size,
        gain * 100.0,
        limit.explain()
    );
    Some(SweepVerdict {
        levels: judged,
        knee: Some(k.batch_size),
        limit: Some(limit),
        summary,
        evidence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/performance.md's engine table: aggregate decode tokens/s by batch.
    fn cpu_engine() -> Vec<SweepPoint> {
        [(1.0, 150.0), (4.0, 374.5), (8.0, 558.8), (16.0, 579.9)]
            .iter()
            .map(|&(b, t)| SweepPoint {
                server_batch_mean: Some(b),
                process_cpu: Some(0.98),
                ..SweepPoint::new(b, t)
            })
            .collect()
    }

    #[test]
    fn the_cpu_engine_flattens_at_8_because_the_cpu_is_saturated() {
        let v = judge_sweep(&cpu_engine(), 1.0).expect("verdict");
        assert_eq!(v.knee, Some(8.0));
        assert_eq!(v.limit, Some(SweepLimit::CpuSaturated));
        assert!(v.summary.contains("beyond batch 8"), "{}", v.summary);
        let eff = v.levels[3].efficiency.expect("efficiency");
        assert!((eff - 579.9 / (16.0 * 150.0)).abs() < 1e-9);
    }

    #[test]
    fn a_sweep_still_rising_has_no_knee() {
        let pts: Vec<SweepPoint> = [(1.0, 100.0), (2.0, 180.0), (4.0, 300.0)]
            .iter()
            .map(|&(b, t)| SweepPoint::new(b, t))
            .collect();
        let v = judge_sweep(&pts, 1.0).expect("verdict");
        assert_eq!((v.knee, v.limit), (None, None));
        assert!(v.summary.contains("still rises"));
    }

    #[test]
    fn a_capped_server_is_under_batched_not_cpu_bound() {
        // --max-batch-size 1: the server runs batches of 1 whatever the clients.
        let pts: Vec<SweepPoint> = [(1.0, 100.0), (2.0, 101.0), (4.0, 99.0), (8.0, 100.5)]
            .iter()
            .map(|&(b, t)| SweepPoint {
                server_batch_mean: Some(1.0),
                process_cpu: Some(0.95),
                latency_p50_s: Some(b * 0.5),
                ..SweepPoint::new(b, t)
            })
            .collect();
        let v = judge_sweep(&pts, 1.0).expect("verdict");
        assert_eq!(
            (v.knee, v.limit),
            (Some(1.0), Some(SweepLimit::UnderBatched))
        );
    }

    #[test]
    fn full_batches_with_idle_compute_and_growing_latency_are_queueing() {
        let pts: Vec<SweepPoint> = [(1.0, 100.0), (2.0, 190.0), (4.0, 195.0)]
            .iter()
            .map(|&(b, t)| SweepPoint {
                server_batch_mean: Some(b),
                process_cpu: Some(0.3),
                latency_p50_s: Some(if b < 4.0 { 1.0 } else { 1.9 }),
                ..SweepPoint::new(b, t)
            })
            .collect();
        let v = judge_sweep(&pts, 1.0).expect("verdict");
        assert_eq!((v.knee, v.limit), (Some(2.0), Some(SweepLimit::Queueing)));
    }

    #[test]
    fn a_small_late_gain_is_still_flat_and_a_dip_does_not_hide_a_rise() {
        let pts: Vec<SweepPoint> = [(1.0, 100.0), (2.0, 195.0), (4.0, 190.0), (8.0, 400.0)]
            .iter()
            .map(|&(b, t)| SweepPoint::new(b, t))
            .collect();
        let v = judge_sweep(&pts, 1.0).expect("verdict");
        assert_eq!(v.knee, None, "throughput rose again at 8");
        assert_eq!(v.limit, None);
        assert!(judge_sweep(&pts[..1], 1.0).is_none());
    }
}
