//! Loading a llama GGUF's weights into the native kernels' formats.
//!
//! Each tensor keeps its quantization when the kernels have a path for it
//! ([`QMatrix::from_gguf`]). Any other type candle can read is dequantized to
//! f32, with a warning that says what it costs: the `candle` backend is the
//! better choice for such files, and `--backend auto` picks it. Matrices that
//! share an input are fused when their types agree: their GGUF bytes, row-major,
//! concatenate into the fused tensor's.

use std::collections::BTreeMap;

use candle_core::quantized::GgmlDType;

use crate::engine::backend::{BackendError, TensorKernel};
use crate::engine::config::ModelConfig;
use crate::engine::gguf::GgufFile;
use crate::engine::kernels::{MatmulScratch, QMatrix};

/// Matrices that share an input: fused into one when their formats agree (one
/// matmul), else kept apart and their outputs interleaved into the fused layout.
pub enum LinearStack {
    Fused(QMatrix),
    Split(Vec<QMatrix>),
}

impl LinearStack {
    /// `out` (`n` × all parts' rows) as the fused matrix would compute it.
    pub fn matmul(
        &self,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        scratch: &mut MatmulScratch,
        buf: &mut Vec<f32>,
    ) {
        let parts = match self {
            LinearStack::Fused(m) => return m.matmul(x, n, out, scratch),
            LinearStack::Split(parts) => parts,
        };
        let width: usize = parts.iter().map(QMatrix::rows).sum();
        let mut offset = 0;
        for p in parts {
            buf.resize(n * p.rows(), 0.0);
            p.matmul(x, n, buf, scratch);
            for (dst, src) in out.chunks_exact_mut(width).zip(buf.chunks_exact(p.rows())) {
                dst[offset..offset + p.rows()].copy_from_slice(src);
            }
            offset += p.rows();
        }
    }

    fn matrices(&self) -> Vec<&QMatrix> {
        match self {
            LinearStack::Fused(m) => vec![m],
            LinearStack::Split(parts) => parts.iter().collect(),
        }
    }
}

pub struct Layer {
    pub attn_norm: Vec<f32>,
    /// Rows: q (n_embd) | k (kv_dim) | v (kv_dim).
    pub wqkv: LinearStack,
    pub wo: QMatrix,
    pub ffn_norm: Vec<f32>,
    /// Rows: gate (n_ff) | up (n_ff).
    pub w_gate_up: LinearStack,
    pub w_down: QMatrix,
}

pub struct ModelWeights {
    pub tok_embd: QMatrix,
    pub layers: Vec<Layer>,
    pub output_norm: Vec<f32>,
    /// `None` when the output projection is tied to the token embedding.
    pub output: Option<QMatrix>,
    /// How each GGUF tensor type is served.
    pub kernels: Vec<TensorKernel>,
}

impl ModelWeights {
    pub fn output(&self) -> &QMatrix {
        self.output.as_ref().unwrap_or(&self.tok_embd)
    }

    /// Bytes of weights held in memory.
    pub fn bytes(&self) -> usize {
        let norms = self.layers.len() * 2 + 1;
        self.matrices().map(QMatrix::size_bytes).sum::<usize>()
            + norms * self.output_norm.len() * size_of::<f32>()
    }

    fn matrices(&self) -> impl Iterator<Item = &QMatrix> {
        let layers = self.layers.iter().flat_map(|l| {
            let mut v = l.wqkv.matrices();
            v.extend(l.w_gate_up.matrices());
            v.extend([&l.wo, &l.w_down]);
            v
        });
        layers
            .chain(std::iter::once(&self.tok_embd))
            .chain(self.output.as_ref())
    }

    pub fn load(g: &mut GgufFile, cfg: &ModelConfig) -> Result<Self, BackendError> {
        let mut loader = Loader {
            g,
            served: BTreeMap::new(),
        };
        let (d, kv) = (cfg.n_embd, cfg.kv_dim());
        let tok_embd = loader.matrix("token_embd.weight", cfg.vocab_size, d)?;
        let output = if loader.g.tensor_info("output.weight").is_ok() {
            Some(loader.matrix("output.weight", cfg.vocab_size, d)?)
        } else {
            None
        };
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            layers.push(loader.layer(i, cfg, d, kv)?);
        }
        let output_norm = loader.vector("output_norm.weight", d)?;
        let kernels = loader.served.into_values().collect();
        Ok(Self {
            tok_embd,
            layers,
            output_norm,
            output,
            kernels,
        })
    }
}

/// Reads tensors and records how each type is served.
struct Loader<'a> {
    g: &'a mut GgufFile,
    served: BTreeMap<String, TensorKernel>,
}

