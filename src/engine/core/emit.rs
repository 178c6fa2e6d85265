//! Output of a sampled token: it joins its sample, the client sees what can be shown, the
//! sample finishes when a stop rule fires, and the budget controller reacts. A finished
//! sample's sequence leaves the scheduler in the same call (its blocks free at once), after
//! the controller's actions (a verification probe forks the sample's KV first).

use super::EngineCore;
use crate::budget::{Action, Tok};
use crate::engine::types::TokenLogprob;
use crate::sched::SeqId;

impl EngineCore {
    /// Appends a sampled token to its sample, streams what can be shown, finishes if due,
    /// and lets the controller react.
    pub(super) fn emit(&mut self, seq: SeqId, token: u32, tok: Tok, lp: Option<TokenLogprob>) {
        let Some(&(rid, si)) = self.seq_owner.get(&seq) else {
            return;
        };
        let Some(req) = self.requests.get_mut(&rid) else {
            return;
        };
        let s = &mut req.samples[si];
        let (delta, finish) = s.push_token(si, token, lp, &req.params, &self.tokenizer);
        let _ = req.tx.send(delta);
        let mut acts = match req.ctrl.as_mut() {
            Some(c) => c.on_token(si, tok),
            None => Vec::new(),
        };
        // The controller may have stopped this very sample (budget, low confidence).
        let stopped_now = acts
            .iter()
            .any(|a| matches!(a, Action::Stop { sample, .. } if *sample == si));
        let Some(reason) = finish.filter(|_| !stopped_now) else {
            self.apply(rid, acts);
            return;
        };
        let s = &mut req.samples[si];
        s.done = true;
        let _ = req.tx.send(s.finished_event(si, reason, None));
        req.live -= 1;
        if let Some(c) = req.ctrl.as_mut() {
            let s = &req.samples[si];
            let rt = s.think.thinking_tokens() as usize;
            let more = c.on_finished(si, s.content(), rt);
            acts.extend(more);
        }
        // Actions first (a verification probe forks the sample's KV), then its sequence ends.
        self.apply(rid, acts);
        self.send_progress(rid);
        if let Some(s) = self
            .requests
            .get_mut(&rid)
            .and_then(|r| r.samples.get_mut(si))
        {
            s.seq = None;
        }
        self.seq_owner.remove(&seq);
        self.sched.finish_seq(seq);
    }
}
