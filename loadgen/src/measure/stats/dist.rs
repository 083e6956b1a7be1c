//! Summary statistics of one metric. Percentiles are exact, nearest-rank on
//! sorted samples: all samples are kept, so there is no histogram error to explain.

use serde::Serialize;

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
}
