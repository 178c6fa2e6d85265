//! ponder: an OpenAI-compatible LLM inference server for reasoning workloads.
//!
//! ```text
//! HTTP (api) -> validate -> budget -> engine -> sched -> kv
//!                                        |
//!                                        v
//!                          model (forward over a paged batch) -> backend (cpu | cuda)
//!                                        |
//!                                        v
//!                                 sample -> aggregate -> response
//! ```
//!
//! Modules are declared in data-flow order; each depends only on the ones below it.

pub mod aggregate;
pub mod api;
pub mod backend;
pub mod budget;
pub mod config;
pub mod engine;
pub mod generate;
pub mod guided;
pub mod kv;
pub mod metrics;
pub mod model;
pub mod reasoning;
pub mod sample;
pub mod sched;
pub mod tools;
pub mod validate;
