//! `Controller`: the per-request state machine of an aggregated request. The engine feeds it
//! events (a sample's token logprob, a sample's completion with its final text, the deadline)
//! and carries out the actions it returns; it never touches the engine itself.
//!
//! ```text
//!  start()            -> Launch first wave (min_samples)
//!  on_token(s, lp)    -> total_token_budget reached : Stop every live sample, Finish
//!                        gated sample's window mean < threshold : Stop s (low_confidence)
//!  on_finished(s, t)  -> extract + key the answer; first wave complete: set the gate threshold
//!                        last esc_window answers agree : Stop the rest, Finish
//!                        leading weight >= consensus * (answered weight + live samples) : same
//!  no live samples    -> >= min_agreement.after completed and the winner's share of them
//!                        < min_agreement.share : Finish (low_agreement)
//!                        else Launch next wave (min_samples, up to n) while budget remains,
//!                        else Finish
//!  on_deadline()      -> Stop every live sample, Finish
//! ```
//!
//! Invariants: `Finish` is returned exactly once and after it nothing else; every launched
//! sample ends exactly once (finished or stopped); stopped samples cast no vote and their
//! tokens count as wasted. Memory per sample: a `WindowMean` (window <= 1024 f32) and its key.

use super::plan::TtcPlan;
use super::report::{EarlyStop, SampleSummary, TtcReport};
use crate::aggregate::{confidence_threshold, vote, window_agrees, Candidate, WindowMean};

/// What the engine must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start samples `first..first + count` (one gang).
    Launch { first: usize, count: usize },
    /// End a live sample now; it gets no vote.
    Stop { sample: usize, reason: EarlyStop },
    /// Every sample has ended: send the report and close the request.
    Finish,
}

#[derive(Debug, Clone)]
struct Rec {
    tokens: usize,
    reasoning_tokens: usize,
    lp_sum: f64,
    window: WindowMean,
    done: bool,
    stopped: Option<EarlyStop>,
    key: Option<String>,
    /// Launched after the first wave: subject to the confidence gate.
    gated: bool,
}

impl Rec {
    fn mean_logprob(&self) -> f64 {
        if self.tokens == 0 {
            0.0
        } else {
            self.lp_sum / self.tokens as f64
        }
    }
}

#[derive(Debug, Clone)]
pub struct Controller {
    plan: TtcPlan,
    recs: Vec<Rec>,
    /// Completed (not stopped) samples in completion order.
    order: Vec<usize>,
    threshold: Option<f64>,
    total_tokens: usize,
    stop_reason: Option<EarlyStop>,
    finished: bool,
}

impl Controller {
    pub fn new(plan: TtcPlan) -> Self {
        Controller {
            plan,
            recs: Vec::new(),
            order: Vec::new(),
            threshold: None,
            total_tokens: 0,
            stop_reason: None,
            finished: false,
        }
    }

