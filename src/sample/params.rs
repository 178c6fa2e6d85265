//! Sampling parameters: the unchecked `RawSamplingParams` (plain data, filled
//! from the wire request by `validate.rs`) and the checked `SamplingParams`.
//!
//! Invariants of a `SamplingParams` (hold for its whole life: it is read-only,
//! built only by `RawSamplingParams::validate`):
//! - `temperature` in [0, 2] (0 = greedy); `top_k` >= -1 (0 and -1 = off);
//!   `top_p` in (0, 1]; `min_p` in [0, 1]; `repetition_penalty` finite and > 0;
//!   `presence_penalty`, `frequency_penalty` in [-2, 2]; all finite.
//! - `top_logprobs` <= `MAX_TOP_LOGPROBS`, and > 0 only when `logprobs`.
//! - `1 <= max_tokens`, `min_tokens <= max_tokens`.
//! - At most `MAX_STOP_STRINGS` stop strings, each non-empty and at most
//!   `MAX_STOP_STRING_BYTES` bytes; at most `MAX_STOP_TOKEN_IDS` stop token ids.
//! - At most `MAX_LOGIT_BIAS` `logit_bias` entries, each bias in [-100, 100], ids distinct.
//!
//! Token ids are not checked against the vocabulary here (this layer does not
//! know it); the sampler ignores ids outside the vocabulary.

use std::ops::Deref;

/// Most alternatives a request may ask for per position (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u32 = 20;
/// Most stop strings per request. OpenAI documents 4; open-weight clients
/// (chat templates, agents) routinely send more, so we allow 16.
pub const MAX_STOP_STRINGS: usize = 16;
/// Longest stop string, in UTF-8 bytes. Bounds the streaming holdback.
pub const MAX_STOP_STRING_BYTES: usize = 256;
/// Most extra stop token ids per request.
pub const MAX_STOP_TOKEN_IDS: usize = 64;
/// Most `logit_bias` entries per request (OpenAI's documented limit).
pub const MAX_LOGIT_BIAS: usize = 300;
/// `max_tokens` when the client gives none (OpenAI completions default).
pub const DEFAULT_MAX_TOKENS: u32 = 16;
/// Temperatures below this are greedy (as in vLLM): dividing by them would
/// overflow the logits, and the distribution is an argmax anyway.
pub const GREEDY_TEMPERATURE: f32 = 1e-5;

/// A sampling parameter outside its allowed range. `Display` is the client
/// message; `param()` names the offending field for the error envelope.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingParamsError {
    #[error("`{param}` must be {limit}, given {given}")]
    OutOfRange {
        param: &'static str,
        limit: &'static str,
        given: String,
    },
    #[error("`min_tokens` must be <= `max_tokens` ({max_tokens}), given {given}")]
    MinTokensAboveMax { max_tokens: u32, given: u32 },
    #[error("`top_logprobs` requires `logprobs` to be true, given top_logprobs={given}")]
    TopLogprobsWithoutLogprobs { given: u32 },
    #[error("`stop` must hold at most {limit} strings, given {given}")]
    TooManyStopStrings { limit: usize, given: usize },
    #[error("`stop[{index}]` must not be empty")]
    EmptyStopString { index: usize },
    #[error("`stop[{index}]` must be at most {limit} bytes, given {given}")]
    StopStringTooLong {
        index: usize,
        limit: usize,
        given: usize,
    },
    #[error("`stop_token_ids` must hold at most {limit} ids, given {given}")]
    TooManyStopTokenIds { limit: usize, given: usize },
    #[error("`logit_bias` must hold at most {limit} entries, given {given}")]
    TooManyLogitBiases { limit: usize, given: usize },
    #[error("`logit_bias` values must be in [-100, 100], given {given} for token {token}")]
    LogitBiasOutOfRange { token: u32, given: f32 },
    #[error("`logit_bias` names token {token} twice")]
    LogitBiasDuplicate { token: u32 },
}

