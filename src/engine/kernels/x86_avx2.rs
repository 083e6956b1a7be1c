//! AVX2 kernels (8 weight rows per 256-bit vector, `vpmaddubsw` for the int8 dots)
//! and the AVX2 activation quantizer, which the AVX-512 level shares. One generic
//! kernel serves every format through [`Quants256`] and [`Scales256`].

use std::arch::x86_64::*;

use super::blocks::{BlockQ8_1, QK};
use super::formats::Format;
use super::kernel_set::{Acts, GroupOut, Kernels};
use super::packed::{GroupView, Tile};
use super::tiles::{
    Byte8, F16Scales, F16ScalesMins, K6Scales, KScalesMins, Nib4, Nib5, Nib6, Quants, Scales, GROUP,
};

/// The kernel set, if the running CPU has AVX2, FMA and F16C.
pub fn detect() -> Option<Kernels> {
    let ok = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    ok.then_some(Kernels {
        level: super::SimdLevel::Avx2,
        quantize: quantize_row,
    })
}

/// Quantizes `x` into Q8_1 blocks, bit-identical to [`super::blocks::quantize_row_q8_1`].
pub fn quantize_row(x: &[f32], out: &mut [BlockQ8_1]) {
    assert_eq!(x.len(), out.len() * QK, "quantize_row: lengths");
    // SAFETY: only reachable through a `Kernels` built after `detect` (here, or in
    // the AVX-512 level, which checks it too) confirmed AVX2, FMA and F16C.
    unsafe { quantize_row_impl(x, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn quantize_row_impl(x: &[f32], out: &mut [BlockQ8_1]) {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    // Undoes the lane interleaving of the two `packs` steps.
    let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (o, c) in out.iter_mut().zip(x.chunks_exact(QK)) {
        // SAFETY: `c` holds 32 f32, read as four unaligned 8-lane vectors.
        let v: [__m256; 4] =
            std::array::from_fn(|i| unsafe { _mm256_loadu_ps(c.as_ptr().add(8 * i)) });
        let a = _mm256_max_ps(
            _mm256_max_ps(_mm256_and_ps(v[0], abs_mask), _mm256_and_ps(v[1], abs_mask)),
            _mm256_max_ps(_mm256_and_ps(v[2], abs_mask), _mm256_and_ps(v[3], abs_mask)),
        );
        let a4 = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        let a2 = _mm_max_ps(a4, _mm_movehl_ps(a4, a4));
        let amax = _mm_cvtss_f32(_mm_max_ss(a2, _mm_movehdup_ps(a2)));
        // Rounded to f16, as GGML stores it.
        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(
            _mm_set_ss(amax / 127.0),
        )));
        let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
        let q: [__m256i; 4] = std::array::from_fn(|i| {
            _mm256_cvtps_epi32(_mm256_round_ps(
                _mm256_mul_ps(v[i], id),
                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
            ))
        });
        let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        let s2 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
        let sum = _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0b01)));
        let packed = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let packed = _mm256_permutevar8x32_epi32(packed, perm);
        // SAFETY: `o.qs` is 32 bytes.
        unsafe { _mm256_storeu_si256(o.qs.as_mut_ptr().cast(), packed) };
        o.d = d;
        o.s = d * sum as f32;
    }
}
/// Quants as this level reads them: rows `8h..8h + 8` of a tile, per half `h`.
pub trait Quants256: Quants {
    /// The largest magnitude of one `vpmaddubsw` pair sum in [`Self::dot`]: how
    /// many products an i16 lane can add up before it must widen.
    const PAIR_MAX: i32;
    /// Whether [`Self::dot`] sees the stored quants (so the format's offset still
    /// applies) rather than the signed values.
    const STORED: bool;

    /// Word `t`'s `[lo, hi]` quants (see [`super::x86_avx512::Quants512::words`])
    /// of half `h`.
    ///
    /// # Safety
    /// The CPU supports AVX2.
    unsafe fn words(&self, h: usize, t: usize) -> [__m256i; 2];

    /// Adjacent-pair sums of `w` (from [`Self::words`]) times activations `x`.
    ///
    /// # Safety
    /// The CPU supports AVX2.
    unsafe fn dot(w: __m256i, x: __m256i) -> __m256i;
}

/// Eight rows' scales as f32 lanes (see [`super::x86_avx512::Lanes`]).
pub struct Lanes {
    d: [__m256; 2],
    m: [__m256; 2],
}

/// Scales as this level reads them.
pub trait Scales256: Scales {
    /// Rows `8h..8h + 8` of this block's scales, given its super-block's.
    ///
    /// # Safety
    /// The CPU supports AVX2 and F16C.
    unsafe fn lanes(&self, sup: &Self::Super, h: usize) -> Lanes;
}

