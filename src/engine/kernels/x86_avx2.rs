//! AVX2 kernels (8 weight rows per 256-bit vector, `vpmaddubsw` for the int8 dots)
//! and the AVX2 activation quantizer, which the AVX-512 path shares.

use std::arch::x86_64::*;

use super::blocks::{BlockQ8_1, QK};
use super::dispatch::{GroupOut, Kernels};
use super::packed::{Q4_1Tile, Q8_0Scales, Q8_0Tile, GROUP};

/// True if the running CPU has everything this module's functions enable.
fn supported() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The kernel set, if the running CPU has AVX2, FMA and F16C.
pub fn detect() -> Option<Kernels> {
    supported().then_some(Kernels {
        level: super::SimdLevel::Avx2,
        q4_1: q4_1_group,
        q8_0: q8_0_group,
        quantize: quantize_row,
    })
}

/// Little-endian 4-byte word of activation quants starting at `at`.
#[inline(always)]
fn word(qs: &[i8; 32], at: usize) -> i32 {
    i32::from_le_bytes([
        qs[at] as u8,
        qs[at + 1] as u8,
        qs[at + 2] as u8,
        qs[at + 3] as u8,
    ])
}

/// Quantizes `x` into Q8_1 blocks, bit-identical to [`super::blocks::quantize_row_q8_1`].
pub fn quantize_row(x: &[f32], out: &mut [BlockQ8_1]) {
    assert_eq!(x.len(), out.len() * QK, "quantize_row: lengths");
    // SAFETY: only reachable through a `Kernels` built after `supported()` (directly
    // here, or by the AVX-512 path whose CPUs all have AVX2/FMA/F16C) confirmed AVX2.
    unsafe { quantize_row_impl(x, out) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_row_impl(x: &[f32], out: &mut [BlockQ8_1]) {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    // Undoes the lane interleaving of the two `packs` steps.
    let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (o, c) in out.iter_mut().zip(x.chunks_exact(QK)) {
        // SAFETY: `c` holds 32 f32, read as four unaligned 8-lane vectors.
        let v: [__m256; 4] =
            std::array::from_fn(|i| unsafe { _mm256_loadu_ps(c.as_ptr().add(8 * i)) });
        let a = _mm256_max_ps(
            _mm256_max_ps(_mm256_and_ps(v[0], abs_mask), _mm256_and_ps(v[1], abs_mask)),
            _mm256_max_ps(_mm256_and_ps(v[2], abs_mask), _mm256_and_ps(v[3], abs_mask)),
        );
        let a4 = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        let a2 = _mm_max_ps(a4, _mm_movehl_ps(a4, a4));
        let amax = _mm_cvtss_f32(_mm_max_ss(a2, _mm_movehdup_ps(a2)));
        let d = amax / 127.0;
        let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
        let q: [__m256i; 4] = std::array::from_fn(|i| {
            _mm256_cvtps_epi32(_mm256_round_ps(
                _mm256_mul_ps(v[i], id),
                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
            ))
        });
        let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        let s2 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
        let sum = _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0b01)));
        let packed = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let packed = _mm256_permutevar8x32_epi32(packed, perm);
        // SAFETY: `o.qs` is 32 bytes.
        unsafe { _mm256_storeu_si256(o.qs.as_mut_ptr().cast(), packed) };
        o.d = d;
        o.s = d * sum as f32;
    }
}

/// Activation rows per AVX2 kernel call: its 16 registers hold no more accumulators.
const AVX2_R: usize = 4;

fn q4_1_group(tiles: &[Q4_1Tile], xs: &[BlockQ8_1], r: usize, out: &mut GroupOut) {
    let nb = tiles.len();
    for r0 in (0..r).step_by(AVX2_R) {
        let (xs, out) = (&xs[r0 * nb..], &mut out[r0..]);
        // SAFETY: only reachable through the `Kernels` that `detect` returns after
        // confirming the CPU features the callee enables.
        unsafe {
            match r - r0 {
                1 => q4_1_rows::<1>(tiles, xs, out),
                2 => q4_1_rows::<2>(tiles, xs, out),
                3 => q4_1_rows::<3>(tiles, xs, out),
                _ => q4_1_rows::<4>(tiles, xs, out),
            }
        }
    }
}

fn q8_0_group(
    tiles: &[Q8_0Tile],
    scales: &[Q8_0Scales],
    xs: &[BlockQ8_1],
    r: usize,
    out: &mut GroupOut,
) {
    let nb = tiles.len();
    for r0 in (0..r).step_by(AVX2_R) {
        let (xs, out) = (&xs[r0 * nb..], &mut out[r0..]);
        // SAFETY: as in `q4_1_group`.
        unsafe {
            match r - r0 {
                1 => q8_0_rows::<1>(tiles, scales, xs, out),
                2 => q8_0_rows::<2>(tiles, scales, xs, out),
                3 => q8_0_rows::<3>(tiles, scales, xs, out),
                _ => q8_0_rows::<4>(tiles, scales, xs, out),
            }
        }
    }
}

