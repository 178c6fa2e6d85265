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
use serde_json::{json, Value};

use super::error::ApiError;
use super::response::{
    chat_logprobs, completion_logprobs, no_answer_reason, usage, Choice, Kind, Meta, Totals,
};
use super::track::Tracker;
use crate::engine::{EngineEvent, RequestStream, TokenLogprob};
use crate::model::LoadedModel;

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
    pending: VecDeque<Bytes>,
    /// Completions `text_offset` per choice.
    offsets: Vec<usize>,
    finished: Vec<bool>,
    totals: Totals,
    /// Aggregated requests: every sample's output until the report picks one.
    buffered: Vec<Choice>,
    /// The finish reason of choice 0 (the request's, for the metrics).
    final_reason: &'static str,
    /// Chat with tools: per choice, content held back once a tool call may be starting.
    holdback: Vec<Option<crate::tools::Holdback>>,
    closed: bool,
}

pub fn frame(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

pub const DONE: &[u8] = b"data: [DONE]\n\n";

impl State {
    fn usage_field(&self) -> Option<Value> {
        self.req.include_usage.then_some(Value::Null)
    }

    fn push_chunk(&mut self, choice: Value) {
        let chunk = self.req.meta.chunk(vec![choice], self.usage_field());
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
                self.push_chunk(
                    json!({"index": index, "text": echo, "logprobs": null, "finish_reason": null}),
                );
            }
        }
        if self.req.meta.kind == Kind::Chat {
            for index in 0..choices {
                self.push_chunk(
                    json!({"index": index, "delta": {"role": "assistant", "content": ""},
                    "logprobs": null, "finish_reason": null}),
                );
            }
        }
    }

    fn on_event(&mut self, ev: EngineEvent) {
        self.req.tracker.event(&ev);
        let n = self.req.n;
        match ev {
            EngineEvent::Delta {
                sample,
                text,
                reasoning,
                logprobs,
                ..
            } if sample < n => {
                if self.req.meta.aggregated {
                    let c = &mut self.buffered[sample];
                    c.text.push_str(&text);
                    c.reasoning.push_str(&reasoning);
                    c.logprobs.extend(logprobs);
                } else {
                    self.push_delta(sample, &text, &reasoning, &logprobs);
                }
            }
            EngineEvent::Finished {
                sample,
                reason,
                completion_tokens,
                reasoning_tokens,
                ..
            } if sample < n => {
                self.finished[sample] = true;
                self.totals.completion_tokens += completion_tokens;
                self.totals.reasoning_tokens += reasoning_tokens;
                if self.req.meta.aggregated {
                    self.buffered[sample].finish = Some(reason);
                } else {
                    let c = Choice {
                        finish: Some(reason),
                        ..Choice::default()
                    };
                    self.push_finish(sample, &c);
                }
            }
            EngineEvent::Progress(p) => {
                if self.req.meta.aggregated {
                    let mut chunk = self.req.meta.chunk(Vec::new(), self.usage_field());
                    chunk["ttc_progress"] = p.to_json();
                    self.pending.push_back(frame(&chunk));
                }
            }
            EngineEvent::Report(r) => {
                let winner = r.winner_sample.filter(|&w| w < n);
                match winner {
                    Some(w) if self.req.meta.aggregated => {
                        let c = std::mem::take(&mut self.buffered[w]);
                        self.push_delta(0, &c.text, &c.reasoning, &c.logprobs);
                        self.push_finish(0, &c);
                        self.final_reason = c.finish_reason();
                    }
                    None if self.req.meta.aggregated && r.winner_sample.is_none() => {
                        let reason = no_answer_reason(&r);
                        self.push_reason(0, reason);
                        self.final_reason = reason;
                    }
                    _ => {
                        let request_id = self.req.meta.id.clone();
                        let detail = format!(
                            "the aggregation report names no usable sample ({winner:?} of n={n})"
                        );
                        return self.fail(ApiError::Internal { request_id, detail });
                    }
                }
                self.totals.report = Some(*r);
            }
            EngineEvent::Error(msg) => self.fail(ApiError::Engine(msg)),
            EngineEvent::Delta { sample, .. } | EngineEvent::Finished { sample, .. } => {
                self.fail(ApiError::Internal {
                    request_id: self.req.meta.id.clone(),
                    detail: format!(
                        "the engine sent an event for sample {sample} of a request with n={n}"
                    ),
                });
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
        let choice = match self.req.meta.kind {
            Kind::Chat => {
                let lp = self.req.meta.logprobs.then(
                    || json!({"content": chat_logprobs(tokenizer, &self.req.meta.vocab, logprobs)}),
                );
                let mut delta = json!({});
                if !reasoning.is_empty() {
                    delta["reasoning_content"] = json!(reasoning);
                    delta["reasoning"] = json!(reasoning);
                }
                if !text.is_empty() || reasoning.is_empty() {
                    delta["content"] = json!(text);
                }
                json!({"index": index, "delta": delta, "logprobs": lp, "finish_reason": null})
            }
            Kind::Completion => {
                let lp =
                    self.req.meta.logprobs.then(|| {
                        completion_logprobs(tokenizer, logprobs, &mut self.offsets[index])
                    });
                let mut v =
                    json!({"index": index, "text": text, "logprobs": lp, "finish_reason": null});
                if !reasoning.is_empty() {
                    v["reasoning_content"] = json!(reasoning);
                }
                v
            }
        };
        self.push_chunk(choice);
    }

    fn push_finish(&mut self, index: usize, c: &Choice) {
        if index == 0 {
            self.final_reason = c.finish_reason();
        }
        let mut reason = c.finish_reason();
        if let Some(h) = self.holdback.get_mut(index).and_then(Option::take) {
            let mut h = h;
            let (rest, calls) = h.finish();
            if !rest.is_empty() {
                self.push_chunk(json!({"index": index, "delta": {"content": rest},
                    "logprobs": null, "finish_reason": null}));
            }
            if !calls.is_empty() {
                let calls = crate::tools::calls_json(&calls, true);
                self.push_chunk(json!({"index": index, "delta": {"tool_calls": calls},
                    "logprobs": null, "finish_reason": null}));
                if c.finish == Some(crate::sample::FinishReason::Stop) {
                    reason = "tool_calls";
                }
            }
        }
        self.push_reason(index, reason);
    }

    fn push_reason(&mut self, index: usize, reason: &str) {
        let choice = match self.req.meta.kind {
            Kind::Chat => {
                json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": reason})
            }
            Kind::Completion => {
                json!({"index": index, "text": "", "logprobs": null, "finish_reason": reason})
            }
        };
        self.push_chunk(choice);
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
    }

    /// The engine closed the stream.
    fn end(&mut self) {
        let request_id = self.req.meta.id.clone();
        if self.req.meta.aggregated {
            if self.totals.report.is_none() {
                let detail = "the engine closed an aggregated request without its report".into();
                return self.fail(ApiError::Internal { request_id, detail });
            }
        } else if let Some(index) = self.finished.iter().position(|f| !f) {
            let detail = format!("the engine closed the stream before sample {index} finished");
            return self.fail(ApiError::Internal { request_id, detail });
        }
        self.req
            .tracker
            .done(self.req.prompt_tokens, self.final_reason);
        let ttc = match &self.totals.report {
            Some(r) => Some(r.to_json()),
            None => self.req.meta.grant.clone(),
        };
        if let Some(t) = ttc {
            let mut chunk = self.req.meta.chunk(Vec::new(), self.usage_field());
            chunk["ttc"] = t;
            self.pending.push_back(frame(&chunk));
        }
        if self.req.include_usage {
            let t = &self.totals;
            let u = usage(
                self.req.prompt_tokens,
                t.completion_tokens,
                t.reasoning_tokens,
            );
            let chunk = self.req.meta.chunk(Vec::new(), Some(u));
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
    let mut st = State {
        req,
        pending: VecDeque::new(),
        offsets: vec![0; n],
        finished: vec![false; n],
        totals: Totals::default(),
        buffered: vec![Choice::default(); if aggregated { n } else { 0 }],
        final_reason: "stop",
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
