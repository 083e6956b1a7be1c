//! Wire requests → validated engine requests. Everything is checked before any
//! response starts, so a stream never carries a validation error under a 200.
//! The effective `max_new_tokens` (the cap that actually applies) is worked out
//! here, once.

use std::time::Instant;

use crate::engine::{SamplingParams, StoppingCriteria};

use super::error::{ApiError, Flavor};

/// Sampling and stopping parameters as they arrive, under either API's names.
#[derive(Debug, Clone, Default)]
pub struct RawParams {
    pub max_new_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_k: Option<u32>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// `(token id as sent, bias)`.
    pub logit_bias: Vec<(String, f32)>,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    pub ignore_eos: bool,
    pub min_new_tokens: Option<u32>,
    pub top_n_tokens: u32,
    /// TGI: sample only when asked (or when a sampling knob is set).
    pub do_sample: Option<bool>,
}

/// The names one API uses for the fields, so errors name what the client sent,
/// in that API's error shape.
pub struct FieldNames {
    pub flavor: Flavor,
    pub prompt: &'static str,
    pub max_new_tokens: &'static str,
    pub temperature: &'static str,
    pub top_k: &'static str,
    pub top_p: &'static str,
    pub min_p: &'static str,
    pub repetition_penalty: &'static str,
    pub presence_penalty: &'static str,
    pub frequency_penalty: &'static str,
    pub logit_bias: &'static str,
    pub stop: &'static str,
    pub stop_token_ids: &'static str,
    pub min_new_tokens: &'static str,
    pub top_n_tokens: &'static str,
}

pub const TGI_FIELDS: FieldNames = FieldNames {
    flavor: Flavor::Tgi,
    prompt: "inputs",
    max_new_tokens: "parameters.max_new_tokens",
    temperature: "parameters.temperature",
    top_k: "parameters.top_k",
    top_p: "parameters.top_p",
    min_p: "parameters.min_p",
    repetition_penalty: "parameters.repetition_penalty",
    presence_penalty: "parameters.presence_penalty",
    frequency_penalty: "parameters.frequency_penalty",
    logit_bias: "parameters.logit_bias",
    stop: "parameters.stop",
    stop_token_ids: "parameters.stop_token_ids",
    min_new_tokens: "parameters.min_new_tokens",
    top_n_tokens: "parameters.top_n_tokens",
};

pub const OPENAI_FIELDS: FieldNames = FieldNames {
    flavor: Flavor::OpenAi,
    prompt: "prompt",
    max_new_tokens: "max_tokens",
    temperature: "temperature",
    top_k: "top_k",
    top_p: "top_p",
    min_p: "min_p",
    repetition_penalty: "repetition_penalty",
    presence_penalty: "presence_penalty",
    frequency_penalty: "frequency_penalty",
    logit_bias: "logit_bias",
    stop: "stop",
    stop_token_ids: "stop_token_ids",
    min_new_tokens: "min_tokens",
    top_n_tokens: "top_logprobs",
};

pub const MAX_STOP_SEQUENCES: usize = 16;
pub const MAX_TOP_N_TOKENS: u32 = 20;
/// OpenAI's bounds for `presence_penalty` and `frequency_penalty`.
pub const PENALTY_RANGE: f32 = 2.0;
/// OpenAI's bound for `logit_bias` values.
pub const LOGIT_BIAS_RANGE: f32 = 100.0;

/// What the model and the server allow.
pub struct Bounds {
    pub context_length: usize,
    pub vocab_size: usize,
    pub default_max_new_tokens: u32,
    /// `--request-timeout`, from when the request arrived.
    pub deadline: Option<Instant>,
}

pub struct Validated {
    pub sampling: SamplingParams,
    pub stopping: StoppingCriteria,
}

