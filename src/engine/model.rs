//! A llama-family decoder loaded from GGUF, with a batched forward pass.
//!
//! Rows of every sequence in a step are packed into one activation matrix, so
//! each weight matrix is streamed once per step however many sequences ride in
//! it. Attention runs per sequence against that sequence's own [`KvCache`];
//! the model itself holds no per-sequence state.
//!
//! Weights keep their GGUF quantization where [`kernels`] has a fast path
//! (Q4_1, Q8_0); any other type candle can read is dequantized to f32 at load.
//! q|k|v and gate|up are fused into one matrix each at load.

use std::cell::RefCell;

use candle_core::quantized::GgmlDType;

use super::gguf::{GgufError, GgufFile};
use super::kernels::attention::{attend_group, AttendScratch, KvHead};
use super::kernels::{self, KernelError, MatmulScratch, QMatrix};
use super::kv_cache::{KvCache, KvCacheFull};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("unsupported architecture `{0}`: only `llama` is supported")]
    Architecture(String),
    #[error("tensor `{name}`: {source}")]
    Kernel { name: String, source: KernelError },
    #[error("tensor `{name}` has shape {dims:?}, expected {expected}")]
    Shape {
        name: String,
        dims: Vec<usize>,
        expected: String,
    },
    #[error("invalid model hyper-parameters: {0}")]
    Config(String),
    #[error(transparent)]
    CacheFull(#[from] KvCacheFull),
    #[error("token id {0} is outside the vocabulary")]
    TokenOutOfRange(u32),
}

/// Hyper-parameters read from `llama.*` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rope_theta: f32,
    pub rms_eps: f32,
}

impl LlamaConfig {
    pub fn from_gguf(g: &GgufFile) -> Result<Self, ModelError> {
        let arch = g.string("general.architecture")?;
        if arch != "llama" {
            return Err(ModelError::Architecture(arch));
        }
        let n_embd = g.usize("llama.embedding_length")?;
        let n_head = g.usize("llama.attention.head_count")?;
        let n_kv_head = if g.has("llama.attention.head_count_kv") {
            g.usize("llama.attention.head_count_kv")?
        } else {
            n_head
        };
        if n_head == 0 || n_kv_head == 0 || n_embd % n_head != 0 || n_head % n_kv_head != 0 {
            return Err(ModelError::Config(format!(
                "embedding {n_embd}, heads {n_head}, kv heads {n_kv_head}"
            )));
        }
        let head_dim = n_embd / n_head;
        if head_dim % 2 != 0 {
            return Err(ModelError::Config(format!("odd head dim {head_dim}")));
        }
        let vocab_size = if g.has("llama.vocab_size") {
            g.usize("llama.vocab_size")?
        } else {
            g.strings("tokenizer.ggml.tokens")?.len()
        };
        Ok(Self {
            n_layer: g.usize("llama.block_count")?,
            n_embd,
            n_head,
            n_kv_head,
            head_dim,
            n_ff: g.usize("llama.feed_forward_length")?,
            vocab_size,
            context_length: g.usize("llama.context_length")?,
            rope_theta: if g.has("llama.rope.freq_base") {
                g.f32("llama.rope.freq_base")?
            } else {
                10_000.0
            },
            rms_eps: g.f32("llama.attention.layer_norm_rms_epsilon")?,
        })
    }

    /// Floats per position per layer in the KV cache (keys or values).
    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }

    /// KV cache bytes one token position costs across all layers.
    pub fn kv_bytes_per_token(&self) -> usize {
        KvCache::bytes_for(self.n_layer, self.kv_dim(), 1)
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    /// Rows: q (n_embd) | k (kv_dim) | v (kv_dim).
    wqkv: QMatrix,
    wo: QMatrix,
    ffn_norm: Vec<f32>,
    /// Rows: gate (n_ff) | up (n_ff).
    w_gate_up: QMatrix,
    w_down: QMatrix,
}

/// The loaded model. Immutable after load; shared by reference with the engine loop.
pub struct Llama {
    cfg: LlamaConfig,
    tok_embd: QMatrix,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    /// `None` when the output projection is tied to the token embedding.
    output: Option<QMatrix>,
    /// cos/sin per (position, pair), filled for the whole context at load.
    rope: Vec<(f32, f32)>,
    quantization: String,
}

/// One sequence's part of a forward pass: new tokens, appended at `cache.len()`.
pub struct SeqInput<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
}

/// Which rows the forward pass computes logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    /// The last token of each sequence (serving).
    LastToken,
    /// Every token (teacher forcing, scoring).
    AllTokens,
}

/// Buffers reused across steps so a warmed-up step allocates (almost) nothing.
#[derive(Default)]
pub struct Workspace {
    x: Vec<f32>,
    xb: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate_up: Vec<f32>,
    ffn: Vec<f32>,
    /// (sequence index, position) of every packed row.
    rows: Vec<(usize, usize)>,
    scratch: MatmulScratch,
    /// Logits, `vocab_size` per requested row.
    pub logits: Vec<f32>,
}

