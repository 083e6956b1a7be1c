//! Quantized matmul throughput: candlelight's fast path vs its scalar path vs candle's
//! `QMatMul`, on the SmolLM2-135M shapes. Run with
//! `RUSTFLAGS="-C target-cpu=native" cargo bench --bench kernels`
//! (`KERNELS_BENCH_QUICK=1` for a short run). Prints GFLOP/s and speed ratios.
//!
//! On a shared machine wall time is noisy: `KERNELS_BENCH_THREADS=1` runs the kernels on
//! the calling thread and adds its CPU time (from `/proc/thread-self/schedstat`), and
//! `KERNELS_BENCH_FAST_ONLY=1` skips the scalar and candle columns.

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

/// Random GGUF bytes with sane f16 scales.
fn random_bytes(rng: &mut StdRng, shape: &Shape) -> Vec<u8> {
    let blocks = shape.rows * shape.cols / 32;
    let mut bytes = Vec::new();
    for _ in 0..blocks {
        bytes.extend_from_slice(&f16::from_f32(rng.random_range(0.001..0.02)).to_le_bytes());
        if shape.dtype == GgmlDType::Q4_1 {
            bytes.extend_from_slice(&f16::from_f32(rng.random_range(-0.1..0.0)).to_le_bytes());
            bytes.extend((0..16).map(|_| rng.random::<u8>()));
        } else {
            bytes.extend((0..32).map(|_| rng.random::<u8>()));
        }
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
    let m = match shape.dtype {
        GgmlDType::Q4_1 => QMatrix::from_q4_1_bytes(shape.rows, shape.cols, &bytes)?,
        _ => QMatrix::from_q8_0_bytes(shape.rows, shape.cols, &bytes)?,
    };
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
    let mut per_token = vec![0.0f64; BATCHES.len()];
    for shape in SHAPES {
        for (bi, &n) in BATCHES.iter().enumerate() {
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
            per_token[bi] += model_share(shape.name) * row.fast;
        }
    }
    println!("\nmodel matmul time per step (30 x [qkv, o, gate_up, down] + lm_head), GFLOP/s in columns above:");
    for (&n, &t) in BATCHES.iter().zip(&per_token) {
        println!(
            "  n={n:<4} {:>8.2} ms/step  -> {:>8.1} tokens/s (matmuls only)",
            t * 1e3,
            n as f64 / t
        );
    }
    Ok(())
}

/// How many times each benched shape runs in one forward step of the model.
fn model_share(name: &str) -> f64 {
    match name {
        "attn_o" | "qkv (fused)" | "gate_up (fused)" | "ffn_down" => 30.0,
        "lm_head" => 1.0,
        _ => 0.0,
    }
}
