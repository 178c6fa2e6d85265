//! Rendering of response bodies (the typed `body.rs` structs) in OpenAI's shape, for both
//! endpoints: whole (`collect`, from `fold::Outcome`) or as stream chunks (`Meta`'s chunk
//! builders, used by `stream.rs`).
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

use serde_json::{Map, Value};

use super::body::{
    self, ChatChoice, ChatChunkChoice, ChatLogprobs, ChatTokenLogprob, Chunk, CompletionChoice,
    CompletionLogprobs, Delta, Message, Reasoning, Usage,
};
use super::error::ApiError;
use super::fold::{best_of, Choice, Fold};
use super::track::Tracker;
use crate::engine::{RequestStream, TokenLogprob};
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

/// A logprob on the wire: the shortest decimal of the f32, -9999.0 when not finite.
pub fn logprob_value(x: f32) -> f64 {
    if !x.is_finite() {
        return MIN_LOGPROB;
    }
    format!("{x}").parse::<f64>().unwrap_or(f64::from(x))
}

/// The text of one token as the client sees it (special tokens included).
fn token_text(t: &Tokenizer, id: u32) -> String {
    t.decode(&[id], false)
}

fn chat_token(t: &Tokenizer, vocab: &TokenBytes, id: u32, logprob: f32) -> ChatTokenLogprob {
    ChatTokenLogprob {
        token: token_text(t, id),
        logprob: logprob_value(logprob),
        bytes: vocab.bytes(id).to_vec(),
        top_logprobs: None,
    }
}

/// Chat logprobs for `lps`.
pub fn chat_logprobs(t: &Tokenizer, vocab: &TokenBytes, lps: &[TokenLogprob]) -> ChatLogprobs {
    let content = lps
        .iter()
        .map(|lp| ChatTokenLogprob {
            top_logprobs: Some(
                lp.top
                    .iter()
                    .map(|&(id, l)| chat_token(t, vocab, id, l))
                    .collect(),
            ),
            ..chat_token(t, vocab, lp.token, lp.logprob)
        })
        .collect();
    ChatLogprobs { content }
}

