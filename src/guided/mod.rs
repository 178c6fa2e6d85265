//! Constrained decoding: what a request's output must match (`response_format`, `guided_*`,
//! forced tool calls) compiled into a grammar, and the per-sample matcher that turns it into
//! a token mask for the sampler.
//!
//! ```text
//! vocab.rs   token id -> raw bytes (also the logprobs `bytes` field)
//! ```

pub mod vocab;

pub use vocab::TokenBytes;
