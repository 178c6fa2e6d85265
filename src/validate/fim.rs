//! Fill-in-the-middle prompts (`suffix` on /v1/completions): the model's FIM tokens, found
//! by their spellings in the vocabulary, wrap the prompt and the suffix in
//! prefix-suffix-middle order so that the completion is the middle.

use super::{encode, ValidateError};
use crate::model::tokenizer::Tokenizer;

/// Fill-in-the-middle (`suffix`): the model's FIM tokens around the prompt and the suffix,
/// prefix-suffix-middle order, so the completion is the middle.
pub(crate) struct Fim {
    prefix: u32,
    suffix_tok: u32,
    middle: u32,
    suffix: String,
}

/// FIM token spellings: Qwen2.5-Coder / DeepSeek style, then StarCoder style.
const FIM_NAMES: &[[&str; 3]] = &[
    ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"],
    ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"],
];

impl Fim {
    pub(crate) fn of(t: &Tokenizer, suffix: String) -> Result<Fim, ValidateError> {
        FIM_NAMES
            .iter()
            .find_map(|[p, s, m]| {
                Some(Fim {
                    prefix: t.token_to_id(p)?,
                    suffix_tok: t.token_to_id(s)?,
                    middle: t.token_to_id(m)?,
                    suffix: suffix.clone(),
                })
            })
            .ok_or_else(|| {
                ValidateError::invalid(
                    "suffix",
                    "`suffix` is not supported by this model: its vocabulary has no \
                     fill-in-the-middle tokens (<|fim_prefix|>, <|fim_suffix|>, <|fim_middle|>)",
                )
            })
    }

    /// `[bos] <prefix> prompt <suffix> suffix <middle>`.
    pub(crate) fn wrap(&self, t: &Tokenizer, prompt: Vec<u32>) -> Result<Vec<u32>, ValidateError> {
        let bos = t.bos_id.filter(|b| prompt.first() == Some(b));
        let body = &prompt[usize::from(bos.is_some())..];
        let mut ids: Vec<u32> = bos.into_iter().collect();
        ids.push(self.prefix);
        ids.extend_from_slice(body);
        ids.push(self.suffix_tok);
        ids.extend(
            encode(t, &self.suffix)?
                .into_iter()
                .filter(|&i| Some(i) != t.bos_id),
        );
        ids.push(self.middle);
        Ok(ids)
    }
}
