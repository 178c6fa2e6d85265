//! Response bodies as types: what `openapi.yaml`'s `ChatCompletion`, `ChatCompletionChunk`,
//! `Completion`, `CompletionChunk` and `Usage` schemas describe, serialized with serde.
//! JSON responses and SSE chunks are built from these and nothing else.
//!
//! Absent versus null follows OpenAI: `logprobs` and `finish_reason` are always present
//! (null when not asked / not finished); `reasoning_content` (and its alias `reasoning`) is
//! present exactly when the model marks thinking; a chunk's `usage` is present only when the
//! client asked for `stream_options.include_usage` (null but on the final usage chunk).
//! Field order is the serialization order (serde_json keeps it with `preserve_order`).

use serde::Serialize;
use serde_json::{Map, Value};

/// `usage`; `completion_tokens_details.reasoning_tokens` is 0 for models without markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub completion_tokens_details: UsageDetails,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UsageDetails {
    pub reasoning_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize, reasoning_tokens: usize) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            completion_tokens_details: UsageDetails { reasoning_tokens },
        }
    }
}

/// One chat logprobs entry: the token, its logprob (-9999.0 for -inf), raw bytes, and the
/// alternatives most likely first (each without its own `top_logprobs`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatTokenLogprob {
    pub token: String,
    pub logprob: f64,
    pub bytes: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<Vec<ChatTokenLogprob>>,
}

/// Chat `logprobs`: `{"content": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
}

/// Completions `logprobs` (the legacy shape): parallel arrays; `top_logprobs` maps token
/// text to logprob, most likely first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f64>,
    pub top_logprobs: Vec<Map<String, Value>>,
    pub text_offset: Vec<usize>,
}

/// `reasoning_content` and `reasoning` of a message or delta: both absent (a model without
/// thinking markers), or both the same (null when the sample did not think).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Reasoning {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Option<String>>,
}

impl Reasoning {
    /// For a model with markers (`marked`): the text, null when empty; else absent.
    pub fn of(marked: bool, text: &str) -> Self {
        if !marked {
            return Self::default();
        }
        let r = (!text.is_empty()).then(|| text.to_string());
        Reasoning {
            reasoning_content: Some(r.clone()),
            reasoning: Some(r),
        }
    }

    /// A streamed delta's reasoning: absent when there is none.
    pub fn delta(text: &str) -> Self {
        if text.is_empty() {
            return Self::default();
        }
        Reasoning {
            reasoning_content: Some(Some(text.to_string())),
            reasoning: Some(Some(text.to_string())),
        }
    }
}

/// A chat message of a whole response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub role: &'static str,
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Value>,
    #[serde(flatten)]
    pub reasoning: Reasoning,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChoice {
    pub index: usize,
    pub message: Message,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: &'static str,
}

/// A chat delta: only what this chunk adds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Value>,
    #[serde(flatten)]
    pub reasoning: Reasoning,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChunkChoice {
    pub index: usize,
    pub delta: Delta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
}

/// A completions choice, whole (`finish_reason` set) or as a chunk (null until the end).
/// Only `reasoning_content` carries thinking here (no `reasoning` alias).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<Option<String>>,
}

/// A whole response (`chat.completion` / `text_completion`) with its choice type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Response<C> {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<C>,
    pub usage: Usage,
    /// The budget report (asked / granted, or the controller's full report).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttc: Option<Value>,
}

/// One SSE chunk (`chat.completion.chunk` / `text_completion`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chunk<C> {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<C>,
    /// Absent unless `include_usage`; then null but on the final usage chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttc: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttc_progress: Option<Value>,
}

pub type ChatCompletion = Response<ChatChoice>;
pub type Completion = Response<CompletionChoice>;
pub type ChatCompletionChunk = Chunk<ChatChunkChoice>;
pub type CompletionChunk = Chunk<CompletionChoice>;

/// A serializable body as a JSON value (our types hold no maps with non-string keys, so
/// this cannot fail).
pub fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("response bodies serialize")
}
