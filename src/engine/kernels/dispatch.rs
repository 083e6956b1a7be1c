//! Runtime choice of kernels: the best SIMD path the running CPU supports.

use std::sync::OnceLock;

use super::blocks::BlockQ8_1;
use super::packed::{Q4_1Tile, Q8_0Scales, Q8_0Tile, GROUP};
use super::{scalar, KernelError, SimdLevel, MAX_R};

/// Kernel output for one group: `out[r][i]` = row `i` of the group · activation row `r`.
pub type GroupOut = [[f32; GROUP]; MAX_R];

/// One SIMD level's kernels. Instances exist only for levels the CPU supports, which
/// is what makes the safe function pointers to `#[target_feature]` code sound.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub level: SimdLevel,
    /// Q4_1 group kernel over `r` activation rows (`xs` = `r * tiles.len()` blocks).
    pub q4_1: fn(&[Q4_1Tile], &[BlockQ8_1], usize, &mut GroupOut),
    /// Q8_0 group kernel over `r` activation rows.
    pub q8_0: fn(&[Q8_0Tile], &[Q8_0Scales], &[BlockQ8_1], usize, &mut GroupOut),
    /// Activation quantizer (`x.len() == 32 * out.len()`).
    pub quantize: fn(&[f32], &mut [BlockQ8_1]),
}

const SCALAR: Kernels = Kernels {
    level: SimdLevel::Scalar,
    q4_1: scalar::q4_1_group,
    q8_0: scalar::q8_0_group,
    quantize: super::blocks::quantize_row_q8_1,
};

/// Kernels for `level`, if the running CPU supports it.
pub fn for_level(level: SimdLevel) -> Result<Kernels, KernelError> {
    let found = match level {
        SimdLevel::Scalar => Some(SCALAR),
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => super::x86_avx2::detect(),
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512Vnni => super::x86_avx512::detect(),
        #[cfg(not(target_arch = "x86_64"))]
        _ => None,
    };
    found.ok_or(KernelError::Unsupported(level.as_str()))
}

/// The best kernels for this CPU, chosen once.
pub fn best() -> &'static Kernels {
    static BEST: OnceLock<Kernels> = OnceLock::new();
    BEST.get_or_init(|| {
        [SimdLevel::Avx512Vnni, SimdLevel::Avx2]
            .into_iter()
            .find_map(|level| for_level(level).ok())
            .unwrap_or(SCALAR)
    })
}