impl SamplingParamsError {
    /// The request field at fault (the OpenAI envelope's `param`).
    pub fn param(&self) -> &'static str {
        match self {
            Self::OutOfRange { param, .. } => param,
            Self::MinTokensAboveMax { .. } => "min_tokens",
            Self::TopLogprobsWithoutLogprobs { .. } => "top_logprobs",
            Self::TooManyStopStrings { .. }
            | Self::EmptyStopString { .. }
            | Self::StopStringTooLong { .. } => "stop",
            Self::TooManyStopTokenIds { .. } => "stop_token_ids",
            Self::TooManyLogitBiases { .. }
            | Self::LogitBiasOutOfRange { .. }
            | Self::LogitBiasDuplicate { .. } => "logit_bias",
        }
    }
}

/// Unchecked sampling parameters. Build one (usually `..Default::default()`),
/// then `validate()` it into a `SamplingParams`.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSamplingParams {
    /// Logits are divided by this; 0 = greedy (argmax, lowest id on ties).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 or -1 = off.
    pub top_k: i32,
    /// Keep the smallest most-likely prefix whose mass reaches `top_p`; 1 = off.
    pub top_p: f32,
    /// Drop tokens with probability < `min_p` * (max probability); 0 = off.
    pub min_p: f32,
    /// HF/vLLM: for tokens seen in prompt or output, positive logits are
    /// divided by it, non-positive logits multiplied; 1 = off.
    pub repetition_penalty: f32,
    /// OpenAI: subtracted once from each token that occurs in the output.
    pub presence_penalty: f32,
    /// OpenAI: subtracted once per occurrence of the token in the output.
    pub frequency_penalty: f32,
    /// Request seed; `None` = the engine draws one (`fresh_seed`).
    pub seed: Option<u64>,
    /// Return the sampled token's logprob per position.
    pub logprobs: bool,
    /// Also return this many most likely alternatives per position.
    pub top_logprobs: u32,
    /// Most output tokens; reaching it finishes with `Length`.
    pub max_tokens: u32,
    /// Strings that end generation; never part of the returned text.
    pub stop: Vec<String>,
    /// Token ids that end generation (like EOS), in addition to EOS.
    pub stop_token_ids: Vec<u32>,
    /// EOS does not end generation (stop_token_ids still do).
    pub ignore_eos: bool,
    /// EOS and stop token ids are suppressed until this many output tokens.
    pub min_tokens: u32,
    /// OpenAI `logit_bias`: `(token, bias)` added to the token's logit after the penalties
    /// (-100 bans a token in practice, +100 all but forces it).
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for RawSamplingParams {
    /// OpenAI defaults: temperature 1, every filter and penalty off.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
            logprobs: false,
            top_logprobs: 0,
            max_tokens: DEFAULT_MAX_TOKENS,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            min_tokens: 0,
            logit_bias: Vec::new(),
        }
    }
}

fn check_f32(
    param: &'static str,
    value: f32,
    ok: bool,
    limit: &'static str,
) -> Result<(), SamplingParamsError> {
    // `ok` is computed with comparisons that are false for NaN.
    if ok && value.is_finite() {
        Ok(())
    } else {
        Err(SamplingParamsError::OutOfRange {
            param,
            limit,
            given: value.to_string(),
        })
    }
}

