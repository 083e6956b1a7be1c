//! The engine against llama.cpp's outputs (`tests/data/reference/`): exact
//! tokenization, and teacher-forced greedy decoding through the same batched
//! prefill/decode path that serves, on each backend and each requantized model.

mod common;

use std::path::Path;

use candlelight::engine::backend::{Backend, BackendKind, Device, LogitsFor, SeqChunk};
use candlelight::engine::sampler::top_n;
use candlelight::engine::{LoadOptions, LoadedModel};
use serde::Deserialize;

#[derive(Deserialize)]
struct TokCase {
    text: String,
    ids: Vec<u32>,
    ids_parse_special: Vec<u32>,
}

#[derive(Deserialize)]
struct GreedyCase {
    rendered_prompt: String,
    prompt_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
}

fn load_with(path: &Path, backend: BackendKind) -> LoadedModel {
    let options = LoadOptions {
        device: Device::Cpu,
        backend,
        threads: 2,
    };
    LoadedModel::load(path, options).expect("the model loads")
}

fn load() -> LoadedModel {
    load_with(&common::model_path(), BackendKind::Native)
}

/// Positions per KV block in these tests.
const BLOCK: usize = 16;

/// A backend with a KV pool where sequence `i` owns blocks `i * per ..`.
struct Forcer {
    backend: Box<dyn Backend>,
    tables: Vec<Vec<u32>>,
    logits: Vec<f32>,
}

impl Forcer {
    fn new(mut backend: Box<dyn Backend>, seqs: usize, positions: usize) -> Self {
        let per = positions.div_ceil(BLOCK);
        backend
            .allocate_kv(BLOCK, seqs * per)
            .expect("KV pool allocates");
        let tables = (0..seqs)
            .map(|i| ((i * per) as u32..((i + 1) * per) as u32).collect())
            .collect();
        Self {
            backend,
            tables,
            logits: Vec::new(),
        }
    }

    /// One forward: `(sequence, tokens, start)` per chunk; logits of the last
    /// token of each (or of every token, with `all`).
    fn forward(&mut self, chunks: &[(usize, &[u32], usize)], all: bool) -> &[f32] {
        let chunks: Vec<SeqChunk<'_>> = chunks
            .iter()
            .map(|&(i, tokens, start)| SeqChunk {
                tokens,
                start,
                blocks: &self.tables[i],
                logits: if all {
                    LogitsFor::AllTokens
                } else {
                    LogitsFor::LastToken
                },
            })
            .collect();
        self.backend
            .forward(&chunks, &mut self.logits)
            .expect("forward");
        &self.logits
    }
}

#[test]
fn tokenization_matches_llama_cpp_exactly() {
    let m = load();
    let cases: Vec<TokCase> = common::read_jsonl("tokenization.jsonl");
    assert!(cases.len() >= 10);
    for c in &cases {
        let plain = m.tokenizer.encode(&c.text, false).expect("encode");
        assert_eq!(plain, c.ids, "plain ids of {:?}", c.text);
        let special = m.tokenizer.encode(&c.text, true).expect("encode");
        assert_eq!(special, c.ids_parse_special, "special ids of {:?}", c.text);
        let text = m.tokenizer.decode(&special, false).expect("decode");
        assert_eq!(text, c.text, "round trip");
    }
}

#[test]
fn chat_prompts_render_and_tokenize_like_llama_cpp() {
    let m = load();
    let template = candlelight::api::chat::ChatTemplate::new(
        m.info.chat_template.as_deref(),
        m.info.bos_token.as_deref(),
        m.info.eos_token.as_deref(),
    )
    .expect("template");
    let cases: Vec<serde_json::Value> = common::read_jsonl("greedy.jsonl");
    for c in cases {
        let messages: Vec<candlelight::api::chat::ChatMessage> = c["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| candlelight::api::chat::ChatMessage {
                role: m["role"].as_str().expect("role").to_owned(),
                content: m["content"].as_str().expect("content").to_owned(),
            })
            .collect();
        let rendered = template.render(&messages).expect("render");
        assert_eq!(rendered, c["rendered_prompt"].as_str().expect("prompt"));
        let ids = m.tokenizer.encode(&rendered, true).expect("encode");
        let want: Vec<u32> = serde_json::from_value(c["prompt_ids"].clone()).expect("ids");
        assert_eq!(ids, want);
    }
}

