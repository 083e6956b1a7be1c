//! The candle backend: candle-core tensors and `QMatMul`, on the CPU or (with
//! the `cuda` feature) an NVIDIA GPU.
//!
//! It runs every tensor type candle reads, so any llama-family GGUF loads. Keys
//! and values live on the device in one f16 pool per layer (`[slot][kv_dim]`,
//! slot = block * block_size + offset), written with `scatter_set`; attention
//! gathers a sequence's slots through its block table. Only the logits rows the
//! runner asks for are copied back to the host.

pub mod compare;
pub mod synthetic;
mod weights;

use std::path::Path;

use candle_core::{DType, Device as CandleDevice, Module, Tensor};

use super::{
    check_chunks, logit_rows, Backend, BackendError, BackendInfo, Device, LogitsFor, SeqChunk,
};
use crate::engine::config::ModelConfig;
use crate::engine::gguf::GgufFile;
use weights::{CandleWeights, Layer};

impl From<candle_core::Error> for BackendError {
    fn from(e: candle_core::Error) -> Self {
        // candle appends a backtrace to the message when RUST_BACKTRACE is set.
        let message = e.to_string();
        BackendError::Device(message.lines().next().unwrap_or_default().to_owned())
    }
}

pub struct CandleBackend {
    cfg: ModelConfig,
    device: CandleDevice,
    location: Device,
    threads: usize,
    weights: CandleWeights,
    /// RoPE cos and sin, `[context][head_dim / 2]`, f32.
    cos: Tensor,
    sin: Tensor,
    /// Per layer: keys and values, `[slots][kv_dim]`, f16.
    kv: Vec<(Tensor, Tensor)>,
    block_size: usize,
}

/// The packed rows of one forward pass, as device tensors.
struct Batch {
    /// Token ids, positions and KV slots of every row.
    ids: Tensor,
    cos: Tensor,
    sin: Tensor,
    /// Each row's slot, repeated across `kv_dim` (the shape `scatter_set` wants).
    write_slots: Tensor,
    /// Per chunk: its first row, row count, first position, and the slots of
    /// positions `0..start + rows` (what its attention reads).
    chunks: Vec<(usize, usize, usize, Tensor)>,
}

