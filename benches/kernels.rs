//! Quantized matmul throughput: candlelight's fast path vs its scalar path vs candle's
//! `QMatMul`, on the SmolLM2-135M shapes. Run with
//! `(. scripts/bench-env.sh; cargo bench --bench kernels)` (native build in target/native)
//! (`KERNELS_BENCH_QUICK=1` for a short run). Prints GFLOP/s and speed ratios.
//!
//! On a shared machine wall time is noisy: `KERNELS_BENCH_THREADS=1` runs the kernels on
//! the calling thread and adds its CPU time (from `/proc/thread-self/schedstat`), and
//! `KERNELS_BENCH_FAST_ONLY=1` skips the scalar and candle columns,
//! `KERNELS_BENCH_MODEL_ONLY=1` runs only the model-shaped pass and
//! `KERNELS_BENCH_FORMATS_ONLY=1` only the per-format pass (every native GGUF type).

use std::time::{Duration, Instant};

use anyhow::Result;
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QMatMul};
use candle_core::{Device, Module, Tensor};
use candlelight::engine::kernels::{self, MatmulScratch, QMatrix, SimdLevel};
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One weight matrix of the model: rows = out features, cols = in features.
struct Shape {
    name: &'static str,
    rows: usize,
    cols: usize,
    dtype: GgmlDType,
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "attn_o",
        rows: 576,
        cols: 576,
        dtype: GgmlDType::Q4_1,
    },
    Shape {
        name: "qkv (fused)",
        rows: 960,
        cols: 576,
        dtype: GgmlDType::Q4_1,
    },
    Shape {
        name: "ffn_up",
        rows: 1536,
        cols: 576,
        dtype: GgmlDType::Q4_1,
    },
    Shape {
        name: "gate_up (fused)",
        rows: 3072,
        cols: 576,
        dtype: GgmlDType::Q4_1,
    },
    Shape {
        name: "ffn_down",
        rows: 576,
        cols: 1536,
        dtype: GgmlDType::Q4_1,
    },
    Shape {
        name: "lm_head",
        rows: 49152,
        cols: 576,
        dtype: GgmlDType::Q8_0,
    },
];

const BATCHES: &[usize] = &[1, 4, 16, 512];

/// Byte offsets of a block's f16 scale fields and a sane range for each.
fn f16_fields(dtype: GgmlDType) -> &'static [(usize, f32, f32)] {
    match dtype {
        GgmlDType::Q4_1 => &[(0, 0.001, 0.02), (2, -0.1, 0.0)],
        GgmlDType::Q4K | GgmlDType::Q5K => &[(0, 0.0002, 0.002), (2, 0.0001, 0.004)],
        GgmlDType::Q6K => &[(208, 0.00005, 0.0005)],
        _ => &[(0, 0.001, 0.02)],
    }
}

