//! [`QMatrix`]: a weight matrix in whichever native format its GGUF tensor has.

use std::sync::Arc;

use candle_core::quantized::GgmlDType;

use super::blocks::{half_sums, quantize_row_q8_k, BlockQ8_1, QK};
use super::formats;
use super::kernel_set::{Acts, Kernels};
use super::packed::Packed;
use super::select::{self, Computable};
use super::tiles::Scales;
use super::{driver, KernelError, SimdLevel};

/// A packed matrix of some format, behind one interface (load-time choice, so a
/// virtual call per kernel call costs nothing measurable).
trait PackedMatrix: Send + Sync {
    fn format(&self) -> &'static str;
    fn size_bytes(&self) -> usize;
    fn dequantize_row(&self, row: usize, out: &mut [f32]);
    /// Whether kernels need per-half activation sums ([`half_sums`]).
    fn needs_halves(&self) -> bool;
    /// Whether activations are quantized per 256 elements ([`formats::Format::SUPER_ACTS`]).
    fn super_acts(&self) -> bool;
    /// `out` (`n x rows`) from quantized activations.
    fn run(&self, kernels: &Kernels, acts: Acts<'_>, n: usize, out: &mut [f32]);
}

impl<F: Computable> PackedMatrix for Packed<F> {
    fn format(&self) -> &'static str {
        F::NAME
    }

    fn size_bytes(&self) -> usize {
        Packed::size_bytes(self)
    }

    fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        Packed::dequantize_row(self, row, out);
    }

    fn needs_halves(&self) -> bool {
        F::S::SPLIT
    }

    fn super_acts(&self) -> bool {
        F::SUPER_ACTS
    }

    fn run(&self, kernels: &Kernels, acts: Acts<'_>, n: usize, out: &mut [f32]) {
        let kernel = select::group_kernel::<F>(kernels);
        let nb = self.blocks();
        driver::run(self.rows(), nb, n, out, &|g, ra, r, buf| {
            kernel(self.group(g), acts.rows(ra, r, nb), r, buf)
        });
    }
}

/// Weight storage: packed tiles, or f32 for types without a native kernel.
#[derive(Clone)]
enum Weights {
    Packed(Arc<dyn PackedMatrix>),
    F32(Vec<f32>),
}

/// A weight matrix `W` of shape `[rows = out_features, cols = in_features]`.
#[derive(Clone)]
pub struct QMatrix {
    rows: usize,
    cols: usize,
    weights: Weights,
}

impl std::fmt::Debug for QMatrix {
    /// Shape and format only: the weights are megabytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QMatrix")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("format", &self.format())
            .finish()
    }
}

/// Reusable buffers so a step allocates nothing once warmed up.
#[derive(Default, Debug)]
pub struct MatmulScratch {
    xq: Vec<BlockQ8_1>,
    halves: Vec<[f32; 2]>,
}

fn packed<F: Computable>(
    rows: usize,
    cols: usize,
    bytes: &[u8],
) -> Result<Arc<dyn PackedMatrix>, KernelError> {
    Ok(Arc::new(Packed::<F>::from_gguf(rows, cols, bytes)?))
}

