//! Probe lifecycle on the engine: forking a probe off a sample's KV, ending it, and telling
//! the budget controller its result. A probe's KV is freed the moment it ends or its request
//! or sample goes; the controller hears exactly once per started or refused probe.

use super::EngineCore;
use crate::budget::{Action, ProbeKind, ProbeResult};
use crate::engine::probes::Probe;
use crate::sched::SeqId;

impl EngineCore {
    /// Forks a probe of sample `si` of request `rid`. When it cannot start (the sample holds
    /// no KV, no sequence slot is free) the controller hears so at once: its actions are
    /// returned as the error.
    pub(super) fn start_probe(
        &mut self,
        rid: u64,
        si: usize,
        kind: ProbeKind,
    ) -> Result<(), Vec<Action>> {
        let Some(req) = self.requests.get_mut(&rid) else {
            return Ok(());
        };
        let eos = self.sampler.eos_token_ids();
        let (suffix, max_new) = match kind {
            ProbeKind::Answer => (
                &self.prompts.answer,
                req.ctrl
                    .as_ref()
                    .and_then(|c| c.plan().certaindex)
                    .map_or(16, |c| c.max_tokens),
            ),
            ProbeKind::Verify => {
                let ended = req.samples[si]
                    .output
                    .last()
                    .is_some_and(|t| eos.contains(t));
                let p = &self.prompts;
                (if ended { &p.verify } else { &p.verify_open }, 1)
            }
        };
        let started = match req.samples.get(si).and_then(|s| s.seq) {
            Some(seq) if !suffix.is_empty() => {
                self.sched.add_probe(seq, suffix).map_err(|e| e.to_string())
            }
            Some(_) => Err("the model family has no probe prompt".to_string()),
            None => Err("the sample has ended".to_string()),
        };
        match started {
            Ok(pid) => {
                self.probes.insert(
                    pid,
                    Probe {
                        rid,
                        sample: si,
                        kind,
                        out: Vec::new(),
                        max_new,
                        tokens: 0,
                    },
                );
                Ok(())
            }
            Err(why) => {
                tracing::debug!(rid, sample = si, kind = kind.as_str(), %why, "probe not started");
                let acts = req
                    .ctrl
                    .as_mut()
                    .map_or_else(Vec::new, |c| c.on_probe(si, kind, ProbeResult::Dropped, 0));
                Err(acts)
            }
        }
    }

    /// Drops the probes of request `rid` (of one sample, or all); their KV is freed now.
    pub(super) fn cancel_probes(&mut self, rid: u64, sample: Option<usize>) {
        let gone: Vec<SeqId> = self
            .probes
            .iter()
            .filter(|(_, p)| p.rid == rid && sample.is_none_or(|s| s == p.sample))
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.probes.remove(&id);
            self.sched.finish_seq(id);
        }
    }

    /// A probe ended with `result`: free it and tell the controller.
    pub(super) fn end_probe(&mut self, pid: SeqId, result: ProbeResult) {
        let Some(p) = self.probes.remove(&pid) else {
            return;
        };
        self.sched.finish_seq(pid);
        self.tell_probe(p, result);
    }

    /// Tells the controller a (freed) probe's result and carries out what it decides.
    pub(super) fn tell_probe(&mut self, p: Probe, result: ProbeResult) {
        let rid = p.rid;
        self.tell_probe_inner(p, result);
        self.send_progress(rid);
    }

    pub(super) fn tell_probe_inner(&mut self, p: Probe, result: ProbeResult) {
        let acts = match self.requests.get_mut(&p.rid).and_then(|r| r.ctrl.as_mut()) {
            Some(c) => c.on_probe(p.sample, p.kind, result, p.tokens),
            None => return,
        };
        self.apply(p.rid, acts);
    }

    /// Answer probes read one greedy token per step: returns those that are done (at
    /// `max_new` tokens, EOS, or a line break after some text) with their decoded answer.
    pub(super) fn advance_answer_probes(
        &mut self,
        sampled: &[(SeqId, u32)],
    ) -> Vec<(SeqId, ProbeResult)> {
        let eos = self.sampler.eos_token_ids();
        let mut done = Vec::new();
        for &(seq, token) in sampled {
            let Some(p) = self.probes.get_mut(&seq) else {
                continue;
            };
            if eos.contains(&token) {
                let text = self.tokenizer.decode(&p.out, true);
                done.push((seq, ProbeResult::Answer(text)));
                continue;
            }
            p.out.push(token);
            let text = self.tokenizer.decode(&p.out, true);
            let line_done = text.trim_start().contains('\n');
            if p.out.len() >= p.max_new || line_done {
                done.push((seq, ProbeResult::Answer(text)));
            }
        }
        done
    }
}
