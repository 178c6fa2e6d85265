//! Tokenizer: the `tokenizers` crate, built either from a Hugging Face `tokenizer.json` or
//! from a GGUF file's embedded vocabulary. For GGUF we emit the equivalent `tokenizer.json`
//! document (byte-level BPE, the pre-tokenizer named by `tokenizer.ggml.pre` and, for
//! `qwen2`, Qwen's NFC normalizer; control tokens as special added tokens, user-defined ones
//! as plain added tokens) and load it through the same path, so both formats behave alike.
//!
//! Invariant: `encode` matches special tokens written literally in the text (chat templates
//! rely on it); `decode` of generated ids never fails (unknown ids decode to nothing).

use std::collections::HashSet;

use serde_json::{json, Value as Json};

use super::gguf::GgufFile;
use super::ModelError;

/// llama.cpp pre-tokenizer names -> regex split used before byte-level encoding.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_id: Option<u32>,
    pub bos_token: String,
    pub eos_token: String,
    /// Ids that end generation (EOS plus e.g. `<|eot_id|>` / `<|im_end|>`).
    pub eos_ids: Vec<u32>,
    /// Whether prompts get a BOS token prepended (when the template does not add one).
    pub add_bos: bool,
    special: HashSet<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tokenizer(vocab={}, eos={:?})",
            self.vocab_size(),
            self.eos_ids
        )
    }
}

fn tk_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

impl Tokenizer {
    pub fn from_json_str(json: &str) -> Result<tokenizers::Tokenizer, ModelError> {
        json.parse::<tokenizers::Tokenizer>().map_err(tk_err)
    }

