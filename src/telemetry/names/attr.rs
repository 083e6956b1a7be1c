//! Attribute keys (span and metric) and their closed value sets.

pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
pub const GEN_AI_REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
pub const GEN_AI_REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
pub const GEN_AI_REQUEST_TOP_P: &str = "gen_ai.request.top_p";
pub const GEN_AI_REQUEST_TOP_K: &str = "gen_ai.request.top_k";
pub const GEN_AI_REQUEST_STREAM: &str = "gen_ai.request.stream";
pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
/// TTFT on the GenAI span, in seconds (the semantic conventions' attribute).
pub const GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";
pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
pub const GEN_AI_TOKEN_TYPE: &str = "gen_ai.token.type";
pub const ERROR_TYPE: &str = "error.type";
/// `prefill` | `decode`.
pub const STEP_KIND: &str = "candlelight.step.kind";
/// `length` | `eos_token` | `stop_sequence`.
pub const FINISH_REASON: &str = "candlelight.finish_reason";
/// `spans` | `metrics`.
pub const SIGNAL: &str = "candlelight.signal";
/// Sequences in one engine step (step spans).
pub const BATCH_SIZE: &str = "candlelight.batch.size";
/// Tokens in one engine step (step spans).
pub const BATCH_TOKENS: &str = "candlelight.batch.tokens";
/// Tokens generated in the `decode` span.
pub const DECODE_TOKENS: &str = "candlelight.decode.tokens";
/// Prompt tokens (on the `tokenize` span).
pub const PROMPT_TOKENS: &str = "candlelight.prompt.tokens";
/// Step spans left out of a request's `decode` links once the cap was hit.
pub const DROPPED_STEP_LINKS: &str = "candlelight.links.dropped";
/// `busy` | `iowait`.
pub const CPU_MODE: &str = "cpu.mode";
/// `candlelight.cache_config.info`: KV block size in tokens.
pub const KV_BLOCK_SIZE: &str = "candlelight.kv.block_size";
/// `candlelight.cache_config.info`: blocks in the KV pool.
pub const KV_BLOCKS: &str = "candlelight.kv.blocks";
/// Prefill span: prompt tokens whose KV came from the prefix cache.
pub const PROMPT_CACHED_TOKENS: &str = "candlelight.prompt.cached_tokens";
/// `used`.
pub const SYSTEM_MEMORY_STATE: &str = "system.memory.state";
/// `gpu0`, `gpu1`, ...
pub const HW_ID: &str = "hw.id";
/// The device's marketing name, from NVML.
pub const HW_NAME: &str = "hw.name";

/// Value of `gen_ai.provider.name` on every GenAI span and metric.
pub const PROVIDER: &str = "candlelight";
pub const TOKEN_INPUT: &str = "input";
pub const TOKEN_OUTPUT: &str = "output";
pub const SIGNAL_SPANS: &str = "spans";
pub const SIGNAL_METRICS: &str = "metrics";
pub const CPU_BUSY: &str = "busy";
pub const CPU_IOWAIT: &str = "iowait";
pub const CPU_STEAL: &str = "steal";
pub const MEMORY_USED: &str = "used";
/// `error.type` of a request whose client went away.
pub const ERROR_CANCELLED: &str = "cancelled";
