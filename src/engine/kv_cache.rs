//! Per-sequence KV cache, preallocated once for the sequence's whole budget
//! (prompt + max new tokens), so a decode step never reallocates or copies.
//! Stored in f16, like llama.cpp's default cache: half the memory and half the
//! bytes attention reads per step. The allocation is zeroed lazily by the OS,
//! so resident memory grows with the positions actually written.

use half::{f16, slice::HalfFloatSliceExt, vec::HalfBitsVecExt};

/// Keys and values of every layer for one sequence.
/// Layout per layer: `[position][kv_head][head_dim]`, keys and values apart.
pub struct KvCache {
    keys: Vec<Vec<f16>>,
    values: Vec<Vec<f16>>,
    /// Elements per position per layer (kv_heads * head_dim).
    row: usize,
    capacity: usize,
    len: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("KV cache full: {len} + {adding} positions exceed its capacity of {capacity}")]
pub struct KvCacheFull {
    pub len: usize,
    pub adding: usize,
    pub capacity: usize,
}

impl KvCache {
    pub fn new(layers: usize, kv_row: usize, capacity: usize) -> Self {
        Self {
            keys: (0..layers).map(|_| zeroed(capacity * kv_row)).collect(),
            values: (0..layers).map(|_| zeroed(capacity * kv_row)).collect(),
            row: kv_row,
            capacity,
            len: 0,
        }
    }

    /// Bytes a cache of `capacity` positions takes.
    pub fn bytes_for(layers: usize, kv_row: usize, capacity: usize) -> usize {
        2 * layers * kv_row * capacity * std::mem::size_of::<f16>()
    }

    /// Positions already stored (the next token's position).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn size_bytes(&self) -> usize {
        Self::bytes_for(self.keys.len(), self.row, self.capacity)
    }

    pub fn check_room(&self, adding: usize) -> Result<(), KvCacheFull> {
        if self.len + adding > self.capacity {
            return Err(KvCacheFull {
                len: self.len,
                adding,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    /// Writes key/value rows of `layer` at positions `len + offset ..`.
    /// `k` and `v` hold whole rows of `kv_row` floats, rounded to f16 here;
    /// the caller checked room.
    pub fn write(&mut self, layer: usize, offset: usize, k: &[f32], v: &[f32]) {
        let start = (self.len + offset) * self.row;
        self.keys[layer][start..start + k.len()].convert_from_f32_slice(k);
        self.values[layer][start..start + v.len()].convert_from_f32_slice(v);
    }

    /// Keys and values of `layer` for positions `0..upto`.
    pub fn layer(&self, layer: usize, upto: usize) -> (&[f16], &[f16]) {
        let end = upto * self.row;
        (&self.keys[layer][..end], &self.values[layer][..end])
    }

    /// Marks `n` more positions as filled (after every layer was written).
    pub fn advance(&mut self, n: usize) {
        self.len += n;
        debug_assert!(self.len <= self.capacity);
    }

    /// Forgets the last positions (used when a forward pass fails midway).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// `n` zero f16s from zeroed memory: `vec![0u16; n]` asks the allocator for
/// zeroed pages (untouched until written), which `vec![f16::ZERO; n]` cannot:
/// it would write, and so make resident, the whole reservation at admission.
fn zeroed(n: usize) -> Vec<f16> {
    vec![0u16; n].reinterpret_into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_land_at_the_current_length_and_advance_moves_it() {
        let mut c = KvCache::new(2, 3, 4);
        c.write(0, 0, &[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]);
        c.write(1, 0, &[7.0; 3], &[8.0; 3]);
        c.advance(1);
        c.write(0, 0, &[9.0; 3], &[9.5; 3]);
        c.advance(1);
        let (k, v) = c.layer(0, 2);
        let f = |x: &[f16]| x.iter().map(|h| h.to_f32()).collect::<Vec<_>>();
        // Small integers and halves are exact in f16.
        assert_eq!(f(k), [1.0, 2.0, 3.0, 9.0, 9.0, 9.0]);
        assert_eq!(f(v), [4.0, 5.0, 6.0, 9.5, 9.5, 9.5]);
        assert_eq!(c.len(), 2);
    }

    /// Resident set size of this process, in bytes (Linux).
    fn rss_bytes() -> Option<usize> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * 4096)
    }

    #[test]
    fn a_reservation_is_not_resident_until_written() {
        let Some(before) = rss_bytes() else {
            return; // no /proc: nothing to check
        };
        // 4 × 128 MiB reserved; one position written.
        let mut c = KvCache::new(2, 1024, 65_536);
        c.write(0, 0, &[1.0; 1024], &[2.0; 1024]);
        let after = rss_bytes().expect("statm");
        let grown = after.saturating_sub(before);
        assert_eq!(c.size_bytes(), 512 << 20);
        // Other tests run beside this one, so allow them some growth too.
        assert!(grown < 64 << 20, "RSS grew by {} MiB", grown >> 20);
    }

    #[test]
    fn room_is_checked_against_the_preallocated_capacity() {
        let c = KvCache::new(1, 2, 3);
        assert!(c.check_room(3).is_ok());
        let err = c.check_room(4).expect_err("4 > 3");
        assert_eq!(err.capacity, 3);
        assert_eq!(c.size_bytes(), 2 * 2 * 3 * 2);
    }
}
