//! The test-time compute budget: per request, how long each sample may think, how many
//! samples run, when they stop, and how the answer is picked.
//!
//! ```text
//!  RawBudget (reasoning_effort, thinking_token_budget, min_thinking_tokens, ttc{...})
//!    + BudgetConfig (server presets, load levels) + LoadSnapshot (queue, KV use)
//!    --plan::build--> Budget { ThinkLimits, Option<TtcPlan>, Option<Grant> }   (checked)
//!  TtcPlan --Controller (engine thread)--> Launch waves / Stop samples / Finish -> TtcReport
//! ```
//!
//! Invariants: a plan is checked once (`build`); the controller is a pure state machine driven
//! by the engine's events (tested with scripted events), so every decision is reproducible.
//! Scheduling policy for groups: each wave of a request is admitted as a gang (its samples fork
//! the prompt's blocks); later waves join the back of the waiting queue like a new request, so
//! a request with many samples cannot starve requests that arrived before its next wave; the
//! prompt's full blocks are shared across waves through the prefix cache.

mod controller;
mod plan;
mod presets;
mod report;

pub use controller::{Action, Controller, ProbeKind, ProbeResult, Tok};
pub use plan::{
    build, AutoPolicy, Budget, BudgetContext, Certaindex, MinAgreement, RawAuto, RawBudget,
    RawCertaindex, RawGate, RawMinAgreement, RawTtc, Strategy, TtcPlan,
};
pub use presets::{AutoPreset, BudgetConfig, Effort, LoadRule, LoadSnapshot, Preset};
pub use report::{Decision, EarlyStop, Grant, SampleSummary, TtcProgress, TtcReport};
