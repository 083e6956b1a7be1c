//! Seeded random weights of a model's shape (`candlelight serve --synthetic SEED`).
//!
//! The GPU machines get no model file (only 64 MiB travel, the default model is
//! 98 MB), so they serve weights made on the spot: the shape comes from a GGUF
//! file's metadata (a tokenizer-only file written by `candlelight
//! extract-metadata` will do), the tensor types are the default model's (Q8_0
//! token embedding tied to the output, Q4_1 matrices, f32 norms).
//!
//! Every tensor is drawn on the host from an RNG seeded by the seed and the
//! tensor's name, quantized on the host by candle, and only then copied to the
//! device: the same seed gives the same bytes on the CPU and on a GPU, so their
//! logits can be compared.

use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device as CandleDevice, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::engine::backend::BackendError;
use crate::engine::config::ModelConfig;
use crate::engine::gguf::GgufFile;

/// Type of the token embedding (and the tied output projection).
pub const EMBED_TYPE: GgmlDType = GgmlDType::Q8_0;
/// Type of every attention and feed-forward matrix.
pub const MATRIX_TYPE: GgmlDType = GgmlDType::Q4_1;

/// Shape (rows, columns) of a llama tensor, its type, and the half-width of the
/// uniform distribution its values come from.
fn layout(cfg: &ModelConfig, name: &str) -> Option<(Vec<usize>, GgmlDType, f32)> {
    // Unit gain: uniform(-a, a) with a = sqrt(3 / fan_in) has variance 1 / fan_in.
    let matrix = |rows: usize, cols: usize| {
        let a = (3.0 / cols as f32).sqrt();
        Some((vec![rows, cols], MATRIX_TYPE, a))
    };
    let (e, kv, ff) = (cfg.n_embd, cfg.kv_dim(), cfg.n_ff);
    match name.rsplit('.').nth(1)? {
        // Logits of a unit-RMS hidden state get a standard deviation of about
        // 3, as in a trained model, so top-1 has close competitors.
        "token_embd" => Some((vec![cfg.vocab_size, e], EMBED_TYPE, 5.0 / (e as f32).sqrt())),
        "attn_norm" | "ffn_norm" | "output_norm" => Some((vec![e], GgmlDType::F32, 0.1)),
        "attn_q" | "attn_output" => matrix(e, e),
        "attn_k" | "attn_v" => matrix(kv, e),
        "ffn_gate" | "ffn_up" => matrix(ff, e),
        "ffn_down" => matrix(e, ff),
        _ => None,
    }
}

/// FNV-1a: a per-tensor seed that does not depend on the order of loading.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The tensor `name` for `seed`, quantized on the host and placed on `device`.
pub fn qtensor(
    cfg: &ModelConfig,
    seed: u64,
    name: &str,
    device: &CandleDevice,
) -> Result<QTensor, BackendError> {
    let (shape, dtype, a) = layout(cfg, name).ok_or_else(|| BackendError::Tensor {
        name: name.to_owned(),
        detail: "no synthetic weights for this tensor".into(),
    })?;
    let mut rng = StdRng::seed_from_u64(seed ^ name_hash(name));
    let count: usize = shape.iter().product();
    // Norm weights sit around 1, like a trained model's; the rest around 0.
    let centre = if dtype == GgmlDType::F32 { 1.0 } else { 0.0 };
    let values: Vec<f32> = (0..count)
        .map(|_| centre + rng.random_range(-a..a))
        .collect();
    let host = QTensor::quantize(
        &Tensor::from_vec(values, shape.as_slice(), &CandleDevice::Cpu)?,
        dtype,
    )?;
    if device.is_cpu() {
        return Ok(host);
    }
    let storage = QStorage::from_data(host.data()?, device, dtype)?;
    Ok(QTensor::new(storage, shape)?)
}

