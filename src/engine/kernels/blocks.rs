//! Activation quantization: 8 bits per block of 32, as GGML quantizes activations
//! for its integer dot products.

use half::f16;

/// Elements per quantization block (GGML's QK4_0 = QK8_0 = QK8_1 = 32; K-quants
/// are handled as 8 such blocks).
pub const QK: usize = 32;

/// One quantized block of activations, like GGML's `block_q8_1` but with f32 scales:
/// `x ≈ d * q`, and `s = d * sum(q)` serves the offset and min terms of the weights.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockQ8_1 {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; 32],
}

impl BlockQ8_1 {
    /// Little-endian 4-byte word of quants starting at `at`: what a kernel broadcasts
    /// against a word of weight quants.
    #[inline(always)]
    pub fn word(&self, at: usize) -> i32 {
        let q = &self.qs;
        i32::from_le_bytes([
            q[at] as u8,
            q[at + 1] as u8,
            q[at + 2] as u8,
            q[at + 3] as u8,
        ])
    }

    /// Quantizes 32 values the way GGML's x86 `quantize_row_q8_0`/`q8_1` do (scale =
    /// absmax / 127 rounded to f16, quants rounded half to even from the unrounded
    /// scale), so results track llama.cpp's and the SIMD quantizers match bit for bit.
    pub fn quantize(x: &[f32]) -> Self {
        let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        // GGML stores the scale in f16 (`block_q8_0`, `block_q8_1`): so do we.
        let d = f16::from_f32(amax / 127.0).to_f32();
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut qs = [0i8; 32];
        let mut sum = 0i32;
        for (q, &v) in qs.iter_mut().zip(x) {
            // |v * id| <= 127 (up to rounding), so the cast cannot saturate.
            *q = (v * id).round_ties_even() as i8;
            sum += i32::from(*q);
        }
        Self {
            d,
            s: d * sum as f32,
            qs,
        }
    }
}

/// Quantizes `x` (a multiple of [`QK`] long) into `out` (`x.len() / QK` blocks).
pub fn quantize_row_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (o, chunk) in out.iter_mut().zip(x.chunks_exact(QK)) {
        *o = BlockQ8_1::quantize(chunk);
    }
}

/// `[d·Σq, d·Σq]` over each 16-element half of each block: the activation sums
/// that formats with per-16 scales (Q6_K) need for their offset term.
pub fn half_sums(xq: &[BlockQ8_1], out: &mut Vec<[f32; 2]>) {
    out.clear();
    out.extend(xq.iter().map(|b| {
        let (lo, hi) = b.qs.split_at(QK / 2);
        let sum = |h: &[i8]| h.iter().map(|&q| i32::from(q)).sum::<i32>() as f32;
        [b.d * sum(lo), b.d * sum(hi)]
    }));
}

/// Quantizes `x` (a multiple of 256 long) as GGML's `quantize_row_q8_K_ref` does:
/// one scale per 256 elements, `q = round(-127·x / max)` with `max` the first
/// element of largest magnitude, so `d = -max / 127` may be negative. Each group of
/// 8 blocks in `out` shares its `d`.
pub fn quantize_row_q8_k(x: &[f32], out: &mut [BlockQ8_1]) {
    const SUPER: usize = 8 * QK;
    debug_assert_eq!(x.len(), out.len() * QK);
    for (o, xs) in out.chunks_exact_mut(SUPER / QK).zip(x.chunks_exact(SUPER)) {
        let amax = xs.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let Some(&max) = xs.iter().find(|v| v.abs() == amax).filter(|_| amax != 0.0) else {
            o.fill(BlockQ8_1::default());
            continue;
        };
        let iscale = -127.0 / max;
        let d = 1.0 / iscale;
        for (b, xb) in o.iter_mut().zip(xs.chunks_exact(QK)) {
            let mut sum = 0i32;
            for (q, &v) in b.qs.iter_mut().zip(xb) {
                *q = (iscale * v).round_ties_even().min(127.0) as i8;
                sum += i32::from(*q);
            }
            b.d = d;
            b.s = d * sum as f32;
        }
    }
}
