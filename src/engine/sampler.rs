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
    /// repetition penalty). `logits` may be modified in place.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> Sampled {
        // Every token reports its log-probability: a vectorized pass over the vocabulary.
        let log_z = kernels::ops::log_sum_exp(logits);
        let top = top_n(logits, self.params.top_n_tokens, log_z);

        // Log-probabilities are the model's own, before any sampling knob: keep
        // the raw logits of the tokens the penalty is about to change.
        let mut raw_seen = Vec::new();
        if let Some(penalty) = self.params.repetition_penalty.filter(|p| *p != 1.0) {
            raw_seen.extend(
                history
                    .iter()
                    .filter_map(|&t| Some((t, *logits.get(t as usize)?))),
            );
            apply_repetition_penalty(logits, history, penalty);
        }
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
        assert_eq!(s.sample(&mut logits, &[]).id, 1);
    }

    #[test]
    fn the_same_seed_gives_the_same_tokens() {
        let draw = |seed| {
            let mut s = Sampler::new(params(Some(1.0), seed));
            (0..32)
                .map(|_| s.sample(&mut [1.0, 1.1, 0.9, 1.05, 0.95], &[]).id)
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
        assert_eq!(s.sample(&mut [0.0, 5.0, 1.0], &[]).id, 1);
        let mut s = Sampler::new(SamplingParams {
            temperature: Some(1.0),
            top_p: Some(0.5),
            seed: 3,
            ..Default::default()
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.0, 10.0, 1.0], &[]).id, 1);
        }
    }

    #[test]
    fn repetition_penalty_lowers_seen_tokens() {
        let mut logits = vec![2.0, -2.0, 1.0];
        apply_repetition_penalty(&mut logits, &[0, 1], 2.0);
        assert_eq!(logits, vec![1.0, -4.0, 1.0]);
    }

    #[test]
    fn top_n_reports_log_probabilities_best_first() {
        let mut s = Sampler::new(SamplingParams {
            top_n_tokens: 2,
            ..Default::default()
        });
        let out = s.sample(&mut [0.0, 2.0, 1.0], &[]);
        assert_eq!(out.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
        let total: f32 = [0.0f32, 2.0, 1.0].iter().map(|l| l.exp()).sum();
        assert!((out.top[0].1 - (2.0f32.exp() / total).ln()).abs() < 1e-5);
        assert!((out.logprob - out.top[0].1).abs() < 1e-6);
    }
}
