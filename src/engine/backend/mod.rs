//! The seam between the engine and whatever computes the model.
//!
//! The runner knows only [`Backend`]: the model's [`ModelConfig`], a
//! [`BackendInfo`] for `/info` and telemetry, a KV pool of fixed-size blocks, and
//! one batched forward over packed sequences that returns the logits of the rows
//! asked for. Which blocks a sequence uses is decided by [`super::kv`], above
//! every backend, so prefix caching works the same on each.
//!
//! - [`native`]: candlelight's own CPU kernels (Q4_0/Q4_1/Q5_0/Q8_0 and K-quants,
//!   AVX-512 VNNI / AVX2 / scalar).
//! - [`candle`]: candle-core tensors and `QMatMul`, on the CPU or, with the `cuda`
//!   feature, an NVIDIA GPU; it runs every tensor type candle reads.

pub mod candle;
pub mod native;

use std::fmt;
use std::path::Path;

use serde::Serialize;

use super::config::{ConfigError, ModelConfig};
use super::gguf::{GgufError, GgufFile};
use super::kv::BlockId;

/// Errors from loading or running a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("tensor `{name}`: {detail}")]
    Tensor { name: String, detail: String },
    #[error("token id {0} is outside the vocabulary")]
    TokenOutOfRange(u32),
    #[error("sequence of {len} positions exceeds the model context of {context}")]
    ContextExceeded { len: usize, context: usize },
    #[error("KV block table too short: {have} blocks for {positions} positions")]
    BlockTable { have: usize, positions: usize },
    #[error("KV pool not allocated (or too small: block {0} out of range)")]
    KvPool(BlockId),
    #[error("device: {0}")]
    Device(String),
    #[error("{0}")]
    Unsupported(String),
}

/// Which rows of a chunk get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    /// None (a prompt chunk that does not end the prompt).
    Nothing,
    /// The chunk's last token (serving).
    LastToken,
    /// Every token (teacher forcing, scoring).
    AllTokens,
}

impl LogitsFor {
    fn rows(self, tokens: usize) -> usize {
        match self {
            LogitsFor::Nothing => 0,
            LogitsFor::LastToken => 1,
            LogitsFor::AllTokens => tokens,
        }
    }
}

/// One sequence's part of a forward pass: `tokens` at positions `start..`, whose
/// keys and values are appended to the blocks of `blocks`.
#[derive(Debug, Clone, Copy)]
pub struct SeqChunk<'a> {
    pub tokens: &'a [u32],
    /// Positions already in the KV cache: the first token's position.
    pub start: usize,
    /// Block table covering positions `0..start + tokens.len()`.
    pub blocks: &'a [BlockId],
    pub logits: LogitsFor,
}

/// Checks what every backend relies on, so each can assume it.
pub fn check_chunks(
    chunks: &[SeqChunk<'_>],
    cfg: &ModelConfig,
    block_size: usize,
) -> Result<(), BackendError> {
    for c in chunks {
        let len = c.start + c.tokens.len();
        if len > cfg.context_length {
            return Err(BackendError::ContextExceeded {
                len,
                context: cfg.context_length,
            });
        }
        if c.blocks.len() * block_size < len {
            return Err(BackendError::BlockTable {
                have: c.blocks.len(),
                positions: len,
            });
        }
        if let Some(&t) = c.tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(BackendError::TokenOutOfRange(t));
        }
    }
    Ok(())
}

/// Logit rows `chunks` ask for, in chunk order.
pub fn logit_rows(chunks: &[SeqChunk<'_>]) -> usize {
    chunks.iter().map(|c| c.logits.rows(c.tokens.len())).sum()
}

/// How one GGUF tensor type is computed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorKernel {
    /// GGUF type, e.g. `Q4_K`.
    pub tensor_type: String,
    /// What serves it, e.g. `q4_1 avx512vnni` or `candle QMatMul`; `f32 (dequantized)`
    /// when no quantized kernel exists.
    pub kernel: String,
    /// Matrices of this type.
    pub tensors: usize,
    /// Bytes they take in memory.
    pub bytes: usize,
}