impl QMatrix {
    /// Builds a matrix from a GGUF tensor's type and bytes, keeping its
    /// quantization; [`KernelError::NoKernel`] for a type without a native path.
    pub fn from_gguf(
        dtype: GgmlDType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<Self, KernelError> {
        use formats::{Q4_0, Q4_1, Q4_K, Q5_0, Q5_K, Q6_K, Q8_0};
        let p = match dtype {
            GgmlDType::Q4_0 => packed::<Q4_0>(rows, cols, bytes)?,
            GgmlDType::Q4_1 => packed::<Q4_1>(rows, cols, bytes)?,
            GgmlDType::Q5_0 => packed::<Q5_0>(rows, cols, bytes)?,
            GgmlDType::Q8_0 => packed::<Q8_0>(rows, cols, bytes)?,
            GgmlDType::Q4K => packed::<Q4_K>(rows, cols, bytes)?,
            GgmlDType::Q5K => packed::<Q5_K>(rows, cols, bytes)?,
            GgmlDType::Q6K => packed::<Q6_K>(rows, cols, bytes)?,
            other => return Err(KernelError::NoKernel(format!("{other:?}").to_uppercase())),
        };
        Ok(Self {
            rows,
            cols,
            weights: Weights::Packed(p),
        })
    }

    /// The GGUF types [`Self::from_gguf`] keeps quantized, with native kernels.
    pub const NATIVE_TYPES: [GgmlDType; 7] = [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
    ];

    /// Whether [`Self::from_gguf`] keeps `dtype` quantized.
    pub fn has_kernel(dtype: GgmlDType) -> bool {
        Self::NATIVE_TYPES.contains(&dtype)
    }

    /// Wraps an f32 matrix (any other GGUF dtype, dequantized by the caller).
    pub fn from_f32(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self, KernelError> {
        if data.len() != rows * cols {
            let (expected, got) = (rows * cols, data.len());
            return Err(KernelError::SizeMismatch {
                format: "f32",
                rows,
                cols,
                expected,
                got,
            });
        }
        Ok(Self {
            rows,
            cols,
            weights: Weights::F32(data),
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The GGUF type kept, lower case (`"q4_k"`), or `"f32"`.
    pub fn format(&self) -> &'static str {
        match &self.weights {
            Weights::Packed(p) => p.format(),
            Weights::F32(_) => "f32",
        }
    }

    /// The kernel that computes this matrix on this CPU, e.g. `q4_k avx512vnni`.
    pub fn kernel_name(&self) -> String {
        match self.weights {
            Weights::F32(_) => "f32 (dequantized)".to_owned(),
            _ => format!("{} {}", self.format(), super::simd_level()),
        }
    }

    /// Bytes of weight data held, including the zero rows that pad the last group.
    pub fn size_bytes(&self) -> usize {
        match &self.weights {
            Weights::Packed(p) => p.size_bytes(),
            Weights::F32(v) => size_of_val(v.as_slice()),
        }
    }

    /// Dequantizes row `row` into `out` (`out.len() == cols`); used for embedding lookups.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        assert!(
            row < self.rows,
            "dequantize_row: row {row} out of {}",
            self.rows
        );
        assert_eq!(out.len(), self.cols, "dequantize_row: output length");
        match &self.weights {
            Weights::Packed(p) => p.dequantize_row(row, out),
            Weights::F32(v) => out.copy_from_slice(&v[row * self.cols..(row + 1) * self.cols]),
        }
    }

    /// `out[r * rows + j] = sum_k W[j][k] * x[r * cols + k]` for `r in 0..n`.
    ///
    /// Quantized formats quantize `x` to 8 bits per block into `scratch` first.
    pub fn matmul(&self, x: &[f32], n: usize, out: &mut [f32], scratch: &mut MatmulScratch) {
        self.matmul_kernels(select::best(), x, n, out, scratch);
    }

    /// [`Self::matmul`] on a chosen SIMD level (for benches and cross-checks).
    pub fn matmul_with(
        &self,
        level: SimdLevel,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        scratch: &mut MatmulScratch,
    ) -> Result<(), KernelError> {
        let kernels = select::for_level(level)?;
        self.matmul_kernels(&kernels, x, n, out, scratch);
        Ok(())
    }

    fn matmul_kernels(
        &self,
        kernels: &Kernels,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        scratch: &mut MatmulScratch,
    ) {
        assert_eq!(x.len(), n * self.cols, "matmul: x must be n x cols");
        assert_eq!(out.len(), n * self.rows, "matmul: out must be n x rows");
        let p = match &self.weights {
            Weights::F32(w) => return driver::run_f32(w, self.rows, self.cols, x, n, out),
            Weights::Packed(p) => p,
        };
        let nb = self.cols / QK;
        scratch.xq.resize(n * nb, BlockQ8_1::default());
        let quantize = if p.super_acts() {
            quantize_row_q8_k
        } else {
            kernels.quantize
        };
        driver::quantize(quantize, x, n, nb, &mut scratch.xq);
        scratch.halves.clear();
        if p.needs_halves() {
            half_sums(&scratch.xq, &mut scratch.halves);
        }
        let acts = Acts {
            q: &scratch.xq,
            halves: &scratch.halves,
        };
        p.run(kernels, acts, n, out);
    }
}
