//! The native backend's KV storage: one pool of fixed-size blocks per layer,
//! keys and values apart, in f16 like llama.cpp's default cache (half the memory
//! and half the bytes attention reads per step).
//!
//! Layout per layer: `[block][position in block][kv_head][head_dim]`, so the rows
//! of one block are contiguous and a block table maps a sequence's positions to
//! them. The pool comes from zeroed memory that the OS maps lazily: resident
//! memory grows with the blocks actually written, not with the pool's size.

use half::{f16, slice::HalfFloatSliceExt, vec::HalfBitsVecExt};

use crate::engine::kv::BlockId;

/// Keys and values of every layer, for every block.
#[derive(Default)]
pub struct KvPool {
    keys: Vec<Vec<f16>>,
    values: Vec<Vec<f16>>,
    /// Elements per position per layer (kv_heads * head_dim).
    row: usize,
    block_size: usize,
    blocks: usize,
}

/// One layer's keys and values, with the geometry to find a position's row.
#[derive(Clone, Copy)]
pub struct LayerKv<'a> {
    pub keys: &'a [f16],
    pub values: &'a [f16],
    pub row: usize,
    pub block_size: usize,
}

impl KvPool {
    pub fn new(layers: usize, row: usize, block_size: usize, blocks: usize) -> Self {
        let len = blocks * block_size * row;
        Self {
            keys: (0..layers).map(|_| zeroed(len)).collect(),
            values: (0..layers).map(|_| zeroed(len)).collect(),
            row,
            block_size,
            blocks,
        }
    }

    pub fn blocks(&self) -> usize {
        self.blocks
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Bytes the whole pool spans (resident only where written).
    pub fn size_bytes(&self) -> usize {
        2 * self.keys.len() * self.blocks * self.block_size * self.row * size_of::<f16>()
    }

    /// Slot (block row) of position `pos` in a sequence with block table `table`.
    #[inline]
    pub fn slot(&self, table: &[BlockId], pos: usize) -> usize {
        table[pos / self.block_size] as usize * self.block_size + pos % self.block_size
    }

    /// Writes one position's key and value rows of `layer` at `slot`, rounded to f16.
    pub fn write(&mut self, layer: usize, slot: usize, k: &[f32], v: &[f32]) {
        let start = slot * self.row;
        self.keys[layer][start..start + k.len()].convert_from_f32_slice(k);
        self.values[layer][start..start + v.len()].convert_from_f32_slice(v);
    }

    pub fn layer(&self, layer: usize) -> LayerKv<'_> {
        LayerKv {
            keys: &self.keys[layer],
            values: &self.values[layer],
            row: self.row,
            block_size: self.block_size,
        }
    }
}

/// `n` zero f16s from zeroed memory: `vec![0u16; n]` asks the allocator for
/// zeroed pages (untouched until written), which `vec![f16::ZERO; n]` cannot:
/// it would write, and so make resident, the whole pool at startup.
fn zeroed(n: usize) -> Vec<f16> {
    vec![0u16; n].reinterpret_into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_land_in_the_blocks_their_table_names() {
        let mut pool = KvPool::new(1, 2, 2, 4);
        let table = [3, 1];
        for pos in 0..4 {
            let slot = pool.slot(&table, pos);
            pool.write(0, slot, &[pos as f32; 2], &[10.0 + pos as f32; 2]);
        }
        let l = pool.layer(0);
        let f = |x: &[f16]| x.iter().map(|h| h.to_f32()).collect::<Vec<_>>();
        // Block 1 holds positions 2 and 3, block 3 positions 0 and 1.
        // Rows are 2 wide and blocks 2 rows, so block b starts at element 4b.
        assert_eq!(f(&l.keys[4..8]), [2.0, 2.0, 3.0, 3.0]);
        assert_eq!(f(&l.values[12..]), [10.0, 10.0, 11.0, 11.0]);
    }

    /// Resident set size of this process, in bytes (Linux).
    fn rss_bytes() -> Option<usize> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * 4096)
    }

    #[test]
    fn the_pool_is_not_resident_until_written() {
        let Some(before) = rss_bytes() else {
            return; // no /proc: nothing to check
        };
        // 2 layers × keys and values × 128 MiB; one position written.
        let mut pool = KvPool::new(2, 1024, 16, 4096);
        pool.write(0, 0, &[1.0; 1024], &[2.0; 1024]);
        let grown = rss_bytes().expect("statm").saturating_sub(before);
        assert_eq!(pool.size_bytes(), 512 << 20);
        // Other tests run beside this one, so allow them some growth too.
        assert!(grown < 64 << 20, "RSS grew by {} MiB", grown >> 20);
    }
}
