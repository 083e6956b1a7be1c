//! Open-loop arrival schedules, computed before any request is sent.
//!
//! Computing the whole schedule up front means a slow client cannot stretch it:
//! if sending falls behind, the lag shows as `send_lag` and in the latencies "from
//! scheduled" rather than silently lowering the offered rate.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Exp, Gamma};

/// Inter-arrival distribution.
#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrivals {
    /// Evenly spaced, 1/rate apart.
    Constant,
    /// Exponential gaps (a Poisson process).
    Poisson,
    /// Gamma gaps with shape = burstiness (1 = Poisson, < 1 burstier, > 1 smoother).
    Gamma,
}

/// How many arrivals: a count or a time span.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    Requests(u64),
    #[serde(
        serialize_with = "crate::durations::duration_secs",
        deserialize_with = "crate::durations::secs_duration"
    )]
    Duration(Duration),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScheduleError {
    #[error("--rate must be a positive finite number, got {0}")]
    Rate(f64),
    #[error("--burstiness must be a positive finite number, got {0}")]
    Burstiness(f64),
}

/// Offsets from the step start at which each request is due.
pub fn arrivals(
    kind: Arrivals,
    rate: f64,
    burstiness: f64,
    limit: Limit,
    seed: u64,
) -> Result<Vec<Duration>, ScheduleError> {
    if !(rate.is_finite() && rate > 0.0) {
        return Err(ScheduleError::Rate(rate));
    }
    if !(burstiness.is_finite() && burstiness > 0.0) {
        return Err(ScheduleError::Burstiness(burstiness));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let exp = Exp::new(rate).map_err(|_| ScheduleError::Rate(rate))?;
    let gamma = Gamma::new(burstiness, 1.0 / (rate * burstiness))
        .map_err(|_| ScheduleError::Burstiness(burstiness))?;
    let mut gap = move || match kind {
        Arrivals::Constant => 1.0 / rate,
        Arrivals::Poisson => exp.sample(&mut rng),
        Arrivals::Gamma => gamma.sample(&mut rng),
    };
    let mut out = Vec::new();
    // The first request goes at t = 0; later ones follow the drawn gaps.
    let mut t = 0.0f64;
    loop {
        match limit {
            Limit::Requests(n) if out.len() as u64 >= n => break,
            Limit::Duration(d) if t >= d.as_secs_f64() => break,
            _ => {}
        }
        out.push(Duration::from_secs_f64(t));
        t += gap();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_and_cv(s: &[Duration]) -> (f64, f64) {
        let gaps: Vec<f64> = s.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        let n = gaps.len() as f64;
        let mean = gaps.iter().sum::<f64>() / n;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt() / mean)
    }

    #[test]
    fn constant_schedule_is_evenly_spaced() {
        let s = arrivals(Arrivals::Constant, 4.0, 1.0, Limit::Requests(5), 0).expect("valid");
        let want: Vec<Duration> = (0..5).map(|i| Duration::from_millis(250 * i)).collect();
        assert_eq!(s, want);
    }

    #[test]
    fn poisson_and_gamma_hit_the_rate_with_the_right_burstiness() {
        let n = Limit::Requests(20_000);
        let (mean, cv) = mean_and_cv(&arrivals(Arrivals::Poisson, 10.0, 1.0, n, 1).expect("ok"));
        assert!((mean - 0.1).abs() < 0.005, "mean gap {mean}");
        assert!((cv - 1.0).abs() < 0.05, "poisson cv {cv}");
        // Gamma with shape k has coefficient of variation 1/sqrt(k).
        let (mean, cv) = mean_and_cv(&arrivals(Arrivals::Gamma, 10.0, 0.25, n, 1).expect("ok"));
        assert!((mean - 0.1).abs() < 0.01, "mean gap {mean}");
        assert!((cv - 2.0).abs() < 0.15, "gamma cv {cv}");
    }

    #[test]
    fn duration_limit_and_seed_reproduce() {
        let d = Limit::Duration(Duration::from_secs(10));
        let a = arrivals(Arrivals::Poisson, 5.0, 1.0, d, 9).expect("ok");
        assert_eq!(a, arrivals(Arrivals::Poisson, 5.0, 1.0, d, 9).expect("ok"));
        assert!(a.iter().all(|t| *t < Duration::from_secs(10)));
        assert!((30..=75).contains(&a.len()), "{} arrivals", a.len());
    }

    #[test]
    fn bad_rates_are_refused() {
        let n = Limit::Requests(1);
        assert!(arrivals(Arrivals::Poisson, 0.0, 1.0, n, 0).is_err());
        assert!(arrivals(Arrivals::Gamma, 1.0, f64::NAN, n, 0).is_err());
    }
}
