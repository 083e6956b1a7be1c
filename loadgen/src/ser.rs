//! Small parsing and serialization helpers shared by the CLI and the reports.

use std::time::Duration;

/// Serialize a `Duration` as fractional seconds (the unit of every JSON field).
pub fn duration_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// `1.5` (seconds), `500ms`, `2m`, `1h 30m` → seconds.
pub fn parse_secs(s: &str) -> Result<f64, String> {
    if let Ok(v) = s.parse::<f64>() {
        return if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(format!("'{s}' is not a non-negative duration"))
        };
    }
    humantime::parse_duration(s)
        .map(|d| d.as_secs_f64())
        .map_err(|e| format!("'{s}': {e}"))
}

/// clap value parser for durations.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_secs(s).map(Duration::from_secs_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_bare_seconds_and_units() {
        assert_eq!(parse_secs("1.5"), Ok(1.5));
        assert_eq!(parse_secs("250ms"), Ok(0.25));
        assert_eq!(parse_secs("2m"), Ok(120.0));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("soon").is_err());
    }
}
