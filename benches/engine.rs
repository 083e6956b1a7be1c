//! Engine bench: candlelight vs llama.cpp (and candle's stock quantized llama,
//! with `--features bench-candle`) on the same GGUF and thread count, in one run.
//!
//! Run: `scripts/bench-engine.sh` (builds llama.cpp, sets target-cpu=native).
//! Prints single-stream decode tokens/s, prefill tokens/s at 512 tokens, and
//! aggregate decode tokens/s at 1, 4, 8 and 16 concurrent sequences, with ratios.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use candlelight::engine::kernels;
use candlelight::engine::model::{Llama, LogitsFor, SeqInput, Workspace};
use candlelight::engine::LoadedModel;
use serde_json::Value;

const DECODE_TOKENS: usize = 128;
const PREFILL_TOKENS: usize = 512;
const AGG_STEPS: usize = 64;
const LEVELS: [usize; 4] = [1, 4, 8, 16];

fn best(reps: usize, mut f: impl FnMut() -> f64) -> f64 {
    (0..reps).map(|_| f()).fold(f64::INFINITY, f64::min)
}

fn prompt() -> Vec<u32> {
    std::iter::once(1)
        .chain((0..15).map(|i| 504 + (i % 50)))
        .collect()
}

/// Seconds to decode `steps` tokens for each of `n` sequences, batched.
fn decode_secs(model: &Llama, n: usize, steps: usize, ws: &mut Workspace) -> f64 {
    let p = prompt();
    let mut caches: Vec<_> = (0..n).map(|_| model.new_cache(p.len() + steps)).collect();
    for c in caches.iter_mut() {
        model
            .forward(
                &mut [SeqInput {
                    tokens: &p,
                    cache: c,
                }],
                ws,
                LogitsFor::LastToken,
            )
            .expect("prefill");
    }
    let tok = [504u32];
    let start = Instant::now();
    for _ in 0..steps {
        let mut inputs: Vec<SeqInput<'_>> = caches
            .iter_mut()
            .map(|cache| SeqInput {
                tokens: &tok,
                cache,
            })
            .collect();
        model
            .forward(&mut inputs, ws, LogitsFor::LastToken)
            .expect("decode");
    }
    start.elapsed().as_secs_f64()
}

fn prefill_secs(model: &Llama, ws: &mut Workspace) -> f64 {
    let p: Vec<u32> = std::iter::once(1)
        .chain((0..PREFILL_TOKENS - 1).map(|i| 504 + (i % 300) as u32))
        .collect();
    let mut cache = model.new_cache(p.len());
    let start = Instant::now();
    model
        .forward(
            &mut [SeqInput {
                tokens: &p,
                cache: &mut cache,
            }],
            ws,
            LogitsFor::LastToken,
        )
        .expect("prefill");
    start.elapsed().as_secs_f64()
}

struct Figures {
    decode: f64,
    prefill: f64,
    aggregate: Vec<(usize, f64)>,
}

fn candlelight(model: &Llama) -> Figures {
    let mut ws = Workspace::default();
    decode_secs(model, 1, 8, &mut ws); // warm up
    let decode = DECODE_TOKENS as f64 / best(3, || decode_secs(model, 1, DECODE_TOKENS, &mut ws));
    let prefill = PREFILL_TOKENS as f64 / best(3, || prefill_secs(model, &mut ws));
    let aggregate = LEVELS
        .iter()
        .map(|&n| {
            (
                n,
                (n * AGG_STEPS) as f64 / best(2, || decode_secs(model, n, AGG_STEPS, &mut ws)),
            )
        })
        .collect();
    Figures {
        decode,
        prefill,
        aggregate,
    }
}

fn llama_cpp(model: &str, threads: usize) -> Option<Figures> {
    let python =
        std::env::var("LLAMA_CPP_PYTHON").unwrap_or_else(|_| ".venv-bench/bin/python".into());
    let out = Command::new(&python)
        .args(["benches/llama_cpp_bench.py", model, &threads.to_string()])
        .output()
        .map_err(|e| {
            eprintln!("llama.cpp baseline not run ({python}: {e}); run scripts/bench-setup.sh")
        })
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "llama.cpp baseline failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(line.lines().last().unwrap_or("{}")).ok()?;
    Some(Figures {
        decode: v["decode_tok_s"].as_f64()?,
        prefill: v["prefill_tok_s"].as_f64()?,
        aggregate: LEVELS
            .iter()
            .filter_map(|n| Some((*n, v["aggregate_tok_s"][n.to_string()].as_f64()?)))
            .collect(),
    })
}

