//! Kernel tests outside the matmul formats: row ops, the activation quantizers,
//! and parallel sections on the kernel threads.

use super::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// SIMD activation quantizers are bit-identical to the scalar one.
#[test]
fn simd_quantizers_match_scalar() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut x = random_f32(&mut rng, 32 * 20);
    x[32..64].fill(0.0); // an all-zero block
    x[64..96].iter_mut().for_each(|v| *v *= 1e4);
    let mut want = vec![BlockQ8_1::default(); 20];
    quantize_row_q8_1(&x, &mut want);
    for level in SimdLevel::available() {
        let mut got = vec![BlockQ8_1::default(); 20];
        (select::for_level(level).expect("level").quantize)(&x, &mut got);
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((g.d, g.s, g.qs), (w.d, w.s, w.qs), "{level:?}");
        }
    }
}

#[test]
fn ops_match_definitions() {
    let x = [1.0f32, -2.0, 3.0, 0.5];
    let w = [1.0f32, 2.0, 0.5, 1.0];
    let mut out = [0.0; 4];
    ops::rms_norm(&x, &w, 1e-5, &mut out);
    let rms = ((1.0 + 4.0 + 9.0 + 0.25) / 4.0 + 1e-5f32).sqrt();
    for i in 0..4 {
        assert!((out[i] - x[i] / rms * w[i]).abs() < 1e-6);
    }
    let gate_up = [1.0f32, -1.0, 2.0, 3.0];
    let mut act = [0.0; 2];
    ops::silu_mul(&gate_up, 2, &mut act);
    let silu = |g: f32| g / (1.0 + (-g).exp());
    assert!((act[0] - silu(1.0) * 2.0).abs() < 1e-6);
    assert!((act[1] - silu(-1.0) * 3.0).abs() < 1e-6);
    let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
    assert_eq!(
        ops::dot_f32(&a, &a),
        (0..19).map(|i| (i * i) as f32).sum::<f32>()
    );
    let mut y = vec![1.0; 19];
    ops::axpy_f32(2.0, &a, &mut y);
    assert!(y
        .iter()
        .enumerate()
        .all(|(i, &v)| v == 1.0 + 2.0 * i as f32));
}

#[test]
fn exp_is_accurate_over_the_finite_range() {
    let mut worst = 0.0f64;
    for i in -87_000..=88_000 {
        let x = i as f32 * 1e-3;
        let want = f64::from(x).exp();
        let got = f64::from(ops::exp(x));
        worst = worst.max(((got - want) / want).abs());
    }
    assert!(worst < 5e-7, "worst relative error {worst}");
    assert!((0.0..1e-37).contains(&ops::exp(-1000.0)));
    assert!(ops::exp(1000.0).is_finite());
}

#[test]
fn ops_match_plain_loops_on_long_rows() {
    let mut rng = StdRng::seed_from_u64(8);
    let len = 1536 + 7; // not a multiple of any vector width
    let a = random_f32(&mut rng, len);
    let b = random_f32(&mut rng, len);
    let want: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    assert!((f64::from(ops::dot_f32(&a, &b)) - want).abs() < 1e-3);

    let mut y = b.clone();
    ops::axpy_f32(0.5, &a, &mut y);
    assert!(y
        .iter()
        .zip(&a)
        .zip(&b)
        .all(|((y, a), b)| *y == b + 0.5 * a));

    let mut out = vec![0.0; len];
    ops::rms_norm(&a, &b, 1e-6, &mut out);
    let rms = (a.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / len as f64 + 1e-6).sqrt();
    for ((o, x), w) in out.iter().zip(&a).zip(&b) {
        assert!((f64::from(*o) - f64::from(*x) / rms * f64::from(*w)).abs() < 1e-5);
    }

    // Logit-sized values, so the max shift matters.
    let logits: Vec<f32> = a.iter().map(|v| v * 30.0).collect();
    let max = logits
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, |m, v| m.max(f64::from(v)));
    let want = max
        + logits
            .iter()
            .map(|&v| (f64::from(v) - max).exp())
            .sum::<f64>()
            .ln();
    assert!((f64::from(ops::log_sum_exp(&logits)) - want).abs() < 1e-4);
    assert_eq!(ops::log_sum_exp(&[]), f32::NEG_INFINITY);

    let gate_up: Vec<f32> = a.iter().chain(&b).map(|v| v * 8.0).collect();
    let mut act = vec![0.0; len];
    ops::silu_mul(&gate_up, len, &mut act);
    for (i, o) in act.iter().enumerate() {
        let (g, u) = (f64::from(gate_up[i]), f64::from(gate_up[len + i]));
        let want = g / (1.0 + (-g).exp()) * u;
        assert!(
            (f64::from(*o) - want).abs() <= 1e-5 * want.abs().max(1.0),
            "silu at {g}"
        );
    }
}

#[test]
fn parallel_for_runs_every_task_once_even_nested_or_concurrent() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits: Vec<AtomicUsize> = (0..1000).map(|_| AtomicUsize::new(0)).collect();
    std::thread::scope(|s| {
        for t in 0..3 {
            let hits = &hits;
            s.spawn(move || {
                for _ in 0..200 {
                    parallel_for(10, |i| {
                        // Nested sections run inline on the worker.
                        parallel_for(10, |k| {
                            hits[t * 300 + i * 10 + k].fetch_add(1, Ordering::Relaxed);
                        });
                    });
                }
            });
        }
    });
    for (i, h) in hits.iter().enumerate() {
        let want = if i < 900 && i % 300 < 100 { 200 } else { 0 };
        assert_eq!(h.load(Ordering::Relaxed), want, "task {i}");
    }
}

#[test]
fn parallel_chunks_mut_hands_each_task_its_own_chunk() {
    let mut buf = vec![usize::MAX; 1003];
    parallel_chunks_mut(&mut buf, 10, |i, chunk| {
        assert_eq!(chunk.len(), if i == 100 { 3 } else { 10 });
        for (k, v) in chunk.iter_mut().enumerate() {
            *v = i * 10 + k;
        }
    });
    assert!(buf.iter().enumerate().all(|(k, &v)| v == k));
}

#[test]
fn parallel_for_propagates_panics() {
    let result = std::panic::catch_unwind(|| parallel_for(8, |i| assert!(i != 5, "task five")));
    assert!(result.is_err());
    // The pool still works afterwards.
    let sum = std::sync::atomic::AtomicUsize::new(0);
    parallel_for(8, |i| {
        sum.fetch_add(i, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(sum.into_inner(), 28);
}

/// Large batches quantize in parallel, row-chunked; the result must not change.
#[test]
fn parallel_quantization_matches_serial() {
    let mut rng = StdRng::seed_from_u64(9);
    let (n, nb) = (301, 48);
    let x = random_f32(&mut rng, n * nb * QK);
    let mut want = vec![BlockQ8_1::default(); n * nb];
    quantize_row_q8_1(&x, &mut want);
    let mut got = vec![BlockQ8_1::default(); n * nb];
    driver::quantize(select::best().quantize, &x, n, nb, &mut got);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((g.d, g.s, g.qs), (w.d, w.s, w.qs));
    }
}
