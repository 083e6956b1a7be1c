//! Row-interleaved weight layout the kernels stream.
//!
//! Rows are taken 16 at a time (one "group", one AVX-512 lane per row). For each
//! 32-element block of a group, the 16 rows' quants are transposed in 4-byte words,
//! so vector `t` holds, in lane `i`, row `i`'s quant bytes `4t..4t+4`. A multiply-add
//! with one broadcast 4-byte word of activations then yields 16 row partial sums at
//! once, and the per-row scales apply lane-wise: no horizontal reductions.
//!
//! Q4_1 keeps GGML's byte packing inside a word (low nibble = element k, high nibble
//! = element k + 16), so the layout is a pure transpose and needs no extra memory.
//! Q8_0 quants are stored biased by +128 (as `u8`), the unsigned operand VNNI wants;
//! kernels correct with `-128 * d * sum(x)`, exactly like Q4_1's `m * sum(x)` term.
//! Rows past the end of the matrix are zero-padded (their outputs are dropped).

use half::f16;

use super::blocks::{BlockQ4_1, BlockQ8_0, QK};

/// Rows per interleaved group.
pub const GROUP: usize = 16;

/// One 32-column block of a 16-row group of a Q4_1 matrix (320 bytes, like 16 GGML blocks).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
pub struct Q4_1Tile {
    /// `qs[t][4 * i + e]` = byte `4t + e` of row `i`'s GGML `qs`.
    pub qs: [[u8; 64]; 4],
    pub d: [f16; GROUP],
    pub m: [f16; GROUP],
}

/// Quants of one 32-column block of a 16-row group of a Q8_0 matrix (512 bytes).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
pub struct Q8_0Tile {
    /// `qs[t][4 * i + e]` = quant `4t + e` of row `i`, plus 128.
    pub qs: [[u8; 64]; 8],
}

/// The scales of one [`Q8_0Tile`], kept apart so tiles stay cache-line aligned.
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug)]
pub struct Q8_0Scales {
    pub d: [f16; GROUP],
}

const _: () = assert!(std::mem::size_of::<Q4_1Tile>() == 20 * GROUP);
const _: () = assert!(std::mem::size_of::<Q8_0Tile>() == 32 * GROUP);
const _: () = assert!(std::mem::size_of::<Q8_0Scales>() == 2 * GROUP);

/// Number of groups covering `rows`.
pub fn groups(rows: usize) -> usize {
    rows.div_ceil(GROUP)
}

/// Packs row-major GGML Q4_1 blocks (`rows * nb` of them) into tiles, group-major.
pub fn pack_q4_1(blocks: &[BlockQ4_1], rows: usize, nb: usize) -> Vec<Q4_1Tile> {
    let zero = Q4_1Tile {
        qs: [[0; 64]; 4],
        d: [f16::ZERO; GROUP],
        m: [f16::ZERO; GROUP],
    };
    let mut tiles = vec![zero; groups(rows) * nb];
    for (j, row) in blocks.chunks_exact(nb).enumerate() {
        let (g, i) = (j / GROUP, j % GROUP);
        for (b, blk) in row.iter().enumerate() {
            let tile = &mut tiles[g * nb + b];
            tile.d[i] = blk.d;
            tile.m[i] = blk.m;
            for (t, word) in blk.qs.chunks_exact(4).enumerate() {
                tile.qs[t][4 * i..4 * i + 4].copy_from_slice(word);
            }
        }
    }
    tiles
}

/// Packs row-major GGML Q8_0 blocks into biased tiles and their scales, group-major.
pub fn pack_q8_0(blocks: &[BlockQ8_0], rows: usize, nb: usize) -> (Vec<Q8_0Tile>, Vec<Q8_0Scales>) {
    // Padding rows hold quant 0, i.e. biased byte 128.
    let mut tiles = vec![Q8_0Tile { qs: [[128; 64]; 8] }; groups(rows) * nb];
    let mut scales = vec![
        Q8_0Scales {
            d: [f16::ZERO; GROUP]
        };
        groups(rows) * nb
    ];
    for (j, row) in blocks.chunks_exact(nb).enumerate() {
        let (g, i) = (j / GROUP, j % GROUP);
        for (b, blk) in row.iter().enumerate() {
            scales[g * nb + b].d[i] = blk.d;
            let tile = &mut tiles[g * nb + b];
            for (t, word) in blk.qs.chunks_exact(4).enumerate() {
                for (e, &q) in word.iter().enumerate() {
                    tile.qs[t][4 * i + e] = (q as u8) ^ 0x80;
                }
            }
        }
    }
    (tiles, scales)
}

/// Recovers GGML block `b` of row `j` from Q4_1 tiles.
pub fn unpack_q4_1(tiles: &[Q4_1Tile], nb: usize, j: usize, b: usize) -> BlockQ4_1 {
    let (g, i) = (j / GROUP, j % GROUP);
    let tile = &tiles[g * nb + b];
    let mut qs = [0u8; QK / 2];
    for (t, word) in qs.chunks_exact_mut(4).enumerate() {
        word.copy_from_slice(&tile.qs[t][4 * i..4 * i + 4]);
    }
    BlockQ4_1 {
        d: tile.d[i],
        m: tile.m[i],
        qs,
    }
}

/// Recovers GGML block `b` of row `j` from Q8_0 tiles and scales.
pub fn unpack_q8_0(
    tiles: &[Q8_0Tile],
    scales: &[Q8_0Scales],
    nb: usize,
    j: usize,
    b: usize,
) -> BlockQ8_0 {
    let (g, i) = (j / GROUP, j % GROUP);
    let tile = &tiles[g * nb + b];
    let mut qs = [0i8; QK];
    for (t, word) in qs.chunks_exact_mut(4).enumerate() {
        for (e, q) in word.iter_mut().enumerate() {
            *q = (tile.qs[t][4 * i + e] ^ 0x80) as i8;
        }
    }
    BlockQ8_0 {
        d: scales[g * nb + b].d[i],
        qs,
    }
}
