//! Logits → next token: repetition penalty, temperature, top-k, top-p, a seeded
//! RNG per sequence, and log-probabilities of the chosen token and the best
//! alternatives.

use super::kernels;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Validated sampling parameters (the API layer checks ranges).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SamplingParams {
    /// 0 or `None` → greedy.
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    /// 1.0 or `None` → off. Applied CTRL-style (divide positive logits).
    pub repetition_penalty: Option<f32>,
    pub seed: u64,
    /// How many alternatives (with log-probabilities) to report per token.
    pub top_n_tokens: usize,
    /// OpenAI's penalties on generated tokens: `logit -= presence * [count > 0]
    /// + frequency * count`.
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// Added to the logits of these tokens before sampling (OpenAI `logit_bias`).
    pub logit_bias: Vec<(u32, f32)>,
    /// Drop tokens whose probability is below `min_p` × the most likely one's.
    pub min_p: Option<f32>,
}

impl SamplingParams {
    pub fn is_greedy(&self) -> bool {
        self.temperature.is_none_or(|t| t <= 0.0) || self.top_k == Some(1)
    }
}

/// One sampled token with its log-probability under the model's distribution
/// (before temperature/top-k/top-p), and the `top_n_tokens` best alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub id: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// Per-sequence sampler state.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Scratch: (id, value) candidates, reused between steps.
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Self {
            params,
            rng,
            candidates: Vec::new(),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token. `history` holds prompt and generated ids (for the
    /// repetition penalty), the last `generated` of them generated (for the
    /// presence and frequency penalties); `banned` tokens cannot be picked.
    /// `logits` may be modified in place.
    pub fn sample(
        &mut self,
        logits: &mut [f32],
        history: &[u32],
        generated: usize,
        banned: &[u32],
    ) -> Sampled {
        // Every token reports its log-probability: a vectorized pass over the vocabulary.
        let log_z = kernels::ops::log_sum_exp(logits);
        let top = top_n(logits, self.params.top_n_tokens, log_z);

        // Log-probabilities are the model's own, before any sampling knob: keep
        // the raw logits of the tokens the knobs are about to change.
        let generated = &history[history.len().saturating_sub(generated)..];
        let raw_seen = self.adjust(logits, history, generated, banned);
        let id = if self.params.is_greedy() {
            argmax(logits)
        } else {
            self.sample_stochastic(logits)
        };
        let raw = raw_seen
            .iter()
            .find(|(t, _)| *t == id)
            .map_or(logits[id as usize], |(_, l)| *l);
        Sampled {
            id,
            logprob: raw - log_z,
            top,
        }
    }

    /// Applies the penalties, the bias and the bans; returns the raw logits of
    /// the tokens it changed.
    fn adjust(
        &self,
        logits: &mut [f32],
        history: &[u32],
        generated: &[u32],
        banned: &[u32],
    ) -> Vec<(u32, f32)> {
        let p = &self.params;
        let repetition = p.repetition_penalty.filter(|r| *r != 1.0);
        let presence = p.presence_penalty.filter(|x| *x != 0.0);
        let frequency = p.frequency_penalty.filter(|x| *x != 0.0);
        let mut touched: Vec<u32> = banned.to_vec();
        touched.extend(p.logit_bias.iter().map(|b| b.0));
        if repetition.is_some() {
            touched.extend_from_slice(history);
        } else if presence.is_some() || frequency.is_some() {
            touched.extend_from_slice(generated);
        }
        let raw: Vec<(u32, f32)> = touched
            .iter()
            .filter_map(|&t| Some((t, *logits.get(t as usize)?)))
            .collect();
        if let Some(r) = repetition {
            apply_repetition_penalty(logits, history, r);
        }
        if presence.is_some() || frequency.is_some() {
            apply_openai_penalties(logits, generated, presence, frequency);
        }
        for &(id, bias) in &p.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += bias;
            }
        }
        for &id in banned {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        raw
    }

    fn sample_stochastic(&mut self, logits: &[f32]) -> u32 {
        let temperature = self.params.temperature.unwrap_or(1.0).max(1e-6);
        let cands = &mut self.candidates;
        cands.clear();
        cands.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));

        let k = self.params.top_k.unwrap_or(0);
        if k > 0 && k < cands.len() {
            cands.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
            cands.truncate(k);
        }
        cands.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));

        // Softmax with temperature over the survivors.
        let max = cands[0].1;
        let mut sum = 0.0f32;
        for c in cands.iter_mut() {
            c.1 = ((c.1 - max) / temperature).exp();
            sum += c.1;
        }
        for c in cands.iter_mut() {
            c.1 /= sum;
        }
        if let Some(min_p) = self.params.min_p.filter(|m| *m > 0.0) {
            // Sorted best first: keep the head above min_p × the best probability.
            let floor = cands[0].1 * min_p;
            let keep = cands.iter().take_while(|c| c.1 >= floor).count().max(1);
            cands.truncate(keep);
        }
        if let Some(p) = self.params.top_p.filter(|p| *p < 1.0) {
            let mut cum = 0.0;
            let mut keep = cands.len();
            for (i, c) in cands.iter().enumerate() {
                cum += c.1;
                if cum >= p {
                    keep = i + 1;
                    break;
                }
            }
            cands.truncate(keep);
        }
        let total: f32 = cands.iter().map(|c| c.1).sum();
        let mut r = self.rng.random::<f32>() * total;
        for c in cands.iter() {
            r -= c.1;
            if r <= 0.0 {
                return c.0;
            }
        }
        cands.last().map_or(0, |c| c.0)
    }
}