/// One 16-row Q4_1 group (as two 8-row halves) against `R` activation rows.
// `h` picks both the memory half and the accumulator half.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1_rows<const R: usize>(
    tiles: &[Q4_1Tile],
    xs: &[BlockQ8_1],
    out: &mut [[f32; GROUP]],
) {
    let nb = tiles.len();
    let rows: [&[BlockQ8_1]; R] = std::array::from_fn(|r| &xs[r * nb..(r + 1) * nb]);
    let nibble = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for (b, tile) in tiles.iter().enumerate() {
        for h in 0..2 {
            // SAFETY: tiles are 64-byte aligned, so `d`/`m` halves are 16-byte aligned
            // 16-byte runs and `qs[t]` halves 32-byte aligned 32-byte runs.
            let (d, m) = unsafe {
                (
                    _mm256_cvtph_ps(_mm_load_si128(tile.d.as_ptr().add(8 * h).cast())),
                    _mm256_cvtph_ps(_mm_load_si128(tile.m.as_ptr().add(8 * h).cast())),
                )
            };
            // Per 16-bit lane: at most 4 words x 2 products x 2 halves x 15 x 127 = 30480,
            // so the sums fit i16 (activation quants never reach -128).
            let mut s16 = [_mm256_setzero_si256(); R];
            for t in 0..4 {
                // SAFETY: see above.
                let p = unsafe { _mm256_load_si256(tile.qs[t].as_ptr().add(32 * h).cast()) };
                let lo = _mm256_and_si256(p, nibble);
                let hi = _mm256_and_si256(_mm256_srli_epi16(p, 4), nibble);
                for r in 0..R {
                    let xq = &rows[r][b].qs;
                    let pl = _mm256_maddubs_epi16(lo, _mm256_set1_epi32(word(xq, 4 * t)));
                    let ph = _mm256_maddubs_epi16(hi, _mm256_set1_epi32(word(xq, 16 + 4 * t)));
                    s16[r] = _mm256_add_epi16(s16[r], _mm256_add_epi16(pl, ph));
                }
            }
            for r in 0..R {
                let xb = &rows[r][b];
                let isum = _mm256_cvtepi32_ps(_mm256_madd_epi16(s16[r], ones));
                acc[r][h] =
                    _mm256_fmadd_ps(isum, _mm256_mul_ps(d, _mm256_set1_ps(xb.d)), acc[r][h]);
                acc[r][h] = _mm256_fmadd_ps(m, _mm256_set1_ps(xb.s), acc[r][h]);
            }
        }
    }
    store(&acc, out);
}

/// One 16-row Q8_0 group (biased quants) against `R` activation rows.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_rows<const R: usize>(
    tiles: &[Q8_0Tile],
    scales: &[Q8_0Scales],
    xs: &[BlockQ8_1],
    out: &mut [[f32; GROUP]],
) {
    let nb = tiles.len();
    let scales = &scales[..nb];
    let rows: [&[BlockQ8_1]; R] = std::array::from_fn(|r| &xs[r * nb..(r + 1) * nb]);
    let bias = _mm256_set1_epi8(-128);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for (b, (tile, sc)) in tiles.iter().zip(scales).enumerate() {
        for h in 0..2 {
            // SAFETY: scales are 32-byte aligned, so each half is an aligned 16 bytes.
            let d = _mm256_cvtph_ps(unsafe { _mm_load_si128(sc.d.as_ptr().add(8 * h).cast()) });
            let mut sums = [_mm256_setzero_si256(); R];
            for t in 0..8 {
                // SAFETY: each `qs[t]` half is 32 bytes at a 32-byte aligned address.
                let w = unsafe { _mm256_load_si256(tile.qs[t].as_ptr().add(32 * h).cast()) };
                // Unbias to i8, then multiply |w| (unsigned) by x carrying w's sign:
                // pairs stay within 2 * 128 * 127, inside i16.
                let ws = _mm256_xor_si256(w, bias);
                let aw = _mm256_abs_epi8(ws);
                for r in 0..R {
                    let x = _mm256_set1_epi32(word(&rows[r][b].qs, 4 * t));
                    let prod = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, ws));
                    sums[r] = _mm256_add_epi32(sums[r], _mm256_madd_epi16(prod, ones));
                }
            }
            for r in 0..R {
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(rows[r][b].d));
                acc[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[r]), scale, acc[r][h]);
            }
        }
    }
    store(&acc, out);
}

#[target_feature(enable = "avx2")]
fn store<const R: usize>(acc: &[[__m256; 2]; R], out: &mut [[f32; GROUP]]) {
    let out = &mut out[..R];
    for r in 0..R {
        // SAFETY: `out[r]` holds 16 f32: two unaligned 8-lane stores.
        unsafe {
            _mm256_storeu_ps(out[r].as_mut_ptr(), acc[r][0]);
            _mm256_storeu_ps(out[r].as_mut_ptr().add(8), acc[r][1]);
        }
    }
}
