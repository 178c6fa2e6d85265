//! Router test support: a scripted fake engine (records what it was given, answers with fixed
//! tokens, can be dead / queue-full / hold requests open / fail), the default model's
//! tokenizer and template (loaded once per test binary), and request helpers.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use axum::body::Body;
use axum::http::{Request, Response};
use ponder::api::{router, AppState};
use ponder::budget::{Action, Controller, ProbeKind, ProbeResult};
use ponder::engine::{
    EngineClient, EngineEvent, EngineStats, GenerateRequest, RequestStream, SubmitError,
    TokenLogprob,
};
use ponder::model::LoadedModel;
use ponder::sample::FinishReason;
use ponder::validate::HttpLimits;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;
use tower::ServiceExt;

pub static MODEL: LazyLock<Arc<LoadedModel>> = LazyLock::new(|| {
    let path =
        ponder::model::loader::default_model_path().expect("default model (scripts/fetch-model)");
    Arc::new(ponder::model::load_model(&path).expect("load the default model"))
});

/// The single token id of `text` (panics if it is not one token).
pub fn tok(text: &str) -> u32 {
    let ids = MODEL.tokenizer.encode(text, false).unwrap();
    assert_eq!(ids.len(), 1, "`{text}` is not a single token: {ids:?}");
    ids[0]
}

/// Token ids of the chat prompt `messages` as the server builds them.
pub fn chat_prompt_ids(messages: &[(&str, &str)]) -> Vec<u32> {
    let msgs: Vec<_> = messages
        .iter()
        .map(|(r, c)| ponder::model::template::ChatMessage::new(r, c))
        .collect();
    let text = MODEL.template.render(&msgs, true).unwrap();
    MODEL
        .tokenizer
        .encode(&text, MODEL.tokenizer.add_bos)
        .unwrap()
}

#[derive(Debug, Clone, PartialEq)]
pub enum Behavior {
    /// Sample i: Delta("Hello"), Delta(" world") — or " world{i}" for i > 0 — then Finished(Stop, 2).
    /// Deltas of different samples interleave (round-robin).
    Script,
    /// Sends one "Hello" delta per sample, then keeps the request open until cancelled.
    Hold,
    /// Sends one "Hello" delta of sample 0, then `Error(msg)`.
    FailAfterDelta(String),
    /// Aggregated requests: a real budget `Controller` decides; sample i answers with one token
    /// of text `texts[i % len]` and logprob -0.1 * (i + 1), in sample order.
    Ttc(Vec<String>),
    /// `submit` fails with `QueueFull { limit }`.
    QueueFull(usize),
    /// `submit` fails with `EngineDead` and `is_alive()` is false.
    Dead,
}

pub struct FakeEngine {
    pub behavior: Mutex<Behavior>,
    pub submitted: Mutex<Vec<GenerateRequest>>,
    pub cancel_flags: Mutex<Vec<Arc<AtomicBool>>>,
    pub held: Mutex<Vec<UnboundedSender<EngineEvent>>>,
    pub stats: Mutex<EngineStats>,
}

impl FakeEngine {
    pub fn new(behavior: Behavior) -> Arc<Self> {
        Arc::new(FakeEngine {
            behavior: Mutex::new(behavior),
            submitted: Mutex::new(Vec::new()),
            cancel_flags: Mutex::new(Vec::new()),
            held: Mutex::new(Vec::new()),
            stats: Mutex::new(EngineStats::default()),
        })
    }

    pub fn last_request(&self) -> GenerateRequest {
        self.submitted
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a submitted request")
    }

    pub fn cancelled(&self, i: usize) -> bool {
        self.cancel_flags.lock().unwrap()[i].load(Ordering::Acquire)
    }
}

/// Logprobs the fake reports for `token` when `k` alternatives are asked for: the token
/// itself at -0.5, then " world" at -1.25, then -inf entries.
pub fn fake_logprob(token: u32, k: usize) -> TokenLogprob {
    let alts = [
        (token, -0.5f32),
        (tok(" world"), -1.25),
        (tok("!"), f32::NEG_INFINITY),
    ];
    TokenLogprob {
        token,
        logprob: -0.5,
        top: alts.iter().copied().take(k).collect(),
    }
}

fn delta(sample: usize, text: &str, req: &GenerateRequest) -> EngineEvent {
    let token = tok(text);
    let logprobs = if req.params.logprobs {
        vec![fake_logprob(token, req.params.top_logprobs as usize)]
    } else {
        Vec::new()
    };
    EngineEvent::Delta {
        sample,
        token_ids: vec![token],
        text: text.to_string(),
        reasoning: String::new(),
        logprobs,
    }
}

