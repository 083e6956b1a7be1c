//! Service-level objectives and whether a request met them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::measure::record::RequestRecord;

/// Service-level objective: per-request latency ceilings in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    pub ttft: Option<f64>,
    pub tpot: Option<f64>,
    pub e2e: Option<f64>,
}

impl FromStr for Slo {
    type Err = String;
    /// `ttft=500ms,tpot=0.05,e2e=10s` (bare numbers are seconds).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut slo = Slo::default();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}': expected NAME=VALUE"))?;
            let secs = crate::durations::parse_secs(v.trim())?;
            match k.trim() {
                "ttft" => slo.ttft = Some(secs),
                "tpot" => slo.tpot = Some(secs),
                "e2e" => slo.e2e = Some(secs),
                other => return Err(format!("unknown SLO metric '{other}' (ttft, tpot, e2e)")),
            }
        }
        if slo == Slo::default() {
            return Err("empty SLO".into());
        }
        Ok(slo)
    }
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [("ttft", self.ttft), ("tpot", self.tpot), ("e2e", self.e2e)]
            .iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}={v}s")))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl Slo {
    /// Whether a request met every objective. Latencies are taken from the
    /// scheduled send, so client-side queueing counts against the objective.
    pub fn met_by(&self, r: &RequestRecord) -> bool {
        if !r.outcome.is_ok() {
            return false;
        }
        let ttft_ok = self
            .ttft
            .is_none_or(|max| r.ttft_from_scheduled().is_some_and(|v| v <= max));
        let tpot_ok = self
            .tpot
            .is_none_or(|max| r.tpot().is_some_and(|v| v <= max));
        let e2e_ok = self.e2e.is_none_or(|max| r.e2e_from_scheduled() <= max);
        ttft_ok && tpot_ok && e2e_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slo_parses_units_and_rejects_unknown_metrics() {
        let slo: Slo = "ttft=500ms,tpot=0.05,e2e=2s".parse().expect("valid");
        assert_eq!(slo.ttft, Some(0.5));
        assert_eq!(slo.tpot, Some(0.05));
        assert_eq!(slo.e2e, Some(2.0));
        assert!("itl=1".parse::<Slo>().is_err());
        assert!("ttft".parse::<Slo>().is_err());
    }
}
