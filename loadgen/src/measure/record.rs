//! What loadgen keeps about one request.
//!
//! A record stores raw instants (relative to the run's start), never derived
//! latencies, so every metric is computed in one place ([`crate::measure::stats`]) from the
//! same facts: intended start, actual start, each content token's arrival, end.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

/// The run's time origin: every record instant is an offset from `start`, and
/// `wall` maps offsets to wall-clock time (for spans, PostgreSQL, plots).
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    pub start: Instant,
    pub wall: SystemTime,
}

impl RunClock {
    pub fn now() -> Self {
        Self {
            start: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// Offset of `t` from the run start.
    pub fn at(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.start)
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// How a request ended. An enum rather than a bool, so errors keep their kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Error { kind: ErrorKind, message: String },
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }

    pub fn error_kind(&self) -> Option<&ErrorKind> {
        match self {
            Outcome::Ok => None,
            Outcome::Error { kind, .. } => Some(kind),
        }
    }
}

/// The kinds errors are counted by in reports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// TCP connect failed or the connection was refused.
    Connect,
    /// The request did not finish within `--timeout`.
    Timeout,
    /// The server answered with a non-2xx status.
    Http(u16),
    /// The server sent an error event inside the stream (its `error_type`).
    Stream(String),
    /// The stream ended before its completion marker (server died, proxy cut it).
    Truncated,
    /// A stream event that does not parse as the selected API's shape.
    BadEvent,
    /// Any other transport failure (reset mid-body, protocol error).
    Transport,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Connect => f.write_str("connect"),
            ErrorKind::Timeout => f.write_str("timeout"),
            ErrorKind::Http(code) => write!(f, "http_{code}"),
            ErrorKind::Stream(kind) => write!(f, "stream_error:{kind}"),
            ErrorKind::Truncated => f.write_str("stream_truncated"),
            ErrorKind::BadEvent => f.write_str("bad_event"),
            ErrorKind::Transport => f.write_str("transport"),
        }
    }
}

impl std::str::FromStr for ErrorKind {
    type Err = String;
    /// The inverse of `Display`, for records read back by `loadgen merge`.
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "connect" => ErrorKind::Connect,
            "timeout" => ErrorKind::Timeout,
            "stream_truncated" => ErrorKind::Truncated,
            "bad_event" => ErrorKind::BadEvent,
            "transport" => ErrorKind::Transport,
            _ => {
                if let Some(code) = s.strip_prefix("http_").and_then(|c| c.parse().ok()) {
                    ErrorKind::Http(code)
                } else if let Some(kind) = s.strip_prefix("stream_error:") {
                    ErrorKind::Stream(kind.to_string())
                } else {
                    return Err(format!("unknown error kind '{s}'"));
                }
            }
        })
    }
}

/// One request as observed by the client. All instants are offsets from the run's
/// start ([`RunClock`]).
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub id: u64,
    /// Index of the sweep step this request belongs to.
    pub step: usize,
    /// When the schedule (open loop) or the free virtual user (closed loop) meant
    /// to send it: latencies "from scheduled" start here, so client-side queueing
    /// (coordinated omission) shows up instead of vanishing.
    pub scheduled: Duration,
    /// When the request was actually handed to the HTTP client.
    pub sent: Duration,
    /// Arrival of each stream event that carried content, in order.
    pub token_times: Vec<Duration>,
    /// When the stream completed (or failed).
    pub end: Duration,
    /// Prompt tokens as reported by the server (`usage` or `details`).
    pub input_tokens: Option<u64>,
    /// Generated tokens as reported by the server (`usage` or `details`).
    pub output_tokens: Option<u64>,
    /// Prompt tokens served from the server's prefix cache, when it says
    /// (`usage.prompt_tokens_details.cached_tokens`).
    pub cached_tokens: Option<u64>,
    /// Number of content-bearing stream events received.
    pub chunks: u64,
    pub finish_reason: Option<String>,
    pub outcome: Outcome,
    pub http_status: Option<u16>,
    /// The W3C trace id loadgen sent in `traceparent`.
    pub trace_id: String,
    /// The trace id the server returned in `x-trace-id`, if any.
    pub server_trace_id: Option<String>,
    /// The multi-turn conversation the request belongs to (`--multi-turn`).
    pub conversation: Option<u64>,
    /// Its turn in that conversation, from 1.
    pub turn: Option<u32>,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl RequestRecord {
    pub fn first_token(&self) -> Option<Duration> {
        self.token_times.first().copied()
    }

    /// Send to first content token.
    pub fn ttft(&self) -> Option<f64> {
        self.first_token()
            .map(|t| secs(t.saturating_sub(self.sent)))
    }

    /// Scheduled send to first content token (includes client queueing).
    pub fn ttft_from_scheduled(&self) -> Option<f64> {
        self.first_token()
            .map(|t| secs(t.saturating_sub(self.scheduled)))
    }

    pub fn e2e(&self) -> f64 {
        secs(self.end.saturating_sub(self.sent))
    }

    pub fn e2e_from_scheduled(&self) -> f64 {
        secs(self.end.saturating_sub(self.scheduled))
    }

    /// Actual minus intended send time.
    pub fn send_lag(&self) -> f64 {
        secs(self.sent.saturating_sub(self.scheduled))
    }

    /// (E2E − TTFT) / (output tokens − 1), with the server's token count. None when
    /// the server gave no count or there is a single token.
    pub fn tpot(&self) -> Option<f64> {
        let out = self.output_tokens?;
        let ttft = self.ttft()?;
        (out > 1).then(|| (self.e2e() - ttft) / (out - 1) as f64)
    }

    /// Every gap between consecutive content events.
    pub fn itl(&self) -> impl Iterator<Item = f64> + '_ {
        self.token_times
            .windows(2)
            .map(|w| secs(w[1].saturating_sub(w[0])))
    }

    /// The serializable per-request view (JSON `requests[]` and `requests.csv`).
    pub fn row(&self) -> RecordRow {
        let (error_kind, error) = match &self.outcome {
            Outcome::Ok => (None, None),
            Outcome::Error { kind, message } => (Some(kind.to_string()), Some(message.clone())),
        };
        RecordRow {
            id: self.id,
            step: self.step,
            scheduled_s: secs(self.scheduled),
            sent_s: secs(self.sent),
            send_lag_s: self.send_lag(),
            first_token_s: self.first_token().map(secs),
            end_s: secs(self.end),
            ttft_s: self.ttft(),
            ttft_from_scheduled_s: self.ttft_from_scheduled(),
            e2e_s: self.e2e(),
            e2e_from_scheduled_s: self.e2e_from_scheduled(),
            tpot_s: self.tpot(),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            chunks: self.chunks,
            finish_reason: self.finish_reason.clone(),
            ok: self.outcome.is_ok(),
            error_kind,
            error,
            http_status: self.http_status,
            trace_id: self.trace_id.clone(),
            server_trace_id: self.server_trace_id.clone(),
            conversation: self.conversation,
            turn: self.turn,
            cached_tokens: self.cached_tokens,
        }
    }
}

