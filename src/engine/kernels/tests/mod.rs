//! Kernel tests: each format's layout vs candle's dequantization, SIMD levels vs the
//! scalar oracle, matmul vs an f32 reference. Weights are random GGUF bytes.

mod misc;

use super::*;
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
use candle_core::Device;
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Every type with a native kernel. Written out here, not read from
/// `QMatrix::NATIVE_TYPES`: the tests check that list against this one.
const NATIVE: [GgmlDType; 7] = [
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q8_0,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

/// A GGUF type's f16 fields in one block: `(byte offset, range of sane values)`.
fn f16_fields(dtype: GgmlDType) -> &'static [(usize, f32, f32)] {
    match dtype {
        GgmlDType::Q4_0 | GgmlDType::Q5_0 => &[(0, 0.001, 0.05)],
        GgmlDType::Q8_0 => &[(0, 0.0005, 0.01)],
        GgmlDType::Q4_1 => &[(0, 0.001, 0.05), (2, -0.4, 0.0)],
        // d and dmin, multiplied by 6-bit scales and mins.
        GgmlDType::Q4K | GgmlDType::Q5K => &[(0, 0.0002, 0.002), (2, 0.0001, 0.004)],
        // d, multiplied by signed 8-bit scales.
        GgmlDType::Q6K => &[(208, 0.00005, 0.0005)],
        other => panic!("no test blocks for {other:?}"),
    }
}

/// Random GGUF bytes for a `rows x cols` matrix of `dtype`: random quants and scale
/// bytes, sane f16 scales.
fn random_bytes(rng: &mut StdRng, dtype: GgmlDType, rows: usize, cols: usize) -> Vec<u8> {
    let (block, size) = (dtype.block_size(), dtype.type_size());
    let mut bytes = Vec::with_capacity(rows * cols / block * size);
    for _ in 0..rows * cols / block {
        let mut b: Vec<u8> = (0..size).map(|_| rng.random()).collect();
        for &(at, lo, hi) in f16_fields(dtype) {
            let v = f16::from_f32(rng.random_range(lo..hi));
            b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
        bytes.extend(b);
    }
    bytes
}

fn random_matrix(rng: &mut StdRng, dtype: GgmlDType, rows: usize, cols: usize) -> QMatrix {
    let bytes = random_bytes(rng, dtype, rows, cols);
    QMatrix::from_gguf(dtype, rows, cols, &bytes).expect("matrix")
}

fn random_f32(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

/// Shapes to test `dtype` on: K-quants need rows of whole 256-element super-blocks.
/// Some pad the last 16-row group; 1536 columns make 67 activation rows span two
/// activation tiles.
fn shapes(dtype: GgmlDType) -> &'static [(usize, usize)] {
    if dtype.block_size() == 256 {
        &[(7, 256), (16, 512), (40, 768), (33, 1536)]
    } else {
        &[(7, 64), (16, 32), (40, 96), (48, 576), (33, 1536)]
    }
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

/// Every format keeps exactly GGML's values, in (nearly) the GGUF bytes.
#[test]
fn layouts_match_candle_and_gguf_size() {
    let mut rng = StdRng::seed_from_u64(1);
    for dtype in NATIVE {
        for &(rows, cols) in shapes(dtype) {
            let bytes = random_bytes(&mut rng, dtype, rows, cols);
            let m = QMatrix::from_gguf(dtype, rows, cols, &bytes).expect("matrix");
            let want = candle_dequantize(dtype, &bytes, rows, cols);
            assert!(
                dequantize_all(&m) == want,
                "{dtype:?} {rows}x{cols}: dequantized values differ from candle's"
            );
            assert_eq!(
                m.format(),
                format!("{dtype:?}").to_lowercase().replace('k', "_k")
            );
            // The last group pads to 16 rows; Q4_K/Q5_K keep their 12 bytes of 6-bit
            // scales and mins as 16 bytes.
            let blocks = 16 * rows.div_ceil(16) * cols / dtype.block_size();
            let extra = if matches!(dtype, GgmlDType::Q4K | GgmlDType::Q5K) {
                4
            } else {
                0
            };
            assert_eq!(
                m.size_bytes(),
                blocks * (dtype.type_size() + extra),
                "{dtype:?} {rows}x{cols}: bytes held"
            );
        }
    }
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
    for dtype in NATIVE {
        for &(rows, cols) in &shapes(dtype)[..3] {
            let m = random_matrix(&mut rng, dtype, rows, cols);
            for n in [1, 3, 5, 16, 67] {
                // 8-bit activations: ~0.4% relative error per element, averaging down
                // over a row.
                check_matmul_vs_reference(&m, n, 1e-2, n as u64);
            }
        }
    }
    let f = QMatrix::from_f32(40, 96, random_f32(&mut rng, 40 * 96)).expect("f32");
    for n in [1, 5, 67] {
        check_matmul_vs_reference(&f, n, 1e-5, n as u64);
    }
}

/// Every SIMD level must agree with the scalar kernels on the same packed weights.
#[test]
fn simd_paths_match_scalar() {
    let mut rng = StdRng::seed_from_u64(6);
    let levels = SimdLevel::available();
    eprintln!("testing levels {levels:?}");
    let mut scratch = MatmulScratch::default();
    for dtype in NATIVE {
        for &(rows, cols) in shapes(dtype) {
            let m = random_matrix(&mut rng, dtype, rows, cols);
            for n in [1, 3, 5, 16, 67] {
                let x = random_f32(&mut rng, n * cols);
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
                        "{level:?} {dtype:?} {rows}x{cols} n={n}: rel err {err}"
                    );
                }
            }
        }
    }
}

