//! The request fields each inference endpoint knows, and what ponder does with each: every
//! field a client sends is either honoured or rejected with a 400 that names it. Nothing is
//! accepted and silently dropped.
//!
//! ```text
//! body key --null--------------------------> absent (OpenAI SDKs send null for "not given")
//!          --in the table, Honoured --------> read by request.rs (types), validate.rs (ranges)
//!          --in the table, Unsupported(why)-> 400 "`audio` is not supported: {why}"
//!          --not in the table --------------> 400 "`x` is not a field of POST /v1/...; known: ..."
//! ```
//!
//! The tables list OpenAI's request fields (the chat / completions create params of the
//! official SDK) first, then ponder's and vLLM's extensions. Values a field may take that
//! ponder does not implement (`store: true`, `modalities: ["audio"]`) are 400s from
//! request.rs, naming the field and the value.

use serde_json::{Map, Value};

use crate::validate::ValidateError;

/// What ponder does with a known field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Read and applied (some values may still be a 400: see request.rs).
    Honoured,
    /// Always a 400 (when not null), with this reason.
    Unsupported(&'static str),
}

use Support::{Honoured, Unsupported};

const NO_AUDIO: &str = "this server generates text only";
const NOT_STORED: &str = "this server does not store completions";
const NO_CACHE_KEY: &str = "the prefix cache is automatic (every full prompt block is cached \
                            and reused); it takes no key, retention or options";

/// `POST /v1/chat/completions`: OpenAI's fields, then ponder's / vLLM's extensions.
pub const CHAT_FIELDS: &[(&str, Support)] = &[
    ("messages", Honoured),
    ("model", Honoured),
    ("audio", Unsupported(NO_AUDIO)),
    ("frequency_penalty", Honoured),
    (
        "function_call",
        Unsupported(
            "the deprecated functions API is not implemented; use `tools` and `tool_choice`",
        ),
    ),
    (
        "functions",
        Unsupported(
            "the deprecated functions API is not implemented; use `tools` and `tool_choice`",
        ),
    ),
    ("logit_bias", Honoured),
    ("logprobs", Honoured),
    ("max_completion_tokens", Honoured),
    ("max_tokens", Honoured),
    ("metadata", Unsupported(NOT_STORED)),
    ("modalities", Honoured),
    (
        "moderation",
        Unsupported("this server runs no moderation model"),
    ),
    ("n", Honoured),
    ("parallel_tool_calls", Honoured),
    (
        "prediction",
        Unsupported("predicted outputs (speculative decoding from given text) are not implemented"),
    ),
    ("presence_penalty", Honoured),
    ("prompt_cache_key", Unsupported(NO_CACHE_KEY)),
    ("prompt_cache_options", Unsupported(NO_CACHE_KEY)),
    ("prompt_cache_retention", Unsupported(NO_CACHE_KEY)),
    ("reasoning_effort", Honoured),
    ("response_format", Honoured),
    ("safety_identifier", Honoured),
    ("seed", Honoured),
    ("service_tier", Honoured),
    ("stop", Honoured),
    ("store", Honoured),
    ("stream", Honoured),
    ("stream_options", Honoured),
    ("temperature", Honoured),
    ("tool_choice", Honoured),
    ("tools", Honoured),
    ("top_logprobs", Honoured),
    ("top_p", Honoured),
    ("user", Honoured),
    (
        "verbosity",
        Unsupported("output length is set with `max_completion_tokens`, not a verbosity level"),
    ),
    (
        "web_search_options",
        Unsupported("this server has no web search tool"),
    ),
    // ponder / vLLM extensions.
    ("top_k", Honoured),
    ("min_p", Honoured),
    ("repetition_penalty", Honoured),
    ("stop_token_ids", Honoured),
    ("ignore_eos", Honoured),
    ("min_tokens", Honoured),
    ("thinking_token_budget", Honoured),
    ("min_thinking_tokens", Honoured),
    ("ttc", Honoured),
    ("guided_json", Honoured),
    ("guided_regex", Honoured),
    ("guided_choice", Honoured),
    ("guided_grammar", Honoured),
];

/// `POST /v1/completions`: OpenAI's fields, then ponder's / vLLM's extensions.
pub const COMPLETION_FIELDS: &[(&str, Support)] = &[
    ("model", Honoured),
    ("prompt", Honoured),
    ("best_of", Honoured),
    ("echo", Honoured),
    ("frequency_penalty", Honoured),
    ("logit_bias", Honoured),
    ("logprobs", Honoured),
    ("max_tokens", Honoured),
    ("n", Honoured),
    ("presence_penalty", Honoured),
    ("seed", Honoured),
    ("stop", Honoured),
    ("stream", Honoured),
    ("stream_options", Honoured),
    ("suffix", Honoured),
    ("temperature", Honoured),
    ("top_p", Honoured),
    ("user", Honoured),
    // ponder / vLLM extensions.
    ("top_k", Honoured),
    ("min_p", Honoured),
    ("repetition_penalty", Honoured),
    ("stop_token_ids", Honoured),
    ("ignore_eos", Honoured),
    ("min_tokens", Honoured),
    ("reasoning_effort", Honoured),
    ("thinking_token_budget", Honoured),
    ("min_thinking_tokens", Honoured),
    ("ttc", Honoured),
    ("response_format", Honoured),
    ("guided_json", Honoured),
    ("guided_regex", Honoured),
    ("guided_choice", Honoured),
    ("guided_grammar", Honoured),
];

/// Rejects a body's unsupported and unknown fields (null values count as absent).
pub fn check(
    obj: &Map<String, Value>,
    table: &[(&str, Support)],
    route: &str,
) -> Result<(), ValidateError> {
    for (k, v) in obj {
        if v.is_null() {
            continue;
        }
        match table.iter().find(|(name, _)| name == k) {
            Some((_, Honoured)) => {}
            Some((_, Unsupported(why))) => {
                return Err(ValidateError::invalid(
                    k.as_str(),
                    format!("`{k}` is not supported: {why}"),
                ))
            }
            None => {
                let known: Vec<&str> = table
                    .iter()
                    .filter(|(_, s)| *s == Honoured)
                    .map(|(n, _)| *n)
                    .collect();
                return Err(ValidateError::invalid(
                    k.as_str(),
                    format!(
                        "`{k}` is not a field of POST {route}; supported: {}",
                        known.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_unsupported_and_null_fields() {
        let obj = |s: &str| serde_json::from_str::<Map<String, Value>>(s).unwrap();
        let route = "/v1/chat/completions";
        assert_eq!(
            check(&obj(r#"{"audio":null,"n":2}"#), CHAT_FIELDS, route),
            Ok(())
        );
        let e = check(&obj(r#"{"audio":{"voice":"x"}}"#), CHAT_FIELDS, route).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`audio` is not supported: this server generates text only"
        );
        assert_eq!(e.param().as_deref(), Some("audio"));
        let e = check(&obj(r#"{"bogus":1}"#), COMPLETION_FIELDS, "/v1/completions")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("`bogus` is not a field of POST /v1/completions; supported: model, prompt, best_of, echo,"),
            "{e}"
        );
        // No name twice in a table.
        for t in [CHAT_FIELDS, COMPLETION_FIELDS] {
            let mut names: Vec<&str> = t.iter().map(|(n, _)| *n).collect();
            names.sort_unstable();
            let len = names.len();
            names.dedup();
            assert_eq!(names.len(), len);
        }
    }
}