/// Writes `input`'s metadata (model hyper-parameters, tokenizer, chat
/// template) to `output` as a GGUF file without tensors: with `--synthetic`
/// it serves the model's shape with the model's tokenizer in about 2 MB.
pub fn extract_metadata(input: &Path, output: &Path) -> Result<u64, BackendError> {
    let g = GgufFile::open(input)?;
    let mut keys: Vec<(&str, &gguf_file::Value)> =
        g.metadata().iter().map(|(k, v)| (k.as_str(), v)).collect();
    keys.sort_by_key(|(k, _)| *k);
    let io = |e: std::io::Error| BackendError::Device(format!("{}: {e}", output.display()));
    let mut file = std::fs::File::create(output).map_err(io)?;
    gguf_file::write(&mut file, &keys, &[])?;
    Ok(file.metadata().map_err(io)?.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::backend::candle::CandleBackend;
    use crate::engine::backend::{Backend, Device, LogitsFor, SeqChunk};
    use gguf_file::Value;

    /// A metadata-only GGUF of a tiny llama (2 layers, 64 wide, 256 tokens).
    fn tiny_gguf(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("tiny.gguf");
        let keys = [
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", Value::U32(2)),
            ("llama.context_length", Value::U32(64)),
            ("llama.embedding_length", Value::U32(64)),
            ("llama.feed_forward_length", Value::U32(128)),
            ("llama.attention.head_count", Value::U32(4)),
            ("llama.attention.head_count_kv", Value::U32(2)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
            ("llama.vocab_size", Value::U32(256)),
        ];
        let keys: Vec<(&str, &Value)> = keys.iter().map(|(k, v)| (*k, v)).collect();
        let mut file = std::fs::File::create(&path).expect("temp file");
        gguf_file::write(&mut file, &keys, &[]).expect("write GGUF");
        path
    }

    fn logits(path: &Path, seed: u64, tokens: &[u32]) -> Vec<f32> {
        let mut g = GgufFile::open(path).expect("tiny GGUF");
        let mut b = CandleBackend::load(&mut g, path, Device::Cpu, 1, Some(seed)).expect("load");
        b.allocate_kv(16, 4).expect("KV pool");
        let chunk = SeqChunk {
            tokens,
            start: 0,
            blocks: &[0, 1],
            logits: LogitsFor::AllTokens,
        };
        let mut out = Vec::new();
        b.forward(&[chunk], &mut out).expect("forward");
        out
    }

    #[test]
    fn synthetic_weights_give_finite_deterministic_logits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = tiny_gguf(dir.path());
        let tokens: Vec<u32> = (0..20).map(|i| i * 11 % 256).collect();
        let a = logits(&path, 7, &tokens);
        assert_eq!(a.len(), 20 * 256);
        assert!(a.iter().all(|x| x.is_finite()), "finite logits");
        assert_eq!(a, logits(&path, 7, &tokens), "same seed, same logits");
        assert_ne!(a, logits(&path, 8, &tokens), "another seed, other logits");
        // Not degenerate: positions differ and logits spread like a model's.
        let (first, last) = (&a[..256], &a[19 * 256..]);
        assert_ne!(first, last);
        let mean = first.iter().sum::<f32>() / 256.0;
        let sd = (first.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / 256.0).sqrt();
        assert!((0.5..20.0).contains(&sd), "logit spread {sd}");
    }

    #[test]
    fn extracted_metadata_keeps_every_key_and_no_tensor() {
        let dir = tempfile::tempdir().expect("temp dir");
        let input = tiny_gguf(dir.path());
        let output = dir.path().join("meta.gguf");
        extract_metadata(&input, &output).expect("extract");
        let (a, b) = (
            GgufFile::open(&input).expect("input"),
            GgufFile::open(&output).expect("output"),
        );
        assert_eq!(b.tensor_names().count(), 0);
        assert_eq!(a.metadata().len(), b.metadata().len());
        assert_eq!(b.usize("llama.vocab_size").expect("key"), 256);
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let cfg = ModelConfig::smollm2_135m();
        let cpu = CandleDevice::Cpu;
        let name = "blk.3.attn_k.weight";
        let a = qtensor(&cfg, 7, name, &cpu).expect("synthetic tensor");
        let b = qtensor(&cfg, 7, name, &cpu).expect("synthetic tensor");
        let c = qtensor(&cfg, 8, name, &cpu).expect("synthetic tensor");
        assert_eq!(a.dtype(), MATRIX_TYPE);
        assert_eq!(a.shape().dims(), &[cfg.kv_dim(), cfg.n_embd]);
        let bytes = |q: &QTensor| q.data().expect("host bytes").into_owned();
        assert_eq!(bytes(&a), bytes(&b));
        assert_ne!(bytes(&a), bytes(&c));
        let other = qtensor(&cfg, 7, "blk.4.attn_k.weight", &cpu).expect("synthetic tensor");
        assert_ne!(bytes(&a), bytes(&other), "each tensor gets its own stream");
        assert!(
            qtensor(&cfg, 7, "output.weight", &cpu).is_err(),
            "the output is tied"
        );
    }
}
