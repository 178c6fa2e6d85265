//! Per-request latency and token accounting into `Metrics`, fed by the engine events a
//! response reads.
//!
//! ```text
//! arrival --(validate)--> submit --(queue)--> first event --Δ--> delta --Δ--> ... --> end
//!   |---------------- time_to_first_token ------->|
//!                        |-- request_queue_time -->|   (no admission event in the contract yet)
//!   |----------------------------- e2e_request_latency ------------------------------>|
//!                                     inter_token_latency = each Δ between deltas
//! ```

use std::sync::Arc;
use std::time::Instant;

use crate::engine::EngineEvent;
use crate::metrics::Metrics;

pub struct Tracker {
    metrics: Arc<Metrics>,
    arrival: Instant,
    submitted: Instant,
    first: Option<Instant>,
    last_delta: Option<Instant>,
    done: bool,
}

impl Tracker {
    /// Starts at `arrival` (when the HTTP request came in); call right after `submit`.
    pub fn new(metrics: Arc<Metrics>, arrival: Instant) -> Self {
        Tracker {
            metrics,
            arrival,
            submitted: Instant::now(),
            first: None,
            last_delta: None,
            done: false,
        }
    }

    pub fn event(&mut self, ev: &EngineEvent) {
        let now = Instant::now();
        if self.first.is_none() {
            self.first = Some(now);
            let m = &self.metrics;
            m.request_queue_time
                .observe(now.duration_since(self.submitted).as_secs_f64());
            m.time_to_first_token
                .observe(now.duration_since(self.arrival).as_secs_f64());
        }
        match ev {
            EngineEvent::Delta { .. } => {
                if let Some(prev) = self.last_delta {
                    self.metrics
                        .inter_token_latency
                        .observe(now.duration_since(prev).as_secs_f64());
                }
                self.last_delta = Some(now);
            }
            EngineEvent::Finished {
                completion_tokens,
                reasoning_tokens,
                ..
            } => {
                self.metrics
                    .generation_tokens
                    .inc_by(*completion_tokens as u64);
                self.metrics
                    .reasoning_tokens
                    .inc_by(*reasoning_tokens as u64);
            }
            EngineEvent::Report(r) => self.metrics.record_ttc(r),
            EngineEvent::Progress(_) | EngineEvent::Error(_) => {}
        }
    }

    /// The request completed (all events read): its finish reason (of its first choice),
    /// prompt tokens and end-to-end latency.
    pub fn done(&mut self, prompt_tokens: usize, finish_reason: &str) {
        if !self.done {
            self.done = true;
            self.metrics.record_finish(finish_reason);
            self.metrics.prompt_tokens.inc_by(prompt_tokens as u64);
            self.metrics
                .e2e_request_latency
                .observe(self.arrival.elapsed().as_secs_f64());
        }
    }
}