/// Extreme quants: every weight at its largest or smallest value and activations at
/// ±127 after quantization, where i16 partial sums would overflow first.
#[test]
fn simd_paths_match_scalar_at_the_extremes() {
    let mut rng = StdRng::seed_from_u64(10);
    let mut scratch = MatmulScratch::default();
    for dtype in NATIVE {
        let (rows, cols) = (16, 512);
        // 0x80 and 0x7F are Q8_0's -128 and 127.
        for fill in [0x00u8, 0xFF, 0x80, 0x7F] {
            let mut bytes = random_bytes(&mut rng, dtype, rows, cols);
            // Overwrite everything but the f16 scale fields.
            let size = dtype.type_size();
            for (k, b) in bytes.iter_mut().enumerate() {
                let at = k % size;
                if !f16_fields(dtype)
                    .iter()
                    .any(|&(o, ..)| at == o || at == o + 1)
                {
                    *b = fill;
                }
            }
            let m = QMatrix::from_gguf(dtype, rows, cols, &bytes).expect("matrix");
            let w = dequantize_all(&m);
            let abs_w: Vec<f32> = w.iter().map(|v| v.abs()).collect();
            if abs_w.iter().all(|&v| v == 0.0) {
                continue; // quant 0 or scale 0 everywhere: nothing extreme to check
            }
            for sign in [1.0f32, -1.0] {
                let x = vec![sign; 4 * cols];
                // Errors relative to Σ|w·x|: the dots may cancel to zero.
                let scale = reference_matmul(&abs_w, rows, cols, &vec![1.0; 4 * cols], 4);
                let err = |got: &[f32], want: &[f32]| {
                    let d: Vec<f32> = got.iter().zip(want).map(|(a, b)| a - b).collect();
                    norm(&d) / norm(&scale).max(1e-30)
                };
                let mut want = vec![0.0; 4 * rows];
                m.matmul_with(SimdLevel::Scalar, &x, 4, &mut want, &mut scratch)
                    .expect("scalar");
                let exact = reference_matmul(&w, rows, cols, &x, 4);
                let e = err(&want, &exact);
                assert!(e < 1e-4, "{dtype:?} fill {fill:#x}: scalar vs exact {e}");
                for level in SimdLevel::available() {
                    let mut got = vec![0.0; 4 * rows];
                    m.matmul_with(level, &x, 4, &mut got, &mut scratch)
                        .expect("level");
                    let e = err(&got, &want);
                    assert!(e < 1e-5, "{level:?} {dtype:?} fill {fill:#x}: error {e}");
                }
            }
        }
    }
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// A matrix built from the concatenated GGUF bytes of several (how the loader fuses
/// q|k|v) computes what its parts compute, even where groups straddle parts.
#[test]
fn concatenated_bytes_stack_matrices() {
    let mut rng = StdRng::seed_from_u64(4);
    for dtype in [GgmlDType::Q4_1, GgmlDType::Q6K] {
        let cols = 256;
        let parts: Vec<Vec<u8>> = [3, 16, 5]
            .iter()
            .map(|&r| random_bytes(&mut rng, dtype, r, cols))
            .collect();
        let parts_m: Vec<QMatrix> = parts
            .iter()
            .zip([3, 16, 5])
            .map(|(b, r)| QMatrix::from_gguf(dtype, r, cols, b).expect("part"))
            .collect();
        let joined = QMatrix::from_gguf(dtype, 24, cols, &parts.concat()).expect("joined");
        let want: Vec<f32> = parts_m.iter().flat_map(dequantize_all).collect();
        assert!(dequantize_all(&joined) == want);
        let x = random_f32(&mut rng, 2 * cols);
        let mut scratch = MatmulScratch::default();
        let mut out = vec![0.0; 2 * 24];
        joined.matmul(&x, 2, &mut out, &mut scratch);
        let mut offset = 0;
        for p in &parts_m {
            let mut part_out = vec![0.0; 2 * p.rows()];
            p.matmul(&x, 2, &mut part_out, &mut scratch);
            for r in 0..2 {
                let got = &out[r * 24 + offset..r * 24 + offset + p.rows()];
                assert_eq!(got, &part_out[r * p.rows()..(r + 1) * p.rows()]);
            }
            offset += p.rows();
        }
    }
}

#[test]
fn error_cases() {
    let mut rng = StdRng::seed_from_u64(5);
    let bytes = random_bytes(&mut rng, GgmlDType::Q4_1, 2, 64);
    assert!(matches!(
        QMatrix::from_gguf(GgmlDType::Q4_1, 2, 64, &bytes[1..]),
        Err(KernelError::SizeMismatch { .. })
    ));
    assert!(matches!(
        QMatrix::from_gguf(GgmlDType::Q4_1, 2, 48, &bytes),
        Err(KernelError::ColsNotBlockAligned { .. })
    ));
    assert!(matches!(
        QMatrix::from_gguf(GgmlDType::Q8_0, 2, 64, &bytes),
        Err(KernelError::SizeMismatch { .. })
    ));
    // K-quants need whole 256-element super-blocks.
    assert!(matches!(
        QMatrix::from_gguf(GgmlDType::Q4K, 2, 64, &bytes),
        Err(KernelError::ColsNotBlockAligned { block: 256, .. })
    ));
    assert!(matches!(
        QMatrix::from_gguf(GgmlDType::F16, 2, 64, &bytes),
        Err(KernelError::NoKernel(_))
    ));
    assert!(!QMatrix::has_kernel(GgmlDType::Q2K));
    assert!(NATIVE.iter().all(|&t| QMatrix::has_kernel(t)));
    assert!(matches!(
        QMatrix::from_f32(2, 3, vec![0.0; 5]),
        Err(KernelError::SizeMismatch { .. })
    ));
}
