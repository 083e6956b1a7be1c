//! AVX-512 VNNI kernels: 16 weight rows per 512-bit vector, `vpdpbusd` for the int8
//! dots. One generic kernel serves every format; the tile types say how to widen
//! their quants to bytes ([`Quants512`]) and their scales to f32 lanes ([`Scales512`]).

use std::arch::x86_64::*;

use super::blocks::BlockQ8_1;
use super::formats::Format;
use super::kernel_set::{Acts, GroupOut, Kernels};
use super::packed::{GroupView, Tile};
use super::tiles::{
    Byte8, F16Scales, F16ScalesMins, K6Scales, KScalesMins, Nib4, Nib5, Nib6, Quants, Scales,
};

/// The kernel set, if the running CPU has AVX-512 F/BW/VNNI (and the AVX2 set, whose
/// activation quantizer this level shares).
pub fn detect() -> Option<Kernels> {
    let ok = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
        && super::x86_avx2::detect().is_some();
    ok.then_some(Kernels {
        level: super::SimdLevel::Avx512Vnni,
        quantize: super::x86_avx2::quantize_row,
    })
}

/// Quants as this level reads them.
pub trait Quants512: Quants {
    /// Word `t`'s quants of the 16 rows as unsigned bytes: `[lo, hi]`, lane `i`
    /// holding row `i`'s elements `4t..4t + 4` and `16 + 4t..16 + 4t + 4`.
    ///
    /// # Safety
    /// The CPU supports AVX-512 F and BW.
    unsafe fn words(&self, t: usize) -> [__m512i; 2];
}

/// The 16 rows' scales as f32 lanes, per 16-element half (`[1]` is used only by
/// formats with [`Scales::SPLIT`]); `m` is zero for formats without mins.
pub struct Lanes {
    d: [__m512; 2],
    m: [__m512; 2],
}

/// Scales as this level reads them.
pub trait Scales512: Scales {
    /// This block's scales, given its super-block's.
    ///
    /// # Safety
    /// The CPU supports AVX-512 F.
    unsafe fn lanes(&self, sup: &Self::Super) -> Lanes;
}

/// Low and high nibbles of one 64-byte word vector.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn nibbles(p: &[u8; 64]) -> [__m512i; 2] {
    // SAFETY: each word vector is 64 bytes. Tiles are only 32-byte aligned (a tile's
    // scales follow its quants unpadded), so the load is unaligned; it never splits
    // a 32-byte half across cache lines.
    let p = unsafe { _mm512_loadu_si512(p.as_ptr().cast()) };
    let mask = _mm512_set1_epi8(0x0F);
    [
        _mm512_and_si512(p, mask),
        _mm512_and_si512(_mm512_srli_epi16(p, 4), mask),
    ]
}

impl Quants512 for Nib4 {
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn words(&self, t: usize) -> [__m512i; 2] {
        nibbles(&self.qs[t])
    }
}

impl Quants512 for Nib5 {
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn words(&self, t: usize) -> [__m512i; 2] {
        let [lo, hi] = nibbles(&self.qs[t]);
        let bit = _mm512_set1_epi8(0x10);
        // The fifth bits are byte masks already: add 16 where set.
        [
            _mm512_mask_add_epi8(lo, self.high[t], lo, bit),
            _mm512_mask_add_epi8(hi, self.high[4 + t], hi, bit),
        ]
    }
}

impl Quants512 for Nib6 {
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn words(&self, t: usize) -> [__m512i; 2] {
        let [lo, hi] = nibbles(&self.qs[t]);
        // SAFETY: as in `nibbles`.
        let h = unsafe { _mm512_loadu_si512(self.high[t / 2].as_ptr().cast()) };
        // Move this word's top bits (at bits 4v, 4v + 2 of each byte) to bits 4..6.
        let (hl, hh) = if t.is_multiple_of(2) {
            (_mm512_slli_epi16(h, 4), _mm512_slli_epi16(h, 2))
        } else {
            (h, _mm512_srli_epi16(h, 2))
        };
        let top = _mm512_set1_epi8(0x30);
        // 0xF8: a | (b & c).
        [
            _mm512_ternarylogic_epi32(lo, hl, top, 0xF8),
            _mm512_ternarylogic_epi32(hi, hh, top, 0xF8),
        ]
    }
}

