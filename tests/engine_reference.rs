//! The engine against llama.cpp's outputs for the default model
//! (`tests/data/reference/`): exact tokenization, and teacher-forced greedy
//! decoding through the same batched prefill/decode path that serves.

mod common;

use candlelight::engine::kv_cache::KvCache;
use candlelight::engine::model::{LogitsFor, SeqInput, Workspace};
use candlelight::engine::sampler::top_n;
use candlelight::engine::LoadedModel;
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

fn load() -> LoadedModel {
    // Several tests share the process-wide pool; the first sizes it.
    let _ = candlelight::engine::kernels::init_thread_pool(2);
    LoadedModel::load(&common::model_path()).expect("the default model loads")
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

/// All reference prompts run as one batch: one prefill step, then decode steps
/// in which every sequence is fed its own reference token. Sequences have
/// different lengths, so this also checks per-sequence positions and caches.
#[test]
fn teacher_forced_greedy_tracks_llama_cpp() {
    let m = load();
    let cases: Vec<GreedyCase> = common::read_jsonl("greedy.jsonl");
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
    for c in &cases {
        assert_eq!(
            m.tokenizer
                .encode(&c.rendered_prompt, true)
                .expect("encode"),
            c.prompt_ids
        );
    }
    let mut caches: Vec<KvCache> = cases
        .iter()
        .zip(&targets)
        .map(|(c, t)| m.model.new_cache(c.prompt_ids.len() + t.len()))
        .collect();
    let vocab = m.model.config().vocab_size;
    let mut ws = Workspace::default();
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

    // Prefill every prompt in one batched step.
    let mut inputs: Vec<SeqInput<'_>> = cases
        .iter()
        .zip(caches.iter_mut())
        .map(|(c, cache)| SeqInput {
            tokens: &c.prompt_ids,
            cache,
        })
        .collect();
    m.model
        .forward(&mut inputs, &mut ws, LogitsFor::LastToken)
        .expect("prefill");
    for (i, t) in targets.iter().enumerate() {
        check(&ws.logits[i * vocab..(i + 1) * vocab], t[0], i, 0);
    }

    // Decode: each live sequence is fed its previous reference token.
    let longest = targets.iter().map(Vec::len).max().unwrap_or(0);
    for step in 1..longest {
        let live: Vec<usize> = (0..cases.len())
            .filter(|&i| step < targets[i].len())
            .collect();
        let mut inputs: Vec<SeqInput<'_>> = Vec::new();
        for (i, cache) in caches.iter_mut().enumerate() {
            if live.contains(&i) {
                inputs.push(SeqInput {
                    tokens: std::slice::from_ref(&targets[i][step - 1]),
                    cache,
                });
            }
        }
        m.model
            .forward(&mut inputs, &mut ws, LogitsFor::LastToken)
            .expect("decode");
        for (row, &i) in live.iter().enumerate() {
            check(
                &ws.logits[row * vocab..(row + 1) * vocab],
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
    assert!(rate >= 0.95, "top-1 agreement {:.1}% < 95%", rate * 100.0);
}

/// Prefill of all positions agrees with token-by-token decode (same cache maths).
#[test]
fn prefill_and_decode_agree() {
    let m = load();
    let prompt = m
        .tokenizer
        .encode("The quick brown fox jumps over", true)
        .expect("encode");
    let vocab = m.model.config().vocab_size;
    let mut ws = Workspace::default();
    let mut a = m.model.new_cache(prompt.len());
    m.model
        .forward(
            &mut [SeqInput {
                tokens: &prompt,
                cache: &mut a,
            }],
            &mut ws,
            LogitsFor::AllTokens,
        )
        .expect("prefill");
    let all = ws.logits.clone();
    let mut b = m.model.new_cache(prompt.len());
    for (i, t) in prompt.iter().enumerate() {
        m.model
            .forward(
                &mut [SeqInput {
                    tokens: std::slice::from_ref(t),
                    cache: &mut b,
                }],
                &mut ws,
                LogitsFor::LastToken,
            )
            .expect("decode");
        let want = &all[i * vocab..(i + 1) * vocab];
        let max_diff = want
            .iter()
            .zip(&ws.logits)
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
        max_prefill_tokens: 512,
        max_queue: 8,
    };
    let engine = Engine::start(load(), limits, std::sync::Arc::new(NoopObserver)).expect("start");
    let request = |prompt_ids: Vec<u32>| GenerationRequest {
        prompt_ids,
        sampling: SamplingParams::default(),
        stopping: StoppingCriteria {
            max_new_tokens: 3,
            stop_sequences: vec![],
            ignore_eos: true,
        },
        span: std::sync::Arc::new(()),
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
            GenerationEvent::Failed(e) => panic!("generation failed: {e}"),
        }
    }
    assert_eq!(tokens, 3);
}