impl RawSamplingParams {
    /// Check every field; the first violation is returned.
    pub fn validate(self) -> Result<SamplingParams, SamplingParamsError> {
        let t = self.temperature;
        check_f32("temperature", t, (0.0..=2.0).contains(&t), "in [0, 2]")?;
        if self.top_k < -1 {
            return Err(SamplingParamsError::OutOfRange {
                param: "top_k",
                limit: ">= -1 (0 or -1 disables it)",
                given: self.top_k.to_string(),
            });
        }
        let p = self.top_p;
        check_f32("top_p", p, p > 0.0 && p <= 1.0, "in (0, 1]")?;
        let m = self.min_p;
        check_f32("min_p", m, (0.0..=1.0).contains(&m), "in [0, 1]")?;
        let r = self.repetition_penalty;
        check_f32("repetition_penalty", r, r > 0.0, "> 0")?;
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            check_f32(name, v, (-2.0..=2.0).contains(&v), "in [-2, 2]")?;
        }
        if self.top_logprobs > MAX_TOP_LOGPROBS {
            return Err(SamplingParamsError::OutOfRange {
                param: "top_logprobs",
                limit: "in [0, 20]",
                given: self.top_logprobs.to_string(),
            });
        }
        if self.top_logprobs > 0 && !self.logprobs {
            return Err(SamplingParamsError::TopLogprobsWithoutLogprobs {
                given: self.top_logprobs,
            });
        }
        if self.max_tokens == 0 {
            return Err(SamplingParamsError::OutOfRange {
                param: "max_tokens",
                limit: ">= 1",
                given: "0".to_string(),
            });
        }
        if self.min_tokens > self.max_tokens {
            return Err(SamplingParamsError::MinTokensAboveMax {
                max_tokens: self.max_tokens,
                given: self.min_tokens,
            });
        }
        if self.stop.len() > MAX_STOP_STRINGS {
            return Err(SamplingParamsError::TooManyStopStrings {
                limit: MAX_STOP_STRINGS,
                given: self.stop.len(),
            });
        }
        for (index, s) in self.stop.iter().enumerate() {
            if s.is_empty() {
                return Err(SamplingParamsError::EmptyStopString { index });
            }
            if s.len() > MAX_STOP_STRING_BYTES {
                return Err(SamplingParamsError::StopStringTooLong {
                    index,
                    limit: MAX_STOP_STRING_BYTES,
                    given: s.len(),
                });
            }
        }
        if self.stop_token_ids.len() > MAX_STOP_TOKEN_IDS {
            return Err(SamplingParamsError::TooManyStopTokenIds {
                limit: MAX_STOP_TOKEN_IDS,
                given: self.stop_token_ids.len(),
            });
        }
        if self.logit_bias.len() > MAX_LOGIT_BIAS {
            return Err(SamplingParamsError::TooManyLogitBiases {
                limit: MAX_LOGIT_BIAS,
                given: self.logit_bias.len(),
            });
        }
        let mut seen = std::collections::HashSet::with_capacity(self.logit_bias.len());
        for &(token, given) in &self.logit_bias {
            if !((-100.0..=100.0).contains(&given) && given.is_finite()) {
                return Err(SamplingParamsError::LogitBiasOutOfRange { token, given });
            }
            if !seen.insert(token) {
                return Err(SamplingParamsError::LogitBiasDuplicate { token });
            }
        }
        Ok(SamplingParams(self))
    }
}

/// Checked sampling parameters (see the module invariants). Read the fields
/// through `Deref` (`params.temperature`); they cannot be changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SamplingParams(RawSamplingParams);

impl Deref for SamplingParams {
    type Target = RawSamplingParams;
    fn deref(&self) -> &RawSamplingParams {
        &self.0
    }
}

impl SamplingParams {
    /// Greedy decoding with otherwise default parameters.
    pub fn greedy() -> Self {
        SamplingParams(RawSamplingParams {
            temperature: 0.0,
            ..RawSamplingParams::default()
        })
    }

    /// Back to the unchecked form (to change a field and validate again).
    pub fn into_raw(self) -> RawSamplingParams {
        self.0
    }

    /// Temperature below `GREEDY_TEMPERATURE`: argmax, no random draw.
    pub fn is_greedy(&self) -> bool {
        self.temperature < GREEDY_TEMPERATURE
    }

    /// `top_k` as a count, `None` when off.
    pub fn top_k_limit(&self) -> Option<usize> {
        usize::try_from(self.top_k).ok().filter(|&k| k > 0)
    }

