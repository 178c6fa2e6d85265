//! Response bodies in OpenAI's shape, for both endpoints, whole (`collect`) or as stream
//! chunks (`Meta::chunk`, used by `stream.rs`).
//!
//! Logprobs: chat `{"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}`,
//! completions `{tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}`.
//! `bytes` are the token's raw bytes (a token ending inside a UTF-8 character included), and
//! alternatives come most likely first on both endpoints (the completions dict keeps that
//! order). Completions `echo` puts the prompt text before each choice's text; `best_of`
//! returns the `n` candidates with the highest mean token logprob (usage counts them all).
//! A logprob of -inf (a token the filters removed) is sent as -9999.0, as OpenAI does.
//! Usage counts the prompt once, however many samples (`n`) there are, and every generated
//! token of every sample (aggregated requests included: stopped samples' tokens too).
//! Aggregated requests (`ttc`) return one choice, the controller's winning sample, plus the
//! `ttc` report; models with reasoning markers add `reasoning_content` (alias `reasoning`).
//! When no sample completed (the deadline or the token budget stopped them all) the choice
//! has `content: null` and the stop reason as `finish_reason` (`deadline`, `token_budget`):
//! no cut-off text is passed off as an answer; the report has every sample's account.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::track::Tracker;
use crate::budget::TtcReport;
use crate::engine::{EngineEvent, RequestStream, TokenLogprob};
use crate::guided::TokenBytes;
use crate::model::tokenizer::Tokenizer;
use crate::sample::FinishReason;

/// Logprob sent for -inf / NaN.
pub const MIN_LOGPROB: f64 = -9999.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

impl Kind {
    pub fn id_prefix(self) -> &'static str {
        match self {
            Kind::Chat => "chatcmpl-",
            Kind::Completion => "cmpl-",
        }
    }
}

/// A logprob as JSON: shortest decimal of the f32, -9999.0 when not finite.
pub fn logprob_json(x: f32) -> Value {
    if !x.is_finite() {
        return json!(MIN_LOGPROB);
    }
    json!(format!("{x}").parse::<f64>().unwrap_or(f64::from(x)))
}

/// The text of one token as the client sees it (special tokens included).
fn token_text(t: &Tokenizer, id: u32) -> String {
    t.decode(&[id], false)
}

fn chat_token(t: &Tokenizer, vocab: &TokenBytes, id: u32, logprob: f32) -> Map<String, Value> {
    let s = token_text(t, id);
    let mut m = Map::new();
    m.insert("token".into(), json!(s));
    m.insert("logprob".into(), logprob_json(logprob));
    m.insert("bytes".into(), json!(vocab.bytes(id)));
    m
}

/// Chat logprobs entries (the `content` array) for `lps`.
pub fn chat_logprobs(t: &Tokenizer, vocab: &TokenBytes, lps: &[TokenLogprob]) -> Vec<Value> {
    lps.iter()
        .map(|lp| {
            let mut m = chat_token(t, vocab, lp.token, lp.logprob);
            let top: Vec<Value> = lp
                .top
                .iter()
                .map(|&(id, l)| Value::Object(chat_token(t, vocab, id, l)))
                .collect();
            m.insert("top_logprobs".into(), Value::Array(top));
            Value::Object(m)
        })
        .collect()
}

/// Completions logprobs object for `lps`; `offset` is the text offset (in chars) of the
/// first token and is advanced past the last.
pub fn completion_logprobs(t: &Tokenizer, lps: &[TokenLogprob], offset: &mut usize) -> Value {
    let mut tokens = Vec::with_capacity(lps.len());
    let mut token_logprobs = Vec::with_capacity(lps.len());
    let mut top_logprobs = Vec::with_capacity(lps.len());
    let mut text_offset = Vec::with_capacity(lps.len());
    for lp in lps {
        let s = token_text(t, lp.token);
        text_offset.push(*offset);
        *offset += s.chars().count();
        tokens.push(json!(s));
        token_logprobs.push(logprob_json(lp.logprob));
        // Two ids can decode to the same text: the first (most likely) one is kept.
        let mut top = Map::new();
        for &(id, l) in &lp.top {
            top.entry(token_text(t, id))
                .or_insert_with(|| logprob_json(l));
        }
        top_logprobs.push(Value::Object(top));
    }
    json!({"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs, "text_offset": text_offset})
}

/// `usage`, with `completion_tokens_details.reasoning_tokens` (0 for models without markers).
pub fn usage(prompt_tokens: usize, completion_tokens: usize, reasoning_tokens: usize) -> Value {
    json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens}})
}

