//! CPU quantized matrix multiplication for GGUF weights (Q4_1, Q8_0, f32 fallback).
//!
//! Activations are quantized to 8 bits per 32-element block, as GGML does, so the
//! results track llama.cpp's CPU backend closely.

mod blocks;
pub mod ops;
mod scalar;

use std::sync::OnceLock;

pub use blocks::{quantize_row_q8_1, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK};

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
}

/// Weight storage in one of the supported formats.
#[derive(Clone, Debug)]
enum Weights {
    Q4_1(Vec<BlockQ4_1>),
    Q8_0(Vec<BlockQ8_0>),
    F32(Vec<f32>),
}

/// A weight matrix `W` of shape `[rows = out_features, cols = in_features]`, rows contiguous.
#[derive(Clone, Debug)]
pub struct QMatrix {
    rows: usize,
    cols: usize,
    weights: Weights,
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
    if cols % QK != 0 {
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
    /// Builds a Q4_1 matrix from its GGUF tensor bytes.
    pub fn from_q4_1_bytes(rows: usize, cols: usize, bytes: &[u8]) -> Result<Self, KernelError> {
        check_blocks("q4_1", rows, cols, BlockQ4_1::BYTES, bytes.len())?;
        let blocks = bytes
            .chunks_exact(BlockQ4_1::BYTES)
            .map(BlockQ4_1::from_le_bytes)
            .collect();
        Ok(Self {
            rows,
            cols,
            weights: Weights::Q4_1(blocks),
        })
    }

    /// Builds a Q8_0 matrix from its GGUF tensor bytes.
    pub fn from_q8_0_bytes(rows: usize, cols: usize, bytes: &[u8]) -> Result<Self, KernelError> {
        check_blocks("q8_0", rows, cols, BlockQ8_0::BYTES, bytes.len())?;
        let blocks = bytes
            .chunks_exact(BlockQ8_0::BYTES)
            .map(BlockQ8_0::from_le_bytes)
            .collect();
        Ok(Self {
            rows,
            cols,
            weights: Weights::Q8_0(blocks),
        })
    }

    /// Wraps an f32 matrix (any other GGUF dtype, dequantized by the caller).
    pub fn from_f32(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self, KernelError> {
        if data.len() != rows * cols {
            return Err(KernelError::SizeMismatch {
                format: "f32",
                rows,
                cols,
                expected: rows * cols,
                got: data.len(),
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
        let cols = first.cols;
        let format = first.format();
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
        let mut iter = parts.into_iter();
        let mut weights = iter.next().expect("invariant: checked non-empty").weights;
        for p in iter {
            match (&mut weights, p.weights) {
                (Weights::Q4_1(a), Weights::Q4_1(b)) => a.extend(b),
                (Weights::Q8_0(a), Weights::Q8_0(b)) => a.extend(b),
                (Weights::F32(a), Weights::F32(b)) => a.extend(b),
                _ => unreachable!("formats checked above"),
            }
        }
        Ok(Self {
            rows,
            cols,
            weights,
        })
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
            Weights::Q8_0(_) => "q8_0",
            Weights::F32(_) => "f32",
        }
    }

    /// Bytes of weight data held.
    pub fn size_bytes(&self) -> usize {
        match &self.weights {
            Weights::Q4_1(b) => b.len() * BlockQ4_1::BYTES,
            Weights::Q8_0(b) => b.len() * BlockQ8_0::BYTES,
            Weights::F32(v) => v.len() * 4,
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
            Weights::Q4_1(b) => {
                for (blk, o) in b[row * nb..(row + 1) * nb]
                    .iter()
                    .zip(out.chunks_exact_mut(QK))
                {
                    blk.dequantize(o);
                }
            }
            Weights::Q8_0(b) => {
                for (blk, o) in b[row * nb..(row + 1) * nb]
                    .iter()
                    .zip(out.chunks_exact_mut(QK))
                {
                    blk.dequantize(o);
                }
            }
            Weights::F32(v) => out.copy_from_slice(&v[row * self.cols..(row + 1) * self.cols]),
        }
    }

    /// `out[r * rows + j] = sum_k W[j][k] * x[r * cols + k]` for `r in 0..n`.
    ///
    /// Quantized formats quantize `x` to 8 bits per block into `scratch` first.
    pub fn matmul(&self, x: &[f32], n: usize, out: &mut [f32], scratch: &mut MatmulScratch) {
        assert_eq!(x.len(), n * self.cols, "matmul: x must be n x cols");
        assert_eq!(out.len(), n * self.rows, "matmul: out must be n x rows");
        let (rows, cols) = (self.rows, self.cols);
        if let Weights::F32(w) = &self.weights {
            for (xr, orow) in x.chunks_exact(cols).zip(out.chunks_exact_mut(rows)) {
                for (o, wr) in orow.iter_mut().zip(w.chunks_exact(cols)) {
                    *o = ops::dot_f32(wr, xr);
                }
            }
            return;
        }
        let nb = cols / QK;
        scratch.xq.resize(n * nb, BlockQ8_1::default());
        quantize_row_q8_1(x, &mut scratch.xq);
        for (xq, orow) in scratch.xq.chunks_exact(nb).zip(out.chunks_exact_mut(rows)) {
            for (j, o) in orow.iter_mut().enumerate() {
                *o = match &self.weights {
                    Weights::Q4_1(b) => scalar::dot_q4_1(&b[j * nb..(j + 1) * nb], xq),
                    Weights::Q8_0(b) => scalar::dot_q8_0(&b[j * nb..(j + 1) * nb], xq),
                    Weights::F32(_) => unreachable!("handled above"),
                };
            }
        }
    }
}

static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();

fn build_pool(threads: usize) -> Result<rayon::ThreadPool, KernelError> {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("kernels-{i}"))
        .build()
        .map_err(|e| KernelError::PoolBuild(e.to_string()))
}

fn pool() -> &'static rayon::ThreadPool {
    POOL.get_or_init(|| {
        build_pool(0).unwrap_or_else(|e| panic!("cannot build the default kernel thread pool: {e}"))
    })
}

/// Sizes the matmul thread pool (`0` = available parallelism). Call once, before any matmul.
pub fn init_thread_pool(threads: usize) -> Result<(), KernelError> {
    let built = build_pool(threads)?;
    POOL.set(built)
        .map_err(|_| KernelError::PoolAlreadyInitialized(num_threads()))
}

/// Threads the matmul pool runs.
pub fn num_threads() -> usize {
    pool().current_num_threads()
}

/// Which SIMD path the running CPU gets: `"avx512vnni"`, `"avx2"` or `"scalar"`.
pub fn simd_level() -> &'static str {
    "scalar"
}

#[cfg(test)]
mod tests;
