//! The GGUF tensor types with native kernels: how each GGML block (bit-compatible
//! with GGUF tensor bytes) maps losslessly onto [`super::tiles`].
//!
//! | type | GGML value | tiles |
//! | --- | --- | --- |
//! | Q4_0 | `d·(q − 8)` | [`Nib4`] + [`F16Scales`], offset 8 |
//! | Q4_1 | `d·q + m` | [`Nib4`] + [`F16ScalesMins`] |
//! | Q5_0 | `d·(q − 16)` | [`Nib5`] + [`F16Scales`], offset 16 |
//! | Q8_0 | `d·q`, `q` signed | [`Byte8`] (`q + 128`) + [`F16Scales`], offset 128 |
//! | Q4_K | `d·sc·q − dmin·mn` per 32 of 256 | [`Nib4`] + [`KScalesMins`] |
//! | Q5_K | as Q4_K, 5-bit `q` | [`Nib5`] + [`KScalesMins`] |
//! | Q6_K | `d·sc·(q − 32)` per 16 of 256 | [`Nib6`] + [`K6Scales`], offset 32 |

use half::f16;

use super::blocks::QK;
use super::tiles::{
    Byte8, F16Scales, F16ScalesMins, K6Scales, KScalesMins, Nib4, Nib5, Nib6, Quants, Scales,
};

/// A GGUF tensor type the kernels compute natively.
pub trait Format: Send + Sync + 'static {
    type Q: Quants;
    type S: Scales;
    /// Lower-case GGUF name, e.g. `q4_k`.
    const NAME: &'static str;
    /// Subtracted from stored quants: `x = d·(q − OFFSET) + m`.
    const OFFSET: i32;
    /// Bytes of one GGML block, which covers `32 · S::PER_SUPER` elements.
    const BLOCK_BYTES: usize;
    /// Quantize activations per 256 elements (one scale for 8 blocks), as llama.cpp
    /// does for K-quants (its `block_q8_K`), rather than per 32: the coarser scale
    /// changes results enough to matter when comparing with llama.cpp's outputs.
    const SUPER_ACTS: bool = false;
    /// Decodes one GGML block into its 32-element blocks' quants and row scales.
    fn decode(b: &[u8], q: &mut [[u8; QK]], rows: &mut [RowOf<Self>], sup: &mut SuperRowOf<Self>);
}

pub type RowOf<F> = <<F as Format>::S as Scales>::Row;
pub type SuperRowOf<F> = <<F as Format>::S as Scales>::SuperRow;

fn f16_at(b: &[u8], at: usize) -> f16 {
    f16::from_le_bytes([b[at], b[at + 1]])
}

/// GGML's Q4 packing of 16 bytes: low nibbles are elements 0..16, high 16..32.
fn unpack_q4(qs: &[u8], q: &mut [u8; QK]) {
    for (k, &byte) in qs[..QK / 2].iter().enumerate() {
        q[k] = byte & 0x0F;
        q[k + QK / 2] = byte >> 4;
    }
}

/// Sets bit 4 of quant `k` from bit `k` of `qh` (Q5_0's high bits).
fn add_high_bits(qh: u32, q: &mut [u8; QK]) {
    for (k, v) in q.iter_mut().enumerate() {
        *v |= ((qh >> k & 1) as u8) << 4;
    }
}

macro_rules! marker {
    ($($name:ident),*) => {$(
        #[allow(non_camel_case_types)]
        #[doc = concat!("GGUF type ", stringify!($name), ".")]
        pub struct $name;
    )*};
}
marker!(Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K);

impl Format for Q4_0 {
    type Q = Nib4;
    type S = F16Scales;
    const NAME: &'static str = "q4_0";
    const OFFSET: i32 = 8;
    const BLOCK_BYTES: usize = 18;

    fn decode(b: &[u8], q: &mut [[u8; QK]], rows: &mut [f16], _: &mut ()) {
        rows[0] = f16_at(b, 0);
        unpack_q4(&b[2..], &mut q[0]);
    }
}

impl Format for Q4_1 {
    type Q = Nib4;
    type S = F16ScalesMins;
    const NAME: &'static str = "q4_1";
    const OFFSET: i32 = 0;
    const BLOCK_BYTES: usize = 20;

    fn decode(b: &[u8], q: &mut [[u8; QK]], rows: &mut [(f16, f16)], _: &mut ()) {
        rows[0] = (f16_at(b, 0), f16_at(b, 2));
        unpack_q4(&b[4..], &mut q[0]);
    }
}

impl Format for Q5_0 {
    type Q = Nib5;
    type S = F16Scales;
    const NAME: &'static str = "q5_0";
    const OFFSET: i32 = 16;
    const BLOCK_BYTES: usize = 22;

