//! Typed access to a GGUF file: metadata lookups that fail with the key's name,
//! and tensor bytes read straight from the file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::quantized::GgmlDType;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot open model file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a readable GGUF file: {source}")]
    Parse {
        path: PathBuf,
        source: candle_core::Error,
    },
    #[error("GGUF metadata key `{0}` is missing")]
    MissingKey(String),
    #[error("GGUF metadata key `{key}` has the wrong type: {source}")]
    WrongType {
        key: String,
        source: candle_core::Error,
    },
    #[error("GGUF tensor `{0}` is missing")]
    MissingTensor(String),
    #[error("reading GGUF tensor `{name}`: {source}")]
    Tensor {
        name: String,
        source: candle_core::Error,
    },
    #[error("reading GGUF tensor `{name}`: {source}")]
    Io {
        name: String,
        source: std::io::Error,
    },
}

/// An open GGUF file with its parsed header.
pub struct GgufFile {
    file: File,
    content: Content,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let mut file = File::open(path).map_err(|source| GgufError::Open {
            path: path.to_owned(),
            source,
        })?;
        let content = Content::read(&mut file).map_err(|source| GgufError::Parse {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self { file, content })
    }

    /// Names of every tensor in the file.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.content.tensor_infos.keys().map(String::as_str)
    }

    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    fn value(&self, key: &str) -> Result<&Value, GgufError> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| GgufError::MissingKey(key.to_owned()))
    }

    fn typed<T>(
        &self,
        key: &str,
        get: impl FnOnce(&Value) -> candle_core::Result<T>,
    ) -> Result<T, GgufError> {
        get(self.value(key)?).map_err(|source| GgufError::WrongType {
            key: key.to_owned(),
            source,
        })
    }

    pub fn has(&self, key: &str) -> bool {
        self.content.metadata.contains_key(key)
    }

    pub fn string(&self, key: &str) -> Result<String, GgufError> {
        self.typed(key, |v| v.to_string().cloned())
    }

    /// Integer metadata of any width (GGUF writers differ in the type they pick).
    pub fn usize(&self, key: &str) -> Result<usize, GgufError> {
        self.typed(key, |v| match v {
            Value::U8(x) => Ok(*x as usize),
            Value::U16(x) => Ok(*x as usize),
            Value::U32(x) => Ok(*x as usize),
            Value::U64(x) => Ok(*x as usize),
            Value::I32(x) if *x >= 0 => Ok(*x as usize),
            Value::I64(x) if *x >= 0 => Ok(*x as usize),
            other => Err(candle_core::Error::Msg(format!(
                "expected an unsigned integer, found {:?}",
                other.value_type()
            ))),
        })
    }

    pub fn f32(&self, key: &str) -> Result<f32, GgufError> {
        self.typed(key, |v| match v {
            Value::F64(x) => Ok(*x as f32),
            v => v.to_f32(),
        })
    }

    pub fn strings(&self, key: &str) -> Result<Vec<String>, GgufError> {
        self.typed(key, |v| {
            v.to_vec()?
                .iter()
                .map(|s| s.to_string().cloned())
                .collect::<candle_core::Result<Vec<_>>>()
        })
    }

    pub fn i32s(&self, key: &str) -> Result<Vec<i32>, GgufError> {
        self.typed(key, |v| {
            v.to_vec()?
                .iter()
                .map(|s| s.to_i32())
                .collect::<candle_core::Result<Vec<_>>>()
        })
    }

    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.content
            .tensor_infos
            .get(name)
            .ok_or_else(|| GgufError::MissingTensor(name.to_owned()))
    }

    /// The tensor's dtype and its dims in GGUF order (innermost first).
    pub fn tensor_dtype(&self, name: &str) -> Result<GgmlDType, GgufError> {
        Ok(self.tensor_info(name)?.ggml_dtype)
    }

    /// The tensor's raw bytes, exactly as stored.
    pub fn tensor_bytes(&mut self, name: &str) -> Result<Vec<u8>, GgufError> {
        let info = self.tensor_info(name)?;
        let dtype = info.ggml_dtype;
        let elems = info.shape.elem_count();
        let len = elems / dtype.block_size() * dtype.type_size();
        let offset = self.content.tensor_data_offset + info.offset;
        let io = |source| GgufError::Io {
            name: name.to_owned(),
            source,
        };
        self.file.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut bytes = vec![0u8; len];
        self.file.read_exact(&mut bytes).map_err(io)?;
        Ok(bytes)
    }

    /// The tensor as a candle quantized tensor on `device` (any dtype candle reads).
    pub fn qtensor(
        &mut self,
        name: &str,
        device: &candle_core::Device,
    ) -> Result<candle_core::quantized::QTensor, GgufError> {
        self.content
            .tensor(&mut self.file, name, device)
            .map_err(|source| GgufError::Tensor {
                name: name.to_owned(),
                source,
            })
    }

    /// The tensor dequantized to f32 by candle (any dtype candle supports).
    pub fn tensor_f32(&mut self, name: &str) -> Result<Vec<f32>, GgufError> {
        let err = |source| GgufError::Tensor {
            name: name.to_owned(),
            source,
        };
        let device = candle_core::Device::Cpu;
        let q = self
            .content
            .tensor(&mut self.file, name, &device)
            .map_err(err)?;
        q.dequantize(&device)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(err)
    }
}
