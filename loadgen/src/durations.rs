//! Small parsing and serialization helpers shared by the CLI and the reports.

use std::time::Duration;

/// Serialize a `Duration` as fractional seconds (the unit of every JSON field).
pub fn duration_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Read a `Duration` back from fractional seconds.
pub fn secs_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = <f64 as serde::Deserialize>::deserialize(d)?;
    Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
}

/// `1.5` (seconds), `500ms`, `2m`, `1h 30m` → seconds.
/// Values a `Duration` cannot hold (over ~584 billion years) are refused, so
/// every accepted value converts without a panic.
pub fn parse_secs(s: &str) -> Result<f64, String> {
    let secs = match s.parse::<f64>() {
        Ok(v) => v,
        Err(_) => humantime::parse_duration(s)
            .map(|d| d.as_secs_f64())
            .map_err(|e| format!("'{s}': {e}"))?,
    };
    match Duration::try_from_secs_f64(secs) {
        Ok(_) if secs.is_finite() => Ok(secs),
        _ => Err(format!("'{s}' is not a non-negative duration that fits")),
    }
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
        assert!(parse_secs("1e300").is_err(), "too large for a Duration");
        assert!(parse_secs("soon").is_err());
    }
}
