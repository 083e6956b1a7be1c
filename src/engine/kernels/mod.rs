//! CPU quantized matrix multiplication for GGUF weights (Q4_1, Q8_0, f32 fallback).
//!
//! Activations are quantized to 8 bits per 32-element block, as GGML does, so results
//! track llama.cpp's CPU backend closely. Weights are repacked at load time into a
//! row-interleaved layout ([`packed`]) that lets one SIMD multiply-add serve 16 output
//! rows, and the best kernels for the running CPU are picked at runtime ([`dispatch`]).
//! [`driver`] tiles a matmul over weight-row groups × activation rows so batched decode
//! and prefill reuse each weight block from cache across activation rows, and runs
//! the tiles on [`pool`]: the calling thread plus workers that spin briefly between
//! jobs, because a decode step is ~120 matmuls of a few tens of microseconds each.

pub mod attention;
mod blocks;
mod dispatch;
mod driver;
pub mod ops;
mod packed;
mod pool;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

use std::sync::OnceLock;

use candle_core::quantized::GgmlDType;

pub use blocks::{quantize_row_q8_1, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK};
use packed::{Q4_1Tile, Q8_0Scales, Q8_0Tile};

/// Activation rows one kernel call multiplies against each unpacked weight block.
const MAX_R: usize = 8;

/// Errors from building matrices or configuring the kernels.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{format} matrix needs cols ({cols}) to be a multiple of {QK}")]
    ColsNotBlockAligned { format: &'static str, cols: usize },
    #[error("{format} matrix {rows}x{cols} needs {expected} bytes/elements, got {got}")]
    SizeMismatch {
        format: &'static str,
        rows: usize,
        cols: usize,
        expected: usize,
        got: usize,
    },
    #[error("cannot concatenate matrices: {0}")]
    Concat(String),
    #[error("thread pool already initialized with {0} threads")]
    PoolAlreadyInitialized(usize),
    #[error("cannot build thread pool: {0}")]
    PoolBuild(String),
    #[error("this CPU does not support the {0} kernels")]
    Unsupported(&'static str),
    #[error("no native kernel for GGUF type {0}")]
    NoKernel(String),
}

/// A SIMD code path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimdLevel {
    Avx512Vnni,
    Avx2,
    Scalar,
}

impl SimdLevel {
    /// `"avx512vnni"`, `"avx2"` or `"scalar"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SimdLevel::Avx512Vnni => "avx512vnni",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Scalar => "scalar",
        }
    }

    /// Every level the running CPU supports, best first.
    pub fn available() -> Vec<SimdLevel> {
        [SimdLevel::Avx512Vnni, SimdLevel::Avx2, SimdLevel::Scalar]
            .into_iter()
            .filter(|&l| dispatch::for_level(l).is_ok())
            .collect()
    }
}

/// Weight storage in one of the supported formats (see [`packed`]).
#[derive(Clone)]
enum Weights {
    Q4_1(Vec<Q4_1Tile>),
    Q8_0 {
        tiles: Vec<Q8_0Tile>,
        scales: Vec<Q8_0Scales>,
    },
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
}