impl CandleBackend {
    /// Loads `g`'s tensors onto `location`, or with `synthetic = Some(seed)`
    /// seeded random weights of `g`'s shape.
    pub fn load(
        g: &mut GgufFile,
        _path: &Path,
        location: Device,
        threads: usize,
        synthetic: Option<u64>,
    ) -> Result<Self, BackendError> {
        let device = match location {
            Device::Cpu => {
                // candle's CPU kernels use rayon's global pool; only the first
                // backend in a process gets to size it.
                let _ = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads.max(1))
                    .build_global();
                CandleDevice::Cpu
            }
            Device::Cuda(n) => CandleDevice::new_cuda(n)?,
        };
        let cfg = ModelConfig::from_gguf(g)?;
        let weights = CandleWeights::load(g, &cfg, &device, synthetic)?;
        let (cos, sin) = rope_tensors(&cfg, &device)?;
        Ok(Self {
            cfg,
            device,
            location,
            threads: if location == Device::Cpu {
                rayon::current_num_threads()
            } else {
                1
            },
            weights,
            cos,
            sin,
            kv: Vec::new(),
            block_size: 1,
        })
    }

    fn batch(&self, chunks: &[SeqChunk<'_>]) -> Result<Batch, BackendError> {
        let bs = self.block_size;
        let slot = |table: &[u32], pos: usize| (table[pos / bs] as usize * bs + pos % bs) as u32;
        let (mut ids, mut pos, mut slots, mut parts) = (vec![], vec![], vec![], vec![]);
        for c in chunks {
            let first_row = ids.len();
            ids.extend_from_slice(c.tokens);
            for p in c.start..c.start + c.tokens.len() {
                pos.push(p as u32);
                slots.push(slot(c.blocks, p));
            }
            let ctx: Vec<u32> = (0..c.start + c.tokens.len())
                .map(|p| slot(c.blocks, p))
                .collect();
            let ctx = Tensor::new(ctx, &self.device)?;
            parts.push((first_row, c.tokens.len(), c.start, ctx));
        }
        let n = ids.len();
        let pos = Tensor::new(pos, &self.device)?;
        let kv_dim = self.cfg.kv_dim();
        let write_slots = Tensor::new(slots, &self.device)?
            .unsqueeze(1)?
            .broadcast_as((n, kv_dim))?
            .contiguous()?;
        Ok(Batch {
            ids: Tensor::new(ids, &self.device)?,
            cos: self.cos.index_select(&pos, 0)?.unsqueeze(1)?,
            sin: self.sin.index_select(&pos, 0)?.unsqueeze(1)?,
            write_slots,
            chunks: parts,
        })
    }

    /// One transformer block over every row of the batch.
    fn layer(&self, li: usize, x: &Tensor, b: &Batch) -> Result<Tensor, BackendError> {
        let cfg = &self.cfg;
        let l: &Layer = &self.weights.layers[li];
        let n = x.dim(0)?;
        let h = candle_nn::ops::rms_norm(x, &l.attn_norm, cfg.rms_eps)?;
        let q = rope(&l.wq.forward(&h)?, n, cfg.n_head, cfg.head_dim, b)?;
        let k = rope(&l.wk.forward(&h)?, n, cfg.n_kv_head, cfg.head_dim, b)?;
        let v = l.wv.forward(&h)?;
        let (keys, values) = &self.kv[li];
        let kv_dim = cfg.kv_dim();
        keys.scatter_set(
            &b.write_slots,
            &k.reshape((n, kv_dim))?.to_dtype(DType::F16)?,
            0,
        )?;
        values.scatter_set(&b.write_slots, &v.to_dtype(DType::F16)?, 0)?;
        let parts = b
            .chunks
            .iter()
            .map(|(row, rows, start, ctx)| self.attend(&q, *row, *rows, *start, ctx, li))
            .collect::<Result<Vec<_>, _>>()?;
        let attn = Tensor::cat(&parts, 0)?;
        let x = (x + l.wo.forward(&attn)?)?;
        let h = candle_nn::ops::rms_norm(&x, &l.ffn_norm, cfg.rms_eps)?;
        let act = (candle_nn::ops::silu(&l.w_gate.forward(&h)?)? * l.w_up.forward(&h)?)?;
        Ok((x + l.w_down.forward(&act)?)?)
    }

    /// Causal attention of one chunk's rows over its sequence's cached positions.
    fn attend(
        &self,
        q: &Tensor,
        row: usize,
        rows: usize,
        start: usize,
        ctx: &Tensor,
        li: usize,
    ) -> Result<Tensor, BackendError> {
        let cfg = &self.cfg;
        let (hd, heads, kv_heads) = (cfg.head_dim, cfg.n_head, cfg.n_kv_head);
        let len = start + rows;
        let (keys, values) = &self.kv[li];
        let gather = |t: &Tensor| -> candle_core::Result<Tensor> {
            let t = t.index_select(ctx, 0)?.to_dtype(DType::F32)?;
            // (len, kv_heads, hd) → (heads, len, hd): each KV head serves the
            // `group` query heads next to each other (llama GQA).
            let t = t
                .reshape((len, kv_heads, hd))?
                .transpose(0, 1)?
                .unsqueeze(1)?;
            let t = t.broadcast_as((kv_heads, heads / kv_heads, len, hd))?;
            t.contiguous()?.reshape((heads, len, hd))
        };
        let (k, v) = (gather(keys)?, gather(values)?);
        // The query rounded to f16, as llama.cpp does before its f16 K dot products.
        let q = q.narrow(0, row, rows)?.transpose(0, 1)?.contiguous()?; // (heads, rows, hd)
        let q = q.to_dtype(DType::F16)?.to_dtype(DType::F32)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
        if rows > 1 {
            scores = scores.broadcast_add(&causal_mask(rows, start, &self.device)?)?;
        }
        let p = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = p.matmul(&v.contiguous()?)?; // (heads, rows, hd)
        Ok(out.transpose(0, 1)?.reshape((rows, heads * hd))?)
    }

    /// Final norm and output projection of the rows that want logits.
    fn logits(&self, x: &Tensor, chunks: &[SeqChunk<'_>]) -> Result<Option<Tensor>, BackendError> {
        let mut rows: Vec<u32> = Vec::new();
        let mut end = 0u32;
        for c in chunks {
            let start = end;
            end += c.tokens.len() as u32;
            match c.logits {
                LogitsFor::Nothing => {}
                LogitsFor::LastToken => rows.push(end - 1),
                LogitsFor::AllTokens => rows.extend(start..end),
            }
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let x = x.index_select(&Tensor::new(rows, &self.device)?, 0)?;
        let h = candle_nn::ops::rms_norm(&x, &self.weights.output_norm, self.cfg.rms_eps)?;
        Ok(Some(self.weights.output.forward(&h)?))
    }
}

/// Rotates adjacent pairs of each head of `x` (`[n][heads * hd]`) by its row's
/// position; returns `[n][heads][hd]`.
fn rope(x: &Tensor, n: usize, heads: usize, hd: usize, b: &Batch) -> candle_core::Result<Tensor> {
    let x = x.reshape((n, heads, 1, hd))?.contiguous()?;
    candle_nn::rotary_emb::rope_i(&x, &b.cos, &b.sin)?.reshape((n, heads, hd))
}

/// `[rows][start + rows]`: 0 where row `i` (position `start + i`) may look, -inf after.
fn causal_mask(rows: usize, start: usize, device: &CandleDevice) -> candle_core::Result<Tensor> {
    let len = start + rows;
    let mask: Vec<f32> = (0..rows)
        .flat_map(|i| {
            (0..len).map(move |j| {
                if j > start + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (rows, len), device)
}

fn rope_tensors(cfg: &ModelConfig, device: &CandleDevice) -> candle_core::Result<(Tensor, Tensor)> {
    let table = cfg.rope_table();
    let half = cfg.head_dim / 2;
    let cos: Vec<f32> = table.iter().map(|p| p.0).collect();
    let sin: Vec<f32> = table.iter().map(|p| p.1).collect();
    Ok((
        Tensor::from_vec(cos, (cfg.context_length, half), device)?,
        Tensor::from_vec(sin, (cfg.context_length, half), device)?,
    ))
}

impl Backend for CandleBackend {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn info(&self) -> BackendInfo {
        let (device_name, compute) = weights::device_facts(&self.device);
        BackendInfo {
            backend: "candle",
            device: self.location.to_string(),
            device_name,
            compute,
            threads: self.threads,
            kernels: self.weights.kernels.clone(),
            weight_bytes: self.weights.bytes,
        }
    }

    fn free_memory_bytes(&self) -> Option<usize> {
        weights::free_memory(&self.device)
    }

    fn allocate_kv(&mut self, block_size: usize, blocks: usize) -> Result<(), BackendError> {
        let shape = (blocks * block_size, self.cfg.kv_dim());
        self.kv = (0..self.cfg.n_layer)
            .map(|_| {
                Ok((
                    Tensor::zeros(shape, DType::F16, &self.device)?,
                    Tensor::zeros(shape, DType::F16, &self.device)?,
                ))
            })
            .collect::<Result<_, candle_core::Error>>()?;
        self.block_size = block_size;
        Ok(())
    }

    fn forward(
        &mut self,
        chunks: &[SeqChunk<'_>],
        logits: &mut Vec<f32>,
    ) -> Result<(), BackendError> {
        logits.clear();
        check_chunks(chunks, &self.cfg, self.block_size)?;
        if chunks.iter().all(|c| c.tokens.is_empty()) {
            return Ok(());
        }
        let b = self.batch(chunks)?;
        let mut x = self.weights.embed.index_select(&b.ids, 0)?;
        for li in 0..self.cfg.n_layer {
            x = self.layer(li, &x, &b)?;
        }
        if let Some(out) = self.logits(&x, chunks)? {
            debug_assert_eq!(out.dim(0)?, logit_rows(chunks));
            // The one copy back to the host: the rows the sampler needs.
            logits.extend(out.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(())
    }
}
