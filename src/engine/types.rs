//! The engine's client-facing contract: what a caller submits, the events it receives, and
//! the small trait the HTTP layer programs against (so router tests can use a scripted fake).
//!
//! Lifetime of a request: `submit` -> `RequestStream` yielding `Delta`s and one `Finished`
//! per sample (or one `Error`), then the channel closes. Dropping the stream cancels the
//! request: the engine notices within one step and frees its KV blocks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::budget::{EarlyStop, TtcPlan, TtcProgress, TtcReport};
use crate::reasoning::ThinkLimits;
use crate::sample::{FinishReason, SamplingParams};

/// A request group: `n` samples of one prompt, sharing its KV blocks.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// Prompt tokens (already templated and tokenized; validated against the context length).
    pub prompt_token_ids: Vec<u32>,
    /// Number of samples (>= 1).
    pub n: usize,
    /// Shared by all samples; sample `i` draws with `sample_seed(seed, i)`.
    pub params: SamplingParams,
    /// Lower runs first when priority scheduling is on.
    pub priority: i32,
    /// The rendered prompt already opened thinking (ends with the start marker).
    pub starts_in_thinking: bool,
    /// Thinking budget and minimum of every sample.
    pub think: ThinkLimits,
    /// Aggregated test-time compute: the controller decides how many of `ttc.n` samples
    /// run and stops them; `None` = `n` independent samples.
    pub ttc: Option<TtcPlan>,
    /// Constrained decoding: each sample starts from a clone of this guide (its content must
    /// match the grammar; thinking is not constrained).
    pub guide: Option<crate::guided::Guide>,
}

impl GenerateRequest {
    /// `n` independent samples with no thinking limits.
    pub fn new(prompt_token_ids: Vec<u32>, n: usize, params: SamplingParams) -> Self {
        GenerateRequest {
            prompt_token_ids,
            n,
            params,
            priority: 0,
            starts_in_thinking: false,
            think: ThinkLimits::default(),
            ttc: None,
            guide: None,
        }
    }
}

/// Log-probability of one generated token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    /// Most likely alternatives `(token, logprob)`, best first (`top_logprobs` of them).
    pub top: Vec<(u32, f32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// New output of sample `sample`: its tokens, the content text that may be shown now
    /// (stop-string candidates are held back until resolved), its new reasoning text (models
    /// with reasoning markers; markers removed), and logprobs when asked for.
    Delta {
        sample: usize,
        token_ids: Vec<u32>,
        text: String,
        reasoning: String,
        logprobs: Vec<TokenLogprob>,
    },
    /// Sample `sample` is done; `completion_tokens` counts all its generated tokens,
    /// `reasoning_tokens` those spent thinking. `early_stop`: the budget controller ended it
    /// (then `reason` is `Abort`).
    Finished {
        sample: usize,
        reason: FinishReason,
        completion_tokens: usize,
        reasoning_tokens: usize,
        early_stop: Option<EarlyStop>,
    },
    /// Aggregated requests: where the request stands (sent when samples launch, end or get
    /// their scores; never after the report).
    Progress(TtcProgress),
    /// Aggregated requests: the controller's final account, sent after every sample ended.
    Report(Box<TtcReport>),
    /// The request failed as a whole (message safe to show a client).
    Error(String),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    #[error("the waiting queue is full ({limit} requests); retry later")]
    QueueFull { limit: usize },
    #[error("the engine is not running")]
    EngineDead,
}

/// Point-in-time engine counters (for /metrics and load-aware decisions).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    /// Sequences running / waiting in the scheduler (samples, probes).
    pub num_running: usize,
    pub num_waiting: usize,
    /// Requests with at least one sequence running; requests with none running yet.
    pub requests_running: usize,
    pub requests_waiting: usize,
    /// Fraction of KV blocks in use, 0..=1.
    pub kv_cache_usage: f64,
    pub num_preemptions: u64,
    pub prefix_cache_queries: u64,
    pub prefix_cache_hits: u64,
}

/// The receiving end of one request. Dropping it cancels the request.
pub struct RequestStream {
    rx: mpsc::UnboundedReceiver<EngineEvent>,
    _cancel: CancelOnDrop,
}

/// Sets the shared flag when dropped; the engine polls it each step.
pub struct CancelOnDrop(pub Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl RequestStream {
    /// A stream and the two ends the producer keeps: the event sender and the cancel flag.
    pub fn channel() -> (Self, mpsc::UnboundedSender<EngineEvent>, Arc<AtomicBool>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        (
            RequestStream {
                rx,
                _cancel: CancelOnDrop(cancelled.clone()),
            },
            tx,
            cancelled,
        )
    }

    /// Next event if one is ready (synchronous callers and tests).
    pub fn try_next(&mut self) -> Option<EngineEvent> {
        self.rx.try_recv().ok()
    }

    /// Next event; `None` once the request is complete.
    pub async fn next(&mut self) -> Option<EngineEvent> {
        self.rx.recv().await
    }
}

/// What the HTTP layer needs from an engine.
pub trait EngineClient: Send + Sync + 'static {
    /// Queues a request; fails at once when the waiting queue is full or the engine died.
    fn submit(&self, req: GenerateRequest) -> Result<RequestStream, SubmitError>;
    /// False once the engine thread has died (liveness).
    fn is_alive(&self) -> bool;
    fn stats(&self) -> EngineStats;
}
