//! The inference engine: knows nothing of HTTP or OpenTelemetry.

pub mod events;
pub mod kernels;
