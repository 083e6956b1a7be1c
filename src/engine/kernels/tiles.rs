//! Row-interleaved weight tiles: the layout the kernels stream.
//!
//! Rows are taken 16 at a time (one "group", one AVX-512 lane per row). For each
//! 32-element block of a group, the 16 rows' quants are transposed in 4-byte words,
//! so vector `t` holds, in lane `i`, row `i`'s quants `4t..4t+4` (the "lo" word) and,
//! in a second vector, `16+4t..16+4t+4` (the "hi" word). A multiply-add with one
//! broadcast 4-byte word of activations then yields 16 row partial sums at once, and
//! the per-row scales apply lane-wise: no horizontal reductions.
//!
//! Quants are stored unsigned ([`Quants`]); a format's value is `d·(q − offset) + m`
//! with the scales of [`Scales`]. Low-bit quants keep GGML's Q4 byte packing (low
//! nibble = element k, high nibble = element k + 16), so a Q4 tile is a pure
//! transpose; 5- and 6-bit quants add their high bits in layouts that SIMD code
//! merges in one or two instructions. Every tile holds exactly the bits of the GGUF
//! blocks it came from. Rows past the end of a matrix are zero (outputs dropped).
//!
//! Quant and scale tiles are 32-byte aligned and a multiple of 32 bytes long, so
//! [`super::packed::Tile`] puts a block's scales right after its quants with no
//! padding: a matrix takes exactly its GGUF bytes (K-quants' super-block scales
//! aside).

use half::f16;

use super::blocks::QK;

/// Rows per interleaved group.
pub const GROUP: usize = 16;

/// One 32-column block of a 16-row group's quants.
pub trait Quants: Copy + Send + Sync + 'static {
    /// A tile of zero quants (padding rows).
    const ZERO: Self;
    /// Stores row `i`'s 32 quants (as many low bits of each as the tile holds).
    fn set(&mut self, i: usize, q: &[u8; QK]);
    /// Row `i`'s 32 quants.
    fn get(&self, i: usize) -> [u8; QK];
}

/// 4-bit quants: `qs[t][4i + e]` = element `4t + e` (low nibble) and `16 + 4t + e`
/// (high nibble) of row `i`.
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug)]
pub struct Nib4 {
    pub qs: [[u8; 64]; 4],
}

/// 5-bit quants: [`Nib4`] for the low bits, and the fifth bits as 64-bit lane masks:
/// bit `4i + e` of `high[t]` (`high[4 + t]`) is that of element `4t + e` (`16 + 4t + e`).
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug)]
pub struct Nib5 {
    pub qs: [[u8; 64]; 4],
    pub high: [u64; 8],
}

/// 6-bit quants: [`Nib4`] for the low bits; byte `4i + e` of `high[u]` holds the top
/// two bits of the lo and hi elements of word `t = 2u + v` at bits `4v` and `4v + 2`.
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug)]
pub struct Nib6 {
    pub qs: [[u8; 64]; 4],
    pub high: [[u8; 64]; 2],
}

/// 8-bit quants: `qs[t][4i + e]` = element `4t + e` of row `i` (GGML's signed Q8_0
/// quants biased by +128, the unsigned operand VNNI wants).
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug)]
pub struct Byte8 {
    pub qs: [[u8; 64]; 8],
}

const _: () = assert!(size_of::<Nib4>() == 16 * GROUP);
const _: () = assert!(size_of::<Nib5>() == 20 * GROUP);
const _: () = assert!(size_of::<Nib6>() == 24 * GROUP);
const _: () = assert!(size_of::<Byte8>() == 32 * GROUP);

fn set_nibbles(qs: &mut [[u8; 64]; 4], i: usize, q: &[u8; QK]) {
    for (t, word) in qs.iter_mut().enumerate() {
        for e in 0..4 {
            let k = 4 * t + e;
            word[4 * i + e] = (q[k] & 0x0F) | (q[k + QK / 2] & 0x0F) << 4;
        }
    }
}

fn get_nibbles(qs: &[[u8; 64]; 4], i: usize) -> [u8; QK] {
    let mut q = [0u8; QK];
    for (t, word) in qs.iter().enumerate() {
        for e in 0..4 {
            let byte = word[4 * i + e];
            q[4 * t + e] = byte & 0x0F;
            q[4 * t + e + QK / 2] = byte >> 4;
        }
    }
    q
}

/// `(word, lane byte)` of element `k`: word `t` is lo for `k < 16`, hi after.
fn element(k: usize) -> (usize, usize) {
    ((k % (QK / 2)) / 4, k % 4)
}

impl Quants for Nib4 {
    const ZERO: Self = Self { qs: [[0; 64]; 4] };

