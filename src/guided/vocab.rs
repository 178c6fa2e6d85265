//! Every token's raw bytes, built once per model from the tokenizer's `tokenizer.json` form.
//!
//! Logprobs report them as `bytes` (a token that ends inside a UTF-8 character, like half an
//! emoji, is its own bytes, so concatenating `bytes` rebuilds the text exactly), and the
//! grammar engine matches them against its lexer (`TokenBytes::trie_words`).
//!
//! ```text
//! byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM2): each char of a token's string stands for
//!     one byte: the 188 printable bytes stand for themselves, the other 68 (controls, space,
//!     0x7F-0xA0, 0xAD) were moved to U+0100.. in byte order -> invert that map
//! byte fallback (SentencePiece, Llama 2, Mistral): `<0x0A>` is byte 0x0A; `▁` is a space
//! added (special / control) tokens: their text, flagged `special`
//! ```

use serde_json::Value;

/// One token's bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenInfo {
    pub bytes: Vec<u8>,
    /// A control token (`<|im_end|>`): never produced by a grammar's text.
    pub special: bool,
}

/// Raw bytes of every token id (`len` = the model's vocabulary rows; ids the tokenizer does
/// not define are empty).
#[derive(Debug, Clone, Default)]
pub struct TokenBytes {
    tokens: Vec<TokenInfo>,
}

/// The byte-level BPE alphabet, inverted: char -> byte.
fn byte_level_inverse() -> std::collections::HashMap<char, u8> {
    let printable = |b: u8| matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut moved = 0u32;
    let mut map = std::collections::HashMap::with_capacity(256);
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            moved += 1;
            char::from_u32(0xFF + moved).unwrap_or(char::REPLACEMENT_CHARACTER)
        };
        map.insert(c, b);
    }
    map
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    ByteLevel,
    ByteFallback,
    /// Unknown decoder: the token's text as the tokenizer decodes it.
    Text,
}

fn decoder_kind(doc: &Value) -> Kind {
    let d = &doc["decoder"];
    match d["type"].as_str() {
        Some("ByteLevel") => Kind::ByteLevel,
        Some("Sequence") => {
            let parts = d["decoders"].as_array().map_or(&[][..], Vec::as_slice);
            if parts.iter().any(|p| p["type"] == "ByteLevel") {
                Kind::ByteLevel
            } else if parts.iter().any(|p| p["type"] == "ByteFallback") {
                Kind::ByteFallback
            } else {
                Kind::Text
            }
        }
        _ => Kind::Text,
    }
}

impl TokenBytes {
    /// From `tokenizer.json` (`doc`); `decode_one` gives a token's text for decoders this does
    /// not know. `vocab_rows`: the model's vocabulary size (>= the tokenizer's).
    pub fn from_tokenizer_json(
        doc: &Value,
        vocab_rows: usize,
        decode_one: impl Fn(u32) -> String,
    ) -> Self {
        let mut tokens = vec![TokenInfo::default(); vocab_rows];
        let kind = decoder_kind(doc);
        let inverse = byte_level_inverse();
        if let Some(vocab) = doc["model"]["vocab"].as_object() {
            for (s, id) in vocab {
                let Some(slot) = id.as_u64().and_then(|i| tokens.get_mut(i as usize)) else {
                    continue;
                };
                slot.bytes = match kind {
                    Kind::ByteLevel => {
                        match s.chars().map(|c| inverse.get(&c).copied()).collect() {
                            Some(b) => b,
                            None => s.as_bytes().to_vec(),
                        }
                    }
                    Kind::ByteFallback => match byte_token(s) {
                        Some(b) => vec![b],
                        None => s.replace('\u{2581}', " ").into_bytes(),
                    },
                    Kind::Text => decode_one(id.as_u64().unwrap_or(0) as u32).into_bytes(),
                };
            }
        }
        if let Some(added) = doc["added_tokens"].as_array() {
            for t in added {
                let (Some(id), Some(content)) = (t["id"].as_u64(), t["content"].as_str()) else {
                    continue;
                };
                if let Some(slot) = tokens.get_mut(id as usize) {
                    slot.bytes = content.as_bytes().to_vec();
                    slot.special = t["special"].as_bool().unwrap_or(false);
                }
            }
        }
        TokenBytes { tokens }
    }

    /// The raw bytes of `id` (empty for an unknown id).
    pub fn bytes(&self, id: u32) -> &[u8] {
        self.tokens.get(id as usize).map_or(&[], |t| &t.bytes)
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.tokens.get(id as usize).is_some_and(|t| t.special)
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The words of a `toktrie::TokTrie`: special tokens carry its marker byte (0xFF) first, so
    /// no grammar text can spell them.
    pub fn trie_words(&self) -> Vec<Vec<u8>> {
        self.tokens
            .iter()
            .map(|t| {
                if t.special {
                    let mut w = Vec::with_capacity(t.bytes.len() + 1);
                    w.push(toktrie::TokTrie::SPECIAL_TOKEN_MARKER);
                    w.extend_from_slice(&t.bytes);
                    w
                } else {
                    t.bytes.clone()
                }
            })
            .collect()
    }
}

/// `<0xHH>` -> the byte.
fn byte_token(s: &str) -> Option<u8> {
    let hex = s.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn byte_level_tokens_are_their_bytes() {
        // "Ġ" is the space, "Ċ" newline; "ðŁĺ" is the first 3 bytes of an emoji (F0 9F 98).
        let doc = json!({"decoder": {"type": "ByteLevel"},
            "model": {"vocab": {"Ġhi": 0, "Ċ": 1, "ðŁĺ": 2, "Ģ": 3}},
            "added_tokens": [{"id": 4, "content": "<|im_end|>", "special": true}]});
        let t = TokenBytes::from_tokenizer_json(&doc, 6, |_| String::new());
        assert_eq!(t.bytes(0), b" hi");
        assert_eq!(t.bytes(1), b"\n");
        assert_eq!(t.bytes(2), &[0xF0, 0x9F, 0x98]);
        assert_eq!(t.bytes(3), &[0x80]);
        assert_eq!(t.bytes(4), b"<|im_end|>");
        assert!(t.is_special(4) && !t.is_special(0));
        assert_eq!(t.bytes(5), b"");
        assert_eq!(t.bytes(99), b"");
        assert_eq!(t.trie_words()[4][0], 0xFF);
    }

    #[test]
    fn byte_fallback_tokens() {
        let doc = json!({"decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}]},
            "model": {"vocab": {"<0x0A>": 0, "\u{2581}the": 1}}, "added_tokens": []});
        let t = TokenBytes::from_tokenizer_json(&doc, 2, |_| String::new());
        assert_eq!(t.bytes(0), b"\n");
        assert_eq!(t.bytes(1), b" the");
    }
}
