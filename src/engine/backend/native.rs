//! The native CPU backend: candlelight's own kernels ([`crate::engine::kernels`]).

mod kv_pool;
pub mod model;
mod weights;

use candle_core::quantized::GgmlDType;

use super::{check_chunks, Backend, BackendError, BackendInfo, SeqChunk};
use crate::engine::config::ModelConfig;
use crate::engine::gguf::GgufFile;
use crate::engine::kernels::{self, QMatrix};
use kv_pool::KvPool;
use model::{Llama, Workspace};
use weights::ModelWeights;

pub use weights::type_name;

pub struct NativeBackend {
    model: Llama,
    kv: KvPool,
    ws: Workspace,
}

/// Matmul tensor types in the file that the native kernels would dequantize to f32.
pub fn unsupported_matmul_types(g: &GgufFile) -> Vec<String> {
    let mut types: Vec<String> = g
        .tensor_names()
        .filter(|name| name.ends_with(".weight") && !name.contains("norm"))
        .filter_map(|name| g.tensor_dtype(name).ok())
        .filter(|&t| !QMatrix::has_kernel(t) && t != GgmlDType::F32)
        .map(type_name)
        .collect();
    types.sort();
    types.dedup();
    types
}

impl NativeBackend {
    /// Loads the weights and sizes the kernels' thread pool (`threads` counts the
    /// engine thread, which takes part in every matmul).
    pub fn load(g: &mut GgufFile, threads: usize) -> Result<Self, BackendError> {
        if let Err(e) = kernels::init_thread_pool(threads) {
            // Only possible when a process serves twice (tests); the first pool stays.
            tracing::warn!(error = %e, "compute thread pool already running");
        }
        let cfg = ModelConfig::from_gguf(g)?;
        let weights = ModelWeights::load(g, &cfg)?;
        Ok(Self {
            model: Llama::new(cfg, weights),
            kv: KvPool::default(),
            ws: Workspace::default(),
        })
    }
}

impl Backend for NativeBackend {
    fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            backend: "native",
            device: "cpu".to_owned(),
            device_name: cpu_name(),
            compute: kernels::simd_level().to_owned(),
            threads: kernels::num_threads(),
            kernels: self.model.weights().kernels.clone(),
            weight_bytes: self.model.weights().bytes(),
        }
    }

    fn allocate_kv(&mut self, block_size: usize, blocks: usize) -> Result<(), BackendError> {
        if !block_size.is_power_of_two() {
            return Err(BackendError::Unsupported(format!(
                "KV block size {block_size}: the native backend needs a power of two"
            )));
        }
        let cfg = self.model.config();
        self.kv = KvPool::new(cfg.n_layer, cfg.kv_dim(), block_size, blocks);
        Ok(())
    }

    fn forward(
        &mut self,
        chunks: &[SeqChunk<'_>],
        logits: &mut Vec<f32>,
    ) -> Result<(), BackendError> {
        check_chunks(chunks, self.model.config(), self.kv.block_size().max(1))?;
        self.model
            .forward(chunks, &mut self.kv, &mut self.ws, logits)
    }
}

/// The CPU's model name from `/proc/cpuinfo` (Linux), else the architecture.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned())
}
