//! Between waves: when nothing of an aggregated request is live or awaiting a score, the
//! controller either finishes (budget spent, load cap reached, a scattered vote, a deadline
//! nearer than the last wave took) or launches the next wave, sized by the load seen now and
//! with a thinking budget `auto` may raise.

use std::time::Duration;

use super::{Action, Controller, Rec};
use crate::aggregate::vote;
use crate::budget::presets::LoadRule;
use crate::budget::report::EarlyStop;

impl Controller {
    /// The time since the request's admission, as the engine sees it before a step (with a
    /// `deadline`, a next wave that cannot finish in the time left is not launched).
    pub fn observe_clock(&mut self, since_admission: Duration) {
        self.now = since_admission;
    }

    /// When nothing is live or waiting for a score: the next wave, or the end.
    pub(super) fn advance(&mut self) -> Vec<Action> {
        if self.finished || !self.live().is_empty() || self.awaiting() > 0 {
            return Vec::new();
        }
        // The load met now caps the samples (never below those already run).
        let cap = LoadRule::samples(self.load_level, self.plan.grant.requested_n)
            .max(self.recs.len())
            .min(self.plan.n);
        let left = cap - self.recs.len();
        let budget_left = self
            .plan
            .total_token_budget
            .is_none_or(|b| self.total_tokens < b);
        if left > 0 && budget_left {
            if let Some(m) = self.plan.min_agreement {
                if self.order.len() >= m.after && self.agreement() < m.share {
                    self.stop_reason = Some(EarlyStop::LowAgreement);
                    self.finished = true;
                    self.decide(
                        "finish".into(),
                        format!(
                            "min_agreement: the winner holds {:.2} of {} answers, below {}",
                            self.agreement(),
                            self.order.len(),
                            m.share
                        ),
                    );
                    return vec![Action::Finish];
                }
            }
            if let Some(a) = self.plan.auto {
                let share = vote(&self.plan.aggregation, &self.candidates()).share;
                if self.order.len() >= a.hopeless_after && share < a.hopeless_share {
                    self.stop_reason = Some(EarlyStop::LowAgreement);
                    self.finished = true;
                    self.decide(
                        "finish".into(),
                        format!(
                            "auto: the leader holds {share:.2} of {} answers, below {}: more \
                             votes rarely change a scattered vote",
                            self.order.len(),
                            a.hopeless_share
                        ),
                    );
                    return vec![Action::Finish];
                }
            }
            let mut urgent = false;
            if let Some(deadline) = self.plan.deadline {
                // The last wave's duration (launch to its last sample's end, queueing and
                // verification included) estimates the next one's under the same load.
                let time_left = deadline.saturating_sub(self.now);
                let took = self.now.saturating_sub(self.wave_launched);
                if time_left < took {
                    self.stop_reason = Some(EarlyStop::Deadline);
                    self.finished = true;
                    self.decide(
                        "finish".into(),
                        format!(
                            "deadline: {} ms left, the last wave took {} ms: another would be \
                             stopped unfinished",
                            time_left.as_millis(),
                            took.as_millis()
                        ),
                    );
                    return vec![Action::Finish];
                }
                urgent = time_left < 2 * took;
            }
            let count = match self.plan.auto {
                Some(a) => a.wave.min(left),
                None => self.plan.min_samples.min(left),
            };
            let thinking = self.next_thinking();
            let mut why = format!(
                "next wave: {} counted, none live; load level {} allows {cap} of {}",
                self.order.len(),
                self.load_level,
                self.plan.n
            );
            if urgent {
                why.push_str("; urgent: the deadline leaves under two waves");
            }
            self.decide(format!("launch {count}"), why);
            self.wave_start = self.recs.len();
            self.wave_thinking = thinking;
            return self.launch(count, thinking, urgent);
        }
        if left == 0 && self.recs.len() < self.plan.n {
            self.decide(
                "finish".into(),
                format!("load level {} caps the samples at {cap}", self.load_level),
            );
        }
        self.finished = true;
        vec![Action::Finish]
    }

    /// The next wave's thinking budget when it differs from the request's: `auto` doubles it
    /// (up to `max_thinking`) when half or more of the last wave's completed samples hit it;
    /// a load level above the one at admission shrinks it by the load rule.
    fn next_thinking(&mut self) -> Option<u32> {
        let granted = self.plan.grant.granted_thinking;
        let mut t = self.wave_thinking;
        if let (Some(a), Some(cur)) = (self.plan.auto, self.wave_thinking.or(granted)) {
            let wave = &self.recs[self.wave_start..];
            let done: Vec<&Rec> = wave.iter().filter(|r| r.stopped.is_none()).collect();
            let capped = done
                .iter()
                .filter(|r| r.reasoning_tokens >= cur as usize)
                .count();
            let up = cur.saturating_mul(2).min(a.max_thinking.unwrap_or(cur));
            if !done.is_empty() && 2 * capped >= done.len() && up > cur {
                self.decide(
                    format!("thinking budget {cur} -> {up}"),
                    format!(
                        "auto: {capped} of the last wave's {} completed samples used their whole thinking budget",
                        done.len()
                    ),
                );
                t = Some(up);
            }
        }
        if self.load_level > self.plan.grant.load_level {
            if let Some(b) = t.or(self.plan.think_budget) {
                t = Some(LoadRule::thinking(self.load_level, b));
            }
        }
        t
    }
}