impl Loader<'_> {
    fn layer(
        &mut self,
        i: usize,
        cfg: &ModelConfig,
        d: usize,
        kv: usize,
    ) -> Result<Layer, BackendError> {
        let name = |t: &str| format!("blk.{i}.{t}.weight");
        let (q, k, v) = (name("attn_q"), name("attn_k"), name("attn_v"));
        let (gate, up) = (name("ffn_gate"), name("ffn_up"));
        Ok(Layer {
            attn_norm: self.vector(&name("attn_norm"), d)?,
            wqkv: self.stack(&[(&q, d), (&k, kv), (&v, kv)], d)?,
            wo: self.matrix(&name("attn_output"), d, d)?,
            ffn_norm: self.vector(&name("ffn_norm"), d)?,
            w_gate_up: self.stack(&[(&gate, cfg.n_ff), (&up, cfg.n_ff)], d)?,
            w_down: self.matrix(&name("ffn_down"), d, cfg.n_ff)?,
        })
    }

    fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>, BackendError> {
        check_dims(self.g, name, 1, len)?;
        Ok(self.g.tensor_f32(name)?)
    }

    /// Matrices `(name, rows)` of `cols` columns that share an input: one fused
    /// matrix if their types agree, else each apart.
    fn stack(&mut self, parts: &[(&str, usize)], cols: usize) -> Result<LinearStack, BackendError> {
        let mut dtypes = Vec::with_capacity(parts.len());
        for &(name, rows) in parts {
            check_dims(self.g, name, rows, cols)?;
            dtypes.push(self.g.tensor_dtype(name)?);
        }
        if dtypes.windows(2).any(|w| w[0] != w[1]) {
            let split = parts
                .iter()
                .map(|&(name, rows)| self.matrix(name, rows, cols));
            return Ok(LinearStack::Split(split.collect::<Result<_, _>>()?));
        }
        let rows = parts.iter().map(|p| p.1).sum();
        let names: Vec<&str> = parts.iter().map(|p| p.0).collect();
        let fused = names.join("|");
        let m = self.build(&fused, &names, dtypes[0], rows, cols)?;
        Ok(LinearStack::Fused(m))
    }

    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<QMatrix, BackendError> {
        check_dims(self.g, name, rows, cols)?;
        let dtype = self.g.tensor_dtype(name)?;
        self.build(name, &[name], dtype, rows, cols)
    }

    /// The matrix stacking the tensors `names` (all of type `dtype`, `rows` rows in
    /// all): natively if the kernels have a path for `dtype`, else in f32.
    fn build(
        &mut self,
        label: &str,
        names: &[&str],
        dtype: GgmlDType,
        rows: usize,
        cols: usize,
    ) -> Result<QMatrix, BackendError> {
        let m = if QMatrix::has_kernel(dtype) {
            let mut bytes = Vec::new();
            for name in names {
                bytes.extend(self.g.tensor_bytes(name)?);
            }
            QMatrix::from_gguf(dtype, rows, cols, &bytes).map_err(|e| tensor_error(label, e))?
        } else {
            let mut data = Vec::with_capacity(rows * cols);
            for name in names {
                data.extend(self.g.tensor_f32(name)?);
            }
            let gguf_bytes = rows * cols / dtype.block_size() * dtype.type_size();
            let m = QMatrix::from_f32(rows, cols, data).map_err(|e| tensor_error(label, e))?;
            tracing::warn!(
                tensor = label,
                ggml_type = %type_name(dtype),
                f32_mib = m.size_bytes() >> 20,
                gguf_mib = gguf_bytes >> 20,
                "no native kernel for this tensor type: dequantized to f32 \
                 (use --backend candle to keep it quantized)"
            );
            m
        };
        let entry = self
            .served
            .entry(type_name(dtype))
            .or_insert_with(|| TensorKernel {
                tensor_type: type_name(dtype),
                kernel: m.kernel_name(),
                tensors: 0,
                bytes: 0,
            });
        entry.tensors += names.len();
        entry.bytes += m.size_bytes();
        Ok(m)
    }
}

fn tensor_error(name: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Tensor {
        name: name.to_owned(),
        detail: e.to_string(),
    }
}

/// GGUF's spelling of a tensor type, e.g. `Q4_K` (candle's debug names drop the
/// K-quants' underscore: `Q4K`).
pub fn type_name(dtype: GgmlDType) -> String {
    let name = format!("{dtype:?}").to_uppercase();
    match name.strip_suffix('K') {
        Some(stem) if !stem.contains('_') => format!("{stem}_K"),
        _ => name,
    }
}

fn check_dims(g: &GgufFile, name: &str, rows: usize, cols: usize) -> Result<(), BackendError> {
    let dims = g.tensor_info(name)?.shape.dims().to_vec();
    let ok = match dims.as_slice() {
        [r, c] => *r == rows && *c == cols,
        [c] => rows == 1 && *c == cols,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(BackendError::Tensor {
            name: name.to_owned(),
            detail: format!("shape {dims:?}, expected [{rows}, {cols}]"),
        })
    }
}
