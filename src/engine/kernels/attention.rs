//! Attention of one query row against an f16 KV cache stored in blocks.
//!
//! The cache stores keys and values in f16 (as llama.cpp does by default): half
//! the memory of f32 and half the bytes read per step, which at long contexts
//! outweighs the weights. The query heads that share a KV head (grouped-query
//! attention) are scored together, so each cached row is read and converted
//! once per KV head rather than once per query head. The query is rounded to
//! f16 first, as llama.cpp does before its f16 dot products, and so are the
//! softmax weights before they multiply the f16 values: this tracks the reference
//! outputs more closely (teacher forcing top-1 96–97% with the query rounded,
//! 95.4% without; rounding the weights too keeps every reference token of the
//! requantized files in the top 3).

use half::f16;

use super::ops;

/// How many positions ahead the SIMD path asks for cached rows. A block of
/// positions lies anywhere in the pool, so the hardware prefetcher loses the
/// stream at every block boundary.
#[cfg(target_arch = "x86_64")]
const PREFETCH_AHEAD: usize = 8;

/// Positions per tile of the SIMD path's weighted sum of values.
#[cfg(target_arch = "x86_64")]
const V_TILE: usize = 64;

/// Per-thread buffers for [`attend_group`].
#[derive(Default)]
pub struct AttendScratch {
    scores: Vec<f32>,
    /// One cached row in f32 (portable path).
    row: Vec<f32>,
    /// The query rounded to f16 precision.
    query: Vec<f32>,
}

/// One KV head's view of a paged cache: position `t` lives in block
/// `blocks[t / block_size]`, at row `blocks[..] * block_size + t % block_size`;
/// a row starts at `row * stride` and this head's `head_dim` values at its start.
#[derive(Clone, Copy)]
pub struct KvHead<'a> {
    pub keys: &'a [f16],
    pub values: &'a [f16],
    pub stride: usize,
    pub head_dim: usize,
    pub blocks: &'a [u32],
    pub block_size: usize,
}

impl KvHead<'_> {
    /// Element offset of position `t`'s row. Shifts, not a division: this runs
    /// once per cached position per head.
    #[inline(always)]
    fn offset(&self, t: usize) -> usize {
        let shift = self.block_size.trailing_zeros();
        let mask = self.block_size - 1;
        ((self.blocks[t >> shift] as usize) << shift | (t & mask)) * self.stride
    }

    /// Asks for position `t`'s row of `cache` (this head's `head_dim` values) to
    /// be brought into cache, if `t < ctx`.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn prefetch(&self, cache: &[f16], t: usize, ctx: usize) {
        if t < ctx {
            let row = cache.as_ptr().wrapping_add(self.offset(t));
            let bytes = self.head_dim * size_of::<f16>();
            // A row need not start a line: its last byte's line too.
            super::prefetch_lines(row, bytes);
            super::prefetch_lines(row.wrapping_add(self.head_dim - 1), 1);
        }
    }

    /// Panics unless every position `0..ctx` lies inside the cache slices.
    fn check(&self, ctx: usize) {
        assert!(
            self.block_size.is_power_of_two(),
            "attend_group: block size must be a power of two"
        );
        let used = ctx.div_ceil(self.block_size);
        assert!(
            self.blocks.len() >= used,
            "attend_group: block table shorter than the context"
        );
        let max_block = self.blocks[..used].iter().max().copied().unwrap_or(0) as usize;
        let end = ((max_block + 1) * self.block_size - 1) * self.stride + self.head_dim;
        assert!(
            self.keys.len() >= end && self.values.len() >= end,
            "attend_group: a block lies outside the cache"
        );
    }
}

/// Softmax attention of the query heads in `q` (`group * head_dim` floats, heads
/// back to back) over positions `0..ctx` of `kv`; writes `out` (same shape as `q`).
pub fn attend_group(
    q: &[f32],
    kv: KvHead<'_>,
    ctx: usize,
    scale: f32,
    scratch: &mut AttendScratch,
    out: &mut [f32],
) {
    let hd = kv.head_dim;
    assert!(
        hd > 0 && q.len().is_multiple_of(hd),
        "attend_group: query length"
    );
    assert_eq!(q.len(), out.len(), "attend_group: output length");
    assert!(ctx > 0, "attend_group: empty context");
    kv.check(ctx);
    let group = q.len() / hd;
    // Round the query to f16 as llama.cpp does before its f16 K dot products.
    let AttendScratch { scores, row, query } = scratch;
    query.clear();
    query.extend(q.iter().map(|&x| f16::from_f32(x).to_f32()));
    scores.resize(group * ctx, 0.0);
    #[cfg(target_arch = "x86_64")]
    {
        if hd.is_multiple_of(8)
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
        {
            // SAFETY: the features `attend_f16c` enables were just detected,
            // `head_dim` is a multiple of 8 and the cache bounds were checked.
            unsafe { attend_f16c(query, kv, ctx, scale, scores, out) };
            return;
        }
    }
    row.resize(hd, 0.0);
    attend_portable(query, kv, ctx, scale, scores, row, out);
}

