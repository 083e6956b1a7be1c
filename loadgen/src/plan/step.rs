//! One step of a run: its load pattern, limit and measurement window.

use std::time::Duration;

use crate::plan::schedule::{Arrivals, Limit};

/// The load pattern of one step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Shape {
    Closed {
        concurrency: usize,
    },
    Open {
        rate: f64,
        arrivals: Arrivals,
        burstiness: f64,
    },
}

/// One step of a run (a plain run has exactly one).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StepSpec {
    pub index: usize,
    pub label: String,
    pub shape: Shape,
    pub limit: Limit,
    #[serde(
        serialize_with = "crate::durations::duration_secs",
        deserialize_with = "crate::durations::secs_duration"
    )]
    pub warmup: Duration,
    #[serde(
        serialize_with = "crate::durations::duration_secs",
        deserialize_with = "crate::durations::secs_duration"
    )]
    pub cooldown: Duration,
    /// Set for batch-sweep steps (then equal to the concurrency).
    pub batch_size: Option<usize>,
}