/// Half `h` (32 bytes, 32-byte aligned) of a 64-byte word vector.
#[target_feature(enable = "avx2")]
#[inline]
fn load_half(p: &[u8; 64], h: usize) -> __m256i {
    // SAFETY: tiles are 32-byte aligned and word vectors sit at multiples of 32
    // bytes in them, so each half is 32 aligned bytes.
    unsafe { _mm256_load_si256(p.as_ptr().add(32 * h).cast()) }
}

/// Low and high nibbles of half `h` of a word vector.
#[target_feature(enable = "avx2")]
#[inline]
fn nibbles(p: &[u8; 64], h: usize) -> [__m256i; 2] {
    let p = load_half(p, h);
    let mask = _mm256_set1_epi8(0x0F);
    [
        _mm256_and_si256(p, mask),
        _mm256_and_si256(_mm256_srli_epi16(p, 4), mask),
    ]
}

/// `value` in byte `p` where bit `p` of `bits` is set, else 0.
#[target_feature(enable = "avx2")]
#[inline]
fn bits_to_bytes(bits: u32, value: i8) -> __m256i {
    // Byte p takes byte p / 8 of `bits` (each 128-bit lane holds all four), then
    // keeps its own bit.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3,
            3, 3, 3,
        ),
    );
    let select = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    let hit = _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select);
    _mm256_and_si256(hit, _mm256_set1_epi8(value))
}

#[target_feature(enable = "avx2")]
#[inline]
fn maddubs(w: __m256i, x: __m256i) -> __m256i {
    _mm256_maddubs_epi16(w, x)
}

impl Quants256 for Nib4 {
    const PAIR_MAX: i32 = 2 * 15 * 127;
    const STORED: bool = true;

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn words(&self, h: usize, t: usize) -> [__m256i; 2] {
        nibbles(&self.qs[t], h)
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn dot(w: __m256i, x: __m256i) -> __m256i {
        maddubs(w, x)
    }
}

impl Quants256 for Nib5 {
    const PAIR_MAX: i32 = 2 * 31 * 127;
    const STORED: bool = true;

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn words(&self, h: usize, t: usize) -> [__m256i; 2] {
        let [lo, hi] = nibbles(&self.qs[t], h);
        let bits = |mask: u64| bits_to_bytes((mask >> (32 * h)) as u32, 0x10);
        [
            _mm256_or_si256(lo, bits(self.high[t])),
            _mm256_or_si256(hi, bits(self.high[4 + t])),
        ]
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn dot(w: __m256i, x: __m256i) -> __m256i {
        maddubs(w, x)
    }
}

impl Quants256 for Nib6 {
    const PAIR_MAX: i32 = 2 * 63 * 127;
    const STORED: bool = true;

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn words(&self, h: usize, t: usize) -> [__m256i; 2] {
        let [lo, hi] = nibbles(&self.qs[t], h);
        let high = load_half(&self.high[t / 2], h);
        // Move this word's top bits (at bits 4v, 4v + 2 of each byte) to bits 4..6.
        let (hl, hh) = if t.is_multiple_of(2) {
            (_mm256_slli_epi16(high, 4), _mm256_slli_epi16(high, 2))
        } else {
            (high, _mm256_srli_epi16(high, 2))
        };
        let top = _mm256_set1_epi8(0x30);
        [
            _mm256_or_si256(lo, _mm256_and_si256(hl, top)),
            _mm256_or_si256(hi, _mm256_and_si256(hh, top)),
        ]
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn dot(w: __m256i, x: __m256i) -> __m256i {
        maddubs(w, x)
    }
}

impl Quants256 for Byte8 {
    // |w| * x with w's sign moved onto x: pairs reach 2 * 128 * 127.
    const PAIR_MAX: i32 = 2 * 128 * 127;
    const STORED: bool = false;

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn words(&self, h: usize, t: usize) -> [__m256i; 2] {
        [load_half(&self.qs[t], h), load_half(&self.qs[t + 4], h)]
    }

