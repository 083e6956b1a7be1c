//! Wire requests → validated engine requests. Everything is checked before any
//! response starts, so a stream never carries a validation error under a 200.

use crate::engine::{SamplingParams, StoppingCriteria};

use super::error::ApiError;

/// Sampling and stopping parameters as they arrive, under either API's names.
#[derive(Debug, Clone, Default)]
pub struct RawParams {
    pub max_new_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_k: Option<u32>,
    pub top_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    pub top_n_tokens: u32,
    /// TGI: sample only when asked (or when a sampling knob is set).
    pub do_sample: Option<bool>,
}

/// The names each API uses for the fields, so errors name what the client sent.
pub struct FieldNames {
    pub prompt: &'static str,
    pub max_new_tokens: &'static str,
    pub temperature: &'static str,
    pub top_k: &'static str,
    pub top_p: &'static str,
    pub repetition_penalty: &'static str,
    pub stop: &'static str,
    pub top_n_tokens: &'static str,
}

pub const TGI_FIELDS: FieldNames = FieldNames {
    prompt: "inputs",
    max_new_tokens: "parameters.max_new_tokens",
    temperature: "parameters.temperature",
    top_k: "parameters.top_k",
    top_p: "parameters.top_p",
    repetition_penalty: "parameters.repetition_penalty",
    stop: "parameters.stop",
    top_n_tokens: "parameters.top_n_tokens",
};

pub const OPENAI_FIELDS: FieldNames = FieldNames {
    prompt: "prompt",
    max_new_tokens: "max_tokens",
    temperature: "temperature",
    top_k: "top_k",
    top_p: "top_p",
    repetition_penalty: "repetition_penalty",
    stop: "stop",
    top_n_tokens: "top_logprobs",
};

pub const MAX_STOP_SEQUENCES: usize = 16;
pub const MAX_TOP_N_TOKENS: u32 = 20;

/// What the model allows.
pub struct Bounds {
    pub context_length: usize,
    pub default_max_new_tokens: u32,
}

pub struct Validated {
    pub sampling: SamplingParams,
    pub stopping: StoppingCriteria,
}

fn finite_at_least(field: &str, v: Option<f32>, min: f32, strict: bool) -> Result<(), ApiError> {
    match v {
        Some(x) if !x.is_finite() => Err(ApiError::field(field, "must be a finite number")),
        Some(x) if strict && x <= min => {
            Err(ApiError::field(field, format!("must be > {min}, got {x}")))
        }
        Some(x) if x < min => Err(ApiError::field(field, format!("must be >= {min}, got {x}"))),
        _ => Ok(()),
    }
}