/// Rows the FFN processes at a time: enough to reuse each weight block across
/// many rows, small enough to bound its buffers (~4.7 MB for SmolLM2).
const FFN_CHUNK_ROWS: usize = 256;

thread_local! {
    static ATTEND_SCRATCH: RefCell<AttendScratch> = RefCell::new(AttendScratch::default());
}

impl Llama {
    pub fn load(g: &mut GgufFile) -> Result<Self, ModelError> {
        let cfg = LlamaConfig::from_gguf(g)?;
        let d = cfg.n_embd;
        let kv = cfg.kv_dim();
        let tok_embd = load_matrix(g, "token_embd.weight", cfg.vocab_size, d)?;
        let output = if g.tensor_info("output.weight").is_ok() {
            Some(load_matrix(g, "output.weight", cfg.vocab_size, d)?)
        } else {
            None
        };
        let quantization = quantization_name(g.tensor_dtype("blk.0.attn_q.weight")?);
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let name = |t: &str| format!("blk.{i}.{t}.weight");
            let wqkv = fuse(
                g,
                &[
                    (name("attn_q"), d),
                    (name("attn_k"), kv),
                    (name("attn_v"), kv),
                ],
                d,
            )?;
            let w_gate_up = fuse(
                g,
                &[(name("ffn_gate"), cfg.n_ff), (name("ffn_up"), cfg.n_ff)],
                d,
            )?;
            layers.push(Layer {
                attn_norm: load_vector(g, &name("attn_norm"), d)?,
                wqkv,
                wo: load_matrix(g, &name("attn_output"), d, d)?,
                ffn_norm: load_vector(g, &name("ffn_norm"), d)?,
                w_gate_up,
                w_down: load_matrix(g, &name("ffn_down"), d, cfg.n_ff)?,
            });
        }
        let output_norm = load_vector(g, "output_norm.weight", d)?;
        let rope = rope_table(&cfg);
        Ok(Self {
            cfg,
            tok_embd,
            layers,
            output_norm,
            output,
            rope,
            quantization,
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Quantization of the layer weights, e.g. "Q4_1".
    pub fn quantization(&self) -> &str {
        &self.quantization
    }

    /// Bytes of weights held in memory.
    pub fn weight_bytes(&self) -> usize {
        let mats = self.layers.iter().map(|l| {
            l.wqkv.size_bytes()
                + l.wo.size_bytes()
                + l.w_gate_up.size_bytes()
                + l.w_down.size_bytes()
        });
        mats.sum::<usize>()
            + self.tok_embd.size_bytes()
            + self.output.as_ref().map_or(0, |o| o.size_bytes())
    }

    pub fn new_cache(&self, capacity: usize) -> KvCache {
        KvCache::new(self.cfg.n_layer, self.cfg.kv_dim(), capacity)
    }

    /// Runs every sequence's new tokens through the model in one batched pass,
    /// appends their keys/values to the caches and writes logits to `ws.logits`:
    /// one row per sequence ([`LogitsFor::LastToken`]) or per token.
    pub fn forward(
        &self,
        seqs: &mut [SeqInput<'_>],
        ws: &mut Workspace,
        logits_for: LogitsFor,
    ) -> Result<(), ModelError> {
        let cfg = &self.cfg;
        let d = cfg.n_embd;
        let kv = cfg.kv_dim();
        let qkv_w = d + 2 * kv;

        ws.rows.clear();
        for (s, seq) in seqs.iter().enumerate() {
            seq.cache.check_room(seq.tokens.len())?;
            let start = seq.cache.len();
            if start + seq.tokens.len() > cfg.context_length {
                return Err(ModelError::Config(format!(
                    "sequence of {} tokens exceeds the context of {}",
                    start + seq.tokens.len(),
                    cfg.context_length
                )));
            }
            ws.rows
                .extend((0..seq.tokens.len()).map(|i| (s, start + i)));
        }
        let n = ws.rows.len();
        if n == 0 {
            ws.logits.clear();
            return Ok(());
        }

        ws.x.resize(n * d, 0.0);
        let tokens = seqs.iter().flat_map(|s| s.tokens.iter());
        for (row, &tok) in ws.x.chunks_exact_mut(d).zip(tokens) {
            if tok as usize >= cfg.vocab_size {
                return Err(ModelError::TokenOutOfRange(tok));
            }
            self.tok_embd.dequantize_row(tok as usize, row);
        }
        ws.xb.resize(n * d, 0.0);
        ws.qkv.resize(n * qkv_w, 0.0);
        ws.attn.resize(n * d, 0.0);
        ws.proj.resize(n * d, 0.0);
        let ffn_rows = n.min(FFN_CHUNK_ROWS);
        ws.gate_up.resize(ffn_rows * 2 * cfg.n_ff, 0.0);
        ws.ffn.resize(ffn_rows * cfg.n_ff, 0.0);

        for (li, layer) in self.layers.iter().enumerate() {
            rms_norm_rows(&ws.x, &layer.attn_norm, cfg.rms_eps, d, &mut ws.xb);
            layer.wqkv.matmul(&ws.xb, n, &mut ws.qkv, &mut ws.scratch);
            self.apply_rope(&mut ws.qkv, &ws.rows, qkv_w);

            // Append this layer's keys/values, sequence by sequence.
            let mut row = 0;
            for seq in seqs.iter_mut() {
                for i in 0..seq.tokens.len() {
                    let q = &ws.qkv[(row + i) * qkv_w..(row + i + 1) * qkv_w];
                    seq.cache.write(li, i, &q[d..d + kv], &q[d + kv..]);
                }
                row += seq.tokens.len();
            }

            self.attention(seqs, li, ws);
            layer.wo.matmul(&ws.attn, n, &mut ws.proj, &mut ws.scratch);
            add_in_place(&mut ws.x, &ws.proj);

            rms_norm_rows(&ws.x, &layer.ffn_norm, cfg.rms_eps, d, &mut ws.xb);
            // The FFN is row-independent and its activations are the widest
            // (3 × n_ff per row): run it in chunks so a big prefill does not
            // hold (and keep) tens of MB of buffers.
            for start in (0..n).step_by(FFN_CHUNK_ROWS) {
                let rows = FFN_CHUNK_ROWS.min(n - start);
                let gate_up = &mut ws.gate_up[..rows * 2 * cfg.n_ff];
                let ffn = &mut ws.ffn[..rows * cfg.n_ff];
                layer.w_gate_up.matmul(
                    &ws.xb[start * d..(start + rows) * d],
                    rows,
                    gate_up,
                    &mut ws.scratch,
                );
                for (gu, h) in gate_up
                    .chunks_exact(2 * cfg.n_ff)
                    .zip(ffn.chunks_exact_mut(cfg.n_ff))
                {
                    kernels::ops::silu_mul(gu, cfg.n_ff, h);
                }
                layer.w_down.matmul(
                    ffn,
                    rows,
                    &mut ws.proj[start * d..(start + rows) * d],
                    &mut ws.scratch,
                );
            }
            add_in_place(&mut ws.x, &ws.proj);
        }
        for seq in seqs.iter_mut() {
            seq.cache.advance(seq.tokens.len());
        }

        // Final norm and output projection, only on the rows that need logits.
        let out_rows: Vec<usize> = match logits_for {
            LogitsFor::AllTokens => (0..n).collect(),
            LogitsFor::LastToken => {
                let mut end = 0;
                seqs.iter()
                    .map(|s| {
                        end += s.tokens.len();
                        end - 1
                    })
                    .collect()
            }
        };
        let m = out_rows.len();
        ws.xb.resize(m * d, 0.0);
        for (i, &r) in out_rows.iter().enumerate() {
            kernels::ops::rms_norm(
                &ws.x[r * d..(r + 1) * d],
                &self.output_norm,
                cfg.rms_eps,
                &mut ws.xb[i * d..(i + 1) * d],
            );
        }
        ws.logits.resize(m * cfg.vocab_size, 0.0);
        let head = self.output.as_ref().unwrap_or(&self.tok_embd);
        head.matmul(&ws.xb[..m * d], m, &mut ws.logits, &mut ws.scratch);
        Ok(())
    }

    /// Rotates q and k of every row by its position (GGUF llama: adjacent pairs).
    fn apply_rope(&self, qkv: &mut [f32], rows: &[(usize, usize)], qkv_w: usize) {
        let cfg = &self.cfg;
        let hd = cfg.head_dim;
        let half = hd / 2;
        let heads = cfg.n_head + cfg.n_kv_head;
        for (row, &(_, pos)) in qkv.chunks_exact_mut(qkv_w).zip(rows) {
            let table = &self.rope[pos * half..(pos + 1) * half];
            for h in 0..heads {
                let head = &mut row[h * hd..(h + 1) * hd];
                for (pair, &(cos, sin)) in head.chunks_exact_mut(2).zip(table) {
                    let (a, b) = (pair[0], pair[1]);
                    pair[0] = a * cos - b * sin;
                    pair[1] = a * sin + b * cos;
                }
            }
        }
    }

    /// Causal attention of every packed row against its own sequence's cache,
    /// parallel over rows and KV heads.
    fn attention(&self, seqs: &[SeqInput<'_>], layer: usize, ws: &mut Workspace) {
        let cfg = &self.cfg;
        let (d, hd, kv) = (cfg.n_embd, cfg.head_dim, cfg.kv_dim());
        let qkv_w = d + 2 * kv;
        let group = cfg.n_head / cfg.n_kv_head;
        let scale = 1.0 / (hd as f32).sqrt();
        let caches: Vec<_> = seqs
            .iter()
            .map(|s| s.cache.layer(layer, s.cache.len() + s.tokens.len()))
            .collect();
        let qkv = &ws.qkv;
        let rows = &ws.rows;
        // One task per (row, KV head): the query heads `kvh * group ..` that share
        // KV head `kvh` sit side by side, so each task owns one `width`-float
        // slice of the output, and a single decoding sequence still spreads its
        // attention over every thread.
        let width = group * hd;
        let n_kv = cfg.n_kv_head;
        // On the kernels' own threads: a second pool would fight them for the cores.
        kernels::parallel_chunks_mut(&mut ws.attn, width, |task, out| {
            let (r, kvh) = (task / n_kv, task % n_kv);
            let (s, pos) = rows[r];
            let (keys, values) = caches[s];
            let q = &qkv[r * qkv_w + kvh * width..r * qkv_w + (kvh + 1) * width];
            let head = KvHead {
                keys: &keys[kvh * hd..],
                values: &values[kvh * hd..],
                stride: kv,
                head_dim: hd,
            };
            ATTEND_SCRATCH.with(|cell| {
                attend_group(q, head, pos + 1, scale, &mut cell.borrow_mut(), out);
            });
        });
    }
}

fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, d: usize, out: &mut [f32]) {
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        kernels::ops::rms_norm(xr, w, eps, or);
    }
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

fn rope_table(cfg: &LlamaConfig) -> Vec<(f32, f32)> {
    let half = cfg.head_dim / 2;
    let inv_freq: Vec<f64> = (0..half)
        .map(|i| 1.0 / (cfg.rope_theta as f64).powf(2.0 * i as f64 / cfg.head_dim as f64))
        .collect();
    let mut table = Vec::with_capacity(cfg.context_length * half);
    for pos in 0..cfg.context_length {
        for f in &inv_freq {
            let (sin, cos) = (pos as f64 * f).sin_cos();
            table.push((cos as f32, sin as f32));
        }
    }
    table
}

fn quantization_name(dtype: GgmlDType) -> String {
    format!("{dtype:?}").to_uppercase()
}

fn check_dims(g: &GgufFile, name: &str, rows: usize, cols: usize) -> Result<(), ModelError> {
    let dims = g.tensor_info(name)?.shape.dims().to_vec();
    let ok = match dims.as_slice() {
        [r, c] => *r == rows && *c == cols,
        [c] => rows == 1 && *c == cols,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ModelError::Shape {
            name: name.to_owned(),
            dims,
            expected: format!("[{rows}, {cols}]"),
        })
    }
}

fn load_vector(g: &mut GgufFile, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
    check_dims(g, name, 1, len)?;
    Ok(g.tensor_f32(name)?)
}

fn load_matrix(
    g: &mut GgufFile,
    name: &str,
    rows: usize,
    cols: usize,
) -> Result<QMatrix, ModelError> {
    check_dims(g, name, rows, cols)?;
    let kernel = |source| ModelError::Kernel {
        name: name.to_owned(),
        source,
    };
    match g.tensor_dtype(name)? {
        GgmlDType::Q4_1 => QMatrix::from_q4_1_bytes(rows, cols, &g.tensor_bytes(name)?),
        GgmlDType::Q8_0 => QMatrix::from_q8_0_bytes(rows, cols, &g.tensor_bytes(name)?),
        _ => QMatrix::from_f32(rows, cols, g.tensor_f32(name)?),
    }
    .map_err(kernel)
}

/// Loads matrices that share an input and stacks their rows into one, so they
/// run as one matmul. Mixed formats are dequantized to f32 first.
fn fuse(g: &mut GgufFile, parts: &[(String, usize)], cols: usize) -> Result<QMatrix, ModelError> {
    let mut mats = Vec::with_capacity(parts.len());
    for (name, rows) in parts {
        mats.push(load_matrix(g, name, *rows, cols)?);
    }
    let same = mats.windows(2).all(|w| w[0].format() == w[1].format());
    if !same {
        mats = mats
            .into_iter()
            .map(|m| {
                let mut data = vec![0.0; m.rows() * cols];
                for (r, row) in data.chunks_exact_mut(cols).enumerate() {
                    m.dequantize_row(r, row);
                }
                QMatrix::from_f32(m.rows(), cols, data)
            })
            .collect::<Result<_, _>>()
            .map_err(|source| ModelError::Kernel {
                name: parts[0].0.clone(),
                source,
            })?;
    }
    QMatrix::concat_rows(mats).map_err(|source| ModelError::Kernel {
        name: parts[0].0.clone(),
        source,
    })
}
