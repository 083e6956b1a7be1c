//! `records.jsonl`: every request's raw facts, written by a worker run
//! (`--worker-id`) so that `loadgen merge` can recompute every statistic
//! exactly over all workers' requests. Instants are integer nanoseconds since
//! the worker's run start, so they survive the round trip unchanged.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::measure::record::{Outcome, RequestRecord};

/// One line of `records.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawRecord {
    pub id: u64,
    pub step: usize,
    pub scheduled_ns: u64,
    pub sent_ns: u64,
    pub token_times_ns: Vec<u64>,
    pub end_ns: u64,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    pub chunks: u64,
    pub finish_reason: Option<String>,
    /// `None` for a success; else the error kind as reported (`http_503`, ...).
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub http_status: Option<u16>,
    pub trace_id: String,
    pub server_trace_id: Option<String>,
    pub conversation: Option<u64>,
    pub turn: Option<u32>,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl From<&RequestRecord> for RawRecord {
    fn from(r: &RequestRecord) -> Self {
        let (error_kind, error) = match &r.outcome {
            Outcome::Ok => (None, None),
            Outcome::Error { kind, message } => (Some(kind.to_string()), Some(message.clone())),
        };
        RawRecord {
            id: r.id,
            step: r.step,
            scheduled_ns: ns(r.scheduled),
            sent_ns: ns(r.sent),
            token_times_ns: r.token_times.iter().map(|t| ns(*t)).collect(),
            end_ns: ns(r.end),
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cached_tokens: r.cached_tokens,
            chunks: r.chunks,
            finish_reason: r.finish_reason.clone(),
            error_kind,
            error,
            http_status: r.http_status,
            trace_id: r.trace_id.clone(),
            server_trace_id: r.server_trace_id.clone(),
            conversation: r.conversation,
            turn: r.turn,
        }
    }
}

impl RawRecord {
    /// The record, with every instant moved `shift` later (onto a common
    /// time base shared with other workers).
    pub fn into_record(self, shift: Duration) -> Result<RequestRecord, String> {
        let at = |t: u64| Duration::from_nanos(t) + shift;
        let outcome = match self.error_kind {
            None => Outcome::Ok,
            Some(kind) => Outcome::Error {
                kind: kind.parse()?,
                message: self.error.unwrap_or_default(),
            },
        };
        Ok(RequestRecord {
            id: self.id,
            step: self.step,
            scheduled: at(self.scheduled_ns),
            sent: at(self.sent_ns),
            token_times: self.token_times_ns.into_iter().map(at).collect(),
            end: at(self.end_ns),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cached_tokens: self.cached_tokens,
            chunks: self.chunks,
            finish_reason: self.finish_reason,
            outcome,
            http_status: self.http_status,
            trace_id: self.trace_id,
            server_trace_id: self.server_trace_id,
            conversation: self.conversation,
            turn: self.turn,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::record::ErrorKind;

    #[test]
    fn records_survive_the_round_trip_exactly() {
        let ms = Duration::from_millis;
        let r = RequestRecord {
            id: 7,
            step: 1,
            scheduled: ms(100),
            sent: Duration::from_nanos(100_000_123),
            token_times: vec![ms(210), ms(230)],
            end: ms(240),
            input_tokens: Some(5),
            output_tokens: Some(2),
            cached_tokens: Some(3),
            chunks: 2,
            finish_reason: Some("length".into()),
            outcome: Outcome::Error {
                kind: ErrorKind::Stream("overloaded".into()),
                message: "busy".into(),
            },
            http_status: Some(200),
            trace_id: "t".into(),
            server_trace_id: None,
            conversation: Some(4),
            turn: Some(2),
        };
        let line = serde_json::to_string(&RawRecord::from(&r)).expect("serializes");
        let back: RawRecord = serde_json::from_str(&line).expect("parses");
        let back = back.into_record(ms(1000)).expect("valid kind");
        assert_eq!(back.sent, r.sent + ms(1000));
        assert_eq!(back.outcome, r.outcome);
        assert_eq!(back.ttft(), r.ttft());
        assert_eq!(back.token_times.len(), 2);
    }
}