/// What a backend tells `/info`, the startup log and telemetry about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendInfo {
    /// `native` or `candle`.
    pub backend: &'static str,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// CPU model or GPU name.
    pub device_name: String,
    /// SIMD path (`avx512vnni`, `avx2`, `scalar`) or CUDA compute capability (`sm_90`).
    pub compute: String,
    /// Compute threads on the host.
    pub threads: usize,
    pub kernels: Vec<TensorKernel>,
    pub weight_bytes: usize,
}

/// Computes a model. Owned by the engine thread.
pub trait Backend: Send {
    fn config(&self) -> &ModelConfig;

    fn info(&self) -> BackendInfo;

    /// Device memory free for a KV pool, when the device can tell (GPUs); used by
    /// `--kv-memory-fraction`.
    fn free_memory_bytes(&self) -> Option<usize> {
        None
    }

    /// Allocates the KV pool: `blocks` blocks of `block_size` positions each.
    /// Called once, before the first forward.
    fn allocate_kv(&mut self, block_size: usize, blocks: usize) -> Result<(), BackendError>;

    /// Runs every chunk's tokens through the model in one batched pass, writes
    /// their keys and values into their blocks, and puts the logits of the rows
    /// asked for into `logits` (`vocab_size` floats per row, in chunk order).
    fn forward(
        &mut self,
        chunks: &[SeqChunk<'_>],
        logits: &mut Vec<f32>,
    ) -> Result<(), BackendError>;
}

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = String;

    /// `cpu`, `cuda` (device 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("`{s}`: expected cpu, cuda or cuda:N")),
        }
    }
}

/// Which backend computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Native,
    Candle,
    /// `native` on the CPU when it has kernels for every matmul tensor type in
    /// the file, else `candle`.
    Auto,
}

impl std::str::FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "native" => Ok(BackendKind::Native),
            "candle" => Ok(BackendKind::Candle),
            "auto" => Ok(BackendKind::Auto),
            _ => Err(format!("`{s}`: expected native, candle or auto")),
        }
    }
}

/// A backend loaded from a GGUF file, and why it was chosen.
pub struct Loaded {
    pub backend: Box<dyn Backend>,
    pub reason: String,
}

/// Loads the model onto `device` with the backend `kind` asks for (see
/// [`BackendKind::Auto`]). With `synthetic = Some(seed)`, the candle backend
/// serves seeded random weights of the file's shape ([`candle::synthetic`]).
pub fn load(
    g: &mut GgufFile,
    path: &Path,
    device: Device,
    kind: BackendKind,
    threads: usize,
    synthetic: Option<u64>,
) -> Result<Loaded, BackendError> {
    let native_types = native::unsupported_matmul_types(g);
    let (use_native, reason) = match (kind, device) {
        (BackendKind::Native, _) if synthetic.is_some() => {
            return Err(BackendError::Unsupported(
                "synthetic weights need the candle backend (--backend candle or auto)".into(),
            ))
        }
        (BackendKind::Auto, _) if synthetic.is_some() => {
            (false, "auto: synthetic weights need the candle backend".to_owned())
        }
        (BackendKind::Native, Device::Cuda(_)) => {
            return Err(BackendError::Unsupported(
                "the native backend runs on the CPU only; use --backend candle (or auto) with --device cuda".into(),
            ))
        }
        (BackendKind::Native, Device::Cpu) => (true, "--backend native".to_owned()),
        (BackendKind::Candle, _) => (false, "--backend candle".to_owned()),
        (BackendKind::Auto, Device::Cuda(_)) => {
            (false, format!("auto: {device} needs the candle backend"))
        }
        (BackendKind::Auto, Device::Cpu) if native_types.is_empty() => (
            true,
            "auto: native kernels exist for every matmul tensor type in the file".to_owned(),
        ),
        (BackendKind::Auto, Device::Cpu) => (
            false,
            format!(
                "auto: no native kernel for tensor types {}; candle runs them",
                native_types.join(", ")
            ),
        ),
    };
    if matches!(device, Device::Cuda(_)) && !cfg!(feature = "cuda") {
        return Err(BackendError::Unsupported(format!(
            "--device {device}: this binary was built without the `cuda` feature; \
             scripts/build-cuda.sh builds one (docs/gpu.md)"
        )));
    }
    let backend: Box<dyn Backend> = if use_native {
        Box::new(native::NativeBackend::load(g, threads)?)
    } else {
        Box::new(candle::CandleBackend::load(
            g, path, device, threads, synthetic,
        )?)
    };
    Ok(Loaded { backend, reason })
}
