//! The load plan: flags, prompts, arrival times and the steps of a run. Nothing
//! here touches the network; everything is decided (and seeded) up front.

pub mod cli;
pub mod schedule;
pub mod share;
pub mod step;
pub mod sweep;
pub mod validate;
pub mod workload;