fn check_blocks(
    format: &'static str,
    rows: usize,
    cols: usize,
    block_bytes: usize,
    got: usize,
) -> Result<(), KernelError> {
    if !cols.is_multiple_of(QK) {
        return Err(KernelError::ColsNotBlockAligned { format, cols });
    }
    let expected = rows * cols / QK * block_bytes;
    if got != expected {
        return Err(KernelError::SizeMismatch {
            format,
            rows,
            cols,
            expected,
            got,
        });
    }
    Ok(())
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
        match dtype {
            GgmlDType::Q4_1 => Self::from_q4_1_bytes(rows, cols, bytes),
            GgmlDType::Q8_0 => Self::from_q8_0_bytes(rows, cols, bytes),
            other => Err(KernelError::NoKernel(format!("{other:?}").to_uppercase())),
        }
    }

    /// Whether [`Self::from_gguf`] keeps `dtype` quantized.
    pub fn has_kernel(dtype: GgmlDType) -> bool {
        matches!(dtype, GgmlDType::Q4_1 | GgmlDType::Q8_0)
    }

    /// Builds a Q4_1 matrix from its GGUF tensor bytes.
    pub fn from_q4_1_bytes(rows: usize, cols: usize, bytes: &[u8]) -> Result<Self, KernelError> {
        check_blocks("q4_1", rows, cols, BlockQ4_1::BYTES, bytes.len())?;
        let blocks: Vec<_> = bytes
            .chunks_exact(BlockQ4_1::BYTES)
            .map(BlockQ4_1::from_le_bytes)
            .collect();
        Ok(Self::from_q4_1_blocks(rows, cols, &blocks))
    }

    /// Builds a Q8_0 matrix from its GGUF tensor bytes.
    pub fn from_q8_0_bytes(rows: usize, cols: usize, bytes: &[u8]) -> Result<Self, KernelError> {
        check_blocks("q8_0", rows, cols, BlockQ8_0::BYTES, bytes.len())?;
        let blocks: Vec<_> = bytes
            .chunks_exact(BlockQ8_0::BYTES)
            .map(BlockQ8_0::from_le_bytes)
            .collect();
        Ok(Self::from_q8_0_blocks(rows, cols, &blocks))
    }

    fn from_q4_1_blocks(rows: usize, cols: usize, blocks: &[BlockQ4_1]) -> Self {
        let tiles = packed::pack_q4_1(blocks, rows, cols / QK);
        Self {
            rows,
            cols,
            weights: Weights::Q4_1(tiles),
        }
    }

    fn from_q8_0_blocks(rows: usize, cols: usize, blocks: &[BlockQ8_0]) -> Self {
        let (tiles, scales) = packed::pack_q8_0(blocks, rows, cols / QK);
        Self {
            rows,
            cols,
            weights: Weights::Q8_0 { tiles, scales },
        }
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

    /// Stacks matrices with equal `cols` and format vertically (fuses q|k|v, gate|up).
    pub fn concat_rows(parts: Vec<QMatrix>) -> Result<Self, KernelError> {
        let Some(first) = parts.first() else {
            return Err(KernelError::Concat("no matrices given".into()));
        };
        let (cols, format) = (first.cols, first.format());
        if let Some(bad) = parts
            .iter()
            .find(|p| p.cols != cols || p.format() != format)
        {
            return Err(KernelError::Concat(format!(
                "expected {format} with {cols} cols, got {} with {} cols",
                bad.format(),
                bad.cols
            )));
        }
        let rows = parts.iter().map(|p| p.rows).sum();
        let nb = cols / QK;
        // Groups straddle part boundaries, so repack from GGML blocks (load time only).
        Ok(match &first.weights {
            Weights::F32(_) => {
                let data = parts.iter().flat_map(|p| p.f32_data()).copied().collect();
                Self {
                    rows,
                    cols,
                    weights: Weights::F32(data),
                }
            }
            Weights::Q4_1(_) => {
                let blocks: Vec<_> = parts.iter().flat_map(|p| p.q4_1_blocks(nb)).collect();
                Self::from_q4_1_blocks(rows, cols, &blocks)
            }
            Weights::Q8_0 { .. } => {
                let blocks: Vec<_> = parts.iter().flat_map(|p| p.q8_0_blocks(nb)).collect();
                Self::from_q8_0_blocks(rows, cols, &blocks)
            }
        })
    }

    fn f32_data(&self) -> &[f32] {
        match &self.weights {
            Weights::F32(v) => v,
            _ => &[],
        }
    }

    fn q4_1_blocks(&self, nb: usize) -> impl Iterator<Item = BlockQ4_1> + '_ {
        let tiles = match &self.weights {
            Weights::Q4_1(t) => t.as_slice(),
            _ => &[],
        };
        let count = if tiles.is_empty() { 0 } else { self.rows * nb };
        (0..count).map(move |k| packed::unpack_q4_1(tiles, nb, k / nb, k % nb))
    }

    fn q8_0_blocks(&self, nb: usize) -> impl Iterator<Item = BlockQ8_0> + '_ {
        let (tiles, scales) = match &self.weights {
            Weights::Q8_0 { tiles, scales } => (tiles.as_slice(), scales.as_slice()),
            _ => (&[][..], &[][..]),
        };
        let count = if tiles.is_empty() { 0 } else { self.rows * nb };
        (0..count).map(move |k| packed::unpack_q8_0(tiles, scales, nb, k / nb, k % nb))
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `"q4_1"`, `"q8_0"` or `"f32"`.
    pub fn format(&self) -> &'static str {
        match self.weights {
            Weights::Q4_1(_) => "q4_1",
            Weights::Q8_0 { .. } => "q8_0",
            Weights::F32(_) => "f32",
        }
    }

    /// The kernel that computes this matrix on this CPU, e.g. `q4_1 avx512vnni`.
    pub fn kernel_name(&self) -> String {
        match self.weights {
            Weights::F32(_) => "f32 (dequantized)".to_owned(),
            _ => format!("{} {}", self.format(), simd_level()),
        }
    }

    /// Bytes of weight data held, including the zero rows that pad the last group.
    pub fn size_bytes(&self) -> usize {
        match &self.weights {
            Weights::Q4_1(t) => std::mem::size_of_val(t.as_slice()),
            Weights::Q8_0 { tiles, scales } => {
                std::mem::size_of_val(tiles.as_slice()) + std::mem::size_of_val(scales.as_slice())
            }
            Weights::F32(v) => std::mem::size_of_val(v.as_slice()),
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
        let nb = self.cols / QK;
        match &self.weights {
            Weights::Q4_1(t) => {
                for (b, o) in out.chunks_exact_mut(QK).enumerate() {
                    packed::unpack_q4_1(t, nb, row, b).dequantize(o);
                }
            }
            Weights::Q8_0 { tiles, scales } => {
                for (b, o) in out.chunks_exact_mut(QK).enumerate() {
                    packed::unpack_q8_0(tiles, scales, nb, row, b).dequantize(o);
                }
            }
            Weights::F32(v) => out.copy_from_slice(&v[row * self.cols..(row + 1) * self.cols]),
        }
    }

    /// `out[r * rows + j] = sum_k W[j][k] * x[r * cols + k]` for `r in 0..n`.
    ///
    /// Quantized formats quantize `x` to 8 bits per block into `scratch` first.
    pub fn matmul(&self, x: &[f32], n: usize, out: &mut [f32], scratch: &mut MatmulScratch) {
        self.matmul_kernels(dispatch::best(), x, n, out, scratch);
    }

    /// [`Self::matmul`] on a chosen SIMD path (for benches and cross-checks).
    pub fn matmul_with(
        &self,
        level: SimdLevel,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        scratch: &mut MatmulScratch,
    ) -> Result<(), KernelError> {
        let kernels = dispatch::for_level(level)?;
        self.matmul_kernels(&kernels, x, n, out, scratch);
        Ok(())
    }

    fn matmul_kernels(
        &self,
        kernels: &dispatch::Kernels,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        scratch: &mut MatmulScratch,
    ) {
        assert_eq!(x.len(), n * self.cols, "matmul: x must be n x cols");
        assert_eq!(out.len(), n * self.rows, "matmul: out must be n x rows");
        if let Weights::F32(w) = &self.weights {
            driver::run_f32(w, self.rows, self.cols, x, n, out);
            return;
        }
        let nb = self.cols / QK;
        scratch.xq.resize(n * nb, BlockQ8_1::default());
        driver::quantize(kernels, x, n, nb, &mut scratch.xq);
        driver::run(
            &self.weights,
            kernels,
            self.rows,
            self.cols,
            &scratch.xq,
            n,
            out,
        );
    }
}

