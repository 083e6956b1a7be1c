//! Statistics that only some workloads have: per-turn metrics of multi-turn
//! conversations, and the prompt tokens a server served from its prefix cache.

use serde::Serialize;

use super::{dist, Dist};
use crate::measure::record::RequestRecord;

/// Prompt tokens the server served from its prefix cache
/// (`usage.prompt_tokens_details.cached_tokens`), over the counted requests
/// that reported it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CachedTokens {
    /// Requests whose usage carried the field.
    pub requests: usize,
    pub sum: u64,
    /// Per reporting request.
    pub mean: f64,
    /// `sum` over those requests' prompt tokens: the prefix-cache hit rate.
    pub input_fraction: Option<f64>,
}

/// `None` when no request reported cached tokens (the server does not say).
pub fn cached_tokens(ok: &[&RequestRecord]) -> Option<CachedTokens> {
    let reporting: Vec<&&RequestRecord> = ok.iter().filter(|r| r.cached_tokens.is_some()).collect();
    if reporting.is_empty() {
        return None;
    }
    let sum: u64 = reporting.iter().filter_map(|r| r.cached_tokens).sum();
    let input: u64 = reporting.iter().filter_map(|r| r.input_tokens).sum();
    Some(CachedTokens {
        requests: reporting.len(),
        sum,
        mean: sum as f64 / reporting.len() as f64,
        input_fraction: (input > 0).then(|| sum as f64 / input as f64),
    })
}

/// One turn index of multi-turn conversations, over the step's window.
#[derive(Debug, Clone, Serialize)]
pub struct TurnSummary {
    /// From 1.
    pub turn: u32,
    /// Successful requests of this turn inside the window.
    pub counted: usize,
    pub errors: usize,
    pub ttft: Option<Dist>,
    pub itl: Option<Dist>,
    pub tpot: Option<Dist>,
    pub e2e: Option<Dist>,
    pub input_tokens: Option<Dist>,
    pub cached_tokens: Option<CachedTokens>,
}

/// Per-turn summaries of the window's requests; empty unless they are turns.
pub fn by_turn(window: &[&RequestRecord]) -> Vec<TurnSummary> {
    let last = window.iter().filter_map(|r| r.turn).max().unwrap_or(0);
    (1..=last)
        .map(|turn| {
            let all: Vec<&RequestRecord> = window
                .iter()
                .copied()
                .filter(|r| r.turn == Some(turn))
                .collect();
            let ok: Vec<&RequestRecord> =
                all.iter().copied().filter(|r| r.outcome.is_ok()).collect();
            let of = |f: &dyn Fn(&RequestRecord) -> Option<f64>| {
                dist(ok.iter().filter_map(|r| f(r)).collect())
            };
            TurnSummary {
                turn,
                counted: ok.len(),
                errors: all.len() - ok.len(),
                ttft: of(&|r| r.ttft()),
                itl: dist(ok.iter().flat_map(|r| r.itl()).collect()),
                tpot: of(&|r| r.tpot()),
                e2e: of(&|r| Some(r.e2e())),
                input_tokens: of(&|r| r.input_tokens.map(|v| v as f64)),
                cached_tokens: cached_tokens(&ok),
            }
        })
        .collect()
}