/// Teacher forcing of llama.cpp's greedy continuations: all prompts run as one
/// batch (one prefill step, then decode steps in which every sequence is fed its
/// own reference token). Sequences have different lengths, so this also checks
/// per-sequence positions and block tables. Returns the top-1 agreement.
fn teacher_force(m: LoadedModel, cases: &[GreedyCase]) -> f64 {
    let eos = m.tokenizer.eos_id();
    // llama.cpp stopped at EOS where a continuation is shorter than 48 tokens:
    // EOS is then the reference for the step after the last token.
    let targets: Vec<Vec<u32>> = cases
        .iter()
        .map(|c| {
            let mut t = c.greedy_ids.clone();
            if t.len() < 48 {
                t.push(eos);
            }
            t
        })
        .collect();
    let longest = cases
        .iter()
        .zip(&targets)
        .map(|(c, t)| c.prompt_ids.len() + t.len())
        .max()
        .unwrap_or(0);
    let vocab = m.backend.config().vocab_size;
    let mut forcer = Forcer::new(m.backend, cases.len(), longest);
    let (mut steps, mut top1, mut worst_rank) = (0usize, 0usize, 0usize);
    let mut check = |logits: &[f32], want: u32, case: usize, step: usize| {
        let top = top_n(logits, 3, 0.0);
        let rank = top.iter().position(|(id, _)| *id == want);
        steps += 1;
        if rank == Some(0) {
            top1 += 1;
        }
        assert!(
            rank.is_some(),
            "case {case} step {step}: reference token {want} not in top 3 {top:?}"
        );
        worst_rank = worst_rank.max(rank.unwrap_or(3));
    };

    let prefill: Vec<(usize, &[u32], usize)> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| (i, c.prompt_ids.as_slice(), 0))
        .collect();
    let logits = forcer.forward(&prefill, false).to_vec();
    for (i, t) in targets.iter().enumerate() {
        check(&logits[i * vocab..(i + 1) * vocab], t[0], i, 0);
    }
    let max_steps = targets.iter().map(Vec::len).max().unwrap_or(0);
    for step in 1..max_steps {
        let live: Vec<usize> = (0..cases.len())
            .filter(|&i| step < targets[i].len())
            .collect();
        let chunks: Vec<(usize, &[u32], usize)> = live
            .iter()
            .map(|&i| {
                let start = cases[i].prompt_ids.len() + step - 1;
                (i, std::slice::from_ref(&targets[i][step - 1]), start)
            })
            .collect();
        let logits = forcer.forward(&chunks, false).to_vec();
        for (row, &i) in live.iter().enumerate() {
            check(
                &logits[row * vocab..(row + 1) * vocab],
                targets[i][step],
                i,
                step,
            );
        }
    }
    let rate = top1 as f64 / steps as f64;
    eprintln!(
        "teacher forcing: top-1 {top1}/{steps} = {:.1}%, worst rank {worst_rank}",
        rate * 100.0
    );
    rate
}

fn check_teacher_forcing(model: &Path, backend: BackendKind, reference: &str) {
    check_teacher_forcing_on(load_with(model, backend), reference);
}

fn check_teacher_forcing_on(m: LoadedModel, reference: &str) {
    let cases: Vec<GreedyCase> = common::read_jsonl(reference);
    for c in &cases {
        let ids = m
            .tokenizer
            .encode(&c.rendered_prompt, true)
            .expect("encode");
        assert_eq!(ids, c.prompt_ids);
    }
    let rate = teacher_force(m, &cases);
    assert!(rate >= 0.95, "top-1 agreement {:.1}% < 95%", rate * 100.0);
}

#[test]
fn teacher_forced_greedy_tracks_llama_cpp_on_the_native_backend() {
    check_teacher_forcing(&common::model_path(), BackendKind::Native, "greedy.jsonl");
}

#[test]
fn teacher_forced_greedy_tracks_llama_cpp_on_the_candle_backend() {
    check_teacher_forcing(&common::model_path(), BackendKind::Candle, "greedy.jsonl");
}

/// `models/SmolLM2-135M-Instruct.<TYPE>.gguf`, requantized from the default model
/// by llama.cpp (`scripts/make-test-models.sh`).
fn requantized(ty: &str) -> std::path::PathBuf {
    let p = testkit::workspace_root().join(format!("models/SmolLM2-135M-Instruct.{ty}.gguf"));
    assert!(
        p.is_file(),
        "{} is missing: run scripts/make-test-models.sh",
        p.display()
    );
    p
}