    pub fn from_gguf(g: &GgufFile) -> Result<Self, ModelError> {
        let s = |k: &str| g.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let model = s("tokenizer.ggml.model").unwrap_or_default();
        if model != "gpt2" {
            return Err(ModelError::Tokenizer(format!(
                "GGUF tokenizer model `{model}` is not supported (supported: gpt2 byte-level BPE); \
                 point --model at the Hugging Face directory with tokenizer.json instead"
            )));
        }
        let arr = |k: &str| {
            g.get(k)
                .and_then(|v| v.as_array())
                .ok_or_else(|| ModelError::Tokenizer(format!("missing `{k}`")))
        };
        let tokens = arr("tokenizer.ggml.tokens")?;
        let merges = arr("tokenizer.ggml.merges")?;
        let types = g
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.as_array());
        let mut vocab = serde_json::Map::with_capacity(tokens.len());
        let mut added = Vec::new();
        let mut special = HashSet::new();
        for (i, t) in tokens.iter().enumerate() {
            let t = t
                .as_str()
                .ok_or_else(|| ModelError::Tokenizer(format!("token {i} is not a string")))?;
            vocab.insert(t.to_string(), json!(i));
            let ty = types
                .and_then(|a| a.get(i))
                .and_then(|v| v.as_i64())
                .unwrap_or(1);
            // 3 = control (special), 4 = user-defined (matched in text, not special).
            if ty == 3 || ty == 4 {
                added.push(
                    json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": ty == 3}),
                );
                if ty == 3 {
                    special.insert(i as u32);
                }
            }
        }
        let merges: Vec<Json> = merges
            .iter()
            .filter_map(|m| m.as_str().map(|m| json!(m)))
            .collect();
        let pre = s("tokenizer.ggml.pre").unwrap_or_else(|| "default".into());
        let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
        let split = |re: &str| json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false});
        let pre_tokenizer = match pre.as_str() {
            "smollm" => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
            "llama-bpe" | "llama3" | "smaug-bpe" => {
                json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_SPLIT), byte_level(false)]})
            }
            "qwen2" | "deepseek-r1-qwen" => {
                json!({"type": "Sequence", "pretokenizers": [split(QWEN2_SPLIT), byte_level(false)]})
            }
            "gpt2" | "default" | "gpt-2" => byte_level(true),
            other => {
                return Err(ModelError::Tokenizer(format!(
                    "GGUF pre-tokenizer `{other}` is not supported (supported: smollm, llama-bpe, \
                     qwen2, deepseek-r1-qwen, gpt2)"
                )))
            }
        };
        // Qwen2's tokenizer.json NFC-normalizes the text first ("e\u{301}" encodes as "é").
        let normalizer = match pre.as_str() {
            "qwen2" => json!({"type": "NFC"}),
            _ => Json::Null,
        };
        let doc = json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": added, "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer, "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
                "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges},
        });
        let inner = Self::from_json_str(&doc.to_string())?;
        let id = |k: &str| g.get(k).and_then(|v| v.as_u64()).map(|v| v as u32);
        let tok_str = |i: Option<u32>| {
            i.and_then(|i| tokens.get(i as usize))
                .and_then(|t| t.as_str())
                .unwrap_or("")
                .to_string()
        };
        let bos_id = id("tokenizer.ggml.bos_token_id");
        let eos_id = id("tokenizer.ggml.eos_token_id");
        let mut eos_ids: Vec<u32> = eos_id.into_iter().collect();
        if let Some(e) = id("tokenizer.ggml.eot_token_id") {
            eos_ids.push(e);
        }
        let add_bos = g
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let mut t = Tokenizer {
            inner,
            bos_id,
            bos_token: tok_str(bos_id),
            eos_token: tok_str(eos_id),
            eos_ids,
            add_bos,
            special,
        };
        t.add_chat_end_tokens();
        Ok(t)
    }

    /// From a Hugging Face directory: `tokenizer.json` plus `tokenizer_config.json`
    /// (bos/eos tokens, add_bos_token).
    pub fn from_hf_files(tokenizer_json: &str, config: &Json) -> Result<Self, ModelError> {
        let inner = Self::from_json_str(tokenizer_json)?;
        let tok_of = |k: &str| -> Option<String> {
            match config.get(k)? {
                Json::String(s) => Some(s.clone()),
                Json::Object(o) => o
                    .get("content")
                    .and_then(|c| c.as_str())
                    .map(str::to_string),
                _ => None,
            }
        };
        let bos_token = tok_of("bos_token").unwrap_or_default();
        let eos_token = tok_of("eos_token").unwrap_or_default();
        let bos_id = inner.token_to_id(&bos_token);
        let eos_ids: Vec<u32> = inner.token_to_id(&eos_token).into_iter().collect();
        let special: HashSet<u32> = inner
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(&i, _)| i)
            .collect();
        let add_bos = config
            .get("add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let mut t = Tokenizer {
            inner,
            bos_id,
            bos_token,
            eos_token,
            eos_ids,
            add_bos,
            special,
        };
        t.add_chat_end_tokens();
        Ok(t)
    }

    /// Chat models end a turn with an end-of-turn token that is not always the declared EOS.
    fn add_chat_end_tokens(&mut self) {
        for t in [
            "<|im_end|>",
            "<|eot_id|>",
            "<|end_of_text|>",
            "<｜end▁of▁sentence｜>",
        ] {
            if let Some(id) = self.inner.token_to_id(t) {
                if !self.eos_ids.contains(&id) {
                    self.eos_ids.push(id);
                }
            }
        }
    }

    /// The equivalent Hugging Face `tokenizer.json` document.
    pub fn to_json(&self) -> String {
        self.inner.to_string(false).unwrap_or_default()
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, t: &str) -> Option<u32> {
        self.inner.token_to_id(t)
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id)
    }

    /// Encodes `text` (special tokens written in it are recognised); prepends BOS if
    /// `add_bos` and the tokenizer has one and the text does not already start with it.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, ModelError> {
        let enc = self.inner.encode_fast(text, false).map_err(tk_err)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_bos {
            if let Some(b) = self.bos_id {
                if enc.get_ids().first() != Some(&b) {
                    ids.push(b);
                }
            }
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Decodes ids to text; with `skip_special`, special tokens are left out.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        self.inner.decode(ids, skip_special).unwrap_or_default()
    }
}
