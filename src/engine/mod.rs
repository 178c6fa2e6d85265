//! The engine: one thread owns the scheduler, the KV cache and the model runner; requests
//! come in through an `EngineHandle` and results go out as per-request event streams.

pub mod detok;
pub mod types;

pub use types::{EngineClient, EngineEvent, EngineStats, GenerateRequest, RequestStream, SubmitError, TokenLogprob};