    /// Unbiases to i8, then multiplies |w| (unsigned) by x carrying w's sign:
    /// stored bytes `q + 128` times `x` would overflow the i16 pair sums.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn dot(w: __m256i, x: __m256i) -> __m256i {
        let ws = _mm256_xor_si256(w, _mm256_set1_epi8(-128));
        _mm256_maddubs_epi16(_mm256_abs_epi8(ws), _mm256_sign_epi8(x, ws))
    }
}

/// Eight f16 values (16 bytes, 16-byte aligned) as f32 lanes: half `h` of 16.
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn f16x8(v: &[half::f16; 16], h: usize) -> __m256 {
    // SAFETY: scale structs are 32-byte aligned with 16 f16 at 32-byte offsets,
    // so each half is 16 aligned bytes.
    _mm256_cvtph_ps(unsafe { _mm_load_si128(v.as_ptr().add(8 * h).cast()) })
}

/// Half `h` of 16 small integers as f32 lanes.
#[target_feature(enable = "avx2")]
#[inline]
fn u8x8(v: &[u8; 16], h: usize) -> __m256 {
    // SAFETY: 8 bytes inside `v`.
    let b = unsafe { _mm_loadl_epi64(v.as_ptr().add(8 * h).cast()) };
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b))
}

#[target_feature(enable = "avx2")]
#[inline]
fn i8x8(v: &[i8; 16], h: usize) -> __m256 {
    // SAFETY: 8 bytes inside `v`.
    let b = unsafe { _mm_loadl_epi64(v.as_ptr().add(8 * h).cast()) };
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b))
}

impl Scales256 for F16Scales {
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn lanes(&self, _: &(), h: usize) -> Lanes {
        let zero = _mm256_setzero_ps();
        Lanes {
            d: [f16x8(&self.d, h); 2],
            m: [zero; 2],
        }
    }
}

impl Scales256 for F16ScalesMins {
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn lanes(&self, _: &(), h: usize) -> Lanes {
        Lanes {
            d: [f16x8(&self.d, h); 2],
            m: [f16x8(&self.m, h); 2],
        }
    }
}

impl Scales256 for KScalesMins {
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn lanes(&self, sup: &F16ScalesMins, h: usize) -> Lanes {
        let d = _mm256_mul_ps(f16x8(&sup.d, h), u8x8(&self.sc, h));
        let m = _mm256_mul_ps(f16x8(&sup.m, h), u8x8(&self.mn, h));
        let m = _mm256_sub_ps(_mm256_setzero_ps(), m);
        Lanes {
            d: [d; 2],
            m: [m; 2],
        }
    }
}

impl Scales256 for K6Scales {
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn lanes(&self, sup: &F16Scales, h: usize) -> Lanes {
        let d = f16x8(&sup.d, h);
        let zero = _mm256_setzero_ps();
        Lanes {
            d: [
                _mm256_mul_ps(d, i8x8(&self.sc[0], h)),
                _mm256_mul_ps(d, i8x8(&self.sc[1], h)),
            ],
            m: [zero; 2],
        }
    }
}

/// Activation rows per AVX2 kernel call: its 16 registers hold no more accumulators.
const AVX2_R: usize = 4;

/// Group kernel for any format, over `r <= MAX_R` activation rows.
pub fn group<F: Format>(w: GroupView<'_, F>, xs: Acts<'_>, r: usize, out: &mut GroupOut)
where
    F::Q: Quants256,
    F::S: Scales256,
{
    let nb = w.tiles.len();
    for r0 in (0..r).step_by(AVX2_R) {
        let (xs, out) = (xs.rows(r0, r - r0, nb), &mut out[r0..]);
        // SAFETY: reachable only through `select::group_kernel` with the `Kernels`
        // that `detect` returns after confirming the CPU features `rows` enables.
        unsafe {
            match r - r0 {
                1 => rows::<F, 1>(w, xs, out),
                2 => rows::<F, 2>(w, xs, out),
                3 => rows::<F, 3>(w, xs, out),
                _ => rows::<F, 4>(w, xs, out),
            }
        }
    }
}

