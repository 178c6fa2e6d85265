//! What the controller tells the outside: the progress of a running request and the final
//! report (votes, winner, token accounting with wasted and probe tokens, every decision).

use super::Controller;
use crate::aggregate::vote;
use crate::budget::report::{SampleSummary, TtcProgress, TtcReport};

impl Controller {
    /// Where the request stands now.
    pub fn progress(&self) -> TtcProgress {
        let v = vote(&self.plan.aggregation, &self.candidates());
        TtcProgress {
            launched: self.recs.len(),
            running: self.live().len(),
            completed: self.order.len(),
            stopped: self.recs.iter().filter(|r| r.stopped.is_some()).count(),
            leader: v.winner,
            leader_share: v.share,
            tokens: self.total_tokens + self.probe_tokens,
        }
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
        // No answer anywhere: the most likely counted sample. Nothing counted: no winner
        // (the response says so instead of passing a cut-off text as an answer).
        let winner = v
            .winner_sample
            .or_else(|| by_logprob(&mut self.order.iter().copied()));
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
                    score: r.score,
                    probes: r.probes,
                    probe_tokens: r.probe_tokens,
                    probe_answers: r.probe_answers.clone(),
                    exit_at: r.exit_at,
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
            tokens_probe: self.probe_tokens,
            probes_answer: self.probes_done[0],
            probes_verify: self.probes_done[1],
            decisions: self.decisions.clone(),
        }
    }
}