/// Runs `req.ttc` through a real controller with scripted one-token samples.
fn drive_ttc(req: &GenerateRequest, texts: &[String], tx: &UnboundedSender<EngineEvent>) {
    let plan = req
        .ttc
        .clone()
        .expect("Behavior::Ttc needs an aggregated request");
    let mut c = Controller::new(plan);
    let mut pending: VecDeque<usize> = VecDeque::new();
    let mut ended: Vec<bool> = Vec::new();
    // Probes answer at once: a verification scores sample i as 0.9 - 0.1 i; an answer probe
    // is dropped (no forks in the fake).
    let handle = |acts: Vec<Action>,
                  pending: &mut VecDeque<usize>,
                  ended: &mut Vec<bool>,
                  c: &mut Controller| {
        let mut queue: VecDeque<Action> = acts.into();
        while let Some(a) = queue.pop_front() {
            match a {
                Action::Launch { first, count, .. } => {
                    ended.resize(first + count, false);
                    pending.extend(first..first + count);
                }
                Action::Stop { sample, reason } => {
                    let emitted = !pending.contains(&sample);
                    ended[sample] = true;
                    tx.send(EngineEvent::Finished {
                        sample,
                        reason: FinishReason::Abort,
                        completion_tokens: usize::from(emitted),
                        reasoning_tokens: 0,
                        early_stop: Some(reason),
                    })
                    .unwrap();
                }
                Action::Probe { sample, kind } => {
                    let r = match kind {
                        ProbeKind::Verify => ProbeResult::Score(0.9 - 0.1 * sample as f64),
                        ProbeKind::Answer => ProbeResult::Dropped,
                    };
                    queue.extend(c.on_probe(sample, kind, r, 3));
                }
                Action::EndThinking { .. } => {}
                Action::Finish => tx.send(EngineEvent::Report(Box::new(c.report()))).unwrap(),
            }
        }
    };
    let acts = c.start();
    handle(acts, &mut pending, &mut ended, &mut c);
    while let Some(i) = pending.pop_front() {
        if ended[i] {
            continue;
        }
        let text = texts[i % texts.len()].clone();
        tx.send(EngineEvent::Delta {
            sample: i,
            token_ids: vec![1],
            text: text.clone(),
            reasoning: String::new(),
            logprobs: Vec::new(),
        })
        .unwrap();
        let acts = c.on_token(i, ponder::budget::Tok::drawn(-0.1 * (i + 1) as f32));
        let stopped = acts
            .iter()
            .any(|a| matches!(a, Action::Stop { sample, .. } if *sample == i));
        handle(acts, &mut pending, &mut ended, &mut c);
        if stopped {
            continue;
        }
        ended[i] = true;
        tx.send(EngineEvent::Finished {
            sample: i,
            reason: FinishReason::Stop,
            completion_tokens: 1,
            reasoning_tokens: 0,
            early_stop: None,
        })
        .unwrap();
        let acts = c.on_finished(i, &text, 0);
        handle(acts, &mut pending, &mut ended, &mut c);
    }
}

impl EngineClient for FakeEngine {
    fn submit(&self, req: GenerateRequest) -> Result<RequestStream, SubmitError> {
        let behavior = self.behavior.lock().unwrap().clone();
        match behavior {
            Behavior::QueueFull(limit) => return Err(SubmitError::QueueFull { limit }),
            Behavior::Dead => return Err(SubmitError::EngineDead),
            _ => {}
        }
        let (stream, tx, cancel) = RequestStream::channel();
        self.submitted.lock().unwrap().push(req.clone());
        self.cancel_flags.lock().unwrap().push(cancel);
        match behavior {
            Behavior::Script => {
                for i in 0..req.n {
                    tx.send(delta(i, "Hello", &req)).unwrap();
                }
                for i in 0..req.n {
                    let text = if i == 0 {
                        " world".to_string()
                    } else {
                        format!(" world{i}")
                    };
                    // " world{i}" is two tokens; the fake reports it as one delta of one token.
                    let mut ev = delta(i, " world", &req);
                    if let EngineEvent::Delta { text: t, .. } = &mut ev {
                        *t = text;
                    }
                    tx.send(ev).unwrap();
                }
                for i in 0..req.n {
                    tx.send(EngineEvent::Finished {
                        sample: i,
                        reason: FinishReason::Stop,
                        completion_tokens: 2,
                        reasoning_tokens: 0,
                        early_stop: None,
                    })
                    .unwrap();
                }
            }
            Behavior::Hold => {
                for i in 0..req.n {
                    tx.send(delta(i, "Hello", &req)).unwrap();
                }
                self.held.lock().unwrap().push(tx);
            }
            Behavior::FailAfterDelta(msg) => {
                tx.send(delta(0, "Hello", &req)).unwrap();
                tx.send(EngineEvent::Error(msg)).unwrap();
            }
            Behavior::Ttc(texts) => drive_ttc(&req, &texts, &tx),
            Behavior::QueueFull(_) | Behavior::Dead => {}
        }
        Ok(stream)
    }

    fn is_alive(&self) -> bool {
        *self.behavior.lock().unwrap() != Behavior::Dead
    }

    fn stats(&self) -> EngineStats {
        self.stats.lock().unwrap().clone()
    }
}

pub const LIMITS: HttpLimits = HttpLimits {
    max_body_bytes: 64 * 1024,
    max_tokens_limit: 4096,
    max_n: 16,
};

/// A ready app over `engine`.
pub fn app(engine: Arc<FakeEngine>) -> AppState {
    let state = AppState::new(engine, MODEL.clone(), Some("smol".to_string()), LIMITS).unwrap();
    state.set_ready(true);
    state
}

pub fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

pub fn get(path: &str) -> Request<Body> {
    Request::builder()
        .method("GET")
        .uri(path)
        .body(Body::empty())
        .unwrap()
}

pub async fn send(state: &AppState, req: Request<Body>) -> Response<Body> {
    router(state.clone()).oneshot(req).await.unwrap()
}

pub async fn body_text(resp: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Sends `req`, returns (status, JSON body).
pub async fn call(state: &AppState, req: Request<Body>) -> (u16, Value) {
    let resp = send(state, req).await;
    let status = resp.status().as_u16();
    let text = body_text(resp).await;
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, v)
}

/// The OpenAI error envelope expected for these parts.
pub fn envelope(message: &str, kind: &str, param: Option<&str>, code: &str) -> Value {
    serde_json::json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}
