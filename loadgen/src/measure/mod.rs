//! Measuring: the raw facts of each request, the statistics derived from them,
//! and the resource use of the server (from its `/metrics`) and of loadgen.

pub mod diagnose;
pub mod promtext;
pub mod raw;
pub mod record;
pub mod server;
pub mod stats;
pub mod usage;
