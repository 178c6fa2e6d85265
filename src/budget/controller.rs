//! `Controller`: the per-request state machine of an aggregated request. The engine feeds it
//! events (a sample's token, a probe's result, a sample's completion with its final text, the
//! load, the deadline) and carries out the actions it returns; it never touches the engine.
//!
//! ```text
//!  start()             -> Launch first wave (min_samples)
//!  on_token(s, tok)    -> total_token_budget reached : Stop every live sample, Finish
//!                         gated sample's window mean < threshold : Stop s (low_confidence)
//!                         certaindex: every probe_every thinking tokens : Probe s (answer)
//!                         (forced tokens count toward budgets, never toward confidence)
//!  on_probe(s, answer) -> the last `agree` probed answers agree : EndThinking s
//!  on_finished(s, t)   -> extract + key the answer; with a scorer: Probe s (verify) and wait
//!  on_probe(s, score)  -> (the sample now counts)
//!  a sample counts     -> first wave complete: set the gate threshold
//!                         last esc_window answers agree : Stop the rest, Finish
//!                         lead >= consensus * (counted weight + every sample still to come)
//!                         : Stop the rest, Finish
//!  nothing live        -> >= min_agreement.after counted and the winner's share of them
//!                         < min_agreement.share : Finish (low_agreement)
//!                         the deadline leaves less than the last wave took : Finish
//!                         (deadline; no wave that would be stopped unfinished)
//!                         else Launch next wave (sized by the load seen now; urgent when
//!                         the deadline leaves under two waves) while budget remains,
//!                         else Finish
//!  on_deadline()       -> Stop every live sample, Finish
//! ```
//!
//! Invariants: `Finish` is returned exactly once and after it nothing else; every launched
//! sample ends exactly once (finished or stopped); stopped samples cast no vote and their
//! tokens count as wasted; a sample waiting for its score is not live and does not count yet;
//! results of probes of ended samples are ignored. Memory per sample: a `WindowMean` (window
//! <= 1024 f32), its key, its probed answers (<= thinking tokens / probe_every).

mod summary;
mod waves;

use std::time::Duration;

use super::plan::TtcPlan;
use super::report::{Decision, EarlyStop};
use crate::aggregate::{confidence_threshold, vote, window_agrees, Candidate, WindowMean};

/// What a probe asks (the engine builds its suffix from the model's probe prompts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Certaindex: "the final answer is" after the thinking so far; decode a few tokens.
    Answer,
    /// Self-verification: "is the answer above correct?"; read P(Yes).
    Verify,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Answer => "answer",
            ProbeKind::Verify => "verify",
        }
    }
}

/// What a probe returned.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeResult {
    /// The text an answer probe decoded.
    Answer(String),
    /// A verifier score in [0, 1].
    Score(f64),
    /// The probe could not run or was dropped (no free sequence slot, preempted).
    Dropped,
}

/// One generated token as the controller sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tok {
    pub logprob: f32,
    /// Forced by a budget (end of thinking, s1 "Wait"), not drawn: its logprob says nothing
    /// about the sample's confidence.
    pub forced: bool,
    /// The sample was thinking when the token arrived.
    pub thinking: bool,
}

impl Tok {
    /// A drawn answer token.
    pub fn drawn(logprob: f32) -> Self {
        Tok {
            logprob,
            forced: false,
            thinking: false,
        }
    }
}

/// What the engine must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start samples `first..first + count` (one gang); `thinking`: their thinking budget
    /// when it differs from the request's (shrunk by the load met at this wave).
    Launch {
        first: usize,
        count: usize,
        thinking: Option<u32>,
        /// The request's deadline leaves under two of its last wave's durations: the wave
        /// must start now to finish (the scheduler lets no new request pass it).
        urgent: bool,
    },
    /// End a live sample now; it gets no vote.
    Stop { sample: usize, reason: EarlyStop },
    /// Fork a probe of the sample (its KV shared) and report the result with `on_probe`.
    Probe { sample: usize, kind: ProbeKind },
    /// Force the sample's end of thinking now (certaindex exit); it goes on to answer.
    EndThinking { sample: usize },
    /// Every sample has ended: send the report and close the request.
    Finish,
}

