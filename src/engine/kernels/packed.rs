//! A quantized matrix in tiles ([`super::tiles`]), built from GGUF bytes.

use super::blocks::QK;
use super::formats::{Format, RowOf, SuperRowOf};
use super::tiles::{Quants, Scales, GROUP};
use super::KernelError;

type SuperOf<F> = <<F as Format>::S as Scales>::Super;

/// A `rows x (32·nb)` matrix of format `F`, group-major: the tiles of group `g` are
/// `g·nb..(g + 1)·nb`, its super-block scales `g·nb/PER_SUPER..`.
pub struct Packed<F: Format> {
    rows: usize,
    nb: usize,
    tiles: Vec<Tile<F>>,
    supers: Vec<SuperOf<F>>,
}

/// One 32-column block of a 16-row group: its quants and, right after them, its
/// scales. One array, so memory-bound decode streams one run of bytes: with the
/// scales in an array of their own, single-stream decode was about 8% slower.
#[repr(C)]
pub struct Tile<F: Format> {
    pub q: F::Q,
    pub s: F::S,
}

// By hand: derives would require `F: Copy`.
impl<F: Format> Clone for Tile<F> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<F: Format> Copy for Tile<F> {}

/// One 16-row group's tiles: what a kernel call reads.
pub struct GroupView<'a, F: Format> {
    pub tiles: &'a [Tile<F>],
    /// Indexed by block `/ PER_SUPER`.
    pub supers: &'a [SuperOf<F>],
}

// By hand: derives would require `F: Copy`, but only references are copied.
impl<F: Format> Clone for GroupView<'_, F> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<F: Format> Copy for GroupView<'_, F> {}

impl<F: Format> Packed<F> {
    /// Packs a GGUF tensor's bytes (`rows` rows of `cols` elements).
    pub fn from_gguf(rows: usize, cols: usize, bytes: &[u8]) -> Result<Self, KernelError> {
        let per = F::S::PER_SUPER;
        let block = QK * per;
        if !cols.is_multiple_of(block) {
            return Err(KernelError::ColsNotBlockAligned {
                format: F::NAME,
                cols,
                block,
            });
        }
        let expected = rows * cols / block * F::BLOCK_BYTES;
        if bytes.len() != expected {
            return Err(KernelError::SizeMismatch {
                format: F::NAME,
                rows,
                cols,
                expected,
                got: bytes.len(),
            });
        }
        let nb = cols / QK;
        let groups = rows.div_ceil(GROUP);
        let mut m = Self {
            rows,
            nb,
            tiles: vec![
                Tile {
                    q: F::Q::ZERO,
                    s: F::S::ZERO
                };
                groups * nb
            ],
            supers: vec![F::S::ZERO_SUPER; groups * nb / per],
        };
        let mut q = vec![[0u8; QK]; per];
        let mut row = vec![RowOf::<F>::default(); per];
        let mut sup = SuperRowOf::<F>::default();
        let row_bytes = cols / block * F::BLOCK_BYTES;
        for (j, row_data) in bytes.chunks_exact(row_bytes.max(1)).enumerate() {
            let (g, i) = (j / GROUP, j % GROUP);
            for (s, b) in row_data.chunks_exact(F::BLOCK_BYTES).enumerate() {
                F::decode(b, &mut q, &mut row, &mut sup);
                F::S::set_super(&mut m.supers[g * nb / per + s], i, sup);
                for (k, (qk, rk)) in q.iter().zip(&row).enumerate() {
                    let at = g * nb + s * per + k;
                    m.tiles[at].q.set(i, qk);
                    m.tiles[at].s.set(i, *rk);
                }
            }
        }
        Ok(m)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Blocks of 32 per row.
    pub fn blocks(&self) -> usize {
        self.nb
    }

    /// Group `g`'s tiles.
    pub fn group(&self, g: usize) -> GroupView<'_, F> {
        let (nb, per) = (self.nb, F::S::PER_SUPER);
        GroupView {
            tiles: &self.tiles[g * nb..(g + 1) * nb],
            supers: &self.supers[g * nb / per..(g + 1) * nb / per],
        }
    }

    /// Bytes held, including the zero rows that pad the last group.
    pub fn size_bytes(&self) -> usize {
        size_of_val(self.tiles.as_slice()) + size_of_val(self.supers.as_slice())
    }

    /// Row `j` in f32, exactly as GGML dequantizes it.
    pub fn dequantize_row(&self, j: usize, out: &mut [f32]) {
        let (g, i) = (j / GROUP, j % GROUP);
        let view = self.group(g);
        for (b, o) in out.chunks_exact_mut(QK).enumerate() {
            let tile = &view.tiles[b];
            let q = tile.q.get(i);
            let s = tile.s.row(&view.supers[b / F::S::PER_SUPER], i);
            for (k, (o, &q)) in o.iter_mut().zip(&q).enumerate() {
                let h = k / (QK / 2);
                *o = s.d[h] * (f32::from(q) - F::OFFSET as f32) + s.m[h];
            }
        }
    }
}
