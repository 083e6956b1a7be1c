//! Kernel tests: layout vs candle, SIMD vs scalar, matmul vs an f32 reference.

use super::*;
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
use candle_core::Device;
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Random GGUF bytes for a Q4_1 matrix with sane f16 scales.
fn random_q4_1_bytes(rng: &mut StdRng, rows: usize, cols: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(rows * cols / QK * BlockQ4_1::BYTES);
    for _ in 0..rows * cols / QK {
        let d = f16::from_f32(rng.random_range(0.001..0.05));
        let m = f16::from_f32(rng.random_range(-0.4..0.0));
        bytes.extend_from_slice(&d.to_le_bytes());
        bytes.extend_from_slice(&m.to_le_bytes());
        bytes.extend((0..16).map(|_| rng.random::<u8>()));
    }
    bytes
}

/// Random GGUF bytes for a Q8_0 matrix with sane f16 scales.
fn random_q8_0_bytes(rng: &mut StdRng, rows: usize, cols: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(rows * cols / QK * BlockQ8_0::BYTES);
    for _ in 0..rows * cols / QK {
        let d = f16::from_f32(rng.random_range(0.0005..0.01));
        bytes.extend_from_slice(&d.to_le_bytes());
        bytes.extend((0..32).map(|_| rng.random::<u8>()));
    }
    bytes
}

fn random_f32(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

fn candle_dequantize(dtype: GgmlDType, bytes: &[u8], rows: usize, cols: usize) -> Vec<f32> {
    let qt = qtensor_from_ggml(dtype, bytes, vec![rows, cols], &Device::Cpu).expect("qtensor");
    qt.dequantize(&Device::Cpu)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .expect("dequantize")
}

fn dequantize_all(m: &QMatrix) -> Vec<f32> {
    let mut out = vec![0.0; m.rows() * m.cols()];
    for (r, row) in out.chunks_exact_mut(m.cols()).enumerate() {
        m.dequantize_row(r, row);
    }
    out
}

/// Plain f32 reference: dequantized weights times unquantized activations.
fn reference_matmul(w: &[f32], rows: usize, cols: usize, x: &[f32], n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n * rows];
    for r in 0..n {
        for j in 0..rows {
            let mut acc = 0.0f64;
            for k in 0..cols {
                acc += f64::from(w[j * cols + k]) * f64::from(x[r * cols + k]);
            }
            out[r * rows + j] = acc as f32;
        }
    }
    out
}

/// Relative error of `got` vs `want`, measured against the norm of `want`.
fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    let num: f32 = got.iter().zip(want).map(|(a, b)| (a - b) * (a - b)).sum();
    let den: f32 = want.iter().map(|b| b * b).sum();
    (num / den.max(1e-30)).sqrt()
}

#[test]
fn q4_1_layout_matches_candle() {
    let mut rng = StdRng::seed_from_u64(1);
    let (rows, cols) = (7, 96);
    let bytes = random_q4_1_bytes(&mut rng, rows, cols);
    let m = QMatrix::from_q4_1_bytes(rows, cols, &bytes).expect("q4_1");
    assert_eq!(
        dequantize_all(&m),
        candle_dequantize(GgmlDType::Q4_1, &bytes, rows, cols)
    );
    // 7 rows pad to one 16-row group.
    assert_eq!(m.size_bytes(), 16 * bytes.len() / 7);
    assert_eq!(m.format(), "q4_1");
}

#[test]
fn q8_0_layout_matches_candle() {
    let mut rng = StdRng::seed_from_u64(2);
    let (rows, cols) = (5, 64);
    let bytes = random_q8_0_bytes(&mut rng, rows, cols);
    let m = QMatrix::from_q8_0_bytes(rows, cols, &bytes).expect("q8_0");
    assert_eq!(
        dequantize_all(&m),
        candle_dequantize(GgmlDType::Q8_0, &bytes, rows, cols)
    );
    assert_eq!(m.size_bytes(), 16 * bytes.len() / 5);
    assert_eq!(m.format(), "q8_0");
}

fn check_matmul_vs_reference(m: &QMatrix, n: usize, tol: f32, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let x = random_f32(&mut rng, n * m.cols());
    let w = dequantize_all(m);
    let want = reference_matmul(&w, m.rows(), m.cols(), &x, n);
    let mut out = vec![0.0; n * m.rows()];
    m.matmul(&x, n, &mut out, &mut MatmulScratch::default());
    let err = rel_err(&out, &want);
    assert!(
        err < tol,
        "{} {}x{} n={n}: rel err {err}",
        m.format(),
        m.rows(),
        m.cols()
    );
}

#[test]
fn matmul_matches_f32_reference() {
    let mut rng = StdRng::seed_from_u64(3);
    for &(rows, cols) in &[(16, 32), (48, 96), (40, 576)] {
        let q41 = QMatrix::from_q4_1_bytes(rows, cols, &random_q4_1_bytes(&mut rng, rows, cols));
        let q80 = QMatrix::from_q8_0_bytes(rows, cols, &random_q8_0_bytes(&mut rng, rows, cols));
        let f = QMatrix::from_f32(rows, cols, random_f32(&mut rng, rows * cols));
        for n in [1, 3, 5, 16, 67] {
            // 8-bit activations: ~0.4% relative error per element, averaging down over a row.
            check_matmul_vs_reference(q41.as_ref().expect("q4_1"), n, 1e-2, n as u64);
            check_matmul_vs_reference(q80.as_ref().expect("q8_0"), n, 1e-2, n as u64);
            check_matmul_vs_reference(f.as_ref().expect("f32"), n, 1e-5, n as u64);
        }
    }
}

