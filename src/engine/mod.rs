//! The inference engine: tokenizer, scheduler, KV accounting, sampler and the
//! continuous-batching loop, over a [`backend::Backend`] that computes the model.
//! It knows nothing of HTTP or OpenTelemetry: requests come in as
//! [`GenerationRequest`]s, results go out as [`GenerationEvent`]s on each
//! request's channel, and observers see [`events::EngineEvent`]s.

pub mod backend;
pub mod config;
pub mod events;
pub mod gguf;
pub mod kernels;
pub mod kv;
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

use backend::{Backend, BackendError, BackendInfo, BackendKind, Device};
use events::{EngineEvent, EngineObserver, RejectReason, RequestId};
use gguf::{GgufError, GgufFile};
use kv::KvConfig;
pub use request::{
    Failure, FailureKind, Finish, GenerationEvent, GenerationRequest, StoppingCriteria, Token,
    TopToken,
};
pub use runner::EngineStats;
use runner::{Control, Faults, Runner};
pub use sampler::SamplingParams;
pub use scheduler::SchedulerLimits;
use sequence::Submission;
use tokenizer::{Tokenizer, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Gguf(Box<GgufError>),
    #[error(transparent)]
    Backend(Box<BackendError>),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("starting the engine thread: {0}")]
    Thread(#[from] std::io::Error),
}

impl From<GgufError> for LoadError {
    fn from(e: GgufError) -> Self {
        LoadError::Gguf(Box::new(e))
    }
}

impl From<BackendError> for LoadError {
    fn from(e: BackendError) -> Self {
        LoadError::Backend(Box::new(e))
    }
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
    #[error("the inference engine has stopped")]
    EngineDead,
}

/// Static facts about the loaded model, for validation and `/info`.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub architecture: String,
    /// Type of the attention weights, e.g. "Q4_1" (the file's main quantization).
    pub quantization: String,
    pub context_length: usize,
    pub vocab_size: usize,
    pub kv_bytes_per_token: usize,
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub backend: BackendInfo,
    /// Why this backend serves the file (the `--backend auto` decision).
    pub backend_reason: String,
}

/// Where and how to load a model.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    pub device: Device,
    pub backend: BackendKind,
    pub threads: usize,
}

/// A backend and tokenizer loaded from one GGUF file.
pub struct LoadedModel {
    pub backend: Box<dyn Backend>,
    pub tokenizer: Tokenizer,
    pub info: ModelInfo,
}

impl LoadedModel {
    pub fn load(path: &Path, options: LoadOptions) -> Result<Self, LoadError> {
        Self::load_weights(path, options, None)
    }

    /// Seeded random weights of `path`'s shape with `path`'s tokenizer, on the
    /// candle backend; `path` may hold metadata only (no tensors). For checks
    /// on machines that get no model file (see docs/gpu.md).
    pub fn load_synthetic(path: &Path, options: LoadOptions, seed: u64) -> Result<Self, LoadError> {
        Self::load_weights(path, options, Some(seed))
    }

