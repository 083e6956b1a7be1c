//! Splits one matmul into group × activation-row tiles and runs them on the pool.
//!
//! Work is parallel over weight-row groups only, so each thread streams its share of
//! the weights once per activation tile and no two threads write the same output.

use std::ops::Range;

use super::blocks::{BlockQ8_1, QK};
use super::kernel_set::{GroupOut, MAX_R};
use super::pool;
use super::tiles::GROUP;

/// Below this many multiply-adds a matmul runs on the calling thread: waking the
/// pool costs more than it saves.
const PARALLEL_MIN_MACS: usize = 64 * 1024;

/// Activation bytes per tile (quantized rows re-read for every weight group): sized
/// to stay in L2 while the group's weights sit in L1.
const ACT_TILE_BYTES: usize = 96 * 1024;

/// Below this many activation blocks, quantizing runs on the calling thread.
const PARALLEL_MIN_BLOCKS: usize = 4096;

/// Output pointer shared by the tasks of one parallel section.
pub(super) struct OutPtr<T>(pub(super) *mut T);
// By hand: the derives would require `T: Copy`, but only the pointer is copied.
impl<T> Clone for OutPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for OutPtr<T> {}
// SAFETY: tasks write disjoint elements (distinct weight-row groups or activation
// rows), and the buffer outlives every task (`Pool::run` returns after all finish).
unsafe impl<T: Send> Send for OutPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for OutPtr<T> {}

impl<T> OutPtr<T> {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not the field).
    pub(super) fn get(self) -> *mut T {
        self.0
    }
}

/// Quantizes `x` (`n` rows of `nb` blocks) into `xq` with `quantize` (which takes
/// whole rows), in parallel for large batches.
pub fn quantize(
    quantize: fn(&[f32], &mut [BlockQ8_1]),
    x: &[f32],
    n: usize,
    nb: usize,
    xq: &mut [BlockQ8_1],
) {
    assert_eq!(xq.len(), n * nb, "quantize: output size");
    assert_eq!(x.len(), n * nb * QK, "quantize: input size");
    let threads = pool().threads();
    if threads == 1 || n * nb < PARALLEL_MIN_BLOCKS {
        quantize(x, xq);
        return;
    }
    let per = n.div_ceil(threads * 4);
    super::parallel_chunks_mut(xq, per * nb, |c, dst| {
        let start = c * per * nb * QK;
        quantize(&x[start..start + dst.len() * QK], dst);
    });
}

/// Everything a task needs to compute output columns for some groups.
struct Job<'a, G> {
    /// Computes group `g` against activation rows `ra..ra + r` (`r <= MAX_R`) into
    /// the first `r` rows of the buffer.
    group: &'a G,
    rows: usize,
    nb: usize,
    n: usize,
    out: OutPtr<f32>,
}

/// Computes `out` (`n x rows`) group by group with `group(g, ra, r, buf)` (see
/// [`Job::group`]), for a matrix of `nb` blocks per row against `n` quantized
/// activation rows. Generic rather than `dyn`: it runs once per group.
pub fn run<G>(rows: usize, nb: usize, n: usize, out: &mut [f32], group: &G)
where
    G: Fn(usize, usize, usize, &mut GroupOut) + Sync,
{
    assert_eq!(out.len(), n * rows, "matmul: output size");
    let groups = rows.div_ceil(GROUP);
    let job = Job {
        group,
        rows,
        nb,
        n,
        out: OutPtr(out.as_mut_ptr()),
    };
    let threads = pool().threads();
    if threads == 1 || rows * nb * QK * n < PARALLEL_MIN_MACS || groups == 1 {
        job.groups(0..groups);
        return;
    }
    // A few chunks per thread so a thread slowed by other load does not hold up the rest.
    let chunks = (threads * 4).min(groups);
    pool().run(chunks, &|c| {
        job.groups(groups * c / chunks..groups * (c + 1) / chunks)
    });
}

/// `out = x · wᵀ` for an f32 matrix `w` (`rows x cols`), parallel over row groups.
pub fn run_f32(w: &[f32], rows: usize, cols: usize, x: &[f32], n: usize, out: &mut [f32]) {
    assert_eq!(out.len(), n * rows, "matmul: output size");
    let groups = rows.div_ceil(GROUP);
    let out = OutPtr(out.as_mut_ptr());
    let task = |g: usize| {
        let js = g * GROUP..rows.min((g + 1) * GROUP);
        for (r, xr) in x.chunks_exact(cols).enumerate() {
            for j in js.clone() {
                let v = super::ops::dot_f32(&w[j * cols..(j + 1) * cols], xr);
                // SAFETY: `r < n` and `j < rows`; group `g` is one task's alone.
                unsafe { out.get().add(r * rows + j).write(v) };
            }
        }
    };
    if pool().threads() == 1 || rows * cols * n < PARALLEL_MIN_MACS {
        (0..groups).for_each(task);
    } else {
        pool().run(groups, &task);
    }
}

impl<G> Job<'_, G>
where
    G: Fn(usize, usize, usize, &mut GroupOut) + Sync,
{
    fn groups(&self, groups: Range<usize>) {
        let act_tile = (ACT_TILE_BYTES / (self.nb * size_of::<BlockQ8_1>()))
            .max(1)
            .next_multiple_of(MAX_R);
        let mut buf: GroupOut = [[0.0; GROUP]; MAX_R];
        for r0 in (0..self.n).step_by(act_tile) {
            let r1 = self.n.min(r0 + act_tile);
            for g in groups.clone() {
                for ra in (r0..r1).step_by(MAX_R) {
                    let r = MAX_R.min(r1 - ra);
                    (self.group)(g, ra, r, &mut buf);
                    self.write(g, ra, r, &buf);
                }
            }
        }
    }

    fn write(&self, g: usize, ra: usize, r: usize, buf: &GroupOut) {
        let j0 = g * GROUP;
        let valid = GROUP.min(self.rows - j0);
        for (ri, vals) in buf.iter().enumerate().take(r) {
            debug_assert!(ra + ri < self.n);
            // SAFETY: `ra + ri < n` and `j0 + valid <= rows`, so the run lies inside the
            // `n x rows` output; group `g` belongs to exactly one task, so no other
            // thread writes these elements.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    vals.as_ptr(),
                    self.out.get().add((ra + ri) * self.rows + j0),
                    valid,
                );
            }
        }
    }
}
