//! Server-sent events for `"stream": true`: engine events -> `data: {chunk}\n\n` frames.
//!
//! ```text
//! chat:  role chunk per choice  {"delta":{"role":"assistant","content":""}}   (choices 0..n)
//!        content chunks         {"delta":{"content":"..."}}  (choices interleave by `index`)
//!        finish chunk per choice {"delta":{},"finish_reason":"stop"|"length"}
//!        [usage chunk]          {"choices":[],"usage":{...}}  when stream_options.include_usage
//!        data: [DONE]
//! completions: the same without role chunks; choices carry `text` (`echo`: a first chunk per
//!        choice with the prompt text).
//! engine error: data: {"error":{...}} then data: [DONE]
//! reasoning models: reasoning deltas {"delta":{"reasoning_content":"...","reasoning":"..."}}
//! budget asked/granted or aggregation: {"choices":[],"ttc":{...}} before the usage chunk
//! aggregated (`ttc`): samples are buffered; while they run, progress chunks
//!        {"choices":[],"ttc_progress":{samples_launched, samples_running, samples_completed,
//!        samples_stopped, leader, leader_share, tokens}} (no choice: OpenAI SDKs yield them
//!        as chunks with nothing to show, `chunk.model_extra["ttc_progress"]` in Python);
//!        once the controller reports, choice 0 gets the winner's reasoning and content in one
//!        chunk each, then its finish chunk (no sample completed: only a finish chunk whose
//!        reason is the stop rule, `deadline` or `token_budget`)
//! ```
//!
//! The body stream owns the `RequestStream`: when the client goes away hyper drops the body,
//! which drops the `RequestStream`, which cancels the request in the engine.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::body::{CompletionChoice, Delta, Reasoning};
use super::error::ApiError;
use super::fold::{Choice, Fold, Step};
use super::response::{chat_logprobs, completion_logprobs, ChunkChoices, ChunkExtra, Kind, Meta};
use super::track::Tracker;
use crate::engine::{RequestStream, TokenLogprob};
use crate::model::LoadedModel;
use crate::sample::FinishReason;

/// Everything one streaming response needs.
pub struct SseRequest {
    pub events: RequestStream,
    pub meta: Meta,
    pub model: Arc<LoadedModel>,
    pub n: usize,
    pub prompt_tokens: usize,
    pub include_usage: bool,
    pub tracker: Tracker,
}

struct State {
    req: SseRequest,
    /// Folds the engine's events; `None` once the stream ended.
    fold: Option<Fold>,
    pending: VecDeque<Bytes>,
    /// Completions `text_offset` per choice.
    offsets: Vec<usize>,
    /// Chat with tools: per choice, content held back once a tool call may be starting.
    holdback: Vec<Option<crate::tools::Holdback>>,
    closed: bool,
}

