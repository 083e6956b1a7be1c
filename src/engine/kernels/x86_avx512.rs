//! AVX-512 VNNI kernels: 16 weight rows per 512-bit vector, `vpdpbusd` for the int8 dots.

use std::arch::x86_64::*;

use super::blocks::BlockQ8_1;
use super::dispatch::{GroupOut, Kernels};
use super::packed::{Q4_1Tile, Q8_0Scales, Q8_0Tile};

/// The kernel set, if the running CPU has AVX-512 F/BW/VNNI.
pub fn detect() -> Option<Kernels> {
    let ok = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni");
    ok.then_some(Kernels {
        level: super::SimdLevel::Avx512Vnni,
        q4_1: q4_1_group,
        q8_0: q8_0_group,
        quantize: super::x86_avx2::quantize_row,
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

fn q4_1_group(tiles: &[Q4_1Tile], xs: &[BlockQ8_1], r: usize, out: &mut GroupOut) {
    // SAFETY: this function is only reachable through the `Kernels` that `detect`
    // returns after confirming the CPU features the callee enables.
    unsafe {
        match r {
            1 => q4_1_rows::<1>(tiles, xs, out),
            2 => q4_1_rows::<2>(tiles, xs, out),
            3 => q4_1_rows::<3>(tiles, xs, out),
            4 => q4_1_rows::<4>(tiles, xs, out),
            5 => q4_1_rows::<5>(tiles, xs, out),
            6 => q4_1_rows::<6>(tiles, xs, out),
            7 => q4_1_rows::<7>(tiles, xs, out),
            _ => q4_1_rows::<8>(tiles, xs, out),
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
    // SAFETY: as in `q4_1_group`: reachable only after `detect` confirmed the features.
    unsafe {
        match r {
            1 => q8_0_rows::<1>(tiles, scales, xs, out),
            2 => q8_0_rows::<2>(tiles, scales, xs, out),
            3 => q8_0_rows::<3>(tiles, scales, xs, out),
            4 => q8_0_rows::<4>(tiles, scales, xs, out),
            5 => q8_0_rows::<5>(tiles, scales, xs, out),
            6 => q8_0_rows::<6>(tiles, scales, xs, out),
            7 => q8_0_rows::<7>(tiles, scales, xs, out),
            _ => q8_0_rows::<8>(tiles, scales, xs, out),
        }
    }
}

/// Tiles ahead to prefetch when few activation rows make the kernel memory-bound.
const PREFETCH_TILES: usize = 4;

/// Hints the cache lines of `bytes` bytes at `p` into L1 (a no-op past the mapping).
#[inline(always)]
fn prefetch<T>(p: *const T, bytes: usize) {
    for line in (0..bytes).step_by(64) {
        // SAFETY: prefetching never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>().wrapping_add(line)) };
    }
}

/// One 16-row Q4_1 group against `R` activation rows (`xs` holds `R * tiles.len()` blocks).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn q4_1_rows<const R: usize>(tiles: &[Q4_1Tile], xs: &[BlockQ8_1], out: &mut GroupOut) {
    let nb = tiles.len();
    let rows: [&[BlockQ8_1]; R] = std::array::from_fn(|r| &xs[r * nb..(r + 1) * nb]);
    let nibble = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); R];
    for (b, tile) in tiles.iter().enumerate() {
        if R <= 2 {
            // The next group's tiles follow this group's in memory.
            prefetch(
                tiles.as_ptr().wrapping_add(b + PREFETCH_TILES),
                size_of::<Q4_1Tile>(),
            );
        }
        // SAFETY: tiles are 64-byte aligned; `d` and `m` sit at 32-byte aligned offsets
        // and are 32 bytes long; each `qs[t]` is 64 aligned bytes.
        let (d, m) = unsafe {
            (
                _mm512_cvtph_ps(_mm256_load_si256(tile.d.as_ptr().cast())),
                _mm512_cvtph_ps(_mm256_load_si256(tile.m.as_ptr().cast())),
            )
        };
        let mut isum = [_mm512_setzero_si512(); R];
        for t in 0..4 {
            // SAFETY: see above.
            let p = unsafe { _mm512_load_si512(tile.qs[t].as_ptr().cast()) };
            let lo = _mm512_and_si512(p, nibble);
            let hi = _mm512_and_si512(_mm512_srli_epi16(p, 4), nibble);
            for r in 0..R {
                let xq = &rows[r][b].qs;
                isum[r] = _mm512_dpbusd_epi32(isum[r], lo, _mm512_set1_epi32(word(xq, 4 * t)));
                isum[r] = _mm512_dpbusd_epi32(isum[r], hi, _mm512_set1_epi32(word(xq, 16 + 4 * t)));
            }
        }
        for r in 0..R {
            let xb = &rows[r][b];
            let scaled = _mm512_mul_ps(_mm512_cvtepi32_ps(isum[r]), d);
            acc[r] = _mm512_fmadd_ps(scaled, _mm512_set1_ps(xb.d), acc[r]);
            acc[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(xb.s), acc[r]);
        }
    }
    for r in 0..R {
        // SAFETY: `out[r]` holds exactly 16 f32.
        unsafe { _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]) };
    }
}

/// One 16-row Q8_0 group (biased quants) against `R` activation rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn q8_0_rows<const R: usize>(
    tiles: &[Q8_0Tile],
    scales: &[Q8_0Scales],
    xs: &[BlockQ8_1],
    out: &mut GroupOut,
) {
    let nb = tiles.len();
    let scales = &scales[..nb];
    let rows: [&[BlockQ8_1]; R] = std::array::from_fn(|r| &xs[r * nb..(r + 1) * nb]);
    let minus_bias = _mm512_set1_ps(-128.0);
    let mut acc = [_mm512_setzero_ps(); R];
    for (b, (tile, sc)) in tiles.iter().zip(scales).enumerate() {
        if R <= 2 {
            prefetch(
                tiles.as_ptr().wrapping_add(b + PREFETCH_TILES),
                size_of::<Q8_0Tile>(),
            );
        }
        // SAFETY: scales are 32-byte aligned and 32 bytes long.
        let d = _mm512_cvtph_ps(unsafe { _mm256_load_si256(sc.d.as_ptr().cast()) });
        let mut isum = [_mm512_setzero_si512(); R];
        for t in 0..8 {
            // SAFETY: each `qs[t]` is 64 bytes at a 64-byte aligned address.
            let w = unsafe { _mm512_load_si512(tile.qs[t].as_ptr().cast()) };
            for r in 0..R {
                let x = _mm512_set1_epi32(word(&rows[r][b].qs, 4 * t));
                isum[r] = _mm512_dpbusd_epi32(isum[r], w, x);
            }
        }
        // The +128 bias added 128 * sum(x) to each dot: remove it as -128 * d * s.
        let m = _mm512_mul_ps(d, minus_bias);
        for r in 0..R {
            let xb = &rows[r][b];
            let scaled = _mm512_mul_ps(_mm512_cvtepi32_ps(isum[r]), d);
            acc[r] = _mm512_fmadd_ps(scaled, _mm512_set1_ps(xb.d), acc[r]);
            acc[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(xb.s), acc[r]);
        }
    }
    for r in 0..R {
        // SAFETY: `out[r]` holds exactly 16 f32.
        unsafe { _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]) };
    }
}
