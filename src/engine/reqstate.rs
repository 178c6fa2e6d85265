//! Per-request and per-sample output state of the engine loop: the token a sample emits next
//! (forced or drawn), how its text is split, stop rules, and the events it produces.
//!
//! ```text
//!  token -> output/history -> detok piece -> ThinkState::push -> (reasoning, content)
//!        -> content: stop strings (held back while a stop string may be forming)
//!        -> Delta { text: content shown now, reasoning }  [+ Finished]
//! ```
//!
//! Invariants: `sent <= text.len()`; a sample emits `Finished` exactly once (on its own, or
//! when the controller stops it); after that it owns no sequence.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::detok::Detokenizer;
use super::types::{EngineEvent, TokenLogprob};
use crate::budget::{Controller, EarlyStop};
use crate::model::tokenizer::Tokenizer;
use crate::reasoning::{ReasoningFormat, ThinkLimits, ThinkState};
use crate::sample::{
    finish_on_token, FinishReason, SamplingParams, StopChecker, StopStatus, TokenHistory,
};
use crate::sched::SeqId;

pub(super) struct SampleState {
    /// `None` once the sample ended.
    pub seq: Option<SeqId>,
    pub seed: u64,
    pub history: TokenHistory,
    pub output: Vec<u32>,
    detok: Detokenizer,
    stop: StopChecker,
    pub think: ThinkState,
    /// This sample's thinking limits (the request's, or its wave's under load).
    pub limits: ThinkLimits,
    /// Content decoded so far and how many of its bytes were sent.
    text: String,
    sent: usize,
    pub done: bool,
    /// Constrained decoding: this sample's grammar state, and the mask for its next token
    /// (computed during the forward pass; taken by the draw).
    pub guide: Option<crate::guided::Guide>,
    pub mask: Option<toktrie::SimpleVob>,
    pub mask_err: Option<String>,
}

impl SampleState {
    pub fn new(
        seq: SeqId,
        seed: u64,
        prompt: &[u32],
        params: &SamplingParams,
        fmt: Option<&ReasoningFormat>,
        in_thinking: bool,
        limits: ThinkLimits,
    ) -> Self {
        SampleState {
            limits,
            seq: Some(seq),
            seed,
            history: TokenHistory::new(prompt),
            output: Vec::new(),
            detok: Detokenizer::new(0),
            stop: StopChecker::new(&params.stop),
            think: ThinkState::new(fmt, in_thinking),
            text: String::new(),
            sent: 0,
            done: false,
            guide: None,
            mask: None,
            mask_err: None,
        }
    }

    /// The content text (after stop-string truncation once finished).
    pub fn content(&self) -> &str {
        &self.text
    }

    /// Appends `token`; returns its Delta and, if it ended the sample, the finish reason.
    pub fn push_token(
        &mut self,
        index: usize,
        token: u32,
        lp: Option<TokenLogprob>,
        params: &SamplingParams,
        tokenizer: &Tokenizer,
    ) -> (EngineEvent, Option<FinishReason>) {
        self.output.push(token);
        self.history.push_output(token);
        let mut finish = finish_on_token(params, &tokenizer.eos_ids, token, self.output.len());
        let piece = self.detok.step(tokenizer, &self.output);
        let split = self.think.push(&piece);
        let mut reasoning = split.reasoning;
        self.text.push_str(&split.content);
        if finish.is_some() {
            let rest = self.think.finish();
            reasoning.push_str(&rest.reasoning);
            self.text.push_str(&rest.content);
        }
        let mut show_until = self.text.len();
        match self.stop.check(&self.text) {
            StopStatus::Stopped { truncate_at, .. } => {
                self.text.truncate(truncate_at);
                show_until = truncate_at;
                if finish.is_none() {
                    self.think.finish(); // settles counts; text after a stop is dropped
                }
                finish = Some(FinishReason::Stop);
            }
            StopStatus::Continue { stream_until } if finish.is_none() => show_until = stream_until,
            StopStatus::Continue { .. } => {}
        }
        let text = if show_until > self.sent {
            self.text[self.sent..show_until].to_string()
        } else {
            String::new()
        };
        self.sent = self.sent.max(show_until);
        let ev = EngineEvent::Delta {
            sample: index,
            token_ids: vec![token],
            text,
            reasoning,
            logprobs: lp.into_iter().collect(),
        };
        (ev, finish)
    }

    /// The controller ended this sample: whatever was held back is released.
    pub fn stop_early(&mut self, index: usize) -> EngineEvent {
        let rest = self.think.finish();
        self.text.push_str(&rest.content);
        let text = self.text[self.sent.min(self.text.len())..].to_string();
        self.sent = self.text.len();
        EngineEvent::Delta {
            sample: index,
            token_ids: Vec::new(),
            text,
            reasoning: rest.reasoning,
            logprobs: Vec::new(),
        }
    }

    pub fn finished_event(
        &self,
        index: usize,
        reason: FinishReason,
        early_stop: Option<EarlyStop>,
    ) -> EngineEvent {
        EngineEvent::Finished {
            sample: index,
            reason,
            completion_tokens: self.output.len(),
            reasoning_tokens: self.think.thinking_tokens() as usize,
            early_stop,
        }
    }
}

pub(super) struct RequestState {
    pub params: SamplingParams,
    pub think: ThinkLimits,
    pub starts_in_thinking: bool,
    /// Kept for later waves (each wave is a new scheduler group of this prompt).
    pub prompt: Vec<u32>,
    pub priority: i32,
    pub base_seed: u64,
    /// Launched samples, by sample index.
    pub samples: Vec<SampleState>,
    /// Scheduler request ids, one per wave.
    pub sched_ids: Vec<u64>,
    pub tx: UnboundedSender<EngineEvent>,
    pub cancelled: Arc<AtomicBool>,
    /// Samples launched and not yet ended.
    pub live: usize,
    pub ctrl: Option<Controller>,
    /// When the engine took the request in (its controller's clock starts here).
    pub admitted: Instant,
    pub deadline: Option<Instant>,
    /// The last progress sent (a new one goes out only when it differs).
    pub progress: Option<crate::budget::TtcProgress>,
    /// Constrained decoding: every sample starts from a clone of this.
    pub guide: Option<crate::guided::Guide>,
}

impl RequestState {
    /// Plain requests end when their last sample does; aggregated ones when the controller
    /// says `Finish`.
    pub fn complete(&self) -> bool {
        match &self.ctrl {
            None => self.live == 0,
            Some(c) => c.is_finished() && self.live == 0,
        }
    }
}