/// What every response object of one request repeats.
#[derive(Debug, Clone)]
pub struct Meta {
    pub kind: Kind,
    pub id: String,
    pub created: u64,
    pub model: String,
    /// Whether logprobs were asked for (else `"logprobs": null`).
    pub logprobs: bool,
    /// The model marks thinking: messages carry `reasoning_content` (and its alias `reasoning`).
    pub reasoning: bool,
    /// Samples are aggregated into one choice (a `Report` event decides which).
    pub aggregated: bool,
    /// Budget asked versus granted for requests that asked for one without aggregation.
    pub grant: Option<Value>,
    /// Every token's raw bytes (logprobs `bytes`).
    pub vocab: Arc<TokenBytes>,
    /// Completions `echo`: the prompt text before each choice's text.
    pub echo: Option<String>,
    /// Chat with tools: output is parsed for calls in this format.
    pub tool_parser: Option<crate::tools::ToolParser>,
    /// Completions `best_of`: only this many candidates (the best) are returned.
    pub keep: Option<usize>,
}

impl Meta {
    /// A stream chunk with the given choices (and `usage`, when the client asked for it:
    /// `null` on every chunk but the final usage chunk).
    pub fn chunk(&self, choices: Vec<Value>, usage: Option<Value>) -> Value {
        let object = match self.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        };
        let mut v = json!({"id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": choices});
        if let (Some(u), Value::Object(m)) = (usage, &mut v) {
            m.insert("usage".into(), u);
        }
        v
    }

    /// The choice of an aggregated request none of whose samples completed: no content, the
    /// stop rule that ended them as the finish reason.
    pub fn no_answer_choice(&self, reason: &str) -> Value {
        match self.kind {
            Kind::Chat => json!({"index": 0, "message": {"role": "assistant", "content": null},
                "logprobs": null, "finish_reason": reason}),
            Kind::Completion => {
                json!({"index": 0, "text": "", "logprobs": null, "finish_reason": reason})
            }
        }
    }

    /// A finished choice (whole response) in the endpoint's shape.
    pub fn choice_json(&self, index: usize, c: &Choice, t: &Tokenizer) -> Value {
        let reason = c.finish_reason();
        match self.kind {
            Kind::Chat => {
                let lp = self
                    .logprobs
                    .then(|| json!({"content": chat_logprobs(t, &self.vocab, &c.logprobs)}));
                let mut msg = json!({"role": "assistant", "content": c.text});
                let mut reason = reason;
                let calls = self
                    .tool_parser
                    .and_then(|p| crate::tools::parse_calls(&c.text, p));
                if let Some((content, calls)) = calls {
                    msg["content"] = if content.is_empty() {
                        Value::Null
                    } else {
                        json!(content)
                    };
                    msg["tool_calls"] = crate::tools::calls_json(&calls, false);
                    if c.finish == Some(FinishReason::Stop) {
                        reason = "tool_calls";
                    }
                }
                if self.reasoning {
                    let r = (!c.reasoning.is_empty()).then_some(c.reasoning.as_str());
                    msg["reasoning_content"] = json!(r);
                    msg["reasoning"] = json!(r);
                }
                json!({"index": index, "message": msg, "logprobs": lp, "finish_reason": reason})
            }
            Kind::Completion => {
                let lp = self
                    .logprobs
                    .then(|| completion_logprobs(t, &c.logprobs, &mut 0));
                let text = match &self.echo {
                    Some(e) => format!("{e}{}", c.text),
                    None => c.text.clone(),
                };
                let mut v =
                    json!({"index": index, "text": text, "logprobs": lp, "finish_reason": reason});
                if self.reasoning {
                    let r = (!c.reasoning.is_empty()).then_some(c.reasoning.as_str());
                    v["reasoning_content"] = json!(r);
                }
                v
            }
        }
    }
}

/// One sample being accumulated.
#[derive(Debug, Default, Clone)]
pub struct Choice {
    pub text: String,
    pub reasoning: String,
    pub logprobs: Vec<TokenLogprob>,
    pub finish: Option<FinishReason>,
}

impl Choice {
    /// OpenAI's finish_reason; a sample the controller stopped reads as `length` (its text
    /// is cut short; the `ttc` report says why).
    pub fn finish_reason(&self) -> &'static str {
        match self.finish {
            Some(FinishReason::Abort) => "length",
            Some(r) => r.as_str(),
            None => "length",
        }
    }
}

/// Per-request accumulation shared by the JSON and SSE paths.
#[derive(Debug, Default)]
pub struct Totals {
    pub completion_tokens: usize,
    pub reasoning_tokens: usize,
    pub report: Option<TtcReport>,
}