/// Every SIMD level must agree with the scalar kernels on the same packed weights.
#[test]
fn simd_paths_match_scalar() {
    let mut rng = StdRng::seed_from_u64(6);
    let levels = SimdLevel::available();
    eprintln!("testing levels {levels:?}");
    let mut scratch = MatmulScratch::default();
    // (7, 64) pads a group; 1536 cols makes 67 rows span two activation tiles.
    for &(rows, cols) in &[(7, 64), (16, 32), (40, 96), (48, 576), (33, 1536)] {
        let q41 = QMatrix::from_q4_1_bytes(rows, cols, &random_q4_1_bytes(&mut rng, rows, cols))
            .expect("q4_1");
        let q80 = QMatrix::from_q8_0_bytes(rows, cols, &random_q8_0_bytes(&mut rng, rows, cols))
            .expect("q8_0");
        for n in [1, 3, 5, 16, 67] {
            let x = random_f32(&mut rng, n * cols);
            for m in [&q41, &q80] {
                let mut want = vec![0.0; n * rows];
                m.matmul_with(SimdLevel::Scalar, &x, n, &mut want, &mut scratch)
                    .expect("scalar");
                for &level in &levels {
                    let mut got = vec![0.0; n * rows];
                    m.matmul_with(level, &x, n, &mut got, &mut scratch)
                        .expect("level");
                    let err = rel_err(&got, &want);
                    assert!(
                        err < 1e-5,
                        "{level:?} {} {rows}x{cols} n={n}: rel err {err}",
                        m.format()
                    );
                }
            }
        }
    }
}

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
        (dispatch::for_level(level).expect("level").quantize)(&x, &mut got);
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((g.d, g.s, g.qs), (w.d, w.s, w.qs), "{level:?}");
        }
    }
}

#[test]
fn concat_rows_stacks_matrices() {
    let mut rng = StdRng::seed_from_u64(4);
    let cols = 64;
    let parts: Vec<QMatrix> = [3, 16, 5]
        .iter()
        .map(|&r| QMatrix::from_q4_1_bytes(r, cols, &random_q4_1_bytes(&mut rng, r, cols)))
        .collect::<Result<_, _>>()
        .expect("parts");
    let want: Vec<f32> = parts.iter().flat_map(dequantize_all).collect();
    let joined = QMatrix::concat_rows(parts.clone()).expect("concat");
    assert_eq!(joined.rows(), 24);
    assert_eq!(dequantize_all(&joined), want);
    let x = random_f32(&mut rng, 2 * cols);
    let mut scratch = MatmulScratch::default();
    let mut out = vec![0.0; 2 * 24];
    joined.matmul(&x, 2, &mut out, &mut scratch);
    let mut offset = 0;
    for p in &parts {
        let mut part_out = vec![0.0; 2 * p.rows()];
        p.matmul(&x, 2, &mut part_out, &mut scratch);
        for r in 0..2 {
            let got = &out[r * 24 + offset..r * 24 + offset + p.rows()];
            assert_eq!(got, &part_out[r * p.rows()..(r + 1) * p.rows()]);
        }
        offset += p.rows();
    }
}

#[test]
fn error_cases() {
    let mut rng = StdRng::seed_from_u64(5);
    let bytes = random_q4_1_bytes(&mut rng, 2, 64);
    assert!(matches!(
        QMatrix::from_q4_1_bytes(2, 64, &bytes[1..]),
        Err(KernelError::SizeMismatch { .. })
    ));
    assert!(matches!(
        QMatrix::from_q4_1_bytes(2, 48, &bytes),
        Err(KernelError::ColsNotBlockAligned { .. })
    ));
    assert!(matches!(
        QMatrix::from_q8_0_bytes(2, 64, &bytes),
        Err(KernelError::SizeMismatch { .. })
    ));
    assert!(matches!(
        QMatrix::from_f32(2, 3, vec![0.0; 5]),
        Err(KernelError::SizeMismatch { .. })
    ));
    assert!(matches!(
        QMatrix::concat_rows(vec![]),
        Err(KernelError::Concat(_))
    ));
    let a = QMatrix::from_q4_1_bytes(2, 64, &bytes).expect("a");
    let b = QMatrix::from_f32(2, 64, vec![0.0; 128]).expect("b");
    let c = QMatrix::from_f32(2, 32, vec![0.0; 64]).expect("c");
    assert!(matches!(
        QMatrix::concat_rows(vec![a, b.clone()]),
        Err(KernelError::Concat(_))
    ));
    assert!(matches!(
        QMatrix::concat_rows(vec![b, c]),
        Err(KernelError::Concat(_))
    ));
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
    driver::quantize(dispatch::best(), &x, n, nb, &mut got);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((g.d, g.s, g.qs), (w.d, w.s, w.qs));
    }
}
