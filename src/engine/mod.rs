//! The inference engine: model, tokenizer, KV caches, sampler and the
//! continuous-batching loop. It knows nothing of HTTP or OpenTelemetry: requests
//! come in as [`GenerationRequest`]s, results go out as [`GenerationEvent`]s on
//! each request's channel, and observers see [`events::EngineEvent`]s.

pub mod events;
pub mod gguf;
pub mod kernels;
pub mod kv_cache;
pub mod model;
pub mod request;
pub mod runner;
pub mod sampler;
pub mod scheduler;
pub mod sequence;
pub mod tokenizer;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use events::{EngineEvent, EngineObserver, RejectReason, RequestId};
use gguf::{GgufError, GgufFile};
use model::{Llama, ModelError};
pub use request::{Finish, GenerationEvent, GenerationRequest, StoppingCriteria, Token, TopToken};
pub use runner::EngineStats;
use runner::{Runner, Submission};
pub use sampler::SamplingParams;
pub use scheduler::SchedulerLimits;
use tokenizer::{Tokenizer, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("starting the engine thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SubmitError {
    #[error("the request queue is full ({0} waiting); retry later")]
    QueueFull(usize),
    #[error("prompt + max_new_tokens = {budget} exceeds max_total_tokens = {limit}")]
    TooLarge { budget: usize, limit: usize },
    #[error("the prompt has no tokens")]
    EmptyPrompt,
    #[error("the engine has stopped")]
    Stopped,
}

/// Static facts about the loaded model, for validation and `/info`.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub name: String,
    pub architecture: String,
    pub quantization: String,
    pub context_length: usize,
    pub vocab_size: usize,
    pub weight_bytes: usize,
    pub kv_bytes_per_token: usize,
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

/// A model and tokenizer loaded from one GGUF file.
pub struct LoadedModel {
    pub model: Llama,
    pub tokenizer: Tokenizer,
    pub info: ModelInfo,
}

impl LoadedModel {
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let mut g = GgufFile::open(path)?;
        let tokenizer = Tokenizer::from_gguf(&g)?;
        let model = Llama::load(&mut g)?;
        let cfg = model.config();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(model_name_from_file)
            .unwrap_or_else(|| "model".to_owned());
        let token = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i));
        let info = ModelInfo {
            name,
            architecture: g.string("general.architecture")?,
            quantization: model.quantization().to_owned(),
            context_length: cfg.context_length,
            vocab_size: cfg.vocab_size,
            weight_bytes: model.weight_bytes(),
            kv_bytes_per_token: cfg.kv_bytes_per_token(),
            chat_template: g.string("tokenizer.chat_template").ok(),
            bos_token: token(tokenizer.bos_id()),
            eos_token: token(Some(tokenizer.eos_id())),
        };
        Ok(Self {
            model,
            tokenizer,
            info,
        })
    }
}

/// `SmolLM2-135M-Instruct.Q4_1.gguf` → `SmolLM2-135M-Instruct`.
pub fn model_name_from_file(file: &str) -> String {
    let stem = file.strip_suffix(".gguf").unwrap_or(file);
    match stem.rsplit_once('.') {
        Some((base, quant)) if quant.starts_with(['Q', 'q', 'F', 'f', 'B', 'b', 'I', 'i']) => {
            base.to_owned()
        }
        _ => stem.to_owned(),
    }
}

/// The running engine: submit requests, read `/info` facts. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineShared>,
}

struct EngineShared {
    inbox: mpsc::Sender<Submission>,
    tokenizer: Arc<Tokenizer>,
    info: ModelInfo,
    limits: SchedulerLimits,
    stats: Arc<EngineStats>,
    next_id: AtomicU64,
    observer: Arc<dyn EngineObserver>,
}

impl Engine {
    /// Starts the engine thread that owns `loaded.model`.
    pub fn start(
        loaded: LoadedModel,
        limits: SchedulerLimits,
        observer: Arc<dyn EngineObserver>,
    ) -> Result<Self, LoadError> {
        let LoadedModel {
            model,
            tokenizer,
            info,
        } = loaded;
        let tokenizer = Arc::new(tokenizer);
        let stats = Arc::new(EngineStats::default());
        let (inbox, rx) = mpsc::channel();
        let runner = Runner {
            model: Arc::new(model),
            tokenizer: tokenizer.clone(),
            observer: observer.clone(),
            limits,
            stats: stats.clone(),
        };
        std::thread::Builder::new()
            .name("candlelight-engine".into())
            .spawn(move || runner.run(rx))?;
        Ok(Self {
            inner: Arc::new(EngineShared {
                inbox,
                tokenizer,
                info,
                limits,
                stats,
                next_id: AtomicU64::new(1),
                observer,
            }),
        })
    }

    /// Queues a request. Refuses at once (never blocks) when the queue is full.
    pub fn submit(
        &self,
        request: GenerationRequest,
    ) -> Result<(RequestId, UnboundedReceiver<GenerationEvent>), SubmitError> {
        let s = &self.inner;
        // Every admitted sequence must have input to run (the runner relies on it).
        if request.prompt_ids.is_empty() {
            return Err(SubmitError::EmptyPrompt);
        }
        let budget = request.token_budget();
        if budget > s.limits.max_total_tokens {
            return Err(SubmitError::TooLarge {
                budget,
                limit: s.limits.max_total_tokens,
            });
        }
        let waiting = s.stats.queued.fetch_add(1, Ordering::Relaxed);
        if waiting >= s.limits.max_queue {
            s.stats.queued.fetch_sub(1, Ordering::Relaxed);
            s.observer.on_event(&EngineEvent::Rejected {
                reason: RejectReason::QueueFull,
            });
            return Err(SubmitError::QueueFull(waiting));
        }
        let id = s.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = unbounded_channel();
        let sub = Submission {
            id,
            request,
            reply,
            queued_at: Instant::now(),
        };
        if s.inbox.send(sub).is_err() {
            s.stats.queued.fetch_sub(1, Ordering::Relaxed);
            s.observer.on_event(&EngineEvent::Rejected {
                reason: RejectReason::ShuttingDown,
            });
            return Err(SubmitError::Stopped);
        }
        Ok((id, rx))
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.inner.tokenizer
    }

    pub fn info(&self) -> &ModelInfo {
        &self.inner.info
    }

    pub fn limits(&self) -> SchedulerLimits {
        self.inner.limits
    }

    /// Live counters (queue, running, KV cache, batch sizes).
    pub fn stats(&self) -> &EngineStats {
        &self.inner.stats
    }
}

#[cfg(test)]
mod tests {
    use super::model_name_from_file;

    #[test]
    fn model_names_drop_the_quantization_suffix() {
        assert_eq!(
            model_name_from_file("SmolLM2-135M-Instruct.Q4_1.gguf"),
            "SmolLM2-135M-Instruct"
        );
        assert_eq!(model_name_from_file("tiny.gguf"), "tiny");
    }
}