/// Reads `stream` to the end and builds the whole response body.
pub async fn collect(
    mut stream: RequestStream,
    meta: &Meta,
    tokenizer: &Tokenizer,
    n: usize,
    prompt_tokens: usize,
    tracker: &mut Tracker,
) -> Result<Value, ApiError> {
    let mut choices: Vec<Choice> = (0..n).map(|_| Choice::default()).collect();
    let mut totals = Totals::default();
    while let Some(ev) = stream.next().await {
        tracker.event(&ev);
        match ev {
            EngineEvent::Delta {
                sample,
                text,
                reasoning,
                logprobs,
                ..
            } => {
                let c = choice(&mut choices, sample, &meta.id)?;
                c.text.push_str(&text);
                c.reasoning.push_str(&reasoning);
                c.logprobs.extend(logprobs);
            }
            EngineEvent::Finished {
                sample,
                reason,
                completion_tokens,
                reasoning_tokens,
                ..
            } => {
                choice(&mut choices, sample, &meta.id)?.finish = Some(reason);
                totals.completion_tokens += completion_tokens;
                totals.reasoning_tokens += reasoning_tokens;
            }
            EngineEvent::Report(r) => totals.report = Some(*r),
            EngineEvent::Progress(_) => {}
            EngineEvent::Error(msg) => return Err(ApiError::Engine(msg)),
        }
    }
    let internal = |detail: String| ApiError::Internal {
        request_id: meta.id.clone(),
        detail,
    };
    let mut out = Vec::with_capacity(n);
    let mut ttc = meta.grant.clone();
    let reason: &str;
    if meta.aggregated {
        let report = totals.report.take().ok_or_else(|| {
            internal("the engine closed an aggregated request without its report".into())
        })?;
        match report.winner_sample {
            Some(w) => {
                let c = choices.get(w).ok_or_else(|| {
                    internal(format!("the report names sample {w}, beyond n={n}"))
                })?;
                reason = c.finish_reason();
                out.push(meta.choice_json(0, c, tokenizer));
            }
            None => {
                reason = no_answer_reason(&report);
                out.push(meta.no_answer_choice(reason));
            }
        }
        ttc = Some(report.to_json());
    } else {
        if let Some(index) = choices.iter().position(|c| c.finish.is_none()) {
            return Err(internal(format!(
                "the engine closed the stream before sample {index} finished"
            )));
        }
        if let Some(keep) = meta.keep {
            choices = best_of(choices, keep);
        }
        reason = choices.first().map_or("stop", Choice::finish_reason);
        for (index, c) in choices.iter().enumerate() {
            out.push(meta.choice_json(index, c, tokenizer));
        }
    }
    tracker.done(prompt_tokens, reason);
    let object = match meta.kind {
        Kind::Chat => "chat.completion",
        Kind::Completion => "text_completion",
    };
    let mut body = json!({"id": meta.id, "object": object, "created": meta.created, "model": meta.model,
        "choices": out, "usage": usage(prompt_tokens, totals.completion_tokens, totals.reasoning_tokens)});
    if let Some(t) = ttc {
        body["ttc"] = t;
    }
    Ok(body)
}

/// `best_of`: the `keep` candidates with the highest mean token logprob, best first (ties:
/// the earlier sample).
pub fn best_of(mut choices: Vec<Choice>, keep: usize) -> Vec<Choice> {
    let mean = |c: &Choice| {
        let n = c.logprobs.len();
        if n == 0 {
            return f64::NEG_INFINITY;
        }
        c.logprobs.iter().map(|l| f64::from(l.logprob)).sum::<f64>() / n as f64
    };
    let mut order: Vec<(f64, usize)> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| (mean(c), i))
        .collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut taken: Vec<Option<Choice>> = choices.drain(..).map(Some).collect();
    order
        .into_iter()
        .take(keep)
        .filter_map(|(_, i)| taken[i].take())
        .collect()
}

/// The finish reason of an aggregated request without a completed sample: the stop rule
/// that ended its samples.
pub fn no_answer_reason(r: &TtcReport) -> &'static str {
    r.stop_reason.map_or("length", |s| s.as_str())
}

fn choice<'a>(
    choices: &'a mut [Choice],
    sample: usize,
    id: &str,
) -> Result<&'a mut Choice, ApiError> {
    let n = choices.len();
    choices.get_mut(sample).ok_or_else(|| ApiError::Internal {
        request_id: id.to_string(),
        detail: format!("the engine sent an event for sample {sample} of a request with n={n}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprob_values() {
        assert_eq!(logprob_json(f32::NEG_INFINITY), json!(-9999.0));
        assert_eq!(logprob_json(f32::NAN), json!(-9999.0));
        assert_eq!(logprob_json(-0.5), json!(-0.5));
        assert_eq!(
            logprob_json(-std::f32::consts::LN_2).to_string(),
            "-0.6931472"
        );
    }

    #[test]
    fn best_of_keeps_the_highest_mean_logprob() {
        let c = |lps: &[f32], text: &str| Choice {
            text: text.into(),
            logprobs: lps
                .iter()
                .map(|&l| TokenLogprob {
                    token: 0,
                    logprob: l,
                    top: vec![],
                })
                .collect(),
            finish: Some(FinishReason::Stop),
            ..Choice::default()
        };
        let all = vec![
            c(&[-1.0, -3.0], "a"),
            c(&[-0.5], "b"),
            c(&[-2.0, -0.0], "c"),
            c(&[], "d"),
        ];
        let best: Vec<String> = best_of(all.clone(), 2)
            .into_iter()
            .map(|c| c.text)
            .collect();
        assert_eq!(best, ["b", "c"]);
        let best: Vec<String> = best_of(all, 4).into_iter().map(|c| c.text).collect();
        assert_eq!(best, ["b", "c", "a", "d"]);
    }

    #[test]
    fn usage_counts() {
        assert_eq!(
            usage(7, 9, 4),
            json!({"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16,
                "completion_tokens_details": {"reasoning_tokens": 4}})
        );
    }
}