/// Completions logprobs for `lps`; `offset` is the text offset (in chars) of the first
/// token and is advanced past the last.
pub fn completion_logprobs(
    t: &Tokenizer,
    lps: &[TokenLogprob],
    offset: &mut usize,
) -> CompletionLogprobs {
    let mut out = CompletionLogprobs {
        tokens: Vec::with_capacity(lps.len()),
        token_logprobs: Vec::with_capacity(lps.len()),
        top_logprobs: Vec::with_capacity(lps.len()),
        text_offset: Vec::with_capacity(lps.len()),
    };
    for lp in lps {
        let s = token_text(t, lp.token);
        out.text_offset.push(*offset);
        *offset += s.chars().count();
        out.tokens.push(s);
        out.token_logprobs.push(logprob_value(lp.logprob));
        // Two ids can decode to the same text: the first (most likely) one is kept.
        let mut top = Map::new();
        for &(id, l) in &lp.top {
            top.entry(token_text(t, id))
                .or_insert_with(|| Value::from(logprob_value(l)));
        }
        out.top_logprobs.push(top);
    }
    out
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

/// One stream chunk's content, either endpoint.
pub enum ChunkChoices {
    Chat(Vec<ChatChunkChoice>),
    Completion(Vec<CompletionChoice>),
}

/// What a chunk carries besides its choices.
#[derive(Default)]
pub struct ChunkExtra {
    /// `Some` when the client asked for usage: null (`Some(None)`) but on the usage chunk.
    pub usage: Option<Option<Usage>>,
    pub ttc: Option<Value>,
    pub ttc_progress: Option<Value>,
}

impl Meta {
    fn chunk<C: serde::Serialize>(
        &self,
        object: &'static str,
        choices: Vec<C>,
        x: ChunkExtra,
    ) -> Value {
        body::to_value(&Chunk {
            id: self.id.clone(),
            object,
            created: self.created,
            model: self.model.clone(),
            choices,
            usage: x.usage,
            ttc: x.ttc,
            ttc_progress: x.ttc_progress,
        })
    }

    /// A stream chunk as JSON.
    pub fn chunk_json(&self, choices: ChunkChoices, x: ChunkExtra) -> Value {
        match choices {
            ChunkChoices::Chat(c) => self.chunk("chat.completion.chunk", c, x),
            ChunkChoices::Completion(c) => self.chunk("text_completion", c, x),
        }
    }

    /// A chunk without choices (progress, the report, usage).
    pub fn bare_chunk(&self, x: ChunkExtra) -> Value {
        match self.kind {
            Kind::Chat => self.chunk_json(ChunkChoices::Chat(Vec::new()), x),
            Kind::Completion => self.chunk_json(ChunkChoices::Completion(Vec::new()), x),
        }
    }

    /// A chat message of a whole response: tool calls parsed out of the text when the
    /// request has tools (`finish_reason` becomes `tool_calls` for a sample that stopped).
    fn message(&self, c: &Choice) -> (Message, &'static str) {
        let mut reason = c.finish_reason();
        let mut msg = Message {
            role: "assistant",
            content: Some(c.text.clone()),
            tool_calls: None,
            reasoning: Reasoning::of(self.reasoning, &c.reasoning),
        };
        let calls = self
            .tool_parser
            .and_then(|p| crate::tools::parse_calls(&c.text, p));
        if let Some((content, calls)) = calls {
            msg.content = (!content.is_empty()).then_some(content);
            msg.tool_calls = Some(crate::tools::calls_json(&calls, false));
            if c.finish == Some(FinishReason::Stop) {
                reason = "tool_calls";
            }
        }
        (msg, reason)
    }

    fn chat_choice(&self, index: usize, c: &Choice, t: &Tokenizer) -> ChatChoice {
        let (message, finish_reason) = self.message(c);
        ChatChoice {
            index,
            message,
            logprobs: self
                .logprobs
                .then(|| chat_logprobs(t, &self.vocab, &c.logprobs)),
            finish_reason,
        }
    }

    fn completion_choice(&self, index: usize, c: &Choice, t: &Tokenizer) -> CompletionChoice {
        CompletionChoice {
            index,
            text: match &self.echo {
                Some(e) => format!("{e}{}", c.text),
                None => c.text.clone(),
            },
            logprobs: self
                .logprobs
                .then(|| completion_logprobs(t, &c.logprobs, &mut 0)),
            finish_reason: Some(c.finish_reason()),
            reasoning_content: self
                .reasoning
                .then(|| (!c.reasoning.is_empty()).then(|| c.reasoning.clone())),
        }
    }

    /// Chat chunk choice with a delta.
    pub fn chat_delta(
        &self,
        index: usize,
        delta: Delta,
        logprobs: Option<ChatLogprobs>,
    ) -> ChunkChoices {
        ChunkChoices::Chat(vec![ChatChunkChoice {
            index,
            delta,
            logprobs,
            finish_reason: None,
        }])
    }

    /// The final chunk choice of `index`: no content, the finish reason.
    pub fn finish_choice(&self, index: usize, reason: &'static str) -> ChunkChoices {
        match self.kind {
            Kind::Chat => ChunkChoices::Chat(vec![ChatChunkChoice {
                index,
                delta: Delta::default(),
                logprobs: None,
                finish_reason: Some(reason),
            }]),
            Kind::Completion => ChunkChoices::Completion(vec![CompletionChoice {
                index,
                text: String::new(),
                logprobs: None,
                finish_reason: Some(reason),
                reasoning_content: None,
            }]),
        }
    }

    /// A whole response body from its choices.
    fn whole(
        &self,
        choices: &[Choice],
        no_answer: Option<&'static str>,
        usage: Usage,
        ttc: Option<Value>,
        t: &Tokenizer,
    ) -> Value {
        match self.kind {
            Kind::Chat => {
                let mut out: Vec<ChatChoice> = choices
                    .iter()
                    .enumerate()
                    .map(|(i, c)| self.chat_choice(i, c, t))
                    .collect();
                if let Some(reason) = no_answer {
                    out.push(ChatChoice {
                        index: 0,
                        message: Message {
                            role: "assistant",
                            content: None,
                            tool_calls: None,
                            reasoning: Reasoning::default(),
                        },
                        logprobs: None,
                        finish_reason: reason,
                    });
                }
                body::to_value(&body::ChatCompletion {
                    id: self.id.clone(),
                    object: "chat.completion",
                    created: self.created,
                    model: self.model.clone(),
                    choices: out,
                    usage,
                    ttc,
                })
            }
            Kind::Completion => {
                let mut out: Vec<CompletionChoice> = choices
                    .iter()
                    .enumerate()
                    .map(|(i, c)| self.completion_choice(i, c, t))
                    .collect();
                if let Some(reason) = no_answer {
                    out.push(CompletionChoice {
                        index: 0,
                        text: String::new(),
                        logprobs: None,
                        finish_reason: Some(reason),
                        reasoning_content: None,
                    });
                }
                body::to_value(&body::Completion {
                    id: self.id.clone(),
                    object: "text_completion",
                    created: self.created,
                    model: self.model.clone(),
                    choices: out,
                    usage,
                    ttc,
                })
            }
        }
    }
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
    let mut fold = Fold::new(&meta.id, n, meta.aggregated, false, prompt_tokens);
    while let Some(ev) = stream.next().await {
        tracker.event(&ev);
        fold.event(ev)?;
    }
    let outcome = fold.finish()?;
    let mut choices = outcome.choices;
    let ttc = match &outcome.report {
        Some(r) => Some(r.to_json()),
        None => meta.grant.clone(),
    };
    let reason = match outcome.no_answer {
        Some(r) => r,
        None => {
            if let Some(keep) = meta.keep.filter(|_| !meta.aggregated) {
                choices = best_of(choices, keep);
            }
            choices.first().map_or("stop", Choice::finish_reason)
        }
    };
    tracker.done(prompt_tokens, reason);
    Ok(meta.whole(&choices, outcome.no_answer, outcome.usage, ttc, tokenizer))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn logprob_values() {
        assert_eq!(logprob_value(f32::NEG_INFINITY), -9999.0);
        assert_eq!(logprob_value(f32::NAN), -9999.0);
        assert_eq!(logprob_value(-0.5), -0.5);
        assert_eq!(
            json!(logprob_value(-std::f32::consts::LN_2)).to_string(),
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
            body::to_value(&Usage::new(7, 9, 4)),
            json!({"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16,
                "completion_tokens_details": {"reasoning_tokens": 4}})
        );
    }
}
