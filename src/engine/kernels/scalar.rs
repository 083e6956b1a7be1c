//! Portable reference kernels: the fallback path and the oracle the SIMD paths are tested against.

use super::blocks::{BlockQ4_1, BlockQ8_0, BlockQ8_1};

/// Dot product of one Q4_1 weight row with one quantized activation row.
pub fn dot_q4_1(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    let mut acc = 0.0f32;
    for (bw, bx) in w.iter().zip(x) {
        let mut isum = 0i32;
        for i in 0..16 {
            let lo = i32::from(bw.qs[i] & 0x0F);
            let hi = i32::from(bw.qs[i] >> 4);
            isum += lo * i32::from(bx.qs[i]) + hi * i32::from(bx.qs[i + 16]);
        }
        acc += bw.d.to_f32() * bx.d * isum as f32 + bw.m.to_f32() * bx.s;
    }
    acc
}

/// Dot product of one Q8_0 weight row with one quantized activation row.
pub fn dot_q8_0(w: &[BlockQ8_0], x: &[BlockQ8_1]) -> f32 {
    let mut acc = 0.0f32;
    for (bw, bx) in w.iter().zip(x) {
        let isum: i32 = bw
            .qs
            .iter()
            .zip(&bx.qs)
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum();
        acc += bw.d.to_f32() * bx.d * isum as f32;
    }
    acc
}
