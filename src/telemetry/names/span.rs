//! Span names (besides the HTTP span `{method} {route}` and the GenAI span
//! `{operation} {model}`), span event names and the trace-id header.

pub const TOKENIZE: &str = "tokenize";
pub const QUEUE: &str = "queue";
pub const PREFILL: &str = "prefill";
pub const DECODE: &str = "decode";
pub const STEP_PREFILL: &str = "engine.step prefill";
pub const STEP_DECODE: &str = "engine.step decode";
pub const STEP_MIXED: &str = "engine.step mixed";
/// Event on the `decode` span at the first generated token.
pub const EVENT_FIRST_TOKEN: &str = "first_token";
/// Response header carrying the server span's trace id (32 hex digits).
pub const TRACE_ID_HEADER: &str = "x-trace-id";
/// At most this many step links per `prefill`/`decode` span, so a long
/// generation cannot grow a span without bound.
pub const MAX_STEP_LINKS: usize = 128;
