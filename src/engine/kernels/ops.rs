//! Small f32 row operations the model runs between matmuls.

/// RMS norm of one row: `out = x / sqrt(mean(x^2) + eps) * weight`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    assert_eq!(x.len(), weight.len(), "rms_norm: weight length");
    assert_eq!(x.len(), out.len(), "rms_norm: output length");
    let mean_sq = dot_f32(x, x) / x.len() as f32;
    let scale = 1.0 / (mean_sq + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

/// SwiGLU for one row: `gate_up = [gate (ffn) | up (ffn)]`, `out = silu(gate) * up`.
pub fn silu_mul(gate_up: &[f32], ffn: usize, out: &mut [f32]) {
    assert_eq!(gate_up.len(), 2 * ffn, "silu_mul: gate_up length");
    assert_eq!(out.len(), ffn, "silu_mul: output length");
    let (gate, up) = gate_up.split_at(ffn);
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// Dot product of two equal-length rows.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: lengths");
    // Eight independent partial sums let the compiler vectorize without reassociating.
    let mut acc = [0.0f32; 8];
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `y += alpha * x`.
pub fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy_f32: lengths");
    for (o, &v) in y.iter_mut().zip(x) {
        *o += alpha * v;
    }
}
