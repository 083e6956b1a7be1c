//! `candlelight compare-logits` (hidden): one backend's logits against candle's
//! on the CPU, for the same weights and tokens. The GPU check runs it with
//! `--synthetic SEED --device cuda:0`, since no model file reaches the GPU.
//!
//! Tokens are seeded random ids, fed by teacher forcing twice: as one batched
//! prefill of every sequence (the many-row matmul paths) and one token per
//! sequence per step (the decode paths). Each position's log-probabilities are
//! compared with the reference's prefill.

use std::path::PathBuf;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::DEFAULT_MODEL;
use crate::engine::backend::{Backend, BackendError, BackendKind, Device, LogitsFor, SeqChunk};
use crate::engine::kv::{BlockId, DEFAULT_BLOCK_SIZE};
use crate::engine::{LoadOptions, LoadedModel};

#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// GGUF file: the model, or with --synthetic its metadata alone.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Seeded random weights of the file's shape (as `serve --synthetic`).
    #[arg(long)]
    pub synthetic: Option<u64>,
    /// Device under test; the reference is candle on the CPU.
    #[arg(long, default_value = "cuda:0")]
    pub device: Device,
    /// Backend under test.
    #[arg(long, default_value = "candle")]
    pub backend: BackendKind,
    /// Backend of the reference, on the CPU.
    #[arg(long, default_value = "candle")]
    pub reference: BackendKind,
    #[command(flatten)]
    pub plan: Plan,
    /// Least share of positions whose most likely token agrees.
    #[arg(long, default_value_t = 0.95)]
    pub min_top1: f64,
    /// Largest difference of any token's log-probability at any position (nats).
    #[arg(long, default_value_t = 1.0)]
    pub max_logprob_diff: f64,
    /// Largest mean over positions of KL(reference ‖ subject) (nats).
    #[arg(long, default_value_t = 0.01)]
    pub max_mean_kl: f64,
    /// CPU threads for the reference (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Which tokens are compared.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Plan {
    /// Sequences, batched together.
    #[arg(long, default_value_t = 4)]
    pub sequences: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    pub tokens: usize,
    /// Seed of the random token ids.
    #[arg(long, default_value_t = 1)]
    pub token_seed: u64,
}

/// How far one pass's logits are from the reference's.
#[derive(Debug, Clone, PartialEq)]
pub struct Agreement {
    pub positions: usize,
    /// Positions whose most likely token is the reference's.
    pub top1: usize,
    /// Largest |Δ log-probability| over every token and position.
    pub max_diff: f64,
    /// Largest |Δ log-probability| of the reference's most likely token.
    pub max_diff_top1: f64,
    /// Mean over positions of the largest |Δ log-probability| at that position.
    pub mean_max_diff: f64,
    /// Mean over positions of KL(reference ‖ subject), in nats.
    pub mean_kl: f64,
}

impl Agreement {
    pub fn top1_share(&self) -> f64 {
        self.top1 as f64 / self.positions.max(1) as f64
    }
}

/// Log-softmax of one row, in f64.
fn log_probs(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max
        + row
            .iter()
            .map(|&z| (z as f64 - max).exp())
            .sum::<f64>()
            .ln();
    row.iter().map(|&z| z as f64 - lse).collect()
}

fn argmax(row: &[f64]) -> usize {
    (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best })
}

/// Compares `subject` with `reference`, both `rows × vocab` logits.
pub fn agreement(reference: &[f32], subject: &[f32], vocab: usize) -> Agreement {
    let mut a = Agreement {
        positions: 0,
        top1: 0,
        max_diff: 0.0,
        max_diff_top1: 0.0,
        mean_max_diff: 0.0,
        mean_kl: 0.0,
    };
    for (r, s) in reference.chunks(vocab).zip(subject.chunks(vocab)) {
        let (r, s) = (log_probs(r), log_probs(s));
        let best = argmax(&r);
        a.positions += 1;
        a.top1 += usize::from(argmax(&s) == best);
        // A NaN anywhere must fail the check, so NaN counts as infinitely far.
        let diff = |i: usize| {
            let d = (r[i] - s[i]).abs();
            if d.is_nan() {
                f64::INFINITY
            } else {
                d
            }
        };
        let row_max = (0..vocab).map(diff).fold(0.0, f64::max);
        a.max_diff = a.max_diff.max(row_max);
        a.max_diff_top1 = a.max_diff_top1.max(diff(best));
        a.mean_max_diff += row_max;
        a.mean_kl += r
            .iter()
            .zip(&s)
            .map(|(r, s)| r.exp() * (r - s))
            .sum::<f64>();
    }
    a.mean_max_diff /= a.positions.max(1) as f64;
    a.mean_kl /= a.positions.max(1) as f64;
    a
}

