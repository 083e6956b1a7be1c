//! What every SIMD level provides, and the types its kernels exchange with the
//! driver: one 16-row group of weights against up to [`MAX_R`] activation rows.

use super::blocks::BlockQ8_1;
use super::packed::GroupView;
use super::tiles::GROUP;
use super::SimdLevel;

/// Activation rows one kernel call multiplies against each unpacked weight block.
pub const MAX_R: usize = 8;

/// Kernel output for one group: `out[r][i]` = row `i` of the group · activation row `r`.
pub type GroupOut = [[f32; GROUP]; MAX_R];

/// Quantized activation rows, `nb` blocks each.
#[derive(Clone, Copy)]
pub struct Acts<'a> {
    pub q: &'a [BlockQ8_1],
    /// Per-half sums ([`super::blocks::half_sums`]), only for formats with
    /// per-16 scales; empty otherwise.
    pub halves: &'a [[f32; 2]],
}

impl<'a> Acts<'a> {
    /// Rows `ra..ra + r`.
    pub fn rows(self, ra: usize, r: usize, nb: usize) -> Acts<'a> {
        let halves = if self.halves.is_empty() {
            self.halves
        } else {
            &self.halves[ra * nb..(ra + r) * nb]
        };
        Acts {
            q: &self.q[ra * nb..(ra + r) * nb],
            halves,
        }
    }
}

/// A group kernel: `out[ri][i]` for the group's rows `i` and the first `r` rows of
/// `acts` (which holds `r · nb` blocks).
pub type GroupKernel<F> = fn(GroupView<'_, F>, Acts<'_>, usize, &mut GroupOut);

/// One SIMD level's kernels. Instances exist only for levels the CPU supports, which
/// is what makes the safe function pointers to `#[target_feature]` code sound; the
/// group kernels of each format come from [`super::select::group_kernel`].
#[derive(Clone, Copy)]
pub struct Kernels {
    pub level: SimdLevel,
    /// Activation quantizer (`x.len() == 32 * out.len()`).
    pub quantize: fn(&[f32], &mut [BlockQ8_1]),
}