    /// Number of alternatives to return per position (0 without logprobs).
    pub fn num_top_logprobs(&self) -> usize {
        if self.logprobs {
            self.top_logprobs as usize
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(raw: RawSamplingParams) -> (String, &'static str) {
        let e = raw.validate().unwrap_err();
        (e.to_string(), e.param())
    }

    #[test]
    fn defaults_validate() {
        let p = RawSamplingParams::default().validate().unwrap();
        assert_eq!(p, SamplingParams::default());
        assert!(!p.is_greedy());
        assert_eq!(p.top_k_limit(), None);
        assert!(SamplingParams::greedy().is_greedy());
    }

    #[test]
    fn float_range_messages() {
        let cases = [
            (
                RawSamplingParams {
                    temperature: 3.5,
                    ..Default::default()
                },
                "`temperature` must be in [0, 2], given 3.5",
                "temperature",
            ),
            (
                RawSamplingParams {
                    temperature: f32::NAN,
                    ..Default::default()
                },
                "`temperature` must be in [0, 2], given NaN",
                "temperature",
            ),
            (
                RawSamplingParams {
                    top_p: 0.0,
                    ..Default::default()
                },
                "`top_p` must be in (0, 1], given 0",
                "top_p",
            ),
            (
                RawSamplingParams {
                    min_p: 1.5,
                    ..Default::default()
                },
                "`min_p` must be in [0, 1], given 1.5",
                "min_p",
            ),
            (
                RawSamplingParams {
                    repetition_penalty: 0.0,
                    ..Default::default()
                },
                "`repetition_penalty` must be > 0, given 0",
                "repetition_penalty",
            ),
            (
                RawSamplingParams {
                    repetition_penalty: f32::INFINITY,
                    ..Default::default()
                },
                "`repetition_penalty` must be > 0, given inf",
                "repetition_penalty",
            ),
            (
                RawSamplingParams {
                    presence_penalty: -2.5,
                    ..Default::default()
                },
                "`presence_penalty` must be in [-2, 2], given -2.5",
                "presence_penalty",
            ),
            (
                RawSamplingParams {
                    frequency_penalty: 2.25,
                    ..Default::default()
                },
                "`frequency_penalty` must be in [-2, 2], given 2.25",
                "frequency_penalty",
            ),
        ];
        for (raw, msg, param) in cases {
            assert_eq!(err(raw), (msg.to_string(), param));
        }
    }

    #[test]
    fn boundaries_are_accepted() {
        let raw = RawSamplingParams {
            temperature: 2.0,
            top_k: -1,
            top_p: 1.0,
            min_p: 1.0,
            repetition_penalty: 1e-3,
            presence_penalty: -2.0,
            frequency_penalty: 2.0,
            logprobs: true,
            top_logprobs: 20,
            max_tokens: 5,
            min_tokens: 5,
            stop: vec!["x".repeat(MAX_STOP_STRING_BYTES); MAX_STOP_STRINGS],
            stop_token_ids: vec![7; MAX_STOP_TOKEN_IDS],
            ..Default::default()
        };
        let p = raw.validate().unwrap();
        assert_eq!(p.top_k_limit(), None);
        assert_eq!(p.num_top_logprobs(), 20);
        let p = RawSamplingParams {
            top_k: 40,
            ..Default::default()
        }
        .validate();
        assert_eq!(p.unwrap().top_k_limit(), Some(40));
    }

    #[test]
    fn integer_and_list_messages() {
        let cases = [
            (
                RawSamplingParams {
                    top_k: -2,
                    ..Default::default()
                },
                "`top_k` must be >= -1 (0 or -1 disables it), given -2",
            ),
            (
                RawSamplingParams {
                    logprobs: true,
                    top_logprobs: 21,
                    ..Default::default()
                },
                "`top_logprobs` must be in [0, 20], given 21",
            ),
            (
                RawSamplingParams {
                    top_logprobs: 3,
                    ..Default::default()
                },
                "`top_logprobs` requires `logprobs` to be true, given top_logprobs=3",
            ),
            (
                RawSamplingParams {
                    max_tokens: 0,
                    ..Default::default()
                },
                "`max_tokens` must be >= 1, given 0",
            ),
            (
                RawSamplingParams {
                    max_tokens: 16,
                    min_tokens: 20,
                    ..Default::default()
                },
                "`min_tokens` must be <= `max_tokens` (16), given 20",
            ),
            (
                RawSamplingParams {
                    stop: vec!["a".into(); 17],
                    ..Default::default()
                },
                "`stop` must hold at most 16 strings, given 17",
            ),
            (
                RawSamplingParams {
                    stop: vec!["a".into(), String::new()],
                    ..Default::default()
                },
                "`stop[1]` must not be empty",
            ),
            (
                RawSamplingParams {
                    stop: vec!["é".repeat(129)],
                    ..Default::default()
                },
                "`stop[0]` must be at most 256 bytes, given 258",
            ),
            (
                RawSamplingParams {
                    stop_token_ids: vec![1; 65],
                    ..Default::default()
                },
                "`stop_token_ids` must hold at most 64 ids, given 65",
            ),
        ];
        for (raw, msg) in cases {
            assert_eq!(err(raw).0, msg);
        }
    }
}
