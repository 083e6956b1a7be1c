//! A llama-family decoder on the native kernels, with a batched forward pass.
//!
//! Rows of every sequence in a step are packed into one activation matrix, so
//! each weight matrix is streamed once per step however many sequences ride in
//! it. Attention runs per (row, KV head) against the row's own sequence's blocks
//! in the [`KvPool`]; the model itself holds no per-sequence state.
//!
//! q|k|v and gate|up are fused into one matrix each at load when their formats
//! agree, so they run as one matmul; mixed formats stay separate matrices.

use std::cell::RefCell;

use crate::engine::backend::{BackendError, LogitsFor, SeqChunk};
use crate::engine::config::ModelConfig;
use crate::engine::kernels::attention::{attend_group, AttendScratch, KvHead};
use crate::engine::kernels::{self, MatmulScratch};

use super::kv_pool::KvPool;
use super::weights::ModelWeights;

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
    /// Per packed row: (chunk index, position, KV slot).
    rows: Vec<Row>,
    scratch: MatmulScratch,
    /// Split matmuls (mixed formats) land here before being interleaved.
    parts: Vec<f32>,
}

#[derive(Clone, Copy)]
struct Row {
    chunk: usize,
    pos: usize,
    slot: usize,
}

/// Rows the FFN processes at a time: enough to reuse each weight block across
/// many rows, small enough to bound its buffers (~4.7 MB for SmolLM2).
const FFN_CHUNK_ROWS: usize = 256;

thread_local! {
    static ATTEND_SCRATCH: RefCell<AttendScratch> = RefCell::new(AttendScratch::default());
}

/// The model: weights plus the RoPE table. Immutable after load.
pub struct Llama {
    cfg: ModelConfig,
    weights: ModelWeights,
    /// cos/sin per (position, pair), filled for the whole context at load.
    rope: Vec<(f32, f32)>,
}

