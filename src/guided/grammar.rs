//! What a request's output must match, compiled with llguidance into a `Guide`: a matcher
//! that each sample clones and advances token by token.
//!
//! ```text
//! Constraint (request.rs)     -> llguidance grammar
//!   JsonObject                   JSON schema {"type": "object"}
//!   JsonSchema{schema, strict}   the schema; strict: unsupported keywords are errors,
//!                                otherwise they are ignored (llguidance's lenient mode)
//!   Regex / Choice               a regex (choices: escaped literals joined by `|`)
//!   Grammar (Lark)               as given (llguidance's Lark dialect, `%json {...}` included)
//! JSON is written with ", " and ": " separators and no other whitespace (a model cannot
//! stall in whitespace), as Python's json.dumps does.
//! ```
//!
//! Compiling happens at validation (a bad schema or grammar is a 400 naming the field); the
//! engine only clones and advances matchers. `Guide` is cheap to clone (the compiled grammar
//! and lexer caches are shared).

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};
use toktrie::{
    InferenceCapabilities, SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv,
};

use super::vocab::TokenBytes;
use crate::model::tokenizer::Tokenizer;

/// A constraint on a request's output, as the client gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    JsonObject,
    JsonSchema {
        schema: Value,
        strict: bool,
    },
    Regex(String),
    Choice(Vec<String>),
    /// Lark grammar text.
    Grammar(String),
}

/// A compile failure: the field at fault and what was wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct GuideError {
    pub param: String,
    pub message: String,
}

/// llguidance's view of our tokenizer: the token trie, and tokenization for forced text.
struct Env {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        let text = String::from_utf8_lossy(s);
        self.tokenizer.encode(&text, false).unwrap_or_default()
    }
}

/// Grammar compiler for one model (built once at start; shared by every request).
pub struct GuideFactory {
    factory: ParserFactory,
}

impl std::fmt::Debug for GuideFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GuideFactory")
    }
}

impl GuideFactory {
    /// From the model's token bytes; `eos` ends a completed grammar (every id in it does).
    pub fn new(vocab: &TokenBytes, tokenizer: Arc<Tokenizer>, eos: &[u32]) -> anyhow::Result<Self> {
        let first_eos = eos.first().copied().unwrap_or(0);
        let info = TokRxInfo::new(vocab.len() as u32, first_eos);
        let trie = TokTrie::from(&info, &vocab.trie_words()).with_eos_tokens(eos);
        let env: TokEnv = Arc::new(Env { trie, tokenizer });
        let mut factory = ParserFactory::new(
            &env,
            InferenceCapabilities::default(),
            &llguidance::earley::SlicedBiasComputer::general_slices(),
        )?;
        factory.quiet();
        Ok(GuideFactory { factory })
    }

    /// Compiles `c`; `param` names the request field for errors.
    pub fn compile(&self, c: &Constraint, param: &str) -> Result<Guide, GuideError> {
        let grammar = match c {
            Constraint::JsonObject => {
                TopLevelGrammar::from_json_schema(with_format(json!({"type": "object"}), true))
            }
            Constraint::JsonSchema { schema, strict } => {
                if !schema.is_object() && !schema.is_boolean() {
                    return Err(GuideError {
                        param: param.to_string(),
                        message: format!("`{param}` must be a JSON schema object, given {schema}"),
                    });
                }
                TopLevelGrammar::from_json_schema(with_format(schema.clone(), !strict))
            }
            Constraint::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Constraint::Choice(choices) => {
                let alts: Vec<String> = choices.iter().map(|c| regex::escape(c)).collect();
                TopLevelGrammar::from_regex(&format!("(?:{})", alts.join("|")))
            }
            Constraint::Grammar(lark) => TopLevelGrammar::from_lark(lark.clone()),
        };
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| GuideError {
                param: param.to_string(),
                message: format!("`{param}` cannot be used: {}", first_line(&e.to_string())),
            })?;
        let m = Matcher::new(Ok(parser));
        if let Some(e) = m.get_error() {
            return Err(GuideError {
                param: param.to_string(),
                message: format!("`{param}` cannot be used: {}", first_line(&e)),
            });
        }
        Ok(Guide(m))
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// The schema with our JSON formatting (and leniency) in llguidance's `x-guidance` key.
fn with_format(mut schema: Value, lenient: bool) -> Value {
    if let Value::Object(o) = &mut schema {
        o.insert(
            "x-guidance".into(),
            json!({"item_separator": ", ", "key_separator": ": ",
                "whitespace_flexible": false, "lenient": lenient}),
        );
    }
    schema
}

/// A compiled constraint in its current state (one per sample).
#[derive(Clone)]
pub struct Guide(Matcher);

impl std::fmt::Debug for Guide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guide")
    }
}

impl Guide {
    /// Tokens allowed next (EOS alone once the grammar is complete); `Err` when the matcher
    /// has failed.
    pub fn mask(&mut self) -> Result<SimpleVob, String> {
        self.0.compute_mask_or_eos().map_err(|e| e.to_string())
    }

    /// Advances past `token`.
    pub fn advance(&mut self, token: u32) -> Result<(), String> {
        self.0.consume_token(token).map_err(|e| e.to_string())
    }

    /// The grammar is complete: nothing but EOS may follow.
    pub fn is_stopped(&self) -> bool {
        self.0.is_stopped()
    }
}
