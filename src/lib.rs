//! ponder: an OpenAI-compatible LLM inference server for reasoning workloads.
//!
//! ```text
//!  api (HTTP, SSE, errors)          config (flags)       generate (CLI one-shot)
//!    |                                 |                    |
//!    v                                 v                    v
//!  validate (request -> checked GenerateRequest + Budget)
//!    |
//!  metrics (Prometheus)
//!    |
//!  engine (one thread: schedule, run the model, sample, detokenize, drive the controllers)
//!    |-> budget (per-request test-time compute plan and controller) -> aggregate (votes)
//!    |-> sched (continuous batching) -> kv (paged blocks, prefix cache, copy-on-write)
//!    |-> model (architectures, one forward pass, loading) -> reasoning (thinking markers)
//!    |-> sample (logits -> token)
//!    v
//!  backend (seam; cpu | cuda: packing, kernels, KV storage)
//! ```
//!
//! Layers, top to bottom: api, config, generate, validate, tools, metrics, engine, budget,
//! aggregate, sched, kv, guided, model, reasoning, sample, backend.
//!
//! Each module depends only on modules after it in that list (tests/layering.rs checks this,
//! and that no two sibling modules anywhere depend on each other in a cycle).

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
