//! Portable kernels: the fallback path and the oracle the SIMD paths are tested against.
//!
//! One generic kernel computes a 16-row group of any format against `r <= MAX_R`
//! activation rows, straight from the definitions in [`super::tiles`].

use super::blocks::QK;
use super::formats::Format;
use super::kernel_set::{Acts, GroupOut};
use super::packed::{GroupView, Tile};
use super::tiles::{Quants, Scales, GROUP};

/// `out[ri][i] = dot(row i, activation row ri)` for `ri < r`.
pub fn group<F: Format>(w: GroupView<'_, F>, xs: Acts<'_>, r: usize, out: &mut GroupOut) {
    let nb = w.tiles.len();
    let offset = F::OFFSET as f32;
    for (ri, o) in out.iter_mut().enumerate().take(r) {
        *o = [0.0; GROUP];
        for (b, Tile { q: tile, s: scales }) in w.tiles.iter().enumerate() {
            let xb = &xs.q[ri * nb + b];
            let sup = &w.supers[b / F::S::PER_SUPER];
            for (i, acc) in o.iter_mut().enumerate() {
                let q = tile.get(i);
                let mut isum = [0i32; 2];
                for (k, (&q, &x)) in q.iter().zip(&xb.qs).enumerate() {
                    isum[k / (QK / 2)] += i32::from(q) * i32::from(x);
                }
                let s = scales.row(sup, i);
                if F::S::SPLIT {
                    let halves = xs.halves[ri * nb + b];
                    for h in 0..2 {
                        *acc +=
                            s.d[h] * xb.d * isum[h] as f32 + (s.m[h] - offset * s.d[h]) * halves[h];
                    }
                } else {
                    *acc += s.d[0] * xb.d * (isum[0] + isum[1]) as f32
                        + (s.m[0] - offset * s.d[0]) * xb.s;
                }
            }
        }
    }
}