/// Divides positive logits and multiplies negative ones of already-seen tokens.
pub fn apply_repetition_penalty(logits: &mut [f32], history: &[u32], penalty: f32) {
    for &id in history {
        if let Some(l) = logits.get_mut(id as usize) {
            *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
        }
    }
}

/// OpenAI's presence and frequency penalties over the generated tokens.
pub fn apply_openai_penalties(
    logits: &mut [f32],
    generated: &[u32],
    presence: Option<f32>,
    frequency: Option<f32>,
) {
    let mut counts: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
    for &t in generated {
        *counts.entry(t).or_default() += 1;
    }
    for (t, n) in counts {
        if let Some(l) = logits.get_mut(t as usize) {
            *l -= presence.unwrap_or(0.0) + frequency.unwrap_or(0.0) * n as f32;
        }
    }
}

pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

/// The `n` highest logits as (id, log-probability), best first.
pub fn top_n(logits: &[f32], n: usize, log_z: f32) -> Vec<(u32, f32)> {
    if n == 0 {
        return Vec::new();
    }
    let mut idx: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l))
        .collect();
    let n = n.min(idx.len());
    idx.select_nth_unstable_by(n - 1, |a, b| b.1.total_cmp(&a.1));
    idx.truncate(n);
    idx.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
    idx.into_iter().map(|(i, l)| (i, l - log_z)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: Option<f32>, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            seed,
            ..Default::default()
        }
    }

    #[test]
    fn greedy_picks_the_largest_logit() {
        let mut s = Sampler::new(params(None, 0));
        let mut logits = vec![0.1, 3.0, -1.0, 2.9];
        assert_eq!(s.sample(&mut logits, &[], 0, &[]).id, 1);
    }

    #[test]
    fn the_same_seed_gives_the_same_tokens() {
        let draw = |seed| {
            let mut s = Sampler::new(params(Some(1.0), seed));
            (0..32)
                .map(|_| s.sample(&mut [1.0, 1.1, 0.9, 1.05, 0.95], &[], 0, &[]).id)
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_keeps_the_head() {
        let mut s = Sampler::new(SamplingParams {
            temperature: Some(1.0),
            top_k: Some(1),
            ..Default::default()
        });
        assert_eq!(s.sample(&mut [0.0, 5.0, 1.0], &[], 0, &[]).id, 1);
        let mut s = Sampler::new(SamplingParams {
            temperature: Some(1.0),
            top_p: Some(0.5),
            seed: 3,
            ..Default::default()
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.0, 10.0, 1.0], &[], 0, &[]).id, 1);
        }
    }

    #[test]
    fn repetition_penalty_lowers_seen_tokens() {
        let mut logits = vec![2.0, -2.0, 1.0];
        apply_repetition_penalty(&mut logits, &[0, 1], 2.0);
        assert_eq!(logits, vec![1.0, -4.0, 1.0]);
    }

    #[test]
    fn presence_and_frequency_penalties_count_generated_tokens_only() {
        let mut logits = vec![5.0, 5.0, 5.0];
        // Token 0 generated twice, token 1 once; token 2 only in the prompt.
        apply_openai_penalties(&mut logits, &[0, 1, 0], Some(0.5), Some(1.0));
        assert_eq!(logits, vec![2.5, 3.5, 5.0]);
        let mut s = Sampler::new(SamplingParams {
            frequency_penalty: Some(2.0),
            ..Default::default()
        });
        // History [2 (prompt), 0, 0 (generated)]: 0 drops below 1.
        let out = s.sample(&mut [3.0, 1.0, 0.0], &[2, 0, 0], 2, &[]);
        assert_eq!(out.id, 1);
    }

    #[test]
    fn logit_bias_and_bans_steer_the_pick_but_not_the_reported_logprob() {
        let mut s = Sampler::new(SamplingParams {
            logit_bias: vec![(2, 100.0)],
            ..Default::default()
        });
        let out = s.sample(&mut [1.0, 0.0, 0.0], &[], 0, &[]);
        assert_eq!(out.id, 2);
        let total: f32 = [1.0f32, 0.0, 0.0].iter().map(|l| l.exp()).sum();
        assert!((out.logprob - (1.0 / total).ln()).abs() < 1e-5);
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&mut [9.0, 1.0, 0.0], &[], 0, &[0]).id, 1);
    }

    #[test]
    fn min_p_keeps_only_likely_tokens() {
        let mut s = Sampler::new(SamplingParams {
            temperature: Some(1.0),
            min_p: Some(0.5),
            seed: 1,
            ..Default::default()
        });
        for _ in 0..50 {
            // p(1) ≈ 0.73 of the best, p(2) ≈ 0.0001 of it: 2 never comes up.
            let id = s.sample(&mut [1.0, 0.7, -8.0], &[], 0, &[]).id;
            assert!(id < 2);
        }
    }

    #[test]
    fn top_n_reports_log_probabilities_best_first() {
        let mut s = Sampler::new(SamplingParams {
            top_n_tokens: 2,
            ..Default::default()
        });
        let out = s.sample(&mut [0.0, 2.0, 1.0], &[], 0, &[]);
        assert_eq!(out.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
        let total: f32 = [0.0f32, 2.0, 1.0].iter().map(|l| l.exp()).sum();
        assert!((out.top[0].1 - (2.0f32.exp() / total).ln()).abs() < 1e-5);
        assert!((out.logprob - out.top[0].1).abs() < 1e-6);
    }
}
