//! ponder: an OpenAI-compatible LLM inference server for reasoning workloads.

pub mod kv;
pub mod sched;
