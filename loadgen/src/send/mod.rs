//! Sending: the wire formats of the three streaming APIs, one request, a whole
//! load step, and the checks before any load.

pub mod auth;
pub mod client;
pub mod preflight;
pub mod progress;
pub mod protocol;
pub mod runner;
