//! Model hyper-parameters, read from GGUF `llama.*` metadata. Every backend
//! computes the same architecture from the same numbers.

use super::gguf::{GgufError, GgufFile};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("unsupported architecture `{0}`: only `llama` is supported")]
    Architecture(String),
    #[error("invalid model hyper-parameters: {0}")]
    Invalid(String),
}

/// Hyper-parameters of a llama-family decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
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

/// Bytes of one cached key or value element (f16, like llama.cpp's default cache).
pub const KV_ELEMENT_BYTES: usize = 2;

impl ModelConfig {
    pub fn from_gguf(g: &GgufFile) -> Result<Self, ConfigError> {
        let arch = g.string("general.architecture")?;
        if arch != "llama" {
            return Err(ConfigError::Architecture(arch));
        }
        let n_embd = g.usize("llama.embedding_length")?;
        let n_head = g.usize("llama.attention.head_count")?;
        let n_kv_head = if g.has("llama.attention.head_count_kv") {
            g.usize("llama.attention.head_count_kv")?
        } else {
            n_head
        };
        if n_head == 0 || n_kv_head == 0 || n_embd % n_head != 0 || n_head % n_kv_head != 0 {
            return Err(ConfigError::Invalid(format!(
                "embedding {n_embd}, heads {n_head}, kv heads {n_kv_head}"
            )));
        }
        let head_dim = n_embd / n_head;
        if head_dim % 2 != 0 {
            return Err(ConfigError::Invalid(format!("odd head dim {head_dim}")));
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

    /// Elements per position per layer in the KV cache (keys or values).
    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }

    /// KV cache bytes one token position costs across all layers (keys and values).
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.n_layer * self.kv_dim() * KV_ELEMENT_BYTES
    }

    /// RoPE cos/sin per (position, pair) for the whole context, computed in f64
    /// (GGUF llama rotates adjacent pairs).
    pub fn rope_table(&self) -> Vec<(f32, f32)> {
        let half = self.head_dim / 2;
        let inv_freq: Vec<f64> = (0..half)
            .map(|i| 1.0 / f64::from(self.rope_theta).powf(2.0 * i as f64 / self.head_dim as f64))
            .collect();
        let mut table = Vec::with_capacity(self.context_length * half);
        for pos in 0..self.context_length {
            for f in &inv_freq {
                let (sin, cos) = (pos as f64 * f).sin_cos();
                table.push((cos as f32, sin as f32));
            }
        }
        table
    }

    /// The default model's shape (SmolLM2-135M), for synthetic weights and tests.
    pub fn smollm2_135m() -> Self {
        Self {
            n_layer: 30,
            n_embd: 576,
            n_head: 9,
            n_kv_head: 3,
            head_dim: 64,
            n_ff: 1536,
            vocab_size: 49_152,
            context_length: 8192,
            rope_theta: 100_000.0,
            rms_eps: 1e-5,
        }
    }
}