static POOL: OnceLock<&'static pool::Pool> = OnceLock::new();

fn build_pool(threads: usize) -> Result<&'static pool::Pool, KernelError> {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    pool::Pool::new(threads).map_err(|e| KernelError::PoolBuild(e.to_string()))
}

fn pool() -> &'static pool::Pool {
    POOL.get_or_init(|| {
        build_pool(0).unwrap_or_else(|e| panic!("cannot start the default kernel threads: {e}"))
    })
}

/// Sizes the kernel thread pool (`0` = available parallelism), counting the thread that
/// calls a matmul, which takes part in it. Call once, before any matmul.
pub fn init_thread_pool(threads: usize) -> Result<(), KernelError> {
    if let Some(p) = POOL.get() {
        return Err(KernelError::PoolAlreadyInitialized(p.threads()));
    }
    let built = build_pool(threads)?;
    POOL.set(built)
        .map_err(|_| KernelError::PoolAlreadyInitialized(num_threads()))
}

/// Threads a matmul runs on (the caller included).
pub fn num_threads() -> usize {
    pool().threads()
}

/// Runs `f(i)` for `i in 0..tasks` on the kernel threads, the caller included, and
/// returns when all are done. Meant for the model's other per-row work (attention):
/// sharing the matmul threads avoids a second pool competing for the same cores.
/// Nested or concurrent calls run inline on the calling thread.
pub fn parallel_for(tasks: usize, f: impl Fn(usize) + Sync) {
    pool().run(tasks, &f);
}

/// Runs `f(i, chunk)` for every `width`-element chunk of `buf` (the last may be
/// shorter) as [`parallel_for`] does: the way to give parallel tasks disjoint
/// parts of one output buffer.
pub fn parallel_chunks_mut<T: Send>(
    buf: &mut [T],
    width: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    assert!(width > 0, "parallel_chunks_mut: zero width");
    let len = buf.len();
    let out = driver::OutPtr(buf.as_mut_ptr());
    pool().run(len.div_ceil(width), &|i| {
        let start = i * width;
        // SAFETY: chunk `i` is `start..start + n`, inside `buf`; distinct `i` give
        // disjoint chunks, each run by one task; `buf` stays mutably borrowed until
        // `run` returns, after every task.
        let chunk =
            unsafe { std::slice::from_raw_parts_mut(out.get().add(start), width.min(len - start)) };
        f(i, chunk);
    });
}

/// Which SIMD path the running CPU gets: `"avx512vnni"`, `"avx2"` or `"scalar"`.
pub fn simd_level() -> &'static str {
    dispatch::best().level.as_str()
}

#[cfg(test)]
mod tests;