impl Quants512 for Byte8 {
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn words(&self, t: usize) -> [__m512i; 2] {
        // SAFETY: each `qs[t]` is 64 bytes (unaligned loads: see `nibbles`).
        unsafe {
            [
                _mm512_loadu_si512(self.qs[t].as_ptr().cast()),
                _mm512_loadu_si512(self.qs[t + 4].as_ptr().cast()),
            ]
        }
    }
}

/// 16 f16 values (32 bytes, 32-byte aligned) as f32 lanes.
#[target_feature(enable = "avx512f")]
#[inline]
fn f16x16(v: &[half::f16; 16]) -> __m512 {
    // SAFETY: scale structs are 32-byte aligned and hold 16 f16 at 32-byte offsets.
    _mm512_cvtph_ps(unsafe { _mm256_load_si256(v.as_ptr().cast()) })
}

/// 16 small integers (16 bytes, 16-byte aligned) as f32 lanes.
#[target_feature(enable = "avx512f")]
#[inline]
fn u8x16(v: &[u8; 16]) -> __m512 {
    // SAFETY: 16 bytes at a 16-byte aligned offset of a 32-byte aligned struct.
    _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(unsafe {
        _mm_load_si128(v.as_ptr().cast())
    }))
}

#[target_feature(enable = "avx512f")]
#[inline]
fn i8x16(v: &[i8; 16]) -> __m512 {
    // SAFETY: as in `u8x16`.
    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(unsafe {
        _mm_load_si128(v.as_ptr().cast())
    }))
}

impl Scales512 for F16Scales {
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn lanes(&self, _: &()) -> Lanes {
        let d = f16x16(&self.d);
        let zero = _mm512_setzero_ps();
        Lanes {
            d: [d; 2],
            m: [zero; 2],
        }
    }
}

impl Scales512 for F16ScalesMins {
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn lanes(&self, _: &()) -> Lanes {
        Lanes {
            d: [f16x16(&self.d); 2],
            m: [f16x16(&self.m); 2],
        }
    }
}

impl Scales512 for KScalesMins {
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn lanes(&self, sup: &F16ScalesMins) -> Lanes {
        let d = _mm512_mul_ps(f16x16(&sup.d), u8x16(&self.sc));
        let m = _mm512_mul_ps(f16x16(&sup.m), u8x16(&self.mn));
        let m = _mm512_sub_ps(_mm512_setzero_ps(), m);
        Lanes {
            d: [d; 2],
            m: [m; 2],
        }
    }
}

impl Scales512 for K6Scales {
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn lanes(&self, sup: &F16Scales) -> Lanes {
        let d = f16x16(&sup.d);
        let zero = _mm512_setzero_ps();
        Lanes {
            d: [
                _mm512_mul_ps(d, i8x16(&self.sc[0])),
                _mm512_mul_ps(d, i8x16(&self.sc[1])),
            ],
            m: [zero; 2],
        }
    }
}

/// Group kernel for any format, over `r <= MAX_R` activation rows.
pub fn group<F: Format>(w: GroupView<'_, F>, xs: Acts<'_>, r: usize, out: &mut GroupOut)
where
    F::Q: Quants512,
    F::S: Scales512,
{
    // SAFETY: reachable only through `select::group_kernel` with the `Kernels` that
    // `detect` returns after confirming the CPU features `rows` enables.
    unsafe {
        match r {
            1 => rows::<F, 1>(w, xs, out),
            2 => rows::<F, 2>(w, xs, out),
            3 => rows::<F, 3>(w, xs, out),
            4 => rows::<F, 4>(w, xs, out),
            5 => rows::<F, 5>(w, xs, out),
            6 => rows::<F, 6>(w, xs, out),
            7 => rows::<F, 7>(w, xs, out),
            _ => rows::<F, 8>(w, xs, out),
        }
    }
}

/// Tiles ahead to prefetch.
const PREFETCH_TILES: usize = 4;

