//! Reasoning format: how a model marks its thinking, and the per-sample state that splits a
//! sample's text into `reasoning_content` and `content` and enforces thinking budgets.
//!
//! ```text
//!  --reasoning-parser auto|none|deepseek_r1|qwen3  + template source + vocabulary
//!        -> Option<ReasoningFormat>            (resolved once at load; None = no markers)
//!  rendered prompt -> starts_in_thinking()    (templates that open `<think>` themselves)
//!  per sample: Splitter (text level, split.rs) + ThinkState (token level, think.rs)
//! ```
//!
//! Formats: DeepSeek-R1-Distill and Qwen3 both use `<think>` ... `</think>`. `deepseek_r1`
//! treats output as thinking from the first token even when the model never writes `<think>`
//! (R1 templates often put it in the prompt); `qwen3` thinks only when the prompt ends with
//! `<think>` or the output starts with it. `auto` picks `qwen3` semantics when the chat
//! template or the vocabulary mentions `<think>`/`</think>`, else no format.
//! Models without markers treat the whole sample as reasoning and final answer in one:
//! everything is `content`, and thinking budgets are refused at validation.

mod split;
mod think;

pub use split::{Split, Splitter};
pub use think::{ThinkLimits, ThinkState};

/// What resolving a format reads from the model's vocabulary (the tokenizer implements it).
pub trait Vocab {
    /// The id of `token` when it is one vocabulary entry.
    fn token_id(&self, token: &str) -> Option<u32>;
    /// `text` tokenized without special tokens (empty when it cannot be).
    fn encode_text(&self, text: &str) -> Vec<u32>;
}

/// The `--reasoning-parser` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReasoningParser {
    /// Detect `<think>` markers from the chat template and vocabulary.
    #[default]
    Auto,
    /// The model has no reasoning markers: every sample is content.
    None,
    /// `<think>`...`</think>`; output is thinking from the start until `</think>`.
    #[value(name = "deepseek_r1")]
    DeepseekR1,
    /// `<think>`...`</think>`; thinking only if the prompt or the output opens it.
    Qwen3,
}

/// How one model marks thinking. Built once at load; shared read-only by every sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ReasoningFormat {
    /// Which parser produced it (reported in logs and /v1/models).
    pub parser: ReasoningParser,
    pub start: String,
    pub end: String,
    /// Output is thinking from its first token even without `start` (deepseek_r1).
    pub implicit_start: bool,
    /// Tokens forced when a thinking budget runs out: `"\n" + end` tokenized ...
    pub force_end_ids: Vec<u32>,
    /// ... then these (`"\n\n"`), which already belong to the answer.
    pub after_end_ids: Vec<u32>,
    /// Tokens that replace an early end of thinking under a minimum thinking length
    /// (s1 budget forcing): `"\nWait"` tokenized.
    pub wait_ids: Vec<u32>,
    /// First token of `end` as the model writes it after text (the token that s1 replaces);
    /// the bare `end` tokenized, first id.
    pub end_first_id: Option<u32>,
}

const THINK_START: &str = "<think>";
const THINK_END: &str = "</think>";

impl ReasoningFormat {
    /// Resolves `parser` for a model with this chat template source and tokenizer.
    pub fn resolve(
        parser: ReasoningParser,
        template_source: &str,
        tokenizer: &dyn Vocab,
    ) -> Option<ReasoningFormat> {
        let (parser, implicit_start) = match parser {
            ReasoningParser::None => return None,
            ReasoningParser::DeepseekR1 => (parser, true),
            ReasoningParser::Qwen3 => (parser, false),
            ReasoningParser::Auto => {
                let mentioned = template_source.contains(THINK_START)
                    || template_source.contains(THINK_END)
                    || tokenizer.token_id(THINK_START).is_some()
                    || tokenizer.token_id(THINK_END).is_some();
                if !mentioned {
                    return None;
                }
                (ReasoningParser::Qwen3, false)
            }
        };
        let enc = |s: &str| tokenizer.encode_text(s);
        Some(ReasoningFormat {
            parser,
            start: THINK_START.to_string(),
            end: THINK_END.to_string(),
            implicit_start,
            force_end_ids: enc(&format!("\n{THINK_END}")),
            after_end_ids: enc("\n\n"),
            wait_ids: enc("\nWait"),
            end_first_id: enc(THINK_END).first().copied(),
        })
    }

    /// Whether a sample of this rendered prompt starts inside thinking: the prompt ends with
    /// the start marker (trailing whitespace allowed), or the format thinks implicitly.
    pub fn starts_in_thinking(&self, prompt_text: &str) -> bool {
        self.implicit_start || prompt_text.trim_end().ends_with(&self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tokenizer::Tokenizer;

    fn tok() -> Tokenizer {
        // A word-level vocabulary is enough to test marker resolution.
        let json = serde_json::json!({
            "version": "1.0",
            "added_tokens": [
                {"id": 3, "content": "<think>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": false},
                {"id": 4, "content": "</think>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": false}
            ],
            "pre_tokenizer": {"type": "Whitespace"},
            "model": {"type": "WordLevel", "vocab": {"a": 0, "Wait": 1, "[UNK]": 2, "<think>": 3, "</think>": 4}, "unk_token": "[UNK]"}
        });
        Tokenizer::from_hf_files(&json.to_string(), &serde_json::json!({})).unwrap()
    }

    #[test]
    fn auto_detects_markers_from_the_vocabulary_or_template() {
        let t = tok();
        let f = ReasoningFormat::resolve(ReasoningParser::Auto, "", &t).unwrap();
        assert_eq!(f.parser, ReasoningParser::Qwen3);
        assert!(!f.implicit_start);
        assert_eq!(f.end_first_id, Some(4));
        assert_eq!(f.force_end_ids, vec![4]);
        assert_eq!(f.wait_ids, vec![1]);
        assert!(f.starts_in_thinking("<|im_start|>assistant\n<think>\n"));
        assert!(!f.starts_in_thinking("<|im_start|>assistant\n"));
        let r1 = ReasoningFormat::resolve(ReasoningParser::DeepseekR1, "", &t).unwrap();
        assert!(r1.starts_in_thinking("<|im_start|>assistant\n"));
        assert_eq!(
            ReasoningFormat::resolve(ReasoningParser::None, "<think>", &t),
            None
        );
    }
}
