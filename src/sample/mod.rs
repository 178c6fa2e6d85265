//! Sampler: logits -> token (+ logprobs), seeded per sequence, plus the stop
//! conditions that end a sample.
//!
//! ```text
//!  RawSamplingParams --validate()--> SamplingParams            (params.rs)
//!  prompt ids + output ids ---------> TokenHistory (incremental)  (history.rs)
//!
//!  logits [vocab] --copy--> scratch
//!     -> repetition penalty (prompt + output), frequency/presence (output)
//!     -> logit_bias (added), grammar mask (disallowed = -inf)
//!     -> min_tokens: EOS + stop ids = -inf
//!     -> / temperature                       <- logprobs are taken HERE
//!     -> top_k -> top_p -> min_p (truncation)
//!     -> draw u = uniform(seq_seed, step)    (rng.rs, counter-based)
//!  -> SampledToken { token, logprob, top_logprobs }            (sampler.rs)
//!
//!  token -> finish_on_token(): EOS / stop id -> Stop, max_tokens -> Length
//!  text  -> StopChecker: stop strings, truncation, streaming holdback (stop.rs)
//! ```
//!
//! Invariants:
//! - The random draw of a sequence at output step `t` depends only on
//!   `(seq_seed, t)`: a preempted-and-recomputed sequence, or one sampled alone
//!   instead of in a batch, gets the identical token for identical logits.
//! - Parameters are checked once (`RawSamplingParams::validate`); the sampler
//!   never re-checks them.
//! - A stop string is never part of the streamed text (see `StopChecker`).

mod history;
mod params;
mod rng;
mod sampler;
mod stop;

pub use history::TokenHistory;
pub use params::{
    RawSamplingParams, SamplingParams, SamplingParamsError, DEFAULT_MAX_TOKENS, GREEDY_TEMPERATURE,
    MAX_LOGIT_BIAS, MAX_STOP_STRINGS, MAX_STOP_STRING_BYTES, MAX_STOP_TOKEN_IDS, MAX_TOP_LOGPROBS,
};
pub use rng::{fresh_seed, sample_seed, uniform};
pub use sampler::{SampleError, SampledToken, Sampler};
pub use stop::{finish_on_token, FinishReason, StopChecker, StopStatus};
