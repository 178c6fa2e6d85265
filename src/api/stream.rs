//! Server-sent events for `"stream": true`: engine events -> `data: {chunk}\n\n` frames.
//!
//! ```text
//! chat:  role chunk per choice  {"delta":{"role":"assistant","content":""}}   (choices 0..n)
//!        content chunks         {"delta":{"content":"..."}}  (choices interleave by `index`)
//!        finish chunk per choice {"delta":{},"finish_reason":"stop"|"length"}
//!        [usage chunk]          {"choices":[],"usage":{...}}  when stream_options.include_usage
//!        data: [DONE]
//! completions: the same without role chunks; choices carry `text`.
//! engine error: data: {"error":{...}} then data: [DONE]
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
use super::response::{chat_logprobs, completion_logprobs, usage, Kind, Meta};
use super::track::Tracker;
use crate::engine::{EngineEvent, RequestStream};
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
    completion_tokens: usize,
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
        if self.req.meta.kind == Kind::Chat {
            for index in 0..self.req.n {
                self.push_chunk(
                    json!({"index": index, "delta": {"role": "assistant", "content": ""},
                    "logprobs": null, "finish_reason": null}),
                );
            }
        }
    }

    fn on_event(&mut self, ev: EngineEvent) {
        self.req.tracker.event(&ev);
        match ev {
            EngineEvent::Delta {
                sample,
                text,
                logprobs,
                ..
            } if sample < self.req.n => {
                if text.is_empty() && logprobs.is_empty() {
                    return;
                }
                let tokenizer = &self.req.model.tokenizer;
                let choice = match self.req.meta.kind {
                    Kind::Chat => {
                        let lp = self
                            .req
                            .meta
                            .logprobs
                            .then(|| json!({"content": chat_logprobs(tokenizer, &logprobs)}));
                        json!({"index": sample, "delta": {"content": text}, "logprobs": lp, "finish_reason": null})
                    }
                    Kind::Completion => {
                        let lp = self.req.meta.logprobs.then(|| {
                            completion_logprobs(tokenizer, &logprobs, &mut self.offsets[sample])
                        });
                        json!({"index": sample, "text": text, "logprobs": lp, "finish_reason": null})
                    }
                };
                self.push_chunk(choice);
            }
            EngineEvent::Finished {
                sample,
                reason,
                completion_tokens,
            } if sample < self.req.n => {
                self.finished[sample] = true;
                self.completion_tokens += completion_tokens;
                let choice = match self.req.meta.kind {
                    Kind::Chat => {
                        json!({"index": sample, "delta": {}, "logprobs": null, "finish_reason": reason.as_str()})
                    }
                    Kind::Completion => {
                        json!({"index": sample, "text": "", "logprobs": null, "finish_reason": reason.as_str()})
                    }
                };
                self.push_chunk(choice);
            }
            EngineEvent::Error(msg) => self.fail(ApiError::Engine(msg)),
            EngineEvent::Delta { sample, .. } | EngineEvent::Finished { sample, .. } => {
                let n = self.req.n;
                self.fail(ApiError::Internal {
                    request_id: self.req.meta.id.clone(),
                    detail: format!(
                        "the engine sent an event for sample {sample} of a request with n={n}"
                    ),
                });
            }
        }
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
        if let Some(index) = self.finished.iter().position(|f| !f) {
            let request_id = self.req.meta.id.clone();
            let detail = format!("the engine closed the stream before sample {index} finished");
            return self.fail(ApiError::Internal { request_id, detail });
        }
        self.req.tracker.done(self.req.prompt_tokens);
        if self.req.include_usage {
            let u = usage(self.req.prompt_tokens, self.completion_tokens);
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
    let mut st = State {
        req,
        pending: VecDeque::new(),
        offsets: vec![0; n],
        finished: vec![false; n],
        completion_tokens: 0,
        closed: false,
    };
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
