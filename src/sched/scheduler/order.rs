//! Which waiting entry is admitted next and which running sequence is preempted: the
//! queue-order policy of the [`crate::sched`] module header (FCFS, `enable_priority`, or
//! `wave_priority`'s continuation waves and smallest new gangs, with bounded overtaking).
//! Pure functions of the queues; they never mutate the scheduler.

use super::{Scheduler, Sequence};
use crate::kv::SeqId;

/// With `wave_priority`: a continuation wave whose request is this many arrivals older than
/// the newest waiting entry is no longer overtaken by new requests of no larger gangs, so a
/// stream of plain requests cannot starve an in-flight aggregated request.
const OVERTAKE_LIMIT: u64 = 32;

impl Scheduler {
    /// Index in `waiting` of the next entry to admit.
    pub(super) fn next_waiting(&self) -> Option<usize> {
        if self.cfg.wave_priority && !self.cfg.enable_priority {
            // Preempted first (pushed to the front). Then the best continuation wave by
            // (urgent first, rank, arrival), unless the best new request is a gang no
            // larger than the wave (no more work: a plain 1-sample request before a 1- or
            // 2-sample wave) and the wave is neither urgent nor overtaken by OVERTAKE_LIMIT
            // later arrivals yet.
            // New requests: the smallest gang first, in arrival order within a size,
            // except that one overtaken by OVERTAKE_LIMIT later arrivals goes first.
            let seq = |i: usize| &self.seqs[&self.waiting[i]];
            let all = 0..self.waiting.len();
            if let Some(i) = all.clone().find(|&i| seq(i).preempted) {
                return Some(i);
            }
            let newest = all.clone().map(|i| seq(i).arrival).max().unwrap_or(0);
            let aged = |i: usize| newest.saturating_sub(seq(i).arrival) >= OVERTAKE_LIMIT;
            let wave = (all.clone().filter(|&i| seq(i).continuation.is_some()))
                .min_by_key(|&i| (!seq(i).urgent, seq(i).continuation, seq(i).arrival, i));
            let news = all.clone().filter(|&i| seq(i).continuation.is_none());
            let new = (news.clone().filter(|&i| aged(i)))
                .min_by_key(|&i| (seq(i).arrival, i))
                .or_else(|| news.min_by_key(|&i| (seq(i).siblings.len(), seq(i).arrival, i)));
            let (Some(w), Some(f)) = (wave, new) else {
                return wave.or(new);
            };
            let no_larger = seq(f).siblings.len() <= seq(w).siblings.len();
            return Some(if no_larger && !aged(w) && !seq(w).urgent {
                f
            } else {
                w
            });
        }
        if !self.cfg.enable_priority {
            return (!self.waiting.is_empty()).then_some(0);
        }
        (0..self.waiting.len()).min_by_key(|&i| {
            let s = &self.seqs[&self.waiting[i]];
            (s.priority, s.arrival, self.waiting[i])
        })
    }

    /// A probe first; then lowest priority (largest value), then latest arrival, then
    /// highest id.
    pub(super) fn pick_victim(&self) -> SeqId {
        let prio = |s: &Sequence| {
            if self.cfg.enable_priority {
                s.priority
            } else {
                0
            }
        };
        *self
            .running
            .iter()
            .max_by_key(|id| {
                let s = &self.seqs[*id];
                (s.probe, prio(s), s.arrival, **id)
            })
            .expect("a running sequence needed blocks")
    }
}