impl Llama {
    pub fn new(cfg: ModelConfig, weights: ModelWeights) -> Self {
        let rope = cfg.rope_table();
        Self { cfg, weights, rope }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn weights(&self) -> &ModelWeights {
        &self.weights
    }

    /// Runs every chunk's tokens through the model, writes their keys and values
    /// into `kv`, and appends the requested logits rows to `logits`. The caller
    /// checked the chunks ([`crate::engine::backend::check_chunks`]).
    pub fn forward(
        &self,
        chunks: &[SeqChunk<'_>],
        kv: &mut KvPool,
        ws: &mut Workspace,
        logits: &mut Vec<f32>,
    ) -> Result<(), BackendError> {
        logits.clear();
        self.pack_rows(chunks, kv, ws)?;
        if ws.rows.is_empty() {
            return Ok(());
        }
        self.embed(chunks, ws);
        for layer in 0..self.cfg.n_layer {
            self.layer(layer, chunks, kv, ws);
        }
        self.logits(chunks, ws, logits);
        Ok(())
    }

    /// Lists every packed row with its position and KV slot.
    fn pack_rows(
        &self,
        chunks: &[SeqChunk<'_>],
        kv: &KvPool,
        ws: &mut Workspace,
    ) -> Result<(), BackendError> {
        ws.rows.clear();
        for (c, chunk) in chunks.iter().enumerate() {
            for i in 0..chunk.tokens.len() {
                let pos = chunk.start + i;
                let slot = kv.slot(chunk.blocks, pos);
                if slot >= kv.blocks() * kv.block_size() {
                    return Err(BackendError::KvPool(chunk.blocks[pos / kv.block_size()]));
                }
                ws.rows.push(Row {
                    chunk: c,
                    pos,
                    slot,
                });
            }
        }
        Ok(())
    }

    fn embed(&self, chunks: &[SeqChunk<'_>], ws: &mut Workspace) {
        let (n, d) = (ws.rows.len(), self.cfg.n_embd);
        ws.x.resize(n * d, 0.0);
        let tokens = chunks.iter().flat_map(|c| c.tokens.iter());
        for (row, &tok) in ws.x.chunks_exact_mut(d).zip(tokens) {
            self.weights.tok_embd.dequantize_row(tok as usize, row);
        }
    }

    /// One transformer block over every packed row: attention, then the FFN.
    fn layer(&self, li: usize, chunks: &[SeqChunk<'_>], kv: &mut KvPool, ws: &mut Workspace) {
        let cfg = &self.cfg;
        let layer = &self.weights.layers[li];
        let (n, d, kv_dim) = (ws.rows.len(), cfg.n_embd, cfg.kv_dim());
        let qkv_w = d + 2 * kv_dim;
        ws.xb.resize(n * d, 0.0);
        ws.qkv.resize(n * qkv_w, 0.0);
        ws.attn.resize(n * d, 0.0);
        ws.proj.resize(n * d, 0.0);

        rms_norm_rows(&ws.x, &layer.attn_norm, cfg.rms_eps, d, &mut ws.xb);
        layer
            .wqkv
            .matmul(&ws.xb, n, &mut ws.qkv, &mut ws.scratch, &mut ws.parts);
        self.apply_rope(&mut ws.qkv, &ws.rows, qkv_w);
        for (row, q) in ws.rows.iter().zip(ws.qkv.chunks_exact(qkv_w)) {
            kv.write(li, row.slot, &q[d..d + kv_dim], &q[d + kv_dim..]);
        }
        self.attention(chunks, kv, li, ws);
        layer.wo.matmul(&ws.attn, n, &mut ws.proj, &mut ws.scratch);
        add_in_place(&mut ws.x, &ws.proj);

        rms_norm_rows(&ws.x, &layer.ffn_norm, cfg.rms_eps, d, &mut ws.xb);
        self.ffn(li, ws);
        add_in_place(&mut ws.x, &ws.proj);
    }

    /// The FFN is row-independent and its activations are the widest (3 × n_ff
    /// per row): it runs in chunks of rows so a big prefill does not hold (and
    /// keep) tens of MB of buffers.
    fn ffn(&self, li: usize, ws: &mut Workspace) {
        let (n, d, n_ff) = (ws.rows.len(), self.cfg.n_embd, self.cfg.n_ff);
        let layer = &self.weights.layers[li];
        let chunk_rows = n.min(FFN_CHUNK_ROWS);
        ws.gate_up.resize(chunk_rows * 2 * n_ff, 0.0);
        ws.ffn.resize(chunk_rows * n_ff, 0.0);
        for start in (0..n).step_by(FFN_CHUNK_ROWS) {
            let rows = FFN_CHUNK_ROWS.min(n - start);
            let gate_up = &mut ws.gate_up[..rows * 2 * n_ff];
            let ffn = &mut ws.ffn[..rows * n_ff];
            layer.w_gate_up.matmul(
                &ws.xb[start * d..(start + rows) * d],
                rows,
                gate_up,
                &mut ws.scratch,
                &mut ws.parts,
            );
            for (gu, h) in gate_up
                .chunks_exact(2 * n_ff)
                .zip(ffn.chunks_exact_mut(n_ff))
            {
                kernels::ops::silu_mul(gu, n_ff, h);
            }
            layer.w_down.matmul(
                ffn,
                rows,
                &mut ws.proj[start * d..(start + rows) * d],
                &mut ws.scratch,
            );
        }
    }

    /// Final norm and output projection, only on the rows that want logits.
    fn logits(&self, chunks: &[SeqChunk<'_>], ws: &mut Workspace, logits: &mut Vec<f32>) {
        let (d, vocab) = (self.cfg.n_embd, self.cfg.vocab_size);
        let mut out_rows = Vec::new();
        let mut end = 0;
        for c in chunks {
            let start = end;
            end += c.tokens.len();
            match c.logits {
                LogitsFor::Nothing => {}
                LogitsFor::LastToken => out_rows.push(end - 1),
                LogitsFor::AllTokens => out_rows.extend(start..end),
            }
        }
        let m = out_rows.len();
        if m == 0 {
            return;
        }
        ws.xb.resize(m * d, 0.0);
        for (i, &r) in out_rows.iter().enumerate() {
            kernels::ops::rms_norm(
                &ws.x[r * d..(r + 1) * d],
                &self.weights.output_norm,
                self.cfg.rms_eps,
                &mut ws.xb[i * d..(i + 1) * d],
            );
        }
        logits.resize(m * vocab, 0.0);
        self.weights
            .output()
            .matmul(&ws.xb[..m * d], m, logits, &mut ws.scratch);
    }

    /// Rotates q and k of every row by its position (GGUF llama: adjacent pairs).
    fn apply_rope(&self, qkv: &mut [f32], rows: &[Row], qkv_w: usize) {
        let cfg = &self.cfg;
        let hd = cfg.head_dim;
        let half = hd / 2;
        let heads = cfg.n_head + cfg.n_kv_head;
        for (row, r) in qkv.chunks_exact_mut(qkv_w).zip(rows) {
            let pos = r.pos;
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

    /// Causal attention of every packed row against its own sequence's blocks,
    /// parallel over rows and KV heads.
    fn attention(&self, chunks: &[SeqChunk<'_>], kv: &KvPool, li: usize, ws: &mut Workspace) {
        let cfg = &self.cfg;
        let (d, hd, kv_dim) = (cfg.n_embd, cfg.head_dim, cfg.kv_dim());
        let qkv_w = d + 2 * kv_dim;
        let group = cfg.n_head / cfg.n_kv_head;
        let scale = 1.0 / (hd as f32).sqrt();
        let layer = kv.layer(li);
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
            let row = rows[r];
            let q = &qkv[r * qkv_w + kvh * width..r * qkv_w + (kvh + 1) * width];
            let head = KvHead {
                keys: &layer.keys[kvh * hd..],
                values: &layer.values[kvh * hd..],
                stride: layer.row,
                head_dim: hd,
                blocks: chunks[row.chunk].blocks,
                block_size: layer.block_size,
            };
            ATTEND_SCRATCH.with(|cell| {
                attend_group(q, head, row.pos + 1, scale, &mut cell.borrow_mut(), out);
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