/// The portable path: each cached row converted to f32, then plain loops.
fn attend_portable(
    q: &[f32],
    kv: KvHead<'_>,
    ctx: usize,
    scale: f32,
    scores: &mut [f32],
    row: &mut [f32],
    out: &mut [f32],
) {
    let hd = kv.head_dim;
    for t in 0..ctx {
        widen(&kv.keys[kv.offset(t)..], row);
        for (g, qh) in q.chunks_exact(hd).enumerate() {
            scores[g * ctx + t] = ops::dot_inline(qh, row) * scale;
        }
    }
    softmax_rows(scores, ctx);
    out.fill(0.0);
    for t in 0..ctx {
        widen(&kv.values[kv.offset(t)..], row);
        for (g, o) in out.chunks_exact_mut(hd).enumerate() {
            ops::axpy_inline(scores[g * ctx + t], row, o);
        }
    }
}

/// The first `dst.len()` values of `src`, in f32.
fn widen(src: &[f16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

/// Softmax of each `ctx`-long row of `scores`, in place, in separate passes so
/// each one vectorizes.
#[inline(always)]
fn softmax_rows(scores: &mut [f32], ctx: usize) {
    for s in scores.chunks_exact_mut(ctx) {
        let max = ops::max_inline(s);
        for v in s.iter_mut() {
            *v = ops::exp(*v - max);
        }
        let inv = 1.0 / ops::sum_inline(s);
        // In f16, as llama.cpp (without flash attention) hands the weights to its
        // f16 V product.
        scale_round_f16(s, inv);
    }
}

/// `x = f16(x · scale)`, kept in f32. Eight lanes at a time where the CPU has F16C:
/// one at a time it cost prefill at 512 tokens about 4%.
fn scale_round_f16(x: &mut [f32], scale: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx") && std::is_x86_feature_detected!("f16c") {
            // SAFETY: the features `scale_round_f16_f16c` enables were just detected.
            unsafe { scale_round_f16_f16c(x, scale) };
            return;
        }
    }
    scale_round_f16_portable(x, scale);
}

fn scale_round_f16_portable(x: &mut [f32], scale: f32) {
    for v in x {
        *v = f16::from_f32(*v * scale).to_f32();
    }
}

/// # Safety
/// The CPU has AVX and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn scale_round_f16_f16c(x: &mut [f32], scale: f32) {
    use std::arch::x86_64::*;
    let s = _mm256_set1_ps(scale);
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        // SAFETY: `c` holds 8 f32; round to nearest even, as `f16::from_f32`.
        unsafe {
            let v = _mm256_mul_ps(_mm256_loadu_ps(c.as_ptr()), s);
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm256_storeu_ps(c.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
    }
    scale_round_f16_portable(chunks.into_remainder(), scale);
}