/// Random GGUF bytes with sane f16 scales.
fn random_bytes(rng: &mut StdRng, shape: &Shape) -> Vec<u8> {
    let (block, size) = (shape.dtype.block_size(), shape.dtype.type_size());
    let mut bytes = Vec::with_capacity(shape.rows * shape.cols / block * size);
    for _ in 0..shape.rows * shape.cols / block {
        let mut b: Vec<u8> = (0..size).map(|_| rng.random()).collect();
        for &(at, lo, hi) in f16_fields(shape.dtype) {
            let v = f16::from_f32(rng.random_range(lo..hi));
            b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
        bytes.extend(b);
    }
    bytes
}

/// Nanoseconds this thread has run on a CPU (Linux), immune to time spent preempted.
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// Seconds per call, wall and calling-thread CPU: repeats `f` for at least `budget`
/// (at least twice, after a warm-up).
fn time_it(budget: Duration, mut f: impl FnMut()) -> (f64, Option<f64>) {
    f();
    let cpu0 = thread_cpu_ns();
    let start = Instant::now();
    let mut iters = 0u32;
    while iters < 2 || start.elapsed() < budget {
        f();
        iters += 1;
    }
    let wall = start.elapsed().as_secs_f64() / f64::from(iters);
    let cpu = cpu0
        .zip(thread_cpu_ns())
        .map(|(a, b)| (b - a) as f64 * 1e-9 / f64::from(iters));
    (wall, cpu)
}

struct Row {
    fast: f64,
    /// Calling-thread CPU seconds of the fast path (meaningful with one thread).
    fast_cpu: Option<f64>,
    scalar: Option<f64>,
    candle: Option<f64>,
}

fn bench_shape(
    shape: &Shape,
    n: usize,
    budget: Duration,
    fast_only: bool,
    rng: &mut StdRng,
) -> Result<Row> {
    let bytes = random_bytes(rng, shape);
    let m = QMatrix::from_gguf(shape.dtype, shape.rows, shape.cols, &bytes)?;
    let x: Vec<f32> = (0..n * shape.cols)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let mut out = vec![0.0; n * shape.rows];
    let mut scratch = MatmulScratch::default();
    let (fast, fast_cpu) = time_it(budget, || m.matmul(&x, n, &mut out, &mut scratch));
    if fast_only {
        return Ok(Row {
            fast,
            fast_cpu,
            scalar: None,
            candle: None,
        });
    }
    // The scalar path needs ~seconds for the biggest products: skip those.
    let scalar = (shape.rows * shape.cols * n <= 1 << 30).then(|| {
        time_it(budget, || {
            m.matmul_with(SimdLevel::Scalar, &x, n, &mut out, &mut scratch)
                .expect("invariant: the scalar path is always available")
        })
        .0
    });
    let qt = qtensor_from_ggml(
        shape.dtype,
        &bytes,
        vec![shape.rows, shape.cols],
        &Device::Cpu,
    )?;
    let qmm = QMatMul::from_qtensor(qt)?;
    let xt = Tensor::from_vec(x.clone(), (n, shape.cols), &Device::Cpu)?;
    let candle = time_it(budget, || {
        qmm.forward(&xt).expect("candle forward");
    })
    .0;
    Ok(Row {
        fast,
        fast_cpu,
        scalar,
        candle: Some(candle),
    })
}

fn main() -> Result<()> {
    let quick = std::env::var_os("KERNELS_BENCH_QUICK").is_some();
    let budget = Duration::from_millis(if quick { 100 } else { 500 });
    let fast_only = std::env::var_os("KERNELS_BENCH_FAST_ONLY").is_some();
    if let Some(threads) = std::env::var("KERNELS_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
    {
        kernels::init_thread_pool(threads)?;
    }
    let mut rng = StdRng::seed_from_u64(42);
    println!(
        "kernels bench: simd={} threads={} (candle uses {} rayon threads)",
        kernels::simd_level(),
        kernels::num_threads(),
        rayon::current_num_threads()
    );
    println!(
        "{:<16} {:>11} {:>4} | {:>9} {:>9} {:>9} | {:>8} {:>8} | {:>9} {:>9}",
        "shape",
        "rows x cols",
        "n",
        "fast",
        "scalar",
        "candle",
        "vs scal",
        "vs cndl",
        "fast ms",
        "cpu GF/s"
    );
    let model_only = std::env::var_os("KERNELS_BENCH_MODEL_ONLY").is_some();
    let formats_only = std::env::var_os("KERNELS_BENCH_FORMATS_ONLY").is_some();
    if formats_only {
        return format_pass(budget, &mut rng);
    }
    for shape in SHAPES.iter().filter(|_| !model_only) {
        for &n in BATCHES {
            let row = bench_shape(shape, n, budget, fast_only, &mut rng)?;
            let gflop = |t: f64| 2.0 * (shape.rows * shape.cols * n) as f64 / t / 1e9;
            let opt = |t: Option<f64>, f: &dyn Fn(f64) -> String| t.map_or("-".into(), f);
            println!(
                "{:<16} {:>5}x{:<5} {:>4} | {:>9.1} {:>9} {:>9} | {:>8} {:>8} | {:>9.3} {:>9}",
                shape.name,
                shape.rows,
                shape.cols,
                n,
                gflop(row.fast),
                opt(row.scalar, &|t| format!("{:.1}", gflop(t))),
                opt(row.candle, &|t| format!("{:.1}", gflop(t))),
                opt(row.scalar, &|t| format!("{:.1}x", t / row.fast)),
                opt(row.candle, &|t| format!("{:.1}x", t / row.fast)),
                row.fast * 1e3,
                opt(
                    row.fast_cpu.filter(|_| kernels::num_threads() == 1),
                    &|t| format!("{:.1}", gflop(t))
                ),
            );
        }
    }
    if !model_only {
        format_pass(budget, &mut rng)?;
    }
    model_pass(budget, &mut rng)?;
    Ok(())
}

/// Each native format on one shape whose rows suit every type (K-quants need
/// multiples of 256 columns): GFLOP/s by batch, and at batch 1 the rate weights
/// stream at, with the bytes held per GGUF byte.
fn format_pass(budget: Duration, rng: &mut StdRng) -> Result<()> {
    println!(
        "\nper format, 2048 x 1536 (GFLOP/s; n=1 also as weight GB/s)\n{:<6} {:>10} {:>9} | {:>8} {:>8} {:>8} {:>8} | {:>9}",
        "type", "bytes/elt", "vs gguf", "n=1", "n=4", "n=16", "n=512", "n=1 GB/s"
    );
    let mut scratch = MatmulScratch::default();
    for dtype in QMatrix::NATIVE_TYPES {
        let shape = Shape {
            name: "format",
            rows: 2048,
            cols: 1536,
            dtype,
        };
        let bytes = random_bytes(rng, &shape);
        let m = QMatrix::from_gguf(dtype, shape.rows, shape.cols, &bytes)?;
        let elems = (shape.rows * shape.cols) as f64;
        let mut rates = Vec::new();
        for n in [1, 4, 16, 512] {
            let x: Vec<f32> = (0..n * shape.cols)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let mut out = vec![0.0; n * shape.rows];
            let (t, _) = time_it(budget, || m.matmul(&x, n, &mut out, &mut scratch));
            rates.push((
                2.0 * elems * n as f64 / t / 1e9,
                m.size_bytes() as f64 / t / 1e9,
            ));
        }
        println!(
            "{:<6} {:>10.4} {:>8.3}x | {:>8.1} {:>8.1} {:>8.1} {:>8.1} | {:>9.1}",
            m.format(),
            m.size_bytes() as f64 / elems,
            m.size_bytes() as f64 / bytes.len() as f64,
            rates[0].0,
            rates[1].0,
            rates[2].0,
            rates[3].0,
            rates[0].1,
        );
    }
    Ok(())
}

/// Streams every weight of a SmolLM2-135M-shaped model (30 layers of fused qkv, o,
/// gate_up, down, then the Q8_0 head on the rows that need logits) as one forward
/// pass does, so decode timings include fetching ~96 MB of weights from memory rather
/// than from a cache warmed by the previous call. Compares with plain read bandwidth.
fn model_pass(budget: Duration, rng: &mut StdRng) -> Result<()> {
    let layer_shapes = [&SHAPES[1], &SHAPES[0], &SHAPES[3], &SHAPES[4]];
    let mut layers = Vec::new();
    for _ in 0..30 {
        for shape in layer_shapes {
            let bytes = random_bytes(rng, shape);
            layers.push(QMatrix::from_gguf(
                shape.dtype,
                shape.rows,
                shape.cols,
                &bytes,
            )?);
        }
    }
    let head_shape = &SHAPES[5];
    let head = QMatrix::from_gguf(
        head_shape.dtype,
        head_shape.rows,
        head_shape.cols,
        &random_bytes(rng, head_shape),
    )?;
    let bytes: usize = layers.iter().map(QMatrix::size_bytes).sum::<usize>() + head.size_bytes();
    let read_gbs = read_bandwidth(bytes, budget);
    println!(
        "\nmodel-shaped pass: {:.1} MB of weights; plain read bandwidth on {} threads: {:.1} GB/s",
        bytes as f64 / 1e6,
        kernels::num_threads(),
        read_gbs
    );
    let mut scratch = MatmulScratch::default();
    for (n, head_rows, label) in [
        (1, 1, "decode x1"),
        (4, 4, "decode x4"),
        (16, 16, "decode x16"),
        (512, 1, "prefill 512"),
    ] {
        let x: Vec<f32> = (0..n * 1536).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut out = vec![0.0; n * 49152];
        let (t, cpu) = time_it(budget, || {
            for m in &layers {
                m.matmul(
                    &x[..n * m.cols()],
                    n,
                    &mut out[..n * m.rows()],
                    &mut scratch,
                );
            }
            head.matmul(
                &x[..head_rows * 576],
                head_rows,
                &mut out[..head_rows * 49152],
                &mut scratch,
            );
        });
        println!(
            "  {label:<12} {:>8.2} ms/step {:>8.1} tokens/s (matmuls only), weights at {:>5.1} GB/s = {:>3.0}% of plain reads",
            t * 1e3,
            n as f64 / t,
            bytes as f64 / t / 1e9,
            100.0 * bytes as f64 / t / 1e9 / read_gbs
        );
        if let Some(cpu) = cpu.filter(|_| kernels::num_threads() == 1) {
            println!(
                "  {:<12} {:>8.2} ms/step of CPU time on the calling thread",
                "",
                cpu * 1e3
            );
        }
    }
    Ok(())
}

/// GB/s of summing a buffer of `bytes` on the kernel threads: the memory ceiling
/// that decode, which reads each weight once per step, is bound by.
fn read_bandwidth(bytes: usize, budget: Duration) -> f64 {
    let buf: Vec<u64> = (0..bytes / 8).map(|i| i as u64).collect();
    let chunks = kernels::num_threads() * 4;
    let per = buf.len().div_ceil(chunks);
    let sink = std::sync::atomic::AtomicU64::new(0);
    let (t, _) = time_it(budget, || {
        kernels::parallel_for(chunks, |c| {
            let part = &buf[(c * per).min(buf.len())..((c + 1) * per).min(buf.len())];
            let mut acc = [0u64; 8];
            for w in part.chunks_exact(8) {
                for i in 0..8 {
                    acc[i] = acc[i].wrapping_add(w[i]);
                }
            }
            sink.fetch_add(
                acc.iter().fold(0, |a, &b| a.wrapping_add(b)),
                std::sync::atomic::Ordering::Relaxed,
            );
        });
    });
    std::hint::black_box(sink.into_inner());
    bytes as f64 / t / 1e9
}