#[cfg(feature = "bench-candle")]
fn candle_stock(path: &std::path::Path) -> Option<(f64, f64)> {
    use candle_core::{Device, Tensor};
    use candle_transformers::models::quantized_llama::ModelWeights;
    let dev = Device::Cpu;
    let mut file = std::fs::File::open(path).ok()?;
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).ok()?;
    let mut model = ModelWeights::from_gguf(content, &mut file, &dev).ok()?;
    let p = prompt();
    let run_decode = |model: &mut ModelWeights| -> f64 {
        let input = Tensor::new(p.as_slice(), &dev)
            .and_then(|t| t.unsqueeze(0))
            .expect("input");
        model.forward(&input, 0).expect("prefill");
        let start = Instant::now();
        for i in 0..DECODE_TOKENS {
            let input = Tensor::new(&[504u32], &dev)
                .and_then(|t| t.unsqueeze(0))
                .expect("input");
            model.forward(&input, p.len() + i).expect("decode");
        }
        start.elapsed().as_secs_f64()
    };
    let long: Vec<u32> = std::iter::once(1)
        .chain((0..PREFILL_TOKENS - 1).map(|i| 504 + (i % 300) as u32))
        .collect();
    let run_prefill = |model: &mut ModelWeights| -> f64 {
        let input = Tensor::new(long.as_slice(), &dev)
            .and_then(|t| t.unsqueeze(0))
            .expect("input");
        let start = Instant::now();
        model.forward(&input, 0).expect("prefill");
        start.elapsed().as_secs_f64()
    };
    let decode = DECODE_TOKENS as f64 / best(2, || run_decode(&mut model));
    let prefill = PREFILL_TOKENS as f64 / best(2, || run_prefill(&mut model));
    Some((decode, prefill))
}

#[cfg(not(feature = "bench-candle"))]
fn candle_stock(_: &std::path::Path) -> Option<(f64, f64)> {
    None
}

fn main() {
    let threads: usize = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let path = PathBuf::from(
        std::env::var("CANDLELIGHT_MODEL")
            .unwrap_or_else(|_| "models/SmolLM2-135M-Instruct.Q4_1.gguf".into()),
    );
    kernels::init_thread_pool(threads).expect("thread pool");
    let loaded = LoadedModel::load(&path).expect("model loads");
    eprintln!(
        "candlelight: {} threads, SIMD {}",
        kernels::num_threads(),
        kernels::simd_level()
    );
    let ours = candlelight(&loaded.model);
    drop(loaded);
    let stock = candle_stock(&path);
    let base = llama_cpp(&path.display().to_string(), threads);

    let fmt_ratio = |a: f64, b: Option<f64>| b.map_or("-".to_owned(), |b| format!("{:.2}x", a / b));
    let fmt_val = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
    println!(
        "\nengine bench: {} on {threads} threads (tokens/s; ratio = candlelight / other)\n",
        path.display()
    );
    println!("| figure | candlelight | llama.cpp | ratio vs llama.cpp | candle stock | ratio vs candle |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| single-stream decode | {:.1} | {} | {} | {} | {} |",
        ours.decode,
        fmt_val(base.as_ref().map(|b| b.decode)),
        fmt_ratio(ours.decode, base.as_ref().map(|b| b.decode)),
        fmt_val(stock.map(|s| s.0)),
        fmt_ratio(ours.decode, stock.map(|s| s.0)),
    );
    println!(
        "| prefill, {PREFILL_TOKENS}-token prompt | {:.1} | {} | {} | {} | {} |",
        ours.prefill,
        fmt_val(base.as_ref().map(|b| b.prefill)),
        fmt_ratio(ours.prefill, base.as_ref().map(|b| b.prefill)),
        fmt_val(stock.map(|s| s.1)),
        fmt_ratio(ours.prefill, stock.map(|s| s.1)),
    );
    for (n, v) in &ours.aggregate {
        let theirs = base
            .as_ref()
            .and_then(|b| b.aggregate.iter().find(|(m, _)| m == n).map(|x| x.1));
        println!(
            "| aggregate decode, {n} sequences | {v:.1} | {} | {} | - | - |",
            fmt_val(theirs),
            fmt_ratio(*v, theirs),
        );
    }
    if let Some(b) = &base {
        let agg16 = ours
            .aggregate
            .iter()
            .find(|(n, _)| *n == 16)
            .map(|x| x.1)
            .unwrap_or(0.0);
        println!(
            "\naggregate decode at 16 sequences / llama.cpp single-stream decode: {:.2}x",
            agg16 / b.decode
        );
    }
}