/// One 16-row group against `R` activation rows (`xs` holds `R * tiles` blocks).
// `r` and `h` index several arrays at once.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn rows<F: Format, const R: usize>(w: GroupView<'_, F>, xs: Acts<'_>, out: &mut GroupOut)
where
    F::Q: Quants512,
    F::S: Scales512,
{
    let nb = w.tiles.len();
    let split = F::S::SPLIT;
    // With per-16 scales the hi words accumulate apart from the lo words.
    let hi_slot = usize::from(split);
    // Every slice is `nb` long and `supers` covers `nb` blocks (checked once here),
    // so the loop below indexes them by block without checks, which cost several
    // percent at decode's one or two activation rows.
    let rows: [&[BlockQ8_1]; R] = std::array::from_fn(|r| &xs.q[r * nb..(r + 1) * nb]);
    let sums: [&[[f32; 2]]; R] = std::array::from_fn(|r| {
        if split {
            &xs.halves[r * nb..(r + 1) * nb]
        } else {
            &[]
        }
    });
    assert!(w.supers.len() * F::S::PER_SUPER >= nb, "rows: super-blocks");
    let offset = _mm512_set1_ps(-(F::OFFSET as f32));
    let mut acc = [_mm512_setzero_ps(); R];
    for (b, Tile { q: tile, s: scales }) in w.tiles.iter().enumerate() {
        // At every row count (the next group's tiles follow this group's in memory):
        // up to 8 rows, batched decode still waits on memory (8 sequences: +10%
        // with it), and prefill, compute-bound, measured the same either way.
        super::prefetch_lines(
            w.tiles.as_ptr().wrapping_add(b + PREFETCH_TILES),
            size_of::<Tile<F>>(),
        );
        // SAFETY: `b < nb`, within `rows[r]` and, divided by `PER_SUPER`, `supers`.
        let (sup, xbs): (_, [&BlockQ8_1; R]) = unsafe {
            (
                w.supers.get_unchecked(b / F::S::PER_SUPER),
                std::array::from_fn(|r| rows[r].get_unchecked(b)),
            )
        };
        // SAFETY (both calls): this function enables every feature they need.
        let lanes = unsafe { scales.lanes(sup) };
        let mut isum = [[_mm512_setzero_si512(); 2]; R];
        for t in 0..4 {
            let [lo, hi] = unsafe { tile.words(t) };
            for r in 0..R {
                let xb = xbs[r];
                let (xl, xh) = (xb.word(4 * t), xb.word(16 + 4 * t));
                isum[r][0] = _mm512_dpbusd_epi32(isum[r][0], lo, _mm512_set1_epi32(xl));
                isum[r][hi_slot] = _mm512_dpbusd_epi32(isum[r][hi_slot], hi, _mm512_set1_epi32(xh));
            }
        }
        // `x = d·(q − offset) + m` adds `(m − offset·d)·Σx` to each row's dot.
        let m: [__m512; 2] = std::array::from_fn(|h| match (F::OFFSET, F::S::HAS_MIN) {
            (0, _) => lanes.m[h],
            (_, true) => _mm512_fmadd_ps(offset, lanes.d[h], lanes.m[h]),
            (_, false) => _mm512_mul_ps(lanes.d[h], offset),
        });
        for r in 0..R {
            let xb = xbs[r];
            let dx = _mm512_set1_ps(xb.d);
            for h in 0..=hi_slot {
                // SAFETY: `sums[r]` holds `nb` entries when `split`.
                let s = if split {
                    unsafe { sums[r].get_unchecked(b)[h] }
                } else {
                    xb.s
                };
                let scaled = _mm512_mul_ps(_mm512_cvtepi32_ps(isum[r][h]), lanes.d[h]);
                acc[r] = _mm512_fmadd_ps(scaled, dx, acc[r]);
                acc[r] = _mm512_fmadd_ps(m[h], _mm512_set1_ps(s), acc[r]);
            }
        }
    }
    for r in 0..R {
        // SAFETY: `out[r]` holds exactly 16 f32.
        unsafe { _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]) };
    }
}