/// A requantized file on `--backend auto`: the CPU picks the native backend, every
/// matmul tensor type (`want`) keeps a native kernel (none is expanded to f32),
/// and teacher forcing tracks llama.cpp's outputs for that file.
fn check_requantized(ty: &str, want: &[&str]) {
    let m = load_with(&requantized(ty), BackendKind::Auto);
    let info = m.backend.info();
    assert_eq!(
        info.backend, "native",
        "{ty}: --backend auto chose {}",
        info.backend
    );
    let served: Vec<(&str, &str)> = info
        .kernels
        .iter()
        .map(|k| (k.tensor_type.as_str(), k.kernel.as_str()))
        .collect();
    eprintln!("{ty}: {:?}", info.kernels);
    let mut types: Vec<&str> = served.iter().map(|s| s.0).collect();
    types.sort_unstable();
    assert_eq!(types, want, "{ty}: matmul tensor types");
    for (t, kernel) in &served {
        assert!(
            kernel.starts_with(&t.to_lowercase()) && !kernel.contains("dequantized"),
            "{ty}: {t} is served by {kernel}, not a native kernel"
        );
    }
    check_teacher_forcing_on(m, &format!("{ty}/greedy.jsonl"));
}

#[test]
fn q4_k_m_file_runs_natively_and_tracks_llama_cpp() {
    check_requantized("Q4_K_M", &["Q4_K", "Q5_0", "Q6_K", "Q8_0"]);
}

#[test]
fn q4_0_file_runs_natively_and_tracks_llama_cpp() {
    check_requantized("Q4_0", &["Q4_0", "Q8_0"]);
}

#[test]
fn q8_0_file_runs_natively_and_tracks_llama_cpp() {
    check_requantized("Q8_0", &["Q8_0"]);
}

/// Prefill of all positions agrees with token-by-token decode (same cache maths).
#[test]
fn prefill_and_decode_agree() {
    let m = load();
    let prompt = m
        .tokenizer
        .encode("The quick brown fox jumps over", true)
        .expect("encode");
    let vocab = m.backend.config().vocab_size;
    let mut forcer = Forcer::new(m.backend, 2, prompt.len());
    let all = forcer.forward(&[(0, &prompt, 0)], true).to_vec();
    for (i, t) in prompt.iter().enumerate() {
        let got = forcer.forward(&[(1, std::slice::from_ref(t), i)], false);
        let want = &all[i * vocab..(i + 1) * vocab];
        let max_diff = want
            .iter()
            .zip(got)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(max_diff < 1e-2, "position {i}: logits differ by {max_diff}");
    }
}

#[test]
fn the_engine_refuses_an_empty_prompt_and_keeps_serving() {
    use candlelight::engine::events::NoopObserver;
    use candlelight::engine::request::{GenerationEvent, GenerationRequest, StoppingCriteria};
    use candlelight::engine::sampler::SamplingParams;
    use candlelight::engine::scheduler::SchedulerLimits;
    use candlelight::engine::{Engine, SubmitError};

    let limits = SchedulerLimits {
        max_batch_size: 4,
        max_total_tokens: 4096,
        max_batch_tokens: 256,
        max_prefill_tokens: 512,
        max_queue: 8,
    };
    let kv = candlelight::engine::kv::KvConfig {
        block_size: BLOCK,
        capacity_blocks: 4096 / BLOCK,
        prefix_cache_blocks: None,
    };
    let engine =
        Engine::start(load(), limits, kv, std::sync::Arc::new(NoopObserver)).expect("start");
    let request = |prompt_ids: Vec<u32>| {
        let stopping = StoppingCriteria {
            max_new_tokens: 3,
            stop_sequences: vec![],
            ignore_eos: true,
            min_new_tokens: 0,
            stop_token_ids: Vec::new(),
            deadline: None,
        };
        let span = std::sync::Arc::new(());
        GenerationRequest::new(prompt_ids, SamplingParams::default(), stopping, span)
    };
    // An engine-API caller (the HTTP layer rejects empty text before this).
    assert!(matches!(
        engine.submit(request(vec![])),
        Err(SubmitError::EmptyPrompt)
    ));
    let (_, mut rx) = engine.submit(request(vec![1, 504, 505])).expect("submit");
    let mut tokens = 0;
    while let Some(event) = rx.blocking_recv() {
        match event {
            GenerationEvent::Token { finish, .. } => {
                tokens += 1;
                if finish.is_some() {
                    break;
                }
            }
            GenerationEvent::Failed(e) => panic!("generation failed: {e:?}"),
        }
    }
    assert_eq!(tokens, 3);
}