#[derive(Debug, Clone)]
struct Rec {
    tokens: usize,
    reasoning_tokens: usize,
    thinking_seen: usize,
    lp_sum: f64,
    /// Drawn tokens (the mean logprob's denominator).
    drawn: usize,
    window: WindowMean,
    /// No longer generating (finished, or stopped).
    done: bool,
    stopped: Option<EarlyStop>,
    key: Option<String>,
    /// Launched after the first wave: subject to the confidence gate.
    gated: bool,
    /// A probe of this kind is out.
    probe_out: Option<ProbeKind>,
    probes: usize,
    probe_tokens: usize,
    probe_answers: Vec<Option<String>>,
    /// Thinking tokens when certaindex ended the thinking.
    exit_at: Option<usize>,
    score: Option<f64>,
    /// Finished; its verification probe is out.
    awaiting_score: bool,
}

impl Rec {
    fn mean_logprob(&self) -> f64 {
        if self.drawn == 0 {
            0.0
        } else {
            self.lp_sum / self.drawn as f64
        }
    }
}

#[derive(Debug, Clone)]
pub struct Controller {
    plan: TtcPlan,
    recs: Vec<Rec>,
    /// Counted samples (completed, scored when there is a scorer) in counting order.
    order: Vec<usize>,
    threshold: Option<f64>,
    /// Every token of every sample (probe tokens apart).
    total_tokens: usize,
    probe_tokens: usize,
    /// Probes that returned a result, by kind (answer, verify).
    probes_done: [usize; 2],
    stop_reason: Option<EarlyStop>,
    finished: bool,
    /// The load level the engine saw last (applied at the next wave).
    load_level: u8,
    decisions: Vec<Decision>,
    /// First sample of the current wave, and its thinking budget when not the request's.
    wave_start: usize,
    wave_thinking: Option<u32>,
    /// Time since the request's admission as the engine saw it last (`observe_clock`), and
    /// when the current wave was launched on that clock (the first wave at zero).
    now: Duration,
    wave_launched: Duration,
}

