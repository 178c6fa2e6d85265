//! The request lifecycle around the step: clients that went away, deadlines, failures, and
//! the load level each aggregated request's controller sees before a step. Removing a
//! request drops its probes, its sample -> sequence entries and every scheduler sequence it
//! holds (their blocks are freed at once).

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::EngineCore;
use crate::budget::LoadSnapshot;
use crate::engine::types::EngineEvent;

impl EngineCore {
    pub(super) fn fail(&mut self, rid: u64, msg: String) {
        if let Some(r) = self.requests.get(&rid) {
            let _ = r.tx.send(EngineEvent::Error(msg));
        }
        self.remove_request(rid);
    }

    /// Drops requests whose client went away (stream dropped or receiver closed).
    pub fn reap_cancelled(&mut self) {
        let gone: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| r.cancelled.load(Ordering::Acquire) || r.tx.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.remove_request(id);
        }
    }

    /// Aggregated requests past their deadline: the controller stops their samples.
    pub(super) fn reap_deadlines(&mut self) {
        let now = Instant::now();
        let due: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| r.deadline.is_some_and(|d| now >= d))
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            let acts = match self.requests.get_mut(&id).and_then(|r| r.ctrl.as_mut()) {
                Some(c) => c.on_deadline(),
                None => continue,
            };
            self.apply(id, acts);
        }
    }

    pub(super) fn remove_request(&mut self, id: u64) {
        self.probes.retain(|_, p| p.rid != id);
        if let Some(r) = self.requests.remove(&id) {
            for s in &r.samples {
                if let Some(seq) = s.seq {
                    self.seq_owner.remove(&seq);
                }
            }
            for sid in r.sched_ids {
                self.sched.abort_request(sid);
            }
        }
    }

    /// Fails every request (engine shutting down after an internal error).
    pub fn fail_all(&mut self, msg: &str) {
        let ids: Vec<u64> = self.requests.keys().copied().collect();
        for id in ids {
            self.fail(id, msg.to_string());
        }
    }

    /// Tells every aggregated request's controller the load level and its time since
    /// admission now (later waves are sized by the load; with a deadline, a wave that
    /// cannot finish is not launched).
    pub(super) fn observe_load(&mut self) {
        let snap = LoadSnapshot {
            num_waiting: self.sched.num_waiting(),
            kv_usage: self.sched.kv_usage(),
        };
        let now = Instant::now();
        for r in self.requests.values_mut() {
            if let Some(c) = r.ctrl.as_mut() {
                let level = c.plan().load_rule.level(&snap);
                c.observe_load(level);
                c.observe_clock(now.saturating_duration_since(r.admitted));
            }
        }
    }
}
