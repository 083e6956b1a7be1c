//! CPU quantized matrix multiplication for GGUF weights: Q4_0, Q4_1, Q5_0, Q8_0,
//! Q4_K, Q5_K and Q6_K natively, anything else as f32.
//!
//! Activations are quantized to 8 bits per 32-element block, as GGML does, so results
//! track llama.cpp's CPU backend closely. Weights are repacked at load time, without
//! losing or adding bits, into a row-interleaved layout ([`tiles`]) that lets one SIMD
//! multiply-add serve 16 output rows; [`formats`] maps each GGUF type onto it. One
//! generic kernel per SIMD level computes every format, and the best level for the
//! running CPU is picked at runtime ([`select`]). [`driver`] tiles a matmul over
//! weight-row groups × activation rows so batched decode and prefill reuse each
//! weight block from cache across activation rows, and runs the tiles on [`pool`]:
//! the calling thread plus workers that spin briefly between jobs, because a decode
//! step is ~120 matmuls of a few tens of microseconds each.

pub mod attention;
mod blocks;
mod driver;
mod formats;
mod kernel_set;
mod matrix;
pub mod ops;
mod packed;
mod pool;
mod scalar;
mod select;
mod tiles;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

use std::sync::OnceLock;

pub use blocks::{quantize_row_q8_1, BlockQ8_1, QK};
pub use matrix::{MatmulScratch, QMatrix};

/// Errors from building matrices or configuring the kernels.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{format} matrix needs cols ({cols}) to be a multiple of {block}")]
    ColsNotBlockAligned {
        format: &'static str,
        cols: usize,
        block: usize,
    },
    #[error("{format} matrix {rows}x{cols} needs {expected} bytes/elements, got {got}")]
    SizeMismatch {
        format: &'static str,
        rows: usize,
        cols: usize,
        expected: usize,
        got: usize,
    },
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
            .filter(|&l| select::for_level(l).is_ok())
            .collect()
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

/// Hints the cache lines at `p`, `p + 64`, … below `p + bytes` into L1: all the
/// lines of `bytes` bytes when `p` starts a line. Never faults, whatever the
/// address: a hint past the mapping is dropped.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_lines<T>(p: *const T, bytes: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    for line in (0..bytes).step_by(64) {
        // SAFETY: prefetching never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>().wrapping_add(line)) };
    }
}

/// Which SIMD path the running CPU gets: `"avx512vnni"`, `"avx2"` or `"scalar"`.
pub fn simd_level() -> &'static str {
    select::best().level.as_str()
}

#[cfg(test)]
mod tests;
