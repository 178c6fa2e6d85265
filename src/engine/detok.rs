//! Incremental detokenization: turns a growing list of token ids into text deltas without
//! re-decoding the whole output each step and without ever emitting half a UTF-8 character.
//!
//! ```text
//! ids:  [ .... prefix_offset ....... read_offset ........ len ]
//!              |<- decoded before ->|<- new tokens ->|
//! delta = decode(ids[prefix..len]) minus decode(ids[prefix..read]), emitted only when it
//! does not end in U+FFFD (a byte-level token that splits a character)
//! ```
//!
//! Cost per step: decoding a window of at most `WINDOW` + new tokens, independent of output
//! length.

use crate::model::tokenizer::Tokenizer;

/// Tokens of left context kept for decoding (merging spaces/prefixes correctly).
const WINDOW: usize = 6;

#[derive(Debug, Default, Clone)]
pub struct Detokenizer {
    prefix_offset: usize,
    read_offset: usize,
}

impl Detokenizer {
    /// Starts after `prompt_len` prompt tokens that are never emitted.
    pub fn new(ids_before: usize) -> Self {
        Detokenizer {
            prefix_offset: ids_before.saturating_sub(WINDOW),
            read_offset: ids_before,
        }
    }

    /// Text added by the tokens appended since the last call (may be empty while a
    /// multi-byte character is incomplete).
    pub fn step(&mut self, tok: &Tokenizer, ids: &[u32]) -> String {
        let prefix = tok.decode(&ids[self.prefix_offset..self.read_offset], true);
        let full = tok.decode(&ids[self.prefix_offset..], true);
        if full.ends_with('\u{FFFD}') {
            return String::new(); // wait for the rest of the character
        }
        // Normally `full` extends `prefix`; if the window re-segmented earlier text, emit
        // what follows the common prefix (on a char boundary).
        let mut cut = prefix
            .bytes()
            .zip(full.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        while !full.is_char_boundary(cut) {
            cut -= 1;
        }
        self.advance(ids.len());
        full[cut..].to_string()
    }

    fn advance(&mut self, len: usize) {
        self.prefix_offset = len.saturating_sub(WINDOW).max(self.prefix_offset);
        self.read_offset = len;
    }
}