    fn set(&mut self, i: usize, q: &[u8; QK]) {
        set_nibbles(&mut self.qs, i, q);
    }

    fn get(&self, i: usize) -> [u8; QK] {
        get_nibbles(&self.qs, i)
    }
}

impl Quants for Nib5 {
    const ZERO: Self = Self {
        qs: [[0; 64]; 4],
        high: [0; 8],
    };

    fn set(&mut self, i: usize, q: &[u8; QK]) {
        set_nibbles(&mut self.qs, i, q);
        for (k, &v) in q.iter().enumerate() {
            let (t, e) = element(k);
            let mask = &mut self.high[t + 4 * (k / (QK / 2))];
            let bit = 1u64 << (4 * i + e);
            *mask = if v & 0x10 != 0 {
                *mask | bit
            } else {
                *mask & !bit
            };
        }
    }

    fn get(&self, i: usize) -> [u8; QK] {
        let mut q = get_nibbles(&self.qs, i);
        for (k, v) in q.iter_mut().enumerate() {
            let (t, e) = element(k);
            let bit = self.high[t + 4 * (k / (QK / 2))] >> (4 * i + e) & 1;
            *v |= (bit as u8) << 4;
        }
        q
    }
}

/// Where element `k`'s top two bits sit in [`Nib6::high`]: `(vector, byte, shift)`.
fn nib6_high(i: usize, k: usize) -> (usize, usize, u32) {
    let (t, e) = element(k);
    let hi = k / (QK / 2);
    (t / 2, 4 * i + e, (4 * (t % 2) + 2 * hi) as u32)
}

impl Quants for Nib6 {
    const ZERO: Self = Self {
        qs: [[0; 64]; 4],
        high: [[0; 64]; 2],
    };

    fn set(&mut self, i: usize, q: &[u8; QK]) {
        set_nibbles(&mut self.qs, i, q);
        for (k, &v) in q.iter().enumerate() {
            let (u, byte, shift) = nib6_high(i, k);
            let b = &mut self.high[u][byte];
            *b = (*b & !(3 << shift)) | (v >> 4 & 3) << shift;
        }
    }

    fn get(&self, i: usize) -> [u8; QK] {
        let mut q = get_nibbles(&self.qs, i);
        for (k, v) in q.iter_mut().enumerate() {
            let (u, byte, shift) = nib6_high(i, k);
            *v |= (self.high[u][byte] >> shift & 3) << 4;
        }
        q
    }
}

impl Quants for Byte8 {
    const ZERO: Self = Self { qs: [[0; 64]; 8] };

    fn set(&mut self, i: usize, q: &[u8; QK]) {
        for (t, word) in self.qs.iter_mut().enumerate() {
            word[4 * i..4 * i + 4].copy_from_slice(&q[4 * t..4 * t + 4]);
        }
    }

    fn get(&self, i: usize) -> [u8; QK] {
        let mut q = [0u8; QK];
        for (t, word) in self.qs.iter().enumerate() {
            q[4 * t..4 * t + 4].copy_from_slice(&word[4 * i..4 * i + 4]);
        }
        q
    }
}

/// One row's scales in one 32-element block: `x = d[h]·(q − offset) + m[h]` for
/// half `h` (elements `16h..16h + 16`); both halves are equal unless [`Scales::SPLIT`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowScales {
    pub d: [f32; 2],
    pub m: [f32; 2],
}

/// The scales of one 32-column block of a 16-row group, and of its super-block.
pub trait Scales: Copy + Send + Sync + 'static {
    /// Scales shared by [`Self::PER_SUPER`] consecutive blocks (`()` if none).
    type Super: Copy + Send + Sync + 'static;
    /// One row's values of `Self` and of `Self::Super`, as a GGML block gives them.
    type Row: Copy + Default;
    type SuperRow: Copy + Default;
    const ZERO: Self;
    const ZERO_SUPER: Self::Super;
    /// 32-element blocks per super-block (256-element K-quants: 8).
    const PER_SUPER: usize;
    /// Separate scales for the two 16-element halves of a block (Q6_K).
    const SPLIT: bool;
    /// Whether `m` can be non-zero.
    const HAS_MIN: bool;
    fn set(&mut self, i: usize, row: Self::Row);
    fn set_super(sup: &mut Self::Super, i: usize, row: Self::SuperRow);
    /// Row `i`'s effective scales.
    fn row(&self, sup: &Self::Super, i: usize) -> RowScales;
}

/// One f16 scale per row (Q4_0, Q5_0, Q8_0); also Q6_K's super-block scale.
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug)]
pub struct F16Scales {
    pub d: [f16; GROUP],
}