fn finite_at_least(
    flavor: Flavor,
    field: &str,
    v: Option<f32>,
    min: f32,
    strict: bool,
) -> Result<(), ApiError> {
    let bad = |m: String| Err(ApiError::field(flavor, field, m));
    match v {
        Some(x) if !x.is_finite() => bad("must be a finite number".into()),
        Some(x) if strict && x <= min => bad(format!("must be > {min}, got {x}")),
        Some(x) if x < min => bad(format!("must be >= {min}, got {x}")),
        _ => Ok(()),
    }
}

fn within(flavor: Flavor, field: &str, v: Option<f32>, range: f32) -> Result<(), ApiError> {
    match v {
        Some(x) if !x.is_finite() || x.abs() > range => Err(ApiError::field(
            flavor,
            field,
            format!("must be a number in [-{range}, {range}], got {x}"),
        )),
        _ => Ok(()),
    }
}

/// The cap on new tokens that applies: the asked one, or the default shrunk
/// to fit the context (a default never makes a valid request fail).
fn max_new_tokens(
    raw: &RawParams,
    prompt_tokens: usize,
    names: &FieldNames,
    bounds: &Bounds,
) -> Result<usize, ApiError> {
    let (f, ctx) = (names.flavor, bounds.context_length);
    if prompt_tokens == 0 {
        return Err(ApiError::field(f, names.prompt, "must not be empty"));
    }
    if prompt_tokens >= ctx {
        return Err(ApiError::field(
            f,
            names.prompt,
            format!("is {prompt_tokens} tokens, which leaves no room in the model context of {ctx} tokens"),
        ));
    }
    let Some(asked) = raw.max_new_tokens else {
        return Ok((bounds.default_max_new_tokens as usize).min(ctx - prompt_tokens));
    };
    let asked = asked as usize;
    if asked == 0 {
        return Err(ApiError::field(
            f,
            names.max_new_tokens,
            "must be at least 1",
        ));
    }
    if asked > ctx {
        return Err(ApiError::field(
            f,
            names.max_new_tokens,
            format!("{asked} exceeds the model context of {ctx} tokens"),
        ));
    }
    if prompt_tokens + asked > ctx {
        return Err(ApiError::field(
            f,
            names.max_new_tokens,
            format!("prompt ({prompt_tokens} tokens) + {asked} new tokens exceeds the model context of {ctx} tokens"),
        ));
    }
    Ok(asked)
}

/// Range checks of the sampling knobs.
fn check_knobs(raw: &RawParams, names: &FieldNames) -> Result<(), ApiError> {
    let f = names.flavor;
    finite_at_least(f, names.temperature, raw.temperature, 0.0, false)?;
    finite_at_least(
        f,
        names.repetition_penalty,
        raw.repetition_penalty,
        0.0,
        true,
    )?;
    finite_at_least(f, names.top_p, raw.top_p, 0.0, true)?;
    if let Some(p) = raw.top_p.filter(|p| *p > 1.0) {
        return Err(ApiError::field(
            f,
            names.top_p,
            format!("must be in (0, 1], got {p}"),
        ));
    }
    finite_at_least(f, names.min_p, raw.min_p, 0.0, false)?;
    if let Some(p) = raw.min_p.filter(|p| *p > 1.0) {
        return Err(ApiError::field(
            f,
            names.min_p,
            format!("must be in [0, 1], got {p}"),
        ));
    }
    within(
        f,
        names.presence_penalty,
        raw.presence_penalty,
        PENALTY_RANGE,
    )?;
    within(
        f,
        names.frequency_penalty,
        raw.frequency_penalty,
        PENALTY_RANGE,
    )?;
    if raw.stop.len() > MAX_STOP_SEQUENCES {
        return Err(ApiError::field(
            f,
            names.stop,
            format!("at most {MAX_STOP_SEQUENCES} stop sequences are allowed"),
        ));
    }
    if raw.stop.iter().any(|s| s.is_empty()) {
        return Err(ApiError::field(
            f,
            names.stop,
            "stop sequences must not be empty",
        ));
    }
    if raw.top_n_tokens > MAX_TOP_N_TOKENS {
        return Err(ApiError::field(
            f,
            names.top_n_tokens,
            format!("must be at most {MAX_TOP_N_TOKENS}"),
        ));
    }
    Ok(())
}

