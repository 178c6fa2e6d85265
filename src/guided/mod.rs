//! Constrained decoding: what a request's output must match (`response_format`, `guided_*`,
//! forced tool calls) compiled into a grammar, and the per-sample matcher that turns it into
//! a token mask for the sampler.
//!
//! ```text
//! vocab.rs   token id -> raw bytes (also the logprobs `bytes` field)
//! grammar.rs Constraint -> Guide (llguidance matcher): mask of allowed tokens, advance
//! ```
//!
//! Per sample: the engine clones the request's `Guide` when it launches the sample (n samples
//! and test-time-compute waves each get their own state), computes the next mask while the
//! forward pass runs, the sampler sets disallowed logits to -inf, and the drawn token advances
//! the guide.

pub mod grammar;
pub mod vocab;

pub use grammar::{Constraint, Guide, GuideError, GuideFactory};
pub use vocab::TokenBytes;