/// An f16 scale and min per row (Q4_1); also the K-quants' super-block `d`, `dmin`.
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug)]
pub struct F16ScalesMins {
    pub d: [f16; GROUP],
    pub m: [f16; GROUP],
}

/// Q4_K/Q5_K: 6-bit scale and min per row, times the super-block's `d` and `dmin`:
/// `x = d·sc·q − dmin·mn`.
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug)]
pub struct KScalesMins {
    pub sc: [u8; GROUP],
    pub mn: [u8; GROUP],
}

/// Q6_K: a signed 8-bit scale per row and 16-element half, times the super-block's
/// `d`: `x = d·sc[h]·(q − 32)`.
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug)]
pub struct K6Scales {
    pub sc: [[i8; GROUP]; 2],
}

const _: () = assert!(size_of::<F16Scales>() == 2 * GROUP);
const _: () = assert!(size_of::<F16ScalesMins>() == 4 * GROUP);
const _: () = assert!(size_of::<KScalesMins>() == 2 * GROUP);
const _: () = assert!(size_of::<K6Scales>() == 2 * GROUP);

/// Scales equal for both halves.
fn whole(d: f32, m: f32) -> RowScales {
    RowScales {
        d: [d; 2],
        m: [m; 2],
    }
}

impl Scales for F16Scales {
    type Super = ();
    type Row = f16;
    type SuperRow = ();
    const ZERO: Self = Self {
        d: [f16::ZERO; GROUP],
    };
    const ZERO_SUPER: Self::Super = ();
    const PER_SUPER: usize = 1;
    const SPLIT: bool = false;
    const HAS_MIN: bool = false;

    fn set(&mut self, i: usize, d: f16) {
        self.d[i] = d;
    }

    fn set_super(_: &mut (), _: usize, _: ()) {}

    fn row(&self, _: &(), i: usize) -> RowScales {
        whole(self.d[i].to_f32(), 0.0)
    }
}

impl Scales for F16ScalesMins {
    type Super = ();
    type Row = (f16, f16);
    type SuperRow = ();
    const ZERO: Self = Self {
        d: [f16::ZERO; GROUP],
        m: [f16::ZERO; GROUP],
    };
    const ZERO_SUPER: Self::Super = ();
    const PER_SUPER: usize = 1;
    const SPLIT: bool = false;
    const HAS_MIN: bool = true;

    fn set(&mut self, i: usize, (d, m): (f16, f16)) {
        self.d[i] = d;
        self.m[i] = m;
    }

    fn set_super(_: &mut (), _: usize, _: ()) {}

    fn row(&self, _: &(), i: usize) -> RowScales {
        whole(self.d[i].to_f32(), self.m[i].to_f32())
    }
}

impl Scales for KScalesMins {
    type Super = F16ScalesMins;
    type Row = (u8, u8);
    type SuperRow = (f16, f16);
    const ZERO: Self = Self {
        sc: [0; GROUP],
        mn: [0; GROUP],
    };
    const ZERO_SUPER: Self::Super = F16ScalesMins::ZERO;
    const PER_SUPER: usize = 8;
    const SPLIT: bool = false;
    const HAS_MIN: bool = true;

    fn set(&mut self, i: usize, (sc, mn): (u8, u8)) {
        self.sc[i] = sc;
        self.mn[i] = mn;
    }

    fn set_super(sup: &mut F16ScalesMins, i: usize, row: (f16, f16)) {
        sup.set(i, row);
    }

    fn row(&self, sup: &F16ScalesMins, i: usize) -> RowScales {
        // Exact in f32: an f16 times a 6-bit integer.
        let d = sup.d[i].to_f32() * f32::from(self.sc[i]);
        let m = sup.m[i].to_f32() * f32::from(self.mn[i]);
        whole(d, -m)
    }
}

impl Scales for K6Scales {
    type Super = F16Scales;
    type Row = [i8; 2];
    type SuperRow = f16;
    const ZERO: Self = Self {
        sc: [[0; GROUP]; 2],
    };
    const ZERO_SUPER: Self::Super = F16Scales::ZERO;
    const PER_SUPER: usize = 8;
    const SPLIT: bool = true;
    const HAS_MIN: bool = false;

    fn set(&mut self, i: usize, sc: [i8; 2]) {
        self.sc[0][i] = sc[0];
        self.sc[1][i] = sc[1];
    }

    fn set_super(sup: &mut F16Scales, i: usize, d: f16) {
        sup.set(i, d);
    }

    fn row(&self, sup: &F16Scales, i: usize) -> RowScales {
        let d = sup.d[i].to_f32();
        RowScales {
            d: [d * f32::from(self.sc[0][i]), d * f32::from(self.sc[1][i])],
            m: [0.0; 2],
        }
    }
}