/// A token id the client sent, checked against the vocabulary.
fn token_id(flavor: Flavor, field: &str, id: u64, vocab: usize) -> Result<u32, ApiError> {
    u32::try_from(id)
        .ok()
        .filter(|&i| (i as usize) < vocab)
        .ok_or_else(|| {
            ApiError::field(
                flavor,
                field,
                format!("token id {id} is outside the vocabulary of {vocab}"),
            )
        })
}

fn logit_bias(
    raw: &RawParams,
    names: &FieldNames,
    vocab: usize,
) -> Result<Vec<(u32, f32)>, ApiError> {
    let f = names.flavor;
    raw.logit_bias
        .iter()
        .map(|(key, bias)| {
            let field = format!("{}.{key}", names.logit_bias);
            let id: u64 = key
                .parse()
                .map_err(|_| ApiError::field(f, &field, "keys must be token ids"))?;
            let id = token_id(f, &field, id, vocab)?;
            within(f, &field, Some(*bias), LOGIT_BIAS_RANGE)?;
            Ok((id, *bias))
        })
        .collect()
}

/// Checks `raw` against the model's bounds for a prompt of `prompt_tokens`.
pub fn validate(
    raw: &RawParams,
    prompt_tokens: usize,
    names: &FieldNames,
    bounds: &Bounds,
) -> Result<Validated, ApiError> {
    let f = names.flavor;
    let max_new = max_new_tokens(raw, prompt_tokens, names, bounds)?;
    check_knobs(raw, names)?;
    let min_new = raw.min_new_tokens.unwrap_or(0) as usize;
    if min_new > max_new {
        return Err(ApiError::field(
            f,
            names.min_new_tokens,
            format!("{min_new} exceeds the token cap of {max_new}"),
        ));
    }
    let stop_token_ids = raw
        .stop_token_ids
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let field = format!("{}[{i}]", names.stop_token_ids);
            token_id(f, &field, u64::from(id), bounds.vocab_size)
        })
        .collect::<Result<_, _>>()?;
    let logit_bias = logit_bias(raw, names, bounds.vocab_size)?;
    let knobs_set = raw.temperature.is_some()
        || raw.top_k.is_some()
        || raw.top_p.is_some()
        || raw.min_p.is_some();
    let sample = raw.do_sample.unwrap_or(knobs_set);
    let temperature = sample.then(|| raw.temperature.unwrap_or(1.0));
    Ok(Validated {
        sampling: SamplingParams {
            temperature,
            top_k: raw.top_k.filter(|k| *k > 0).map(|k| k as usize),
            top_p: raw.top_p,
            min_p: raw.min_p,
            repetition_penalty: raw.repetition_penalty,
            presence_penalty: raw.presence_penalty,
            frequency_penalty: raw.frequency_penalty,
            logit_bias,
            seed: raw.seed.unwrap_or_else(rand::random),
            top_n_tokens: raw.top_n_tokens as usize,
        },
        stopping: StoppingCriteria {
            max_new_tokens: max_new,
            stop_sequences: raw.stop.clone(),
            ignore_eos: raw.ignore_eos,
            min_new_tokens: min_new,
            stop_token_ids,
            deadline: bounds.deadline,
        },
    })
}