    fn load_weights(
        path: &Path,
        options: LoadOptions,
        synthetic: Option<u64>,
    ) -> Result<Self, LoadError> {
        let mut g = GgufFile::open(path)?;
        let tokenizer = Tokenizer::from_gguf(&g)?;
        let loaded = backend::load(
            &mut g,
            path,
            options.device,
            options.backend,
            options.threads,
            synthetic,
        )?;
        let backend = loaded.backend;
        let cfg = backend.config().clone();
        let token = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i));
        let info = ModelInfo {
            architecture: g.string("general.architecture")?,
            quantization: match synthetic {
                Some(_) => backend::native::type_name(backend::candle::synthetic::MATRIX_TYPE),
                None => g
                    .tensor_dtype("blk.0.attn_q.weight")
                    .map(backend::native::type_name)?,
            },
            context_length: cfg.context_length,
            vocab_size: cfg.vocab_size,
            kv_bytes_per_token: cfg.kv_bytes_per_token(),
            chat_template: g.string("tokenizer.chat_template").ok(),
            bos_token: token(tokenizer.bos_id()),
            eos_token: token(Some(tokenizer.eos_id())),
            backend: backend.info(),
            backend_reason: loaded.reason,
        };
        Ok(Self {
            backend,
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

/// A place in the waiting queue: taking one counts the request as queued, and
/// dropping it (when the request starts, is refused or goes away) uncounts it.
/// The only code that changes the count.
pub struct QueueSlot {
    count: Arc<EngineStats>,
}

impl QueueSlot {
    fn take(stats: &Arc<EngineStats>, limit: usize) -> Result<Self, usize> {
        let waiting = stats.queued.fetch_add(1, Ordering::Relaxed);
        let slot = QueueSlot {
            count: stats.clone(),
        };
        if waiting >= limit {
            return Err(waiting); // `slot` drops here and undoes the count
        }
        Ok(slot)
    }
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.count.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request the engine holds, from its submission until its last event was
/// sent (or it was dropped): what a shutdown waits for.
pub struct InFlight {
    count: Arc<EngineStats>,
}

impl InFlight {
    fn take(stats: &Arc<EngineStats>) -> Self {
        stats.in_flight.fetch_add(1, Ordering::SeqCst);
        Self {
            count: stats.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The running engine: submit requests, read `/info` facts. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineShared>,
}

struct EngineShared {
    inbox: mpsc::Sender<Control>,
    tokenizer: Arc<Tokenizer>,
    info: ModelInfo,
    limits: SchedulerLimits,
    kv: KvConfig,
    stats: Arc<EngineStats>,
    next_id: AtomicU64,
    observer: Arc<dyn EngineObserver>,
}

impl Engine {
    /// Starts the engine thread that owns `loaded.backend`.
    pub fn start(
        loaded: LoadedModel,
        limits: SchedulerLimits,
        kv: KvConfig,
        observer: Arc<dyn EngineObserver>,
    ) -> Result<Self, LoadError> {
        let LoadedModel {
            backend,
            tokenizer,
            info,
        } = loaded;
        let tokenizer = Arc::new(tokenizer);
        let stats = Arc::new(EngineStats::default());
        let (inbox, rx) = mpsc::channel();
        let runner = Runner::new(
            backend,
            tokenizer.clone(),
            observer.clone(),
            limits,
            kv,
            stats.clone(),
        )?
        .with_faults(Faults::from_env());
        std::thread::Builder::new()
            .name("candlelight-engine".into())
            .spawn(move || runner.run(rx))?;
        Ok(Self {
            inner: Arc::new(EngineShared {
                inbox,
                tokenizer,
                info,
                limits,
                kv,
                stats,
                next_id: AtomicU64::new(1),
                observer,
            }),
        })
    }

    /// Queues a request. Refuses at once (never blocks) when it can never run,
    /// the queue is full, or the engine has stopped.
    pub fn submit(
        &self,
        request: GenerationRequest,
    ) -> Result<(RequestId, UnboundedReceiver<GenerationEvent>), SubmitError> {
        let s = &self.inner;
        if !self.is_alive() {
            return Err(self.reject(RejectReason::EngineDead, SubmitError::EngineDead));
        }
        // Every started sequence must have input to run (the runner relies on it).
        if request.prompt_ids().is_empty() {
            return Err(SubmitError::EmptyPrompt);
        }
        let budget = request.token_budget();
        if budget > s.limits.max_total_tokens {
            return Err(SubmitError::TooLarge {
                budget,
                limit: s.limits.max_total_tokens,
            });
        }
        let slot = match QueueSlot::take(&s.stats, s.limits.max_queue) {
            Ok(slot) => slot,
            Err(waiting) => {
                return Err(self.reject(RejectReason::QueueFull, SubmitError::QueueFull(waiting)))
            }
        };
        let id = s.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = unbounded_channel();
        let sub = Submission {
            id,
            request,
            reply,
            queued_at: Instant::now(),
            slot,
            held: InFlight::take(&s.stats),
        };
        if s.inbox.send(Control::Submit(Box::new(sub))).is_err() {
            return Err(self.reject(RejectReason::EngineDead, SubmitError::EngineDead));
        }
        Ok((id, rx))
    }

    fn reject(&self, reason: RejectReason, e: SubmitError) -> SubmitError {
        self.inner
            .observer
            .on_event(&EngineEvent::Rejected { reason });
        e
    }

    /// Ends every waiting and running request with `kind` (the end of a
    /// shutdown's grace period).
    pub fn abort_all(&self, kind: FailureKind) {
        let _ = self.inner.inbox.send(Control::AbortAll(kind));
    }

    /// The engine thread is running.
    pub fn is_alive(&self) -> bool {
        self.inner.stats.alive.load(Ordering::SeqCst)
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

    pub fn kv_config(&self) -> KvConfig {
        self.inner.kv
    }

    /// Live counters (queue, running, KV cache, batch sizes).
    pub fn stats(&self) -> &EngineStats {
        &self.inner.stats
    }

    /// Requests submitted whose last event has not been sent yet.
    pub fn in_flight(&self) -> usize {
        self.inner.stats.in_flight.load(Ordering::SeqCst)
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
