//! Portable kernels: the fallback path and the oracle the SIMD paths are tested against.
//!
//! Each kernel computes one 16-row group against `r <= MAX_R` activation rows; see
//! [`super::packed`] for the layout.

use super::blocks::{BlockQ8_1, QK};
use super::packed::{Q4_1Tile, Q8_0Scales, Q8_0Tile, GROUP};
use super::MAX_R;

/// Q4_1 group kernel: `out[ri][i] = dot(row i, activation row ri)`.
pub fn q4_1_group(tiles: &[Q4_1Tile], xs: &[BlockQ8_1], r: usize, out: &mut [[f32; GROUP]; MAX_R]) {
    let nb = tiles.len();
    for (x, o) in xs.chunks_exact(nb).take(r).zip(out.iter_mut()) {
        *o = [0.0; GROUP];
        for (tile, xb) in tiles.iter().zip(x) {
            for (i, acc) in o.iter_mut().enumerate() {
                let mut isum = 0i32;
                for t in 0..4 {
                    for e in 0..4 {
                        let q = tile.qs[t][4 * i + e];
                        let k = 4 * t + e;
                        isum += i32::from(q & 0x0F) * i32::from(xb.qs[k])
                            + i32::from(q >> 4) * i32::from(xb.qs[k + QK / 2]);
                    }
                }
                *acc += tile.d[i].to_f32() * xb.d * isum as f32 + tile.m[i].to_f32() * xb.s;
            }
        }
    }
}

/// Q8_0 group kernel (quants biased by +128, see [`super::packed`]).
pub fn q8_0_group(
    tiles: &[Q8_0Tile],
    scales: &[Q8_0Scales],
    xs: &[BlockQ8_1],
    r: usize,
    out: &mut [[f32; GROUP]; MAX_R],
) {
    let nb = tiles.len();
    for (x, o) in xs.chunks_exact(nb).take(r).zip(out.iter_mut()) {
        *o = [0.0; GROUP];
        for ((tile, sc), xb) in tiles.iter().zip(scales).zip(x) {
            for (i, acc) in o.iter_mut().enumerate() {
                let mut isum = 0i32;
                for t in 0..8 {
                    for e in 0..4 {
                        let q = i32::from(tile.qs[t][4 * i + e]) - 128;
                        isum += q * i32::from(xb.qs[4 * t + e]);
                    }
                }
                *acc += sc.d[i].to_f32() * xb.d * isum as f32;
            }
        }
    }
}