/// Seeded random token ids: `plan.sequences` rows of `plan.tokens`.
pub fn token_sequences(plan: &Plan, vocab: usize) -> Vec<Vec<u32>> {
    let mut rng = StdRng::seed_from_u64(plan.token_seed);
    (0..plan.sequences)
        .map(|_| {
            (0..plan.tokens)
                .map(|_| rng.random_range(0..vocab as u32))
                .collect()
        })
        .collect()
}

/// Block tables: sequence `i` of `seqs.len()` gets its own blocks, after `first`.
fn tables(seqs: &[Vec<u32>], first: usize) -> Vec<Vec<BlockId>> {
    let per = seqs
        .first()
        .map_or(0, |s| s.len().div_ceil(DEFAULT_BLOCK_SIZE));
    (0..seqs.len())
        .map(|i| ((first + i * per) as BlockId..(first + (i + 1) * per) as BlockId).collect())
        .collect()
}

/// Blocks [`prefill`] and [`decode`] need together for `plan`.
pub fn blocks_needed(plan: &Plan) -> usize {
    2 * plan.sequences * plan.tokens.div_ceil(DEFAULT_BLOCK_SIZE)
}

/// Logits of every position, from one batched prefill of every sequence (in
/// the first half of the KV pool).
pub fn prefill(b: &mut dyn Backend, seqs: &[Vec<u32>]) -> Result<Vec<f32>, BackendError> {
    let tables = tables(seqs, 0);
    let chunks: Vec<SeqChunk<'_>> = seqs
        .iter()
        .zip(&tables)
        .map(|(tokens, blocks)| SeqChunk {
            tokens,
            start: 0,
            blocks,
            logits: LogitsFor::AllTokens,
        })
        .collect();
    let mut logits = Vec::new();
    b.forward(&chunks, &mut logits)?;
    Ok(logits)
}

/// Logits of every position, one token per sequence per step (in the second
/// half of the KV pool), in the order [`prefill`] returns them.
pub fn decode(b: &mut dyn Backend, seqs: &[Vec<u32>]) -> Result<Vec<f32>, BackendError> {
    let vocab = b.config().vocab_size;
    let len = seqs.first().map_or(0, Vec::len);
    let tables = tables(seqs, seqs.len() * len.div_ceil(DEFAULT_BLOCK_SIZE));
    let mut out = vec![0f32; seqs.len() * len * vocab];
    let mut step = Vec::new();
    for pos in 0..len {
        let chunks: Vec<SeqChunk<'_>> = seqs
            .iter()
            .zip(&tables)
            .map(|(tokens, blocks)| SeqChunk {
                tokens: &tokens[pos..pos + 1],
                start: pos,
                blocks,
                logits: LogitsFor::LastToken,
            })
            .collect();
        b.forward(&chunks, &mut step)?;
        for (i, row) in step.chunks(vocab).enumerate() {
            let at = (i * len + pos) * vocab;
            out[at..at + vocab].copy_from_slice(row);
        }
    }
    Ok(out)
}

fn load(args: &CompareArgs, device: Device, backend: BackendKind) -> anyhow::Result<LoadedModel> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let options = LoadOptions {
        device,
        backend,
        threads,
    };
    let loaded = match args.synthetic {
        Some(seed) => LoadedModel::load_synthetic(&args.model, options, seed),
        None => LoadedModel::load(&args.model, options),
    };
    let mut loaded =
        loaded.with_context(|| format!("loading {} on {device}", args.model.display()))?;
    loaded
        .backend
        .allocate_kv(DEFAULT_BLOCK_SIZE, blocks_needed(&args.plan))?;
    Ok(loaded)
}