/// Checks `raw` against the model's bounds for a prompt of `prompt_tokens`.
pub fn validate(
    raw: &RawParams,
    prompt_tokens: usize,
    names: &FieldNames,
    bounds: &Bounds,
) -> Result<Validated, ApiError> {
    if prompt_tokens == 0 {
        return Err(ApiError::field(names.prompt, "must not be empty"));
    }
    let ctx = bounds.context_length;
    if prompt_tokens >= ctx {
        return Err(ApiError::field(
            names.prompt,
            format!("is {prompt_tokens} tokens, which leaves no room in the model context of {ctx} tokens"),
        ));
    }
    let max_new = raw.max_new_tokens.unwrap_or(bounds.default_max_new_tokens);
    if max_new == 0 {
        return Err(ApiError::field(names.max_new_tokens, "must be at least 1"));
    }
    let max_new = max_new as usize;
    if max_new > ctx {
        return Err(ApiError::field(
            names.max_new_tokens,
            format!("{max_new} exceeds the model context of {ctx} tokens"),
        ));
    }
    let max_new = if raw.max_new_tokens.is_none() {
        // A default never makes an otherwise valid request fail.
        max_new.min(ctx - prompt_tokens)
    } else if prompt_tokens + max_new > ctx {
        return Err(ApiError::field(
            names.max_new_tokens,
            format!(
                "prompt ({prompt_tokens} tokens) + {max_new} new tokens exceeds the model context of {ctx} tokens"
            ),
        ));
    } else {
        max_new
    };

    finite_at_least(names.temperature, raw.temperature, 0.0, false)?;
    finite_at_least(names.repetition_penalty, raw.repetition_penalty, 0.0, true)?;
    finite_at_least(names.top_p, raw.top_p, 0.0, true)?;
    if let Some(p) = raw.top_p.filter(|p| *p > 1.0) {
        return Err(ApiError::field(
            names.top_p,
            format!("must be in (0, 1], got {p}"),
        ));
    }
    if raw.stop.len() > MAX_STOP_SEQUENCES {
        return Err(ApiError::field(
            names.stop,
            format!("at most {MAX_STOP_SEQUENCES} stop sequences are allowed"),
        ));
    }
    if raw.stop.iter().any(|s| s.is_empty()) {
        return Err(ApiError::field(
            names.stop,
            "stop sequences must not be empty",
        ));
    }
    if raw.top_n_tokens > MAX_TOP_N_TOKENS {
        return Err(ApiError::field(
            names.top_n_tokens,
            format!("must be at most {MAX_TOP_N_TOKENS}"),
        ));
    }

    let knobs_set = raw.temperature.is_some() || raw.top_k.is_some() || raw.top_p.is_some();
    let sample = raw.do_sample.unwrap_or(knobs_set);
    let temperature = if sample {
        Some(raw.temperature.unwrap_or(1.0))
    } else {
        None
    };
    Ok(Validated {
        sampling: SamplingParams {
            temperature,
            top_k: raw.top_k.filter(|k| *k > 0).map(|k| k as usize),
            top_p: raw.top_p,
            repetition_penalty: raw.repetition_penalty,
            seed: raw.seed.unwrap_or_else(rand::random),
            top_n_tokens: raw.top_n_tokens as usize,
        },
        stopping: StoppingCriteria {
            max_new_tokens: max_new,
            stop_sequences: raw.stop.clone(),
            ignore_eos: raw.ignore_eos,
            deadline: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        context_length: 100,
        default_max_new_tokens: 20,
    };

    fn check(raw: RawParams, prompt: usize) -> Result<Validated, ApiError> {
        validate(&raw, prompt, &TGI_FIELDS, &BOUNDS)
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (
                RawParams {
                    temperature: Some(-1.0),
                    ..Default::default()
                },
                5,
                "parameters.temperature",
            ),
            (
                RawParams {
                    temperature: Some(f32::NAN),
                    ..Default::default()
                },
                5,
                "parameters.temperature",
            ),
            (
                RawParams {
                    top_p: Some(1.5),
                    ..Default::default()
                },
                5,
                "parameters.top_p",
            ),
            (
                RawParams {
                    top_p: Some(0.0),
                    ..Default::default()
                },
                5,
                "parameters.top_p",
            ),
            (
                RawParams {
                    repetition_penalty: Some(0.0),
                    ..Default::default()
                },
                5,
                "parameters.repetition_penalty",
            ),
            (
                RawParams {
                    max_new_tokens: Some(0),
                    ..Default::default()
                },
                5,
                "parameters.max_new_tokens",
            ),
            (
                RawParams {
                    max_new_tokens: Some(101),
                    ..Default::default()
                },
                5,
                "parameters.max_new_tokens",
            ),
            (
                RawParams {
                    max_new_tokens: Some(96),
                    ..Default::default()
                },
                5,
                "parameters.max_new_tokens",
            ),
            (RawParams::default(), 0, "inputs"),
            (RawParams::default(), 100, "inputs"),
            (
                RawParams {
                    stop: vec![String::new()],
                    ..Default::default()
                },
                5,
                "parameters.stop",
            ),
        ];
        for (raw, prompt, field) in cases {
            let e = check(raw.clone(), prompt)
                .err()
                .unwrap_or_else(|| panic!("{raw:?} should fail"));
            assert_eq!(e.param.as_deref(), Some(field), "{}", e.message);
            assert!(e.message.starts_with(field));
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
}
