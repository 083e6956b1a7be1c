//! GGML block layouts (bit-compatible with GGUF tensor bytes) and activation quantization.

use half::f16;

/// Elements per quantization block (GGML's QK4_1 = QK8_0 = QK8_1 = 32).
pub const QK: usize = 32;

/// GGML `block_q4_1`: `x = d * q + m`, `q` in 0..16. Low nibbles hold elements 0..16,
/// high nibbles elements 16..32.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; 16],
}

/// GGML `block_q8_0`: `x = d * q`, `q` in -128..128.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; 32],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

impl BlockQ4_1 {
    /// Bytes per block in a GGUF file.
    pub const BYTES: usize = 20;

    /// Reads one block from its little-endian GGUF bytes (`b.len() == 20`).
    pub(crate) fn from_le_bytes(b: &[u8]) -> Self {
        let mut qs = [0u8; 16];
        qs.copy_from_slice(&b[4..20]);
        Self {
            d: f16::from_le_bytes([b[0], b[1]]),
            m: f16::from_le_bytes([b[2], b[3]]),
            qs,
        }
    }

    /// The 32 dequantized values.
    pub fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        for (i, &q) in self.qs.iter().enumerate() {
            out[i] = d * f32::from(q & 0x0F) + m;
            out[i + 16] = d * f32::from(q >> 4) + m;
        }
    }
}

impl BlockQ8_0 {
    /// Bytes per block in a GGUF file.
    pub const BYTES: usize = 34;

    /// Reads one block from its little-endian GGUF bytes (`b.len() == 34`).
    pub(crate) fn from_le_bytes(b: &[u8]) -> Self {
        let mut qs = [0i8; 32];
        for (q, &byte) in qs.iter_mut().zip(&b[2..34]) {
            *q = byte as i8;
        }
        Self {
            d: f16::from_le_bytes([b[0], b[1]]),
            qs,
        }
    }

    /// The 32 dequantized values.
    pub fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = d * f32::from(q);
        }
    }
}

/// One quantized block of activations, like GGML's `block_q8_1` but with f32 scales:
/// `x ≈ d * q`, and `s = d * sum(q)` serves the `m` (offset) term of Q4_1 weights.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockQ8_1 {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; 32],
}

impl BlockQ8_1 {
    /// Quantizes 32 values the way GGML's x86 `quantize_row_q8_1` does
    /// (scale = absmax / 127, round half to even), so the SIMD quantizers match it bit for bit.
    pub fn quantize(x: &[f32]) -> Self {
        let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
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
