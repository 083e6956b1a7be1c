//! Small statistics the rules share: means, a steady level, and a least-squares
//! slope with its confidence interval (as guidellm's over-saturation detector).

use crate::thresholds::{MIN_SAMPLES, STEADY_FRACTION};

/// Mean of the values (`None` for none).
pub fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    for v in values {
        sum += v;
        n += 1;
    }
    (n > 0).then(|| sum / n as f64)
}

/// The `q` quantile with Prometheus' interpolation (`quantile_over_time`):
/// rank `q·(n−1)` between the sorted values, linearly interpolated.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = q * (v.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    let w = rank - lo as f64;
    Some(v[lo] * (1.0 - w) + v[hi] * w)
}

/// The level the values stay at or above [`STEADY_FRACTION`] of the time: the
/// `1 − STEADY_FRACTION` quantile. Needs [`MIN_SAMPLES`] values.
pub fn steady_level(values: &[f64]) -> Option<f64> {
    if (values.len() as f64) < MIN_SAMPLES {
        return None;
    }
    quantile(values, 1.0 - STEADY_FRACTION)
}

/// A least-squares line through `(x, y)` points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearFit {
    pub slope: f64,
    pub intercept: f64,
    /// Share of the variance the line explains (0 for a flat series).
    pub r2: f64,
    /// Standard error of the slope.
    pub slope_se: f64,
    pub n: usize,
}

impl LinearFit {
    /// Fits a line; `None` with fewer than [`MIN_SAMPLES`] points or all at one `x`.
    pub fn fit(points: &[(f64, f64)]) -> Option<Self> {
        let n = points.len();
        if (n as f64) < MIN_SAMPLES.max(3.0) {
            return None;
        }
        let nf = n as f64;
        let mx = points.iter().map(|p| p.0).sum::<f64>() / nf;
        let my = points.iter().map(|p| p.1).sum::<f64>() / nf;
        let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
        for &(x, y) in points {
            let (dx, dy) = (x - mx, y - my);
            sxx += dx * dx;
            sxy += dx * dy;
            syy += dy * dy;
        }
        if sxx <= 0.0 || !sxx.is_finite() {
            return None;
        }
        let slope = sxy / sxx;
        let sse = (syy - slope * sxy).max(0.0);
        let r2 = if syy > 0.0 {
            (1.0 - sse / syy).clamp(0.0, 1.0)
        } else {
            0.0
        };
        Some(Self {
            slope,
            intercept: my - slope * mx,
            r2,
            slope_se: (sse / (nf - 2.0) / sxx).sqrt(),
            n,
        })
    }

    /// The lower end of the slope's two-sided 95% interval
    /// ([`crate::thresholds::SLOPE_CONFIDENCE`]).
    pub fn slope_lower_bound(&self) -> f64 {
        self.slope - t_critical_95(self.n.saturating_sub(2)) * self.slope_se
    }

    /// The fitted value at `x`.
    pub fn at(&self, x: f64) -> f64 {
        self.intercept + self.slope * x
    }
}

/// Student's t for a two-sided 95% interval with `df` degrees of freedom.
pub fn t_critical_95(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => TABLE[df - 1],
        // Within 0.002 of the exact value from 31 degrees of freedom on.
        _ => 1.96 + 2.5 / df as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quantile_interpolates_like_prometheus() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&v, 0.25), Some(2.0));
        assert_eq!(quantile(&v, 0.1), Some(1.4));
        assert_eq!(quantile(&v, 1.0), Some(5.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(steady_level(&[1.0, 1.0, 1.0, 1.0]), None, "too few samples");
        assert_eq!(steady_level(&[0.9, 0.9, 0.9, 0.0, 0.9]), Some(0.9));
    }

    #[test]
    fn confidence_table_matches_the_constant() {
        assert_eq!(crate::thresholds::SLOPE_CONFIDENCE, 0.95);
        assert!((t_critical_95(60) - 2.000).abs() < 0.003);
        assert!((t_critical_95(120) - 1.980).abs() < 0.002);
    }

    #[test]
    fn flat_noise_has_no_significant_slope() {
        let pts: Vec<(f64, f64)> = (0..20)
            .map(|i| (i as f64, if i % 2 == 0 { 1.0 } else { -1.0 }))
            .collect();
        let fit = LinearFit::fit(&pts).expect("enough points");
        assert!(fit.slope_lower_bound() < 0.0);
        assert!(fit.r2 < 0.1);
    }

    proptest! {
        #[test]
        fn exact_lines_are_recovered(a in -1e6f64..1e6, b in -1e3f64..1e3, n in 5usize..200, dx in 0.1f64..60.0) {
            let pts: Vec<(f64, f64)> = (0..n).map(|i| { let x = i as f64 * dx; (x, a + b * x) }).collect();
            let fit = LinearFit::fit(&pts).expect("enough points");
            let scale = 1e-6 * (1.0 + a.abs() + b.abs() * dx * n as f64);
            prop_assert!((fit.slope - b).abs() * dx * n as f64 <= scale);
            prop_assert!((fit.at(0.0) - a).abs() <= scale);
            if b.abs() > 1e-3 {
                prop_assert!(fit.r2 > 0.999_999);
                prop_assert!(fit.slope_lower_bound() * b.signum() > 0.0 || fit.slope_se == 0.0);
            }
        }

        #[test]
        fn slope_ignores_offsets_and_scales_with_values(
            ys in proptest::collection::vec(-1e3f64..1e3, 5..60),
            offset in -1e4f64..1e4,
            k in 0.1f64..10.0,
        ) {
            let pts: Vec<(f64, f64)> = ys.iter().enumerate().map(|(i, &y)| (i as f64, y)).collect();
            let moved: Vec<(f64, f64)> = pts.iter().map(|&(x, y)| (x, k * y + offset)).collect();
            let (a, b) = (LinearFit::fit(&pts).expect("fit"), LinearFit::fit(&moved).expect("fit"));
            prop_assert!((b.slope - k * a.slope).abs() <= 1e-6 * (1.0 + (k * a.slope).abs()) + 1e-9 * offset.abs());
            prop_assert!((0.0..=1.0).contains(&a.r2));
            prop_assert!(a.slope_se >= 0.0);
        }

        #[test]
        fn steady_level_is_a_value_bound(vals in proptest::collection::vec(0.0f64..1.0, 5..100)) {
            let level = steady_level(&vals).expect("enough samples");
            let at_or_above = vals.iter().filter(|&&v| v >= level - 1e-12).count() as f64;
            prop_assert!(at_or_above / vals.len() as f64 >= STEADY_FRACTION - 1.0 / vals.len() as f64);
        }
    }
}