/// One 16-row group (as two 8-row halves) against `R` activation rows.
// `r`, `h` and `k` index several arrays at once.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
fn rows<F: Format, const R: usize>(w: GroupView<'_, F>, xs: Acts<'_>, out: &mut [[f32; GROUP]])
where
    F::Q: Quants256,
    F::S: Scales256,
{
    let nb = w.tiles.len();
    let split = F::S::SPLIT;
    let hi_slot = usize::from(split);
    // As in the AVX-512 kernel: lengths checked once, then indexed without checks.
    let rows: [&[BlockQ8_1]; R] = std::array::from_fn(|r| &xs.q[r * nb..(r + 1) * nb]);
    let sums: [&[[f32; 2]]; R] = std::array::from_fn(|r| {
        if split {
            &xs.halves[r * nb..(r + 1) * nb]
        } else {
            &[]
        }
    });
    assert!(w.supers.len() * F::S::PER_SUPER >= nb, "rows: super-blocks");
    let offset_term = F::S::HAS_MIN || (F::OFFSET != 0 && F::Q::STORED);
    let offset = _mm256_set1_ps(-(F::OFFSET as f32));
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for (b, Tile { q: tile, s: scales }) in w.tiles.iter().enumerate() {
        // SAFETY: `b < nb`, within `rows[r]` and, divided by `PER_SUPER`, `supers`.
        let (sup, xb): (_, [&BlockQ8_1; R]) = unsafe {
            (
                w.supers.get_unchecked(b / F::S::PER_SUPER),
                std::array::from_fn(|r| rows[r].get_unchecked(b)),
            )
        };
        for h in 0..2 {
            // SAFETY (all trait calls): this function enables every feature they need.
            let lanes = unsafe { scales.lanes(sup, h) };
            let isum = dots::<F, R>(tile, h, xb);
            // `x = d·(q − offset) + m` adds `(m − offset·d)·Σx` to each row's dot.
            let m: [__m256; 2] = std::array::from_fn(|k| match (F::OFFSET, F::S::HAS_MIN) {
                (0, _) => lanes.m[k],
                (_, true) => _mm256_fmadd_ps(offset, lanes.d[k], lanes.m[k]),
                (_, false) => _mm256_mul_ps(lanes.d[k], offset),
            });
            for (r, xb) in xb.iter().enumerate() {
                for k in 0..=hi_slot {
                    let isum = _mm256_cvtepi32_ps(isum[r][k]);
                    let scale = _mm256_mul_ps(lanes.d[k], _mm256_set1_ps(xb.d));
                    acc[r][h] = _mm256_fmadd_ps(isum, scale, acc[r][h]);
                    if offset_term {
                        // SAFETY: `sums[r]` holds `nb` entries when `split`.
                        let s = if split {
                            unsafe { sums[r].get_unchecked(b)[k] }
                        } else {
                            xb.s
                        };
                        acc[r][h] = _mm256_fmadd_ps(m[k], _mm256_set1_ps(s), acc[r][h]);
                    }
                }
            }
        }
    }
    store(&acc, out);
}

/// Integer dots of rows `8h..8h + 8` of `tile` with one block of each activation
/// row: `[lo, hi]` halves for formats with split scales, else the whole in `[0]`.
// `r` and `k` index several arrays at once.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2")]
#[inline]
fn dots<F: Format, const R: usize>(tile: &F::Q, h: usize, xb: [&BlockQ8_1; R]) -> [[__m256i; 2]; R]
where
    F::Q: Quants256,
{
    let split = F::S::SPLIT;
    // Words summed in i16 lanes before widening to i32 (0: widen every product):
    // each word adds two products to an accumulator, or one with split halves.
    let span = (i16::MAX as i32 / F::Q::PAIR_MAX) as usize / (2 - usize::from(split));
    let ones = _mm256_set1_epi16(1);
    let mut s16 = [[_mm256_setzero_si256(); 2]; R];
    let mut isum = [[_mm256_setzero_si256(); 2]; R];
    for t in 0..4 {
        // SAFETY (all trait calls): this function enables every feature they need.
        let [lo, hi] = unsafe { tile.words(h, t) };
        for r in 0..R {
            let pl = unsafe { F::Q::dot(lo, _mm256_set1_epi32(xb[r].word(4 * t))) };
            let ph = unsafe { F::Q::dot(hi, _mm256_set1_epi32(xb[r].word(16 + 4 * t))) };
            if span == 0 {
                let both =
                    _mm256_add_epi32(_mm256_madd_epi16(pl, ones), _mm256_madd_epi16(ph, ones));
                isum[r][0] = _mm256_add_epi32(isum[r][0], both);
            } else if split {
                s16[r][0] = _mm256_add_epi16(s16[r][0], pl);
                s16[r][1] = _mm256_add_epi16(s16[r][1], ph);
            } else {
                s16[r][0] = _mm256_add_epi16(s16[r][0], _mm256_add_epi16(pl, ph));
            }
        }
        if span > 0 && ((t + 1) % span == 0 || t == 3) {
            for r in 0..R {
                for k in 0..=usize::from(split) {
                    let wide = _mm256_madd_epi16(s16[r][k], ones);
                    isum[r][k] = _mm256_add_epi32(isum[r][k], wide);
                    s16[r][k] = _mm256_setzero_si256();
                }
            }
        }
    }
    isum
}

#[target_feature(enable = "avx2")]
fn store<const R: usize>(acc: &[[__m256; 2]; R], out: &mut [[f32; GROUP]]) {
    let out = &mut out[..R];
    for r in 0..R {
        // SAFETY: `out[r]` holds 16 f32: two unaligned 8-lane stores.
        unsafe {
            _mm256_storeu_ps(out[r].as_mut_ptr(), acc[r][0]);
            _mm256_storeu_ps(out[r].as_mut_ptr().add(8), acc[r][1]);
        }
    }
}