    fn decode(b: &[u8], q: &mut [[u8; QK]], rows: &mut [f16], _: &mut ()) {
        rows[0] = f16_at(b, 0);
        unpack_q4(&b[6..], &mut q[0]);
        add_high_bits(u32::from_le_bytes([b[2], b[3], b[4], b[5]]), &mut q[0]);
    }
}

impl Format for Q8_0 {
    type Q = Byte8;
    type S = F16Scales;
    const NAME: &'static str = "q8_0";
    const OFFSET: i32 = 128;
    const BLOCK_BYTES: usize = 34;

    fn decode(b: &[u8], q: &mut [[u8; QK]], rows: &mut [f16], _: &mut ()) {
        rows[0] = f16_at(b, 0);
        for (v, &byte) in q[0].iter_mut().zip(&b[2..2 + QK]) {
            *v = byte ^ 0x80;
        }
    }
}

/// Sub-block `j`'s 6-bit scale and min from a K-quant's 12 packed bytes
/// (GGML's `get_scale_min_k4`).
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | (s[j - 4] >> 6) << 4,
            (s[j + 4] >> 4) | (s[j] >> 6) << 4,
        )
    }
}

/// Q4_K and Q5_K share their header (`d`, `dmin`, 12 scale bytes) and low nibbles:
/// sub-block `j` of 32 takes the low (even `j`) or high (odd `j`) nibbles of
/// bytes `32·(j/2)..`; `qh`, if any, gives sub-block `j`'s fifth bits in bit `j`.
fn decode_k(
    b: &[u8],
    qh: Option<&[u8]>,
    qs: &[u8],
    q: &mut [[u8; QK]],
    rows: &mut [(u8, u8)],
    sup: &mut (f16, f16),
) {
    *sup = (f16_at(b, 0), f16_at(b, 2));
    for (j, (qj, row)) in q.iter_mut().zip(rows.iter_mut()).enumerate() {
        *row = scale_min_k4(j, &b[4..16]);
        let bytes = &qs[QK * (j / 2)..QK * (j / 2 + 1)];
        for (l, v) in qj.iter_mut().enumerate() {
            *v = bytes[l] >> (4 * (j % 2)) & 0x0F;
            if let Some(qh) = qh {
                *v |= (qh[l] >> j & 1) << 4;
            }
        }
    }
}

impl Format for Q4_K {
    type Q = Nib4;
    type S = KScalesMins;
    const NAME: &'static str = "q4_k";
    const OFFSET: i32 = 0;
    const BLOCK_BYTES: usize = 144;
    const SUPER_ACTS: bool = true;

    fn decode(b: &[u8], q: &mut [[u8; QK]], rows: &mut [(u8, u8)], sup: &mut (f16, f16)) {
        decode_k(b, None, &b[16..144], q, rows, sup);
    }
}

impl Format for Q5_K {
    type Q = Nib5;
    type S = KScalesMins;
    const NAME: &'static str = "q5_k";
    const OFFSET: i32 = 0;
    const BLOCK_BYTES: usize = 176;
    const SUPER_ACTS: bool = true;

    fn decode(b: &[u8], q: &mut [[u8; QK]], rows: &mut [(u8, u8)], sup: &mut (f16, f16)) {
        decode_k(b, Some(&b[16..48]), &b[48..176], q, rows, sup);
    }
}

impl Format for Q6_K {
    type Q = Nib6;
    type S = K6Scales;
    const NAME: &'static str = "q6_k";
    const OFFSET: i32 = 32;
    const BLOCK_BYTES: usize = 210;
    const SUPER_ACTS: bool = true;

    /// Layout: `ql[128]`, `qh[64]`, `scales[16]` (one per 16 elements), `d`. Element
    /// `128·n + 32·k + l` takes its low bits from `ql[64n + l (+32 if k odd)]`
    /// (low nibble if `k < 2`) and its top bits from bits `2k` of `qh[32n + l]`.
    fn decode(b: &[u8], q: &mut [[u8; QK]], rows: &mut [[i8; 2]], sup: &mut f16) {
        let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
        *sup = f16_at(b, 208);
        for (j, (qj, row)) in q.iter_mut().zip(rows.iter_mut()).enumerate() {
            *row = [sc[2 * j] as i8, sc[2 * j + 1] as i8];
            let (n, k) = (j / 4, j % 4);
            for (l, v) in qj.iter_mut().enumerate() {
                let low = ql[64 * n + l + QK * (k % 2)] >> (4 * (k / 2)) & 0x0F;
                let high = qh[QK * n + l] >> (2 * k) & 3;
                *v = low | high << 4;
            }
        }
    }
}