pub fn frame(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

pub const DONE: &[u8] = b"data: [DONE]\n\n";

impl State {
    fn extra(&self) -> ChunkExtra {
        ChunkExtra {
            usage: self.req.include_usage.then_some(None),
            ..ChunkExtra::default()
        }
    }

    fn push(&mut self, choices: ChunkChoices) {
        let chunk = self.req.meta.chunk_json(choices, self.extra());
        self.pending.push_back(frame(&chunk));
    }

    fn start(&mut self) {
        let choices = if self.req.meta.aggregated {
            1
        } else {
            self.req.n
        };
        if let Some(echo) = self.req.meta.echo.clone() {
            for index in 0..choices {
                self.push(ChunkChoices::Completion(vec![CompletionChoice {
                    index,
                    text: echo.clone(),
                    logprobs: None,
                    finish_reason: None,
                    reasoning_content: None,
                }]));
            }
        }
        if self.req.meta.kind == Kind::Chat {
            for index in 0..choices {
                let delta = Delta {
                    role: Some("assistant"),
                    content: Some(String::new()),
                    ..Delta::default()
                };
                let c = self.req.meta.chat_delta(index, delta, None);
                self.push(c);
            }
        }
    }

    fn on_event(&mut self, ev: crate::engine::EngineEvent) {
        self.req.tracker.event(&ev);
        let Some(fold) = self.fold.as_mut() else {
            return;
        };
        match fold.event(ev) {
            Ok(None) => {}
            Ok(Some(step)) => self.on_step(step),
            Err(e) => self.fail(e),
        }
    }

    fn on_step(&mut self, step: Step) {
        match step {
            Step::Delta {
                index,
                text,
                reasoning,
                logprobs,
            } => self.push_delta(index, &text, &reasoning, &logprobs),
            Step::Finish { index, reason } => {
                let c = Choice {
                    finish: Some(reason),
                    ..Choice::default()
                };
                self.push_finish(index, &c);
            }
            Step::Progress(p) => {
                let x = ChunkExtra {
                    ttc_progress: Some(p.to_json()),
                    ..self.extra()
                };
                let chunk = self.req.meta.bare_chunk(x);
                self.pending.push_back(frame(&chunk));
            }
            Step::Winner(c) => {
                self.push_delta(0, &c.text, &c.reasoning, &c.logprobs);
                self.push_finish(0, &c);
            }
            Step::NoAnswer(reason) => {
                let c = self.req.meta.finish_choice(0, reason);
                self.push(c);
            }
        }
    }

    /// Content / reasoning / logprobs of choice `index` (nothing when all are empty).
    fn push_delta(&mut self, index: usize, text: &str, reasoning: &str, logprobs: &[TokenLogprob]) {
        let held;
        let text = match self.holdback.get_mut(index).and_then(Option::as_mut) {
            Some(h) => {
                held = h.push(text);
                held.as_str()
            }
            None => text,
        };
        if text.is_empty() && reasoning.is_empty() && logprobs.is_empty() {
            return;
        }
        let tokenizer = &self.req.model.tokenizer;
        let meta = &self.req.meta;
        let choices = match meta.kind {
            Kind::Chat => {
                let lp = meta
                    .logprobs
                    .then(|| chat_logprobs(tokenizer, &meta.vocab, logprobs));
                let delta = Delta {
                    content: (!text.is_empty() || reasoning.is_empty()).then(|| text.to_string()),
                    reasoning: Reasoning::delta(reasoning),
                    ..Delta::default()
                };
                meta.chat_delta(index, delta, lp)
            }
            Kind::Completion => {
                let lp = meta
                    .logprobs
                    .then(|| completion_logprobs(tokenizer, logprobs, &mut self.offsets[index]));
                ChunkChoices::Completion(vec![CompletionChoice {
                    index,
                    text: text.to_string(),
                    logprobs: lp,
                    finish_reason: None,
                    reasoning_content: (!reasoning.is_empty()).then(|| Some(reasoning.to_string())),
                }])
            }
        };
        self.push(choices);
    }

    fn push_finish(&mut self, index: usize, c: &Choice) {
        let mut reason = c.finish_reason();
        if let Some(mut h) = self.holdback.get_mut(index).and_then(Option::take) {
            let (rest, calls) = h.finish();
            if !rest.is_empty() {
                let delta = Delta {
                    content: Some(rest),
                    ..Delta::default()
                };
                let d = self.req.meta.chat_delta(index, delta, None);
                self.push(d);
            }
            if !calls.is_empty() {
                let delta = Delta {
                    tool_calls: Some(crate::tools::calls_json(&calls, true)),
                    ..Delta::default()
                };
                let d = self.req.meta.chat_delta(index, delta, None);
                self.push(d);
                if c.finish == Some(FinishReason::Stop) {
                    reason = "tool_calls";
                }
            }
        }
        let f = self.req.meta.finish_choice(index, reason);
        self.push(f);
    }

    /// An error event, then `[DONE]`; nothing more is read.
    fn fail(&mut self, e: ApiError) {
        let (status, _, _) = e.class();
        tracing::warn!(request_id = %self.req.meta.id, status = status.as_u16(), message = %e.message(), "stream failed");
        if let ApiError::Internal { request_id, detail } = &e {
            tracing::error!(request_id, detail, "internal error");
        }
        self.pending.push_back(frame(&e.envelope()));
        self.pending.push_back(Bytes::from_static(DONE));
        self.closed = true;
        self.fold = None;
    }

    /// The engine closed the stream.
    fn end(&mut self) {
        let Some(fold) = self.fold.take() else {
            self.closed = true;
            return;
        };
        let outcome = match fold.finish() {
            Ok(o) => o,
            Err(e) => return self.fail(e),
        };
        self.req
            .tracker
            .done(self.req.prompt_tokens, outcome.reason);
        let ttc = match &outcome.report {
            Some(r) => Some(r.to_json()),
            None => self.req.meta.grant.clone(),
        };
        if ttc.is_some() {
            let chunk = self.req.meta.bare_chunk(ChunkExtra {
                ttc,
                ..self.extra()
            });
            self.pending.push_back(frame(&chunk));
        }
        if self.req.include_usage {
            let chunk = self.req.meta.bare_chunk(ChunkExtra {
                usage: Some(Some(outcome.usage)),
                ..ChunkExtra::default()
            });
            self.pending.push_back(frame(&chunk));
        }
        self.pending.push_back(Bytes::from_static(DONE));
        self.closed = true;
    }
}

/// The SSE response for `req`.
pub fn sse_response(req: SseRequest) -> Response {
    let n = req.n;
    let aggregated = req.meta.aggregated;
    let fold = Fold::new(&req.meta.id, n, aggregated, true, req.prompt_tokens);
    let mut st = State {
        req,
        fold: Some(fold),
        pending: VecDeque::new(),
        offsets: vec![0; n],
        closed: false,
        holdback: Vec::new(),
    };
    let choices = if aggregated { 1 } else { n };
    st.holdback = (0..choices)
        .map(|_| {
            st.req
                .meta
                .tool_parser
                .filter(|_| st.req.meta.kind == Kind::Chat)
                .map(crate::tools::Holdback::new)
        })
        .collect();
    st.start();
    let body = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(b) = st.pending.pop_front() {
                return Some((Ok::<Bytes, Infallible>(b), st));
            }
            if st.closed {
                return None;
            }
            match st.req.events.next().await {
                Some(ev) => st.on_event(ev),
                None => st.end(),
            }
        }
    });
    let mut resp = Body::from_stream(body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