/// AVX2 + F16C: cached rows converted 8 at a time in registers, one FMA chain
/// per query head.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `head_dim` is a multiple of 8; `kv` holds
/// `ctx` rows; `scores` holds `group * ctx` and `out` `q.len()` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_f16c(
    q: &[f32],
    kv: KvHead<'_>,
    ctx: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let hd = kv.head_dim;
    let group = q.len() / hd;
    let chunks = hd / 8;
    debug_assert!(scores.len() >= group * ctx && out.len() == q.len());
    // SAFETY (all pointer reads and writes below): rows `t < ctx` of `kv` are in
    // bounds (checked by `attend_group`), each row holds `chunks * 8` elements,
    // and `q`, `out` and `scores` have the lengths stated above.
    unsafe {
        for t in 0..ctx {
            kv.prefetch(kv.keys, t + PREFETCH_AHEAD, ctx);
            let k = kv.keys.as_ptr().add(kv.offset(t)) as *const __m128i;
            if chunks == 8 {
                // head_dim 64: the row converted once, in registers, for every head.
                score_position::<8>(k, q, scale, scores.as_mut_ptr().add(t), ctx, group);
                continue;
            }
            for g in 0..group {
                let qg = q.as_ptr().add(g * hd);
                let mut acc = _mm256_setzero_ps();
                for j in 0..chunks {
                    let kj = _mm256_cvtph_ps(_mm_loadu_si128(k.add(j)));
                    acc = _mm256_fmadd_ps(_mm256_loadu_ps(qg.add(8 * j)), kj, acc);
                }
                let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_movehdup_ps(s));
                *scores.get_unchecked_mut(g * ctx + t) = _mm_cvtss_f32(s) * scale;
            }
        }
        softmax_rows(&mut scores[..group * ctx], ctx);
        // The weighted sum of value rows, a tile of positions at a time: a
        // head's output stays in registers across the tile (not loaded and
        // stored once per position), and the tile's rows stay in L1 for the
        // group's other heads. Per output value the sum runs in position
        // order, as one position at a time would.
        out.fill(0.0);
        for t0 in (0..ctx).step_by(V_TILE) {
            let tile = t0..(t0 + V_TILE).min(ctx);
            for t in tile.end..(tile.end + V_TILE).min(ctx) {
                kv.prefetch(kv.values, t, ctx);
            }
            for g in 0..group {
                let weights = scores.as_ptr().add(g * ctx);
                let og = out.as_mut_ptr().add(g * hd);
                let mut j = 0;
                while j + 8 <= chunks {
                    add_weighted_values::<8>(kv, weights, tile.clone(), j, og);
                    j += 8;
                }
                while j < chunks {
                    add_weighted_values::<1>(kv, weights, tile.clone(), j, og);
                    j += 1;
                }
            }
        }
    }
}

/// `scores[g · ctx] = scale · (q_g · k)` for each query head `g` of the group,
/// where `k` (`N` chunks of 8 f16) is converted to f32 once; per head the dot
/// product runs in the same order as the one-head-at-a-time loop.
///
/// # Safety
/// As [`attend_f16c`]: the CPU has AVX2, FMA and F16C, `k` holds `N` chunks,
/// `q` holds `group` heads of `8N`, and `scores` is in bounds at each `g · ctx`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn score_position<const N: usize>(
    k: *const std::arch::x86_64::__m128i,
    q: &[f32],
    scale: f32,
    scores: *mut f32,
    ctx: usize,
    group: usize,
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract covers every read and write.
    unsafe {
        let mut row = [_mm256_setzero_ps(); N];
        for (i, r) in row.iter_mut().enumerate() {
            *r = _mm256_cvtph_ps(_mm_loadu_si128(k.add(i)));
        }
        for g in 0..group {
            let qg = q.as_ptr().add(g * 8 * N);
            let mut acc = _mm256_setzero_ps();
            for (i, r) in row.iter().enumerate() {
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(qg.add(8 * i)), *r, acc);
            }
            let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            *scores.add(g * ctx) = _mm_cvtss_f32(s) * scale;
        }
    }
}