/// Checks token ids sent as the prompt (`prompt: [ids]`).
pub fn prompt_ids(
    ids: &[u64],
    field: &str,
    names: &FieldNames,
    vocab: usize,
) -> Result<Vec<u32>, ApiError> {
    ids.iter()
        .enumerate()
        .map(|(i, &id)| token_id(names.flavor, &format!("{field}[{i}]"), id, vocab))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        context_length: 100,
        vocab_size: 50,
        default_max_new_tokens: 20,
        deadline: None,
    };

    fn check(raw: RawParams, prompt: usize) -> Result<Validated, ApiError> {
        validate(&raw, prompt, &TGI_FIELDS, &BOUNDS)
    }

    #[test]
    fn bad_values_name_their_field() {
        let p = |f: fn(&mut RawParams)| {
            let mut r = RawParams::default();
            f(&mut r);
            r
        };
        let cases = [
            (
                p(|r| r.temperature = Some(-1.0)),
                5,
                "parameters.temperature",
            ),
            (
                p(|r| r.temperature = Some(f32::NAN)),
                5,
                "parameters.temperature",
            ),
            (p(|r| r.top_p = Some(1.5)), 5, "parameters.top_p"),
            (p(|r| r.top_p = Some(0.0)), 5, "parameters.top_p"),
            (p(|r| r.min_p = Some(1.5)), 5, "parameters.min_p"),
            (
                p(|r| r.repetition_penalty = Some(0.0)),
                5,
                "parameters.repetition_penalty",
            ),
            (
                p(|r| r.presence_penalty = Some(2.5)),
                5,
                "parameters.presence_penalty",
            ),
            (
                p(|r| r.frequency_penalty = Some(f32::INFINITY)),
                5,
                "parameters.frequency_penalty",
            ),
            (
                p(|r| r.max_new_tokens = Some(0)),
                5,
                "parameters.max_new_tokens",
            ),
            (
                p(|r| r.max_new_tokens = Some(101)),
                5,
                "parameters.max_new_tokens",
            ),
            (
                p(|r| r.max_new_tokens = Some(96)),
                5,
                "parameters.max_new_tokens",
            ),
            (
                p(|r| r.min_new_tokens = Some(30)),
                5,
                "parameters.min_new_tokens",
            ),
            (
                p(|r| r.stop_token_ids = vec![1, 99]),
                5,
                "parameters.stop_token_ids[1]",
            ),
            (
                p(|r| r.logit_bias = vec![("x".into(), 1.0)]),
                5,
                "parameters.logit_bias.x",
            ),
            (
                p(|r| r.logit_bias = vec![("7".into(), 101.0)]),
                5,
                "parameters.logit_bias.7",
            ),
            (RawParams::default(), 0, "inputs"),
            (RawParams::default(), 100, "inputs"),
            (p(|r| r.stop = vec![String::new()]), 5, "parameters.stop"),
        ];
        for (raw, prompt, field) in cases {
            let e = check(raw.clone(), prompt)
                .err()
                .unwrap_or_else(|| panic!("{raw:?} should fail"));
            assert_eq!(e.param.as_deref(), Some(field), "{}", e.message);
            assert!(e.message.starts_with(field));
            assert_eq!(e.flavor, Flavor::Tgi);
        }
    }

    #[test]
    fn the_default_length_shrinks_to_fit_the_context() {
        let v = check(RawParams::default(), 90).expect("valid");
        assert_eq!(v.stopping.max_new_tokens, 10);
    }

    #[test]
    fn greedy_unless_sampling_is_asked_for() {
        let v = check(RawParams::default(), 5).expect("valid");
        assert!(v.sampling.is_greedy());
        let v = check(
            RawParams {
                top_p: Some(0.9),
                ..Default::default()
            },
            5,
        )
        .expect("valid");
        assert!(!v.sampling.is_greedy());
        let v = check(
            RawParams {
                do_sample: Some(true),
                ..Default::default()
            },
            5,
        )
        .expect("valid");
        assert_eq!(v.sampling.temperature, Some(1.0));
    }

    #[test]
    fn prompt_token_ids_are_checked_against_the_vocabulary() {
        assert_eq!(
            prompt_ids(&[1, 2], "prompt", &OPENAI_FIELDS, 50).expect("ok"),
            [1, 2]
        );
        let e = prompt_ids(&[1, 50], "prompt", &OPENAI_FIELDS, 50).expect_err("out of range");
        assert_eq!(e.param.as_deref(), Some("prompt[1]"));
    }
}
