//! Runtime choice of kernels: the best SIMD level the running CPU supports, and
//! each format's group kernel at a level.

use std::sync::OnceLock;

use super::formats::Format;
use super::kernel_set::{GroupKernel, Kernels};
use super::{scalar, KernelError, SimdLevel};

/// A format every compiled SIMD level has kernels for.
#[cfg(target_arch = "x86_64")]
pub trait Computable:
    Format<
    Q: super::x86_avx2::Quants256 + super::x86_avx512::Quants512,
    S: super::x86_avx2::Scales256 + super::x86_avx512::Scales512,
>
{
}

#[cfg(target_arch = "x86_64")]
impl<F> Computable for F
where
    F: Format,
    F::Q: super::x86_avx2::Quants256 + super::x86_avx512::Quants512,
    F::S: super::x86_avx2::Scales256 + super::x86_avx512::Scales512,
{
}

/// A format every compiled SIMD level has kernels for.
#[cfg(not(target_arch = "x86_64"))]
pub trait Computable: Format {}

#[cfg(not(target_arch = "x86_64"))]
impl<F: Format> Computable for F {}

const SCALAR: Kernels = Kernels {
    level: SimdLevel::Scalar,
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

/// Format `F`'s group kernel at `kernels`' level (which the CPU supports: a
/// [`Kernels`] exists only for such levels).
pub fn group_kernel<F: Computable>(kernels: &Kernels) -> GroupKernel<F> {
    match kernels.level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512Vnni => super::x86_avx512::group::<F>,
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => super::x86_avx2::group::<F>,
        _ => scalar::group::<F>,
    }
}