impl Controller {
    pub fn new(plan: TtcPlan) -> Self {
        let load_level = plan.grant.load_level;
        Controller {
            plan,
            recs: Vec::new(),
            order: Vec::new(),
            threshold: None,
            total_tokens: 0,
            probe_tokens: 0,
            probes_done: [0; 2],
            stop_reason: None,
            finished: false,
            load_level,
            decisions: Vec::new(),
            wave_start: 0,
            wave_thinking: None,
            now: Duration::ZERO,
            wave_launched: Duration::ZERO,
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
        let n = self.plan.min_samples;
        self.decide(
            format!("launch {n}"),
            format!("first wave: min_samples {n} of n {}", self.plan.n),
        );
        self.launch(n, None, false)
    }

    /// The engine's current load level (0..=2, `LoadRule::level`); later waves are sized by
    /// the level they meet.
    pub fn observe_load(&mut self, level: u8) {
        self.load_level = level;
    }

    fn decide(&mut self, what: String, why: String) {
        let kind = Decision::kind_of(&what);
        self.decisions.push(Decision {
            at_tokens: self.total_tokens + self.probe_tokens,
            kind,
            what,
            why,
        });
    }

    fn launch(&mut self, count: usize, thinking: Option<u32>, urgent: bool) -> Vec<Action> {
        let first = self.recs.len();
        self.wave_launched = self.now;
        let window = self.plan.gate.map_or(1, |g| g.window);
        for _ in 0..count {
            self.recs.push(Rec {
                tokens: 0,
                reasoning_tokens: 0,
                thinking_seen: 0,
                lp_sum: 0.0,
                drawn: 0,
                window: WindowMean::new(window),
                done: false,
                stopped: None,
                key: None,
                gated: first > 0,
                probe_out: None,
                probes: 0,
                probe_tokens: 0,
                probe_answers: Vec::new(),
                exit_at: None,
                score: None,
                awaiting_score: false,
            });
        }
        vec![Action::Launch {
            first,
            count,
            thinking,
            urgent,
        }]
    }

    fn live(&self) -> Vec<usize> {
        (0..self.recs.len())
            .filter(|&i| !self.recs[i].done)
            .collect()
    }

    fn awaiting(&self) -> usize {
        self.recs.iter().filter(|r| r.awaiting_score).count()
    }

    /// Sample `sample` generated a token.
    pub fn on_token(&mut self, sample: usize, tok: Tok) -> Vec<Action> {
        if self.finished || self.recs.get(sample).is_none_or(|r| r.done) {
            return Vec::new();
        }
        self.total_tokens += 1;
        let r = &mut self.recs[sample];
        r.tokens += 1;
        if tok.thinking {
            r.thinking_seen += 1;
        }
        let mean = if tok.forced {
            None
        } else {
            r.drawn += 1;
            r.lp_sum += f64::from(tok.logprob);
            r.window.push(tok.logprob)
        };
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
        if let Some(ci) = self.plan.certaindex {
            if tok.thinking
                && r.exit_at.is_none()
                && r.probe_out.is_none()
                && r.thinking_seen.is_multiple_of(ci.probe_every)
            {
                r.probe_out = Some(ProbeKind::Answer);
                return vec![Action::Probe {
                    sample,
                    kind: ProbeKind::Answer,
                }];
            }
        }
        Vec::new()
    }

    /// A probe of `sample` returned; it cost `tokens` (computed and decoded).
    pub fn on_probe(
        &mut self,
        sample: usize,
        kind: ProbeKind,
        result: ProbeResult,
        tokens: usize,
    ) -> Vec<Action> {
        self.probe_tokens += tokens;
        let Some(r) = self.recs.get_mut(sample) else {
            return Vec::new();
        };
        r.probe_tokens += tokens;
        if r.probe_out != Some(kind) {
            return Vec::new();
        }
        r.probe_out = None;
        if !matches!(result, ProbeResult::Dropped) {
            r.probes += 1;
            self.probes_done[usize::from(kind == ProbeKind::Verify)] += 1;
        }
        if self.finished {
            return Vec::new();
        }
        match (kind, result) {
            (ProbeKind::Answer, ProbeResult::Answer(text)) => {
                let key = self
                    .plan
                    .extractor
                    .extract(&text)
                    .map(|a| self.plan.equivalence.key(&a));
                let r = &mut self.recs[sample];
                r.probe_answers.push(key);
                let Some(ci) = self.plan.certaindex else {
                    return Vec::new();
                };
                let tail = r.probe_answers.len().saturating_sub(ci.agree);
                let last = &r.probe_answers[tail..];
                let agree = last.len() == ci.agree
                    && last[0].is_some()
                    && last.iter().all(|k| *k == last[0]);
                if agree && !r.done && r.exit_at.is_none() {
                    let at = r.thinking_seen;
                    r.exit_at = Some(at);
                    let key = last[0].clone().unwrap_or_default();
                    self.decide(
                        format!("end thinking of sample {sample} at {at} thinking tokens"),
                        format!(
                            "certaindex: the last {} probed answers agree on {key}",
                            ci.agree
                        ),
                    );
                    return vec![Action::EndThinking { sample }];
                }
                Vec::new()
            }
            (ProbeKind::Verify, result) => {
                if !self.recs[sample].awaiting_score {
                    return Vec::new();
                }
                let r = &mut self.recs[sample];
                r.awaiting_score = false;
                r.score = match result {
                    ProbeResult::Score(s) if s.is_finite() => Some(s.clamp(0.0, 1.0)),
                    _ => None,
                };
                self.count(sample)
            }
            _ => Vec::new(),
        }
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
        let scorer = self.plan.scorer;
        let r = &mut self.recs[sample];
        r.done = true;
        r.key = key;
        r.reasoning_tokens = reasoning_tokens;
        if scorer {
            r.awaiting_score = true;
            r.probe_out = Some(ProbeKind::Verify);
            return vec![Action::Probe {
                sample,
                kind: ProbeKind::Verify,
            }];
        }
        self.count(sample)
    }

    /// A completed (and scored) sample joins the vote; the stop rules run.
    fn count(&mut self, sample: usize) -> Vec<Action> {
        self.order.push(sample);
        self.maybe_set_threshold();
        let cands = self.candidates();
        if let Some(w) = self.plan.esc_window {
            if window_agrees(&cands, w) {
                return self.stop_all(EarlyStop::WindowAgreement);
            }
        }
        if let Some(a) = self.plan.auto {
            let v = vote(&self.plan.aggregation, &cands);
            if let Some(leader) = &v.winner {
                let count = |k: &str| cands.iter().filter(|c| c.key.as_deref() == Some(k)).count();
                let lead = count(leader);
                let runner = cands
                    .iter()
                    .filter_map(|c| c.key.as_deref())
                    .filter(|k| *k != leader.as_str())
                    .map(count)
                    .max()
                    .unwrap_or(0);
                let p = p_majority(lead, runner);
                if p >= a.confidence {
                    let why = format!(
                        "auto: {leader} leads {lead} to {runner}; P(it is the majority) = {p:.3} >= {}",
                        a.confidence
                    );
                    self.decide("stop: confident".into(), why);
                    return self.stop_all(EarlyStop::Confident);
                }
            }
        }
        if let Some(c) = self.plan.consensus {
            let v = vote(&self.plan.aggregation, &cands);
            let total: f64 = v.histogram.iter().map(|(_, w)| w).sum();
            let lead = v.histogram.first().map_or(0.0, |(_, w)| *w);
            // Every sample that may still vote could add at most weight 1 (majority 1,
            // confidence exp(mean) <= 1, a score <= 1): the live ones, those waiting for a
            // score, and those not launched yet.
            let to_come = self.live().len() + self.awaiting() + (self.plan.n - self.recs.len());
            if lead > 0.0 && lead >= c * (total + to_come as f64) {
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
        if self.recs[..first]
            .iter()
            .any(|r| !r.done || r.awaiting_score)
        {
            return;
        }
        // A sample shorter than the window contributes its overall mean.
        let mins: Vec<f64> = self.recs[..first]
            .iter()
            .filter(|r| r.stopped.is_none() && r.drawn > 0)
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
                score: self.recs[i].score,
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
        // Samples still waiting for a score keep their answer and vote unscored.
        for i in 0..self.recs.len() {
            if self.recs[i].awaiting_score {
                self.recs[i].awaiting_score = false;
                self.order.push(i);
            }
        }
        self.stop_reason = Some(reason);
        self.finished = true;
        self.decide("finish".into(), format!("stop rule {}", reason.as_str()));
        acts.push(Action::Finish);
        acts
    }

    /// The share of counted samples whose answer is the current winner (0 when none has one).
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
}

#[cfg(test)]
mod tests;

/// `P(Beta(a + 1, b + 1) > 1/2) = P(Bin(a + b + 1, 1/2) <= a)`: the posterior probability, from
/// a uniform prior, that the answer with `a` votes is more likely than the one with `b`.
pub fn p_majority(a: usize, b: usize) -> f64 {
    let n = a + b + 1;
    // sum_{j <= a} C(n, j) / 2^n, accumulated in f64 (n <= 2 * 64 samples in practice).
    let mut c = 1.0f64;
    let mut sum = 0.0;
    for j in 0..=a {
        if j > 0 {
            c = c * (n - j + 1) as f64 / j as f64;
        }
        sum += c;
    }
    sum / 2f64.powi(n as i32)
}
