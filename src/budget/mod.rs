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
//! the prompt's blocks); later waves wait in the queue ranked by how undecided their request
//! is (`--wave-priority certainty`, the default) or by arrival (`fcfs`); the prompt's full
//! blocks are shared across waves through the prefix cache.
//!
//! Layering inside: strategy <- presets <- report <- plan <- controller (each uses only the
//! ones to its left).

mod controller;
mod plan;
mod presets;
mod report;
mod strategy;

pub use controller::{Action, Controller, ProbeKind, ProbeResult, Tok};
pub use plan::{
    build, Budget, BudgetContext, BudgetError, Certaindex, MinAgreement, RawAuto, RawBudget,
    RawCertaindex, RawGate, RawMinAgreement, RawTtc, TtcPlan,
};
pub use presets::{AutoPreset, BudgetConfig, Effort, LoadRule, LoadSnapshot, Preset};
pub use report::{Decision, EarlyStop, Grant, SampleSummary, TtcProgress, TtcReport};
pub use strategy::{AutoPolicy, Strategy};
