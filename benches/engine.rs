//! Engine bench: candlelight vs llama.cpp (and candle's stock quantized llama,
//! with `--features bench-candle`) on the same GGUF and thread count, in one run.
//!
//! Run: `scripts/bench-engine.sh` (builds llama.cpp, sets target-cpu=native).
//! Prints single-stream decode tokens/s, prefill tokens/s at 512 tokens, and
//! aggregate decode tokens/s at 1, 4, 8 and 16 concurrent sequences, with ratios.
//! `BENCH_SKIP_OTHERS=1` runs only the native backend (before/after comparisons);
//! `BENCH_DECODE_ONLY=N` runs N decodes and nothing else (profiling), of
//! `BENCH_DECODE_SEQS` sequences (default 1); `BENCH_PREFILL_ONLY=N` runs N
//! prefills.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candlelight::engine::backend::{Backend, BackendKind, Device, LogitsFor, SeqChunk};
use candlelight::engine::{LoadOptions, LoadedModel};
use serde_json::Value;

const DECODE_TOKENS: usize = 128;
const PREFILL_TOKENS: usize = 512;
const AGG_STEPS: usize = 64;
const LEVELS: [usize; 4] = [1, 4, 8, 16];
/// KV block size, as the server uses.
const BLOCK: usize = 16;

fn best(reps: usize, mut f: impl FnMut() -> f64) -> f64 {
    (0..reps).map(|_| f()).fold(f64::INFINITY, f64::min)
}

fn prompt() -> Vec<u32> {
    std::iter::once(1)
        .chain((0..15).map(|i| 504 + (i % 50)))
        .collect()
}

/// Contiguous block tables: sequence `i` owns blocks `i * per ..`.
fn tables(seqs: usize, positions: usize) -> Vec<Vec<u32>> {
    let per = positions.div_ceil(BLOCK);
    (0..seqs)
        .map(|i| ((i * per) as u32..((i + 1) * per) as u32).collect())
        .collect()
}

/// Seconds to decode `steps` tokens for each of `n` sequences, batched.
fn decode_secs(b: &mut dyn Backend, n: usize, steps: usize, logits: &mut Vec<f32>) -> f64 {
    let p = prompt();
    let tables = tables(n, p.len() + steps);
    for t in &tables {
        let chunk = SeqChunk {
            tokens: &p,
            start: 0,
            blocks: t,
            logits: LogitsFor::LastToken,
        };
        b.forward(&[chunk], logits).expect("prefill");
    }
    let tok = [504u32];
    let start = Instant::now();
    for step in 0..steps {
        let chunks: Vec<SeqChunk<'_>> = tables
            .iter()
            .map(|t| SeqChunk {
                tokens: &tok,
                start: p.len() + step,
                blocks: t,
                logits: LogitsFor::LastToken,
            })
            .collect();
        b.forward(&chunks, logits).expect("decode");
    }
    start.elapsed().as_secs_f64()
}

fn prefill_secs(b: &mut dyn Backend, logits: &mut Vec<f32>) -> f64 {
    let p: Vec<u32> = std::iter::once(1)
        .chain((0..PREFILL_TOKENS - 1).map(|i| 504 + (i % 300) as u32))
        .collect();
    let table = &tables(1, p.len())[0];
    let chunk = SeqChunk {
        tokens: &p,
        start: 0,
        blocks: table,
        logits: LogitsFor::LastToken,
    };
    let start = Instant::now();
    b.forward(&[chunk], logits).expect("prefill");
    start.elapsed().as_secs_f64()
}

struct Figures {
    decode: f64,
    prefill: f64,
    aggregate: Vec<(usize, f64)>,
}

/// The engine's figures on one backend.
fn measure(b: &mut dyn Backend) -> Figures {
    let most = LEVELS.iter().max().copied().unwrap_or(1);
    let positions = (prompt().len() + DECODE_TOKENS.max(AGG_STEPS)).max(PREFILL_TOKENS);
    b.allocate_kv(BLOCK, most * positions.div_ceil(BLOCK))
        .expect("KV pool");
    let mut logits = Vec::new();
    decode_secs(b, 1, 8, &mut logits); // warm up
    let decode = DECODE_TOKENS as f64 / best(3, || decode_secs(b, 1, DECODE_TOKENS, &mut logits));
    let prefill = PREFILL_TOKENS as f64 / best(3, || prefill_secs(b, &mut logits));
    let aggregate = LEVELS
        .iter()
        .map(|&n| {
            let secs = best(2, || decode_secs(b, n, AGG_STEPS, &mut logits));
            (n, (n * AGG_STEPS) as f64 / secs)
        })
        .collect();
    Figures {
        decode,
        prefill,
        aggregate,
    }
}