    pub fn plan(&self) -> &TtcPlan {
        &self.plan
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The gate threshold once the first wave has set it.
    pub fn threshold(&self) -> Option<f64> {
        self.threshold
    }

    /// The first wave.
    pub fn start(&mut self) -> Vec<Action> {
        self.launch(self.plan.min_samples)
    }

    fn launch(&mut self, count: usize) -> Vec<Action> {
        let first = self.recs.len();
        let window = self.plan.gate.map_or(1, |g| g.window);
        for _ in 0..count {
            self.recs.push(Rec {
                tokens: 0,
                reasoning_tokens: 0,
                lp_sum: 0.0,
                window: WindowMean::new(window),
                done: false,
                stopped: None,
                key: None,
                gated: first > 0,
            });
        }
        vec![Action::Launch { first, count }]
    }

    fn live(&self) -> Vec<usize> {
        (0..self.recs.len())
            .filter(|&i| !self.recs[i].done)
            .collect()
    }

    /// Sample `sample` generated a token with this logprob.
    pub fn on_token(&mut self, sample: usize, logprob: f32) -> Vec<Action> {
        if self.finished || self.recs.get(sample).is_none_or(|r| r.done) {
            return Vec::new();
        }
        self.total_tokens += 1;
        let r = &mut self.recs[sample];
        r.tokens += 1;
        r.lp_sum += f64::from(logprob);
        let mean = r.window.push(logprob);
        if self
            .plan
            .total_token_budget
            .is_some_and(|b| self.total_tokens >= b)
        {
            return self.stop_all(EarlyStop::TokenBudget);
        }
        if let (true, Some(m), Some(t)) = (r.gated, mean, self.threshold) {
            if m < t {
                r.done = true;
                r.stopped = Some(EarlyStop::LowConfidence);
                let mut acts = vec![Action::Stop {
                    sample,
                    reason: EarlyStop::LowConfidence,
                }];
                acts.extend(self.advance());
                return acts;
            }
        }
        Vec::new()
    }

    /// Sample `sample` finished on its own with this final text (content; the whole text for
    /// models without reasoning markers) and this many reasoning tokens.
    pub fn on_finished(
        &mut self,
        sample: usize,
        text: &str,
        reasoning_tokens: usize,
    ) -> Vec<Action> {
        if self.finished || self.recs.get(sample).is_none_or(|r| r.done) {
            return Vec::new();
        }
        let key = self
            .plan
            .extractor
            .extract(text)
            .map(|a| self.plan.equivalence.key(&a));
        let r = &mut self.recs[sample];
        r.done = true;
        r.key = key;
        r.reasoning_tokens = reasoning_tokens;
        self.order.push(sample);
        self.maybe_set_threshold();
        let cands = self.candidates();
        if let Some(w) = self.plan.esc_window {
            if window_agrees(&cands, w) {
                return self.stop_all(EarlyStop::WindowAgreement);
            }
        }
        if let Some(c) = self.plan.consensus {
            let v = vote(&self.plan.aggregation, &cands);
            let total: f64 = v.histogram.iter().map(|(_, w)| w).sum();
            let lead = v.histogram.first().map_or(0.0, |(_, w)| *w);
            // Each live sample could add at most weight 1 (majority 1, confidence exp(mean) <= 1).
            let live = self.live().len() as f64;
            if lead > 0.0 && lead >= c * (total + live) {
                return self.stop_all(EarlyStop::Consensus);
            }
        }
        self.advance()
    }

    /// The request's deadline passed.
    pub fn on_deadline(&mut self) -> Vec<Action> {
        if self.finished {
            return Vec::new();
        }
        self.stop_all(EarlyStop::Deadline)
    }

    fn maybe_set_threshold(&mut self) {
        let (Some(g), None) = (self.plan.gate, self.threshold) else {
            return;
        };
        let first = self.plan.min_samples.min(self.recs.len());
        if self.recs[..first].iter().any(|r| !r.done) {
            return;
        }
        // A sample shorter than the window contributes its overall mean.
        let mins: Vec<f64> = self.recs[..first]
            .iter()
            .filter(|r| r.stopped.is_none() && r.tokens > 0)
            .map(|r| r.window.min().unwrap_or_else(|| r.mean_logprob()))
            .collect();
        self.threshold = confidence_threshold(&mins, g.percentile);
    }

    fn candidates(&self) -> Vec<Candidate> {
        self.order
            .iter()
            .map(|&i| Candidate {
                sample: i,
                key: self.recs[i].key.clone(),
                mean_logprob: self.recs[i].mean_logprob(),
            })
            .collect()
    }

    fn stop_all(&mut self, reason: EarlyStop) -> Vec<Action> {
        let mut acts = Vec::new();
        for i in self.live() {
            self.recs[i].done = true;
            self.recs[i].stopped = Some(reason);
            acts.push(Action::Stop { sample: i, reason });
        }
        self.stop_reason = Some(reason);
        self.finished = true;
        acts.push(Action::Finish);
        acts
    }

    /// The share of completed samples whose answer is the current winner (0 when none has one).
    fn agreement(&self) -> f64 {
        let cands = self.candidates();
        let Some(winner) = vote(&self.plan.aggregation, &cands).winner else {
            return 0.0;
        };
        let agree = cands
            .iter()
            .filter(|c| c.key.as_deref() == Some(winner.as_str()))
            .count();
        agree as f64 / cands.len().max(1) as f64
    }

    /// When nothing is live: the next wave, or the end.
    fn advance(&mut self) -> Vec<Action> {
        if self.finished || !self.live().is_empty() {
            return Vec::new();
        }
        let left = self.plan.n - self.recs.len();
        let budget_left = self
            .plan
            .total_token_budget
            .is_none_or(|b| self.total_tokens < b);
        if left > 0 && budget_left {
            if let Some(m) = self.plan.min_agreement {
                if self.order.len() >= m.after && self.agreement() < m.share {
                    self.stop_reason = Some(EarlyStop::LowAgreement);
                    self.finished = true;
                    return vec![Action::Finish];
                }
            }
            return self.launch(self.plan.min_samples.min(left));
        }
        self.finished = true;
        vec![Action::Finish]
    }

    /// The account of the request so far (final once `Finish` was returned).
    pub fn report(&self) -> TtcReport {
        let cands = self.candidates();
        let v = vote(&self.plan.aggregation, &cands);
        let by_logprob = |it: &mut dyn Iterator<Item = usize>| {
            it.max_by(|&a, &b| {
                let (x, y) = (self.recs[a].mean_logprob(), self.recs[b].mean_logprob());
                x.total_cmp(&y).then(b.cmp(&a))
            })
        };
        // No answer anywhere: the most likely completed sample; nothing completed: the
        // longest stopped one (its partial text is all there is).
        let winner = v.winner_sample.or_else(|| {
            by_logprob(&mut self.order.iter().copied()).or_else(|| {
                (0..self.recs.len()).max_by(|&a, &b| {
                    self.recs[a]
                        .tokens
                        .cmp(&self.recs[b].tokens)
                        .then(b.cmp(&a))
                })
            })
        });
        let (mut thinking, mut answer, mut wasted) = (0, 0, 0);
        for r in &self.recs {
            if r.stopped.is_some() {
                wasted += r.tokens;
            } else {
                thinking += r.reasoning_tokens;
                answer += r.tokens - r.reasoning_tokens.min(r.tokens);
            }
        }
        TtcReport {
            strategy: self.plan.strategy,
            grant: self.plan.grant.clone(),
            samples: self
                .recs
                .iter()
                .enumerate()
                .map(|(index, r)| SampleSummary {
                    index,
                    answer: r.key.clone(),
                    tokens: r.tokens,
                    reasoning_tokens: r.reasoning_tokens,
                    mean_logprob: r.mean_logprob(),
                    stopped: r.stopped,
                })
                .collect(),
            stop_reason: self.stop_reason,
            votes: v.histogram,
            answer: v.winner,
            winning_share: v.share,
            winner_sample: winner,
            tokens_thinking: thinking,
            tokens_answer: answer,
            tokens_wasted: wasted,
        }
    }
}

#[cfg(test)]
#[path = "controller_tests.rs"]
mod tests;
