//! Read-only side of the [`Scheduler`]: queries for the engine and metrics, and
//! [`Scheduler::check_invariants`] (the invariants listed in the [`crate::sched`]
//! module header), kept apart from the scheduling logic in `scheduler.rs`.

use std::collections::HashSet;

use super::scheduler::{SchedStats, Scheduler, SeqStatus};
use super::{SchedConfig, SeqId};
use crate::kv::KvCacheManager;

impl Scheduler {
    /// The request ids (scheduler groups) with at least one running sequence.
    pub fn running_request_ids(&self) -> std::collections::HashSet<u64> {
        self.running
            .iter()
            .filter_map(|id| self.seqs.get(id).map(|s| s.request_id))
            .collect()
    }

    /// Running sequences in admission order.
    pub fn running_seq_ids(&self) -> Vec<SeqId> {
        self.running.clone()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Waiting sequence ids, front (next to admit in FCFS) first.
    pub fn waiting_queue(&self) -> impl Iterator<Item = SeqId> + '_ {
        self.waiting.iter().copied()
    }

    /// Running sequence ids in admission order.
    pub fn running_seqs(&self) -> &[SeqId] {
        &self.running
    }

    /// Live sequences (running, waiting and unstarted).
    pub fn num_seqs(&self) -> usize {
        self.seqs.len()
    }

    pub fn has_unfinished(&self) -> bool {
        !self.seqs.is_empty()
    }

    /// Fraction of KV blocks in use.
    pub fn kv_usage(&self) -> f64 {
        self.kv.usage()
    }

    /// Longest sequence (prompt + max_tokens) that can always be recomputed after a
    /// preemption: `(capacity - 1) * block_size` (one block of headroom). The engine
    /// must reject longer requests, or a preempted sequence could never come back.
    pub fn max_seq_tokens(&self) -> usize {
        (self.kv.capacity() - 1) * self.kv.block_size()
    }

    pub fn num_preemptions(&self) -> u64 {
        self.stats.num_preemptions
    }

    pub fn stats(&self) -> &SchedStats {
        &self.stats
    }

    pub fn kv(&self) -> &KvCacheManager {
        &self.kv
    }

    pub fn config(&self) -> &SchedConfig {
        &self.cfg
    }

    /// Prompt + generated tokens of a live sequence.
    pub fn seq_tokens(&self, sid: SeqId) -> Option<&[u32]> {
        self.seqs.get(&sid).map(|s| &s.token_ids[..])
    }

    /// Generated tokens of a live sequence.
    pub fn seq_output(&self, sid: SeqId) -> Option<&[u32]> {
        self.seqs
            .get(&sid)
            .map(|s| &s.token_ids[s.num_prompt_tokens..])
    }

    pub fn seq_status(&self, sid: SeqId) -> Option<SeqStatus> {
        self.seqs.get(&sid).map(|s| s.status)
    }

    pub fn num_computed_tokens(&self, sid: SeqId) -> Option<usize> {
        self.seqs.get(&sid).map(|s| s.num_computed_tokens)
    }

    /// Live sequence ids of a request, in sample order.
    pub fn request_seqs(&self, request_id: u64) -> Option<&[SeqId]> {
        self.groups.get(&request_id).map(Vec::as_slice)
    }

    /// Checks the invariants of the module header (and the KV manager's).
    pub fn check_invariants(&self) -> Result<(), String> {
        self.kv.check_invariants()?;
        let mut seen = HashSet::new();
        for &sid in &self.running {
            let s = &self.seqs[&sid];
            let blocks = self.kv.block_table(sid).len();
            let (lo, hi) = (
                self.kv.blocks_for(s.num_computed_tokens),
                self.kv.blocks_for(s.token_ids.len()),
            );
            if s.status != SeqStatus::Running || !(lo..=hi).contains(&blocks) || !seen.insert(sid) {
                return Err(format!(
                    "running seq {sid}: {:?}, {blocks} blocks for {}/{} tokens",
                    s.status,
                    s.num_computed_tokens,
                    s.token_ids.len()
                ));
            }
        }
        for &sid in &self.waiting {
            let s = &self.seqs[&sid];
            if s.status != SeqStatus::Waiting || s.num_computed_tokens != 0 || !seen.insert(sid) {
                return Err(format!("waiting seq {sid} is {:?} with progress", s.status));
            }
        }
        for (&sid, s) in &self.seqs {
            if let SeqStatus::Unstarted { parent } = s.status {
                let p = self.seqs.get(&parent);
                if !p.is_some_and(|p| p.siblings.contains(&sid)) || !seen.insert(sid) {
                    return Err(format!(
                        "unstarted seq {sid} is not listed by parent {parent}"
                    ));
                }
            }
            if s.status != SeqStatus::Running && self.kv.has_seq(sid) {
                return Err(format!("seq {sid} ({:?}) holds a block table", s.status));
            }
            if !self
                .groups
                .get(&s.request_id)
                .is_some_and(|g| g.contains(&sid))
            {
                return Err(format!("seq {sid} missing from request {}", s.request_id));
            }
        }
        if seen.len() != self.seqs.len() || self.kv.num_seqs() != self.running.len() {
            return Err(format!(
                "{} seqs, {} placed, {} block tables, {} running",
                self.seqs.len(),
                seen.len(),
                self.kv.num_seqs(),
                self.running.len()
            ));
        }
        let slots = self.reserved_slots();
        if slots > self.cfg.max_num_seqs {
            return Err(format!(
                "{slots} seq slots reserved, max_num_seqs {}",
                self.cfg.max_num_seqs
            ));
        }
        Ok(())
    }
}
