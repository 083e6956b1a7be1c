//! candlelight: an LLM inference server you can see inside.
//!
//! Modules in the order a request flows through them:
//! [`api`] (HTTP) → [`engine`] (scheduler, model, sampler, KV cache) → [`telemetry`]
//! (which observes the engine through [`engine::events`]). [`config`] holds the
//! CLI and [`server`] wires everything together.

pub mod api;
pub mod config;
pub mod diagnose;
pub mod engine;
pub mod server;
pub mod telemetry;