/// `BENCH_DECODE_ONLY=N`: N decode runs and nothing else, for profiling the decode
/// step alone (`perf record`); `BENCH_DECODE_SEQS=S` batches S sequences (default 1).
fn decode_only(b: &mut dyn Backend, reps: usize) {
    let seqs = env_count("BENCH_DECODE_SEQS").unwrap_or(1);
    let positions = prompt().len() + DECODE_TOKENS;
    b.allocate_kv(BLOCK, seqs * positions.div_ceil(BLOCK))
        .expect("KV pool");
    let mut logits = Vec::new();
    for _ in 0..reps {
        let secs = decode_secs(b, seqs, DECODE_TOKENS, &mut logits);
        let rate = (seqs * DECODE_TOKENS) as f64 / secs;
        println!("decode, {seqs} sequences: {rate:.1} tokens/s");
    }
}

/// `BENCH_PREFILL_ONLY=N`: N prefills of the 512-token prompt and nothing else.
fn prefill_only(b: &mut dyn Backend, reps: usize) {
    b.allocate_kv(BLOCK, PREFILL_TOKENS.div_ceil(BLOCK))
        .expect("KV pool");
    let mut logits = Vec::new();
    for _ in 0..reps {
        let rate = PREFILL_TOKENS as f64 / prefill_secs(b, &mut logits);
        println!("prefill, {PREFILL_TOKENS}-token prompt: {rate:.1} tokens/s");
    }
}

fn env_count(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn load(path: &Path, backend: BackendKind, threads: usize) -> Option<LoadedModel> {
    let options = LoadOptions {
        device: Device::Cpu,
        backend,
        threads,
    };
    LoadedModel::load(path, options)
        .map_err(|e| eprintln!("{backend:?} backend not run: {e}"))
        .ok()
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
    let threads = env_count("BENCH_THREADS").unwrap_or(2);
    let path = PathBuf::from(
        std::env::var("CANDLELIGHT_MODEL")
            .unwrap_or_else(|_| "models/SmolLM2-135M-Instruct.Q4_1.gguf".into()),
    );
    let mut native = load(&path, BackendKind::Native, threads).expect("the native backend loads");
    let info = native.backend.info();
    eprintln!("candlelight: {} threads, {}", info.threads, info.compute);
    if let Some(reps) = env_count("BENCH_PREFILL_ONLY") {
        prefill_only(native.backend.as_mut(), reps);
        return;
    }
    if let Some(reps) = env_count("BENCH_DECODE_ONLY") {
        decode_only(native.backend.as_mut(), reps);
        return;
    }
    let ours = measure(native.backend.as_mut());
    drop(native);
    // BENCH_SKIP_OTHERS=1: only the native backend (for before/after comparisons).
    let others = std::env::var("BENCH_SKIP_OTHERS").map_or(true, |v| v != "1");
    let candle = others
        .then(|| load(&path, BackendKind::Candle, threads))
        .flatten()
        .map(|mut m| measure(m.backend.as_mut()));
    let stock = others.then(|| candle_stock(&path)).flatten();
    let base = others
        .then(|| llama_cpp(&path.display().to_string(), threads))
        .flatten();
    print_table(&path, threads, &ours, candle.as_ref(), base.as_ref(), stock);
}

fn print_table(
    path: &Path,
    threads: usize,
    ours: &Figures,
    candle: Option<&Figures>,
    base: Option<&Figures>,
    stock: Option<(f64, f64)>,
) {
    let ratio = |a: f64, b: Option<f64>| b.map_or("-".to_owned(), |b| format!("{:.2}x", a / b));
    let val = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
    println!(
        "\nengine bench: {} on {threads} threads (tokens/s; ratio = candlelight native / other)\n",
        path.display()
    );
    println!("| figure | native | llama.cpp | ratio vs llama.cpp | candle backend (CPU) | candle stock | ratio vs candle stock |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let row = |name: String, v: f64, pick: &dyn Fn(&Figures) -> Option<f64>, s: Option<f64>| {
        let theirs = base.and_then(pick);
        println!(
            "| {name} | {v:.1} | {} | {} | {} | {} | {} |",
            val(theirs),
            ratio(v, theirs),
            val(candle.and_then(pick)),
            val(s),
            ratio(v, s),
        );
    };
    row(
        "single-stream decode".into(),
        ours.decode,
        &|f| Some(f.decode),
        stock.map(|s| s.0),
    );
    row(
        format!("prefill, {PREFILL_TOKENS}-token prompt"),
        ours.prefill,
        &|f| Some(f.prefill),
        stock.map(|s| s.1),
    );
    for &(n, v) in &ours.aggregate {
        let pick = move |f: &Figures| f.aggregate.iter().find(|(m, _)| *m == n).map(|x| x.1);
        row(format!("aggregate decode, {n} sequences"), v, &pick, None);
    }
    if let Some(b) = base {
        let agg16 = ours
            .aggregate
            .iter()
            .find(|(n, _)| *n == 16)
            .map_or(0.0, |x| x.1);
        println!(
            "\naggregate decode at 16 sequences / llama.cpp single-stream decode: {:.2}x",
            agg16 / b.decode
        );
    }
}
