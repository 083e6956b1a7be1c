//! Small f32 row operations the model runs between matmuls.
//!
//! Each is a plain loop written so LLVM vectorizes it (independent lanes, no
//! cross-lane dependencies), compiled twice: for the baseline target and, via
//! `#[target_feature]`, for AVX2 + FMA, picked at runtime.

/// Lanes of the partial sums in reductions: two AVX2 vectors' worth.
const LANES: usize = 16;

/// Calls `fast::$f` where the CPU has AVX2 + FMA, else the portable `$f`.
macro_rules! avx2_or_portable {
    ($f:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU features `fast` enables were just detected.
                return unsafe { fast::$f($($arg),*) };
            }
        }
        $f($($arg),*)
    }};
}

/// RMS norm of one row: `out = x / sqrt(mean(x^2) + eps) * weight`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    assert_eq!(x.len(), weight.len(), "rms_norm: weight length");
    assert_eq!(x.len(), out.len(), "rms_norm: output length");
    let mean_sq = dot_f32(x, x) / x.len() as f32;
    let scale = 1.0 / (mean_sq + eps).sqrt();
    avx2_or_portable!(scale_mul_impl(x, weight, scale, out))
}

/// SwiGLU for one row: `gate_up = [gate (ffn) | up (ffn)]`, `out = silu(gate) * up`.
pub fn silu_mul(gate_up: &[f32], ffn: usize, out: &mut [f32]) {
    assert_eq!(gate_up.len(), 2 * ffn, "silu_mul: gate_up length");
    assert_eq!(out.len(), ffn, "silu_mul: output length");
    let (gate, up) = gate_up.split_at(ffn);
    avx2_or_portable!(silu_mul_impl(gate, up, out))
}

/// Dot product of two equal-length rows.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: lengths");
    avx2_or_portable!(dot_inline(a, b))
}

/// `ln(Σ exp(x))`, shifted by the max so it cannot overflow (the log-partition
/// of a row of logits). `-inf` for an empty row.
pub fn log_sum_exp(x: &[f32]) -> f32 {
    avx2_or_portable!(log_sum_exp_inline(x))
}

/// `y += alpha * x`.
pub fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy_f32: lengths");
    avx2_or_portable!(axpy_inline(alpha, x, y))
}

/// The same bodies, compiled with AVX2 + FMA enabled.
#[cfg(target_arch = "x86_64")]
mod fast {
    #[target_feature(enable = "avx2,fma")]
    pub fn scale_mul_impl(x: &[f32], w: &[f32], scale: f32, out: &mut [f32]) {
        super::scale_mul_impl(x, w, scale, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn silu_mul_impl(gate: &[f32], up: &[f32], out: &mut [f32]) {
        super::silu_mul_impl(gate, up, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn dot_inline(a: &[f32], b: &[f32]) -> f32 {
        super::dot_inline(a, b)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn log_sum_exp_inline(x: &[f32]) -> f32 {
        super::log_sum_exp_inline(x)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn axpy_inline(alpha: f32, x: &[f32], y: &mut [f32]) {
        super::axpy_inline(alpha, x, y)
    }
}

#[inline(always)]
fn scale_mul_impl(x: &[f32], w: &[f32], scale: f32, out: &mut [f32]) {
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * scale * g;
    }
}

#[inline(always)]
fn silu_mul_impl(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + exp(-g)) * u;
    }
}

#[inline(always)]
pub(super) fn dot_inline(a: &[f32], b: &[f32]) -> f32 {
    // Independent partial sums let LLVM vectorize without reassociating.
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        let x: &[f32; LANES] = x.try_into().expect("invariant: exact chunks");
        let y: &[f32; LANES] = y.try_into().expect("invariant: exact chunks");
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    reduce_lanes(acc, |a, b| a + b) + tail
}

#[inline(always)]
fn log_sum_exp_inline(x: &[f32]) -> f32 {
    let max = max_inline(x);
    if !max.is_finite() {
        return max; // empty, all -inf, or +inf present
    }
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&v| exp(v - max)).sum();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += exp(c[i] - max);
        }
    }
    max + (reduce_lanes(acc, |a, b| a + b) + tail).ln()
}

/// Sum of a row.
#[inline(always)]
pub(super) fn sum_inline(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    reduce_lanes(acc, |a, b| a + b) + tail
}

/// Largest element of a row (`-inf` for an empty row).
#[inline(always)]
pub(super) fn max_inline(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(c[i]);
        }
    }
    reduce_lanes(acc, f32::max).max(tail)
}

/// Folds the lanes pairwise (a tree, which vectorizes into shuffles; a running
/// sum over the lanes would be 15 dependent scalar adds).
#[inline(always)]
fn reduce_lanes(mut acc: [f32; LANES], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] = f(acc[i], acc[i + width]);
        }
        width /= 2;
    }
    acc[0]
}

#[inline(always)]
pub(super) fn axpy_inline(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += alpha * v;
    }
}

/// `e^x` to about 2 ulp, in branch-free arithmetic that vectorizes (libm's `expf`
/// does not). Inputs are clamped to the finite range.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so `n * LN2_HI` is exact for the n that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.7);
    let n = (x * LOG2E).round_ties_even();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Cephes expf polynomial on |r| <= ln2 / 2.
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = (p * r * r + r) + 1.0;
    // n is within [-126, 128]: build 2^n in two steps so n = 128 does not overflow early.
    let half = n * 0.5;
    let n1 = half.round_ties_even();
    let n2 = n - n1;
    e * pow2i(n1) * pow2i(n2)
}

/// `2^n` for integral `n` in `[-126, 127]`, by building the exponent bits.
#[inline(always)]
fn pow2i(n: f32) -> f32 {
    f32::from_bits(((n as i32 + 127) as u32) << 23)
}
