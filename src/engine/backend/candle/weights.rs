//! Loading a llama GGUF into candle tensors on a device.

use std::collections::BTreeMap;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device as CandleDevice, Tensor};

use crate::engine::backend::native::type_name;
use crate::engine::backend::{BackendError, TensorKernel};
use crate::engine::config::ModelConfig;
use crate::engine::gguf::GgufFile;

use super::synthetic;

pub struct Layer {
    pub attn_norm: Tensor,
    pub wq: QMatMul,
    pub wk: QMatMul,
    pub wv: QMatMul,
    pub wo: QMatMul,
    pub ffn_norm: Tensor,
    pub w_gate: QMatMul,
    pub w_up: QMatMul,
    pub w_down: QMatMul,
}

pub struct CandleWeights {
    /// Token embeddings, dequantized to f32 for row lookups.
    pub embed: Tensor,
    pub layers: Vec<Layer>,
    pub output_norm: Tensor,
    pub output: QMatMul,
    pub kernels: Vec<TensorKernel>,
    pub bytes: usize,
}

/// Reads tensors onto the device and records how each type is served.
struct Loader<'a> {
    g: &'a mut GgufFile,
    device: &'a CandleDevice,
    /// `Some(seed)`: tensors come from [`synthetic`], not from the file.
    synthetic: Option<(u64, &'a ModelConfig)>,
    served: BTreeMap<String, TensorKernel>,
    bytes: usize,
}

impl CandleWeights {
    /// Loads the file's tensors, or with `synthetic = Some(seed)` seeded random
    /// ones of the model's shape (see [`synthetic`]).
    pub fn load(
        g: &mut GgufFile,
        cfg: &ModelConfig,
        device: &CandleDevice,
        synthetic: Option<u64>,
    ) -> Result<Self, BackendError> {
        let mut l = Loader {
            g,
            device,
            synthetic: synthetic.map(|seed| (seed, cfg)),
            served: BTreeMap::new(),
            bytes: 0,
        };
        let tok = l.qtensor("token_embd.weight")?;
        let embed = tok.dequantize(device)?;
        l.bytes += embed.elem_count() * 4;
        let output = if l.synthetic.is_none() && l.g.tensor_info("output.weight").is_ok() {
            l.matmul("output.weight")?
        } else {
            // Tied to the embedding: the quantized copy serves the projection.
            l.record(&tok);
            QMatMul::from_qtensor(tok)?
        };
        let layers = (0..cfg.n_layer)
            .map(|i| l.layer(i))
            .collect::<Result<Vec<_>, _>>()?;
        let output_norm = l.vector("output_norm.weight")?;
        Ok(Self {
            embed,
            layers,
            output_norm,
            output,
            kernels: l.served.into_values().collect(),
            bytes: l.bytes,
        })
    }
}

impl Loader<'_> {
    fn layer(&mut self, i: usize) -> Result<Layer, BackendError> {
        let name = |t: &str| format!("blk.{i}.{t}.weight");
        Ok(Layer {
            attn_norm: self.vector(&name("attn_norm"))?,
            wq: self.matmul(&name("attn_q"))?,
            wk: self.matmul(&name("attn_k"))?,
            wv: self.matmul(&name("attn_v"))?,
            wo: self.matmul(&name("attn_output"))?,
            ffn_norm: self.vector(&name("ffn_norm"))?,
            w_gate: self.matmul(&name("ffn_gate"))?,
            w_up: self.matmul(&name("ffn_up"))?,
            w_down: self.matmul(&name("ffn_down"))?,
        })
    }

    fn qtensor(&mut self, name: &str) -> Result<QTensor, BackendError> {
        match self.synthetic {
            Some((seed, cfg)) => synthetic::qtensor(cfg, seed, name, self.device),
            None => Ok(self.g.qtensor(name, self.device)?),
        }
    }

    fn vector(&mut self, name: &str) -> Result<Tensor, BackendError> {
        let t = self.qtensor(name)?.dequantize(self.device)?;
        self.bytes += t.elem_count() * 4;
        Ok(t)
    }

    fn matmul(&mut self, name: &str) -> Result<QMatMul, BackendError> {
        let q = self.qtensor(name)?;
        self.record(&q);
        Ok(QMatMul::from_qtensor(q)?)
    }

    fn record(&mut self, q: &QTensor) {
        let dtype = q.dtype();
        let kernel = match dtype {
            // QMatMul dequantizes these and runs a plain matmul.
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => "candle matmul",
            _ => "candle QMatMul",
        };
        let bytes = q.storage_size_in_bytes();
        self.bytes += bytes;
        let entry = self
            .served
            .entry(type_name(dtype))
            .or_insert_with(|| TensorKernel {
                tensor_type: type_name(dtype),
                kernel: kernel.to_owned(),
                tensors: 0,
                bytes: 0,
            });
        entry.tensors += 1;
        entry.bytes += bytes;
    }
}

/// The device's name and compute capability (or the CPU's model and SIMD).
pub fn device_facts(device: &CandleDevice) -> (String, String) {
    match device {
        #[cfg(feature = "cuda")]
        CandleDevice::Cuda(d) => cuda::facts(d),
        _ => {
            let simd = if candle_core::utils::with_avx() {
                "avx"
            } else {
                "scalar"
            };
            (crate::engine::backend::native::cpu_name(), simd.to_owned())
        }
    }
}

/// Free device memory (GPUs).
pub fn free_memory(device: &CandleDevice) -> Option<usize> {
    match device {
        #[cfg(feature = "cuda")]
        CandleDevice::Cuda(d) => cuda::free_memory(d),
        _ => None,
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::CudaDevice;

    pub fn facts(d: &CudaDevice) -> (String, String) {
        let stream = d.cuda_stream();
        let ctx = stream.context();
        let name = ctx
            .name()
            .unwrap_or_else(|_| format!("cuda:{}", ctx.ordinal()));
        let cap = ctx
            .compute_capability()
            .map_or_else(|_| "cuda".to_owned(), |(a, b)| format!("sm_{a}{b}"));
        (name, cap)
    }

    pub fn free_memory(d: &CudaDevice) -> Option<usize> {
        let stream = d.cuda_stream();
        stream
            .context()
            .mem_get_info()
            .ok()
            .map(|(free, _total)| free)
    }
}
