//! loadgen: a load generator for LLM inference servers that measures honestly.
//!
//! Flow of a run ([`app::run`]): flags ([`cli`]) → workload ([`workload`]) →
//! preflight ([`preflight`]) → steps ([`sweep`] plans them, [`runner`] drives
//! each with [`client`] requests and records [`record::RequestRecord`]s) →
//! summaries ([`stats`]) → files ([`report`]) and PostgreSQL ([`history`]).
//! Server-side views come from `/metrics` ([`promtext`], [`sampler`]).

pub mod app;
pub mod cli;
pub mod client;
pub mod history;
pub mod mock;
pub mod otel;
pub mod preflight;
pub mod promtext;
pub mod protocol;
pub mod record;
pub mod report;
pub mod runner;
pub mod sampler;
pub mod schedule;
pub mod ser;
pub mod stats;
pub mod sweep;
pub mod workload;