/// Runs the comparison, prints a table, and fails when a pass is outside the
/// tolerance.
pub fn run(args: &CompareArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut reference = load(args, Device::Cpu, args.reference)?;
    let mut subject = load(args, args.device, args.backend)?;
    let (r, s) = (&reference.info.backend, &subject.info.backend);
    let weights = args.synthetic.map_or_else(
        || args.model.display().to_string(),
        |seed| format!("synthetic seed {seed}"),
    );
    println!(
        "compare-logits: {} {} ({}, {}) against {} {}; {weights}; {} sequences x {} tokens",
        s.backend,
        s.device,
        s.device_name,
        s.compute,
        r.backend,
        r.device,
        args.plan.sequences,
        args.plan.tokens
    );
    let vocab = reference.backend.config().vocab_size;
    let seqs = token_sequences(&args.plan, vocab);
    let expected = prefill(reference.backend.as_mut(), &seqs)?;
    let passes = [
        ("prefill", prefill(subject.backend.as_mut(), &seqs)?),
        ("decode", decode(subject.backend.as_mut(), &seqs)?),
    ];
    println!("pass     positions   top-1  max|dlogp|  max|dlogp| top-1  mean max|dlogp|  mean KL");
    let mut ok = true;
    for (name, logits) in &passes {
        let a = agreement(&expected, logits, vocab);
        let pass = a.positions == seqs.len() * args.plan.tokens
            && a.top1_share() >= args.min_top1
            && a.max_diff <= args.max_logprob_diff
            && a.mean_kl <= args.max_mean_kl;
        ok &= pass;
        println!(
            "{name:<8} {:>9}  {:>6.2}%  {:>10.4}  {:>16.4}  {:>15.4}  {:>7.5}  {}",
            a.positions,
            100.0 * a.top1_share(),
            a.max_diff,
            a.max_diff_top1,
            a.mean_max_diff,
            a.mean_kl,
            if pass { "ok" } else { "FAIL" }
        );
    }
    println!(
        "tolerance: top-1 >= {:.2}%, max |dlogp| <= {} nats, mean KL <= {} nats; {:.1} s",
        100.0 * args.min_top1,
        args.max_logprob_diff,
        args.max_mean_kl,
        started.elapsed().as_secs_f64()
    );
    anyhow::ensure!(
        ok,
        "logits differ from the CPU reference beyond the tolerance"
    );
    println!("compare-logits: PASS");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_counts_top1_and_the_largest_difference() {
        let reference = [0.0, 1.0, 3.0, 2.0, 0.0, 0.0];
        // Row 1: shifted by a constant (same log-probs); row 2: top-1 moves.
        let subject = [5.0, 6.0, 8.0, 0.0, 0.0, 2.5];
        let a = agreement(&reference, &subject, 3);
        assert_eq!(a.positions, 2);
        assert_eq!(a.top1, 1);
        assert!((a.max_diff - 2.4125).abs() < 1e-3, "{a:?}");
        let shifted = agreement(&reference[..3], &subject[..3], 3);
        assert_eq!(shifted.top1, 1);
        assert!(
            shifted.max_diff < 1e-9,
            "a constant shift changes no log-prob: {shifted:?}"
        );
        let nan = agreement(&reference, &[0.0, 1.0, f32::NAN, 2.0, 0.0, 0.0], 3);
        assert!(nan.max_diff.is_infinite(), "NaN must fail: {nan:?}");
    }

    #[test]
    fn tables_do_not_overlap() {
        let seqs = vec![vec![0u32; 20], vec![0u32; 20]];
        let first = tables(&seqs, 0);
        let second = tables(&seqs, 4);
        assert_eq!(first, vec![vec![0, 1], vec![2, 3]]);
        assert_eq!(second, vec![vec![4, 5], vec![6, 7]]);
        let plan = Plan {
            sequences: 2,
            tokens: 20,
            token_seed: 1,
        };
        assert_eq!(blocks_needed(&plan), 8);
    }
}