/// `out[8c..8(c + N)] += Σ weights[t] · values[t][8c..8(c + N)]` over `positions`,
/// in position order, with the `N` chunks of 8 in registers.
///
/// # Safety
/// As [`attend_f16c`]: the CPU has AVX2, FMA and F16C, every position is a
/// checked row of `kv`, `weights` holds them, and `out` and each row hold the
/// chunks `c..c + N`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn add_weighted_values<const N: usize>(
    kv: KvHead<'_>,
    weights: *const f32,
    positions: std::ops::Range<usize>,
    c: usize,
    out: *mut f32,
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract covers every read and write.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); N];
        for (i, a) in acc.iter_mut().enumerate() {
            *a = _mm256_loadu_ps(out.add(8 * (c + i)));
        }
        for t in positions {
            let p = _mm256_set1_ps(*weights.add(t));
            let v = (kv.values.as_ptr().add(kv.offset(t)) as *const __m128i).add(c);
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(p, _mm256_cvtph_ps(_mm_loadu_si128(v.add(i))), *a);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(8 * (c + i)), *a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The F16C path rounds exactly as `f16::from_f32` does, f16 subnormals
    /// included, and handles a tail shorter than 8.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn scale_round_f16_matches_the_scalar_rounding() {
        if !(std::is_x86_feature_detected!("avx") && std::is_x86_feature_detected!("f16c")) {
            return;
        }
        let mut x: Vec<f32> = (0..1027)
            .map(|i| {
                let t = (i as f32 * 0.618_034).fract();
                // From f16 subnormals (below 6.1e-5) up to 1.
                t * 10f32.powi(-(i % 9))
            })
            .collect();
        x.extend([
            0.0,
            1.0,
            0.5 + 2f32.powi(-12),
            2f32.powi(-25),
            2f32.powi(-24),
        ]);
        let mut want = x.clone();
        scale_round_f16_portable(&mut want, 0.75);
        // SAFETY: the features were detected above.
        unsafe { scale_round_f16_f16c(&mut x, 0.75) };
        for (i, (a, b)) in x.iter().zip(&want).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "element {i}: {a} vs {b}");
        }
    }

    /// Plain f32 attention of one head, the reference.
    fn reference(q: &[f32], keys: &[Vec<f32>], values: &[Vec<f32>], scale: f32) -> Vec<f32> {
        let s: Vec<f32> = keys
            .iter()
            .map(|k| q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale)
            .collect();
        let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = s.iter().map(|v| (v - max).exp()).collect();
        let sum: f32 = e.iter().sum();
        let mut out = vec![0.0; q.len()];
        for (p, v) in e.iter().zip(values) {
            for (o, x) in out.iter_mut().zip(v) {
                *o += p / sum * x;
            }
        }
        out
    }

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_f32_reference_for_every_head_of_a_group() {
        // The SIMD path: head_dim 64 has its own scoring; positions run in
        // tiles of V_TILE (64), the last one partial; chunks of 8 are summed
        // eight at a time and then one at a time.
        for (hd, group, ctx, bs) in [
            (64usize, 3usize, 37usize, 16usize),
            (64, 3, 200, 16),
            (128, 2, 70, 16),
            (24, 2, 130, 4),
            (8, 2, 1, 4),
            (12, 1, 5, 2),
            (8, 1, 9, 1),
        ] {
            let kv_heads = 2;
            let stride = kv_heads * hd;
            let head = 1; // the second KV head: exercises the stride and offset
                          // Blocks in reverse order, plus a spare: positions are not contiguous.
            let n_blocks = ctx.div_ceil(bs) + 1;
            let blocks: Vec<u32> = (0..n_blocks as u32).rev().collect();
            let kf = pseudo_random(n_blocks * bs * stride, 1);
            let vf = pseudo_random(n_blocks * bs * stride, 2);
            // f16-exact queries: attend_group rounds its query to f16 (as llama.cpp does).
            let q: Vec<f32> = pseudo_random(group * hd, 3)
                .iter()
                .map(|&v| f16::from_f32(v).to_f32())
                .collect();
            let to_h = |x: &[f32]| x.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>();
            let (kh, vh) = (to_h(&kf), to_h(&vf));
            let kv = KvHead {
                keys: &kh[head * hd..],
                values: &vh[head * hd..],
                stride,
                head_dim: hd,
                blocks: &blocks,
                block_size: bs,
            };
            let scale = 1.0 / (hd as f32).sqrt();
            let mut out = vec![0.0; q.len()];
            attend_group(&q, kv, ctx, scale, &mut AttendScratch::default(), &mut out);
            let mut portable = vec![0.0; q.len()];
            let (mut scores, mut row) = (vec![0.0; group * ctx], vec![0.0; hd]);
            attend_portable(&q, kv, ctx, scale, &mut scores, &mut row, &mut portable);
            // The reference sees the same f16-rounded cache, read through the table.
            let rows = |h: &[f16]| -> Vec<Vec<f32>> {
                (0..ctx)
                    .map(|t| {
                        let r = blocks[t / bs] as usize * bs + t % bs;
                        h[r * stride + head * hd..r * stride + (head + 1) * hd]
                            .iter()
                            .map(|v| v.to_f32())
                            .collect()
                    })
                    .collect()
            };
            let (kr, vr) = (rows(&kh), rows(&vh));
            for g in 0..group {
                let want = reference(&q[g * hd..(g + 1) * hd], &kr, &vr, scale);
                for (path, got) in [("selected", &out), ("portable", &portable)] {
                    for (i, (a, b)) in got[g * hd..(g + 1) * hd].iter().zip(&want).enumerate() {
                        assert!(
                            (a - b).abs() < 1e-4,
                            "{path}: hd {hd} group {group} ctx {ctx} head {g} [{i}]: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}