/// Flat per-request row; field names are the documented JSON/CSV columns.
#[derive(Debug, Clone, Serialize)]
pub struct RecordRow {
    pub id: u64,
    pub step: usize,
    pub scheduled_s: f64,
    pub sent_s: f64,
    pub send_lag_s: f64,
    pub first_token_s: Option<f64>,
    pub end_s: f64,
    pub ttft_s: Option<f64>,
    pub ttft_from_scheduled_s: Option<f64>,
    pub e2e_s: f64,
    pub e2e_from_scheduled_s: f64,
    pub tpot_s: Option<f64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub chunks: u64,
    pub finish_reason: Option<String>,
    pub ok: bool,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub http_status: Option<u16>,
    pub trace_id: String,
    pub server_trace_id: Option<String>,
    pub conversation: Option<u64>,
    pub turn: Option<u32>,
    pub cached_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn record() -> RequestRecord {
        RequestRecord {
            id: 0,
            step: 0,
            scheduled: ms(100),
            sent: ms(110),
            token_times: vec![ms(210), ms(230), ms(260)],
            end: ms(270),
            input_tokens: Some(5),
            output_tokens: Some(3),
            cached_tokens: None,
            chunks: 3,
            finish_reason: Some("length".into()),
            outcome: Outcome::Ok,
            http_status: Some(200),
            trace_id: "t".into(),
            server_trace_id: None,
            conversation: None,
            turn: None,
        }
    }

    #[test]
    fn latencies_follow_the_documented_definitions() {
        let r = record();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(r.ttft().unwrap_or_default(), 0.100));
        assert!(close(r.ttft_from_scheduled().unwrap_or_default(), 0.110));
        assert!(close(r.e2e(), 0.160));
        assert!(close(r.e2e_from_scheduled(), 0.170));
        assert!(close(r.send_lag(), 0.010));
        // (0.160 - 0.100) / (3 - 1)
        assert!(close(r.tpot().unwrap_or_default(), 0.030));
        let itl: Vec<f64> = r.itl().collect();
        assert_eq!(itl.len(), 2);
        assert!(close(itl[0], 0.020) && close(itl[1], 0.030));
    }

    #[test]
    fn tpot_is_absent_without_server_token_counts() {
        let mut r = record();
        r.output_tokens = None;
        assert_eq!(r.tpot(), None);
        r.output_tokens = Some(1);
        assert_eq!(r.tpot(), None);
    }

    #[test]
    fn error_kinds_have_stable_names() {
        for kind in [
            ErrorKind::Connect,
            ErrorKind::Timeout,
            ErrorKind::Http(503),
            ErrorKind::Stream("queue_full".into()),
            ErrorKind::Truncated,
            ErrorKind::BadEvent,
            ErrorKind::Transport,
        ] {
            assert_eq!(kind.to_string().parse(), Ok(kind));
        }
        assert!("http_x".parse::<ErrorKind>().is_err());
        assert_eq!(ErrorKind::Http(429).to_string(), "http_429");
        assert_eq!(ErrorKind::Truncated.to_string(), "stream_truncated");
        assert_eq!(
            ErrorKind::Stream("validation".into()).to_string(),
            "stream_error:validation"
        );
    }
}
