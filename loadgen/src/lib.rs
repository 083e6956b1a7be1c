//! loadgen: a load generator for LLM inference servers that measures honestly.
//!
//! The modules follow the stages a request goes through:
//!
//! - [`plan`]: what to send and when: the flags ([`plan::cli`]), the prompts
//!   ([`plan::workload`]), arrival schedules and the steps of a sweep.
//! - `send`: putting requests on the wire: the API shapes (`send::protocol`),
//!   one streamed request (`send::client`), a whole step (`send::runner`), and
//!   the checks before any load (`send::preflight`).
//! - `measure`: what a request left behind (`measure::record`), the step
//!   summaries every metric is defined in (`measure::stats`), and the server's
//!   and loadgen's own resource use (`measure::promtext`, `measure::usage`).
//! - `report`: `result.json`, CSVs, plots, the terminal table, OTLP client
//!   spans and the PostgreSQL history.
//!
//! `app` strings the stages together for one command. The public surface is
//! the command line ([`Cli`]) and [`run`]; [`mock`] is a tiny SSE server for
//! loadgen's own tests and bench, not a stand-in for a real server.

mod app;
mod durations;
#[cfg(test)]
mod fuzz;
mod measure;
pub mod mock;
mod plan;
mod report;
mod send;

pub use app::run;
pub use plan::cli::Cli;
