//! The [`Scheduler`]: sequence state, queues, one `schedule` step, and applying a
//! step's results. Policy and invariants are described in the [`crate::sched`]
//! module header; this file implements them.
//!
//! Life of a sequence (status transitions):
//!
//! ```text
//!   add_group ──> Waiting ──admit──> Running ──finish_seq──> (gone)
//!       │            ^                  │
//!       │            └────preempt───────┘   computed = 0, tokens kept, queue front
//!       └──> Unstarted{parent} ──first sampled token (update_from_output)──> Running
//!                                 (KV forked from the parent: prompt blocks shared)
//! ```

use std::collections::{HashMap, VecDeque};

use super::{SchedConfig, SchedError, ScheduledSeq, SchedulerOutput, SeqGroupRequest, SeqId};
use crate::kv::{KvCacheManager, KvConfig, KvError};

mod order;

/// Where a sequence is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqStatus {
    /// In the waiting queue; holds no KV blocks.
    Waiting,
    /// Admitted; holds KV blocks for its computed tokens.
    Running,
    /// A sample whose group prompt has not been sampled yet: it draws its first token
    /// from `parent`'s last prompt row and is then forked from it.
    Unstarted { parent: SeqId },
}

/// Cumulative scheduler counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedStats {
    pub num_steps: u64,
    pub num_preemptions: u64,
    pub num_scheduled_tokens: u64,
}

#[derive(Debug)]
pub(super) struct Sequence {
    pub(super) request_id: u64,
    /// Prompt then generated tokens.
    pub(super) token_ids: Vec<u32>,
    pub(super) num_prompt_tokens: usize,
    pub(super) num_computed_tokens: usize,
    pub(super) priority: i32,
    pub(super) arrival: u64,
    pub(super) status: SeqStatus,
    /// Unstarted samples that draw from this sequence's first sampled row.
    pub(super) siblings: Vec<SeqId>,
    /// A probe (`add_probe`): dropped, not recomputed, when preempted.
    pub(super) probe: bool,
    /// Waiting-order rank of a continuation wave (`SeqGroupRequest::continuation`).
    pub(super) continuation: Option<u32>,
    /// An urgent continuation wave (`SeqGroupRequest::urgent`).
    pub(super) urgent: bool,
    /// Was preempted (waits at the front).
    pub(super) preempted: bool,
}

/// Continuous-batching scheduler; owns the KV block manager.
#[derive(Debug)]
pub struct Scheduler {
    pub(super) cfg: SchedConfig,
    pub(super) kv: KvCacheManager,
    pub(super) seqs: HashMap<SeqId, Sequence>,
    /// request id -> its live sequence ids (sample order).
    pub(super) groups: HashMap<u64, Vec<SeqId>>,
    pub(super) waiting: VecDeque<SeqId>,
    /// Admission order.
    pub(super) running: Vec<SeqId>,
    next_seq_id: SeqId,
    step: u64,
    pub(super) stats: SchedStats,
    /// Most prompt tokens in a step that also carries decodes (`set_prefill_cap`).
    prefill_cap: Option<usize>,
}

impl Scheduler {
    pub fn new(cfg: SchedConfig, kv_cfg: &KvConfig) -> Result<Self, SchedError> {
        for (field, value) in [
            ("max_num_batched_tokens", cfg.max_num_batched_tokens),
            ("max_num_seqs", cfg.max_num_seqs),
            ("max_waiting", cfg.max_waiting),
        ] {
            if value == 0 {
                return Err(SchedError::InvalidConfig { field, value });
            }
        }
        Ok(Self {
            cfg,
            kv: KvCacheManager::new(kv_cfg)?,
            seqs: HashMap::new(),
            groups: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            next_seq_id: 0,
            step: 0,
            stats: SchedStats::default(),
            prefill_cap: None,
        })
    }

    /// Queues a request; returns its sample sequence ids (`[0]` prefills the prompt).
    pub fn add_group(&mut self, req: SeqGroupRequest) -> Result<Vec<SeqId>, SchedError> {
        if req.prompt.is_empty() {
            return Err(SchedError::EmptyPrompt);
        }
        if req.n == 0 || req.n > self.cfg.max_num_seqs {
            return Err(SchedError::InvalidN {
                n: req.n,
                max: self.cfg.max_num_seqs,
            });
        }
        if self.groups.contains_key(&req.request_id) {
            return Err(SchedError::DuplicateRequest(req.request_id));
        }
        let needed = self.kv.blocks_for(req.prompt.len()) + req.n;
        if needed > self.kv.capacity() {
            return Err(SchedError::PromptTooLarge {
                prompt_len: req.prompt.len(),
                n: req.n,
                needed,
                capacity: self.kv.capacity(),
            });
        }
        if self.waiting.len() >= self.cfg.max_waiting {
            return Err(SchedError::QueueFull {
                limit: self.cfg.max_waiting,
            });
        }
        let ids: Vec<SeqId> = (0..req.n as u64).map(|i| self.next_seq_id + i).collect();
        self.next_seq_id += req.n as u64;
        for (i, &id) in ids.iter().enumerate() {
            let status = match i {
                0 => SeqStatus::Waiting,
                _ => SeqStatus::Unstarted { parent: ids[0] },
            };
            let seq = Sequence {
                request_id: req.request_id,
                token_ids: req.prompt.clone(),
                num_prompt_tokens: req.prompt.len(),
                num_computed_tokens: 0,
                priority: req.priority,
                arrival: req.arrival,
                status,
                siblings: if i == 0 {
                    ids[1..].to_vec()
                } else {
                    Vec::new()
                },
                probe: false,
                continuation: req.continuation,
                urgent: req.urgent && req.continuation.is_some(),
                preempted: false,
            };
            self.seqs.insert(id, seq);
        }
        self.waiting.push_back(ids[0]);
        self.groups.insert(req.request_id, ids.clone());
        Ok(ids)
    }

    /// Forks a **probe** of running sequence `parent`: a new sequence of the same request
    /// that shares every KV block `parent` has computed (ref counts; the first write into a
    /// shared block copies it), holds `parent`'s tokens followed by `suffix`, and runs like
    /// any sequence from `parent`'s computed position: its first row computes `parent`'s
    /// not-yet-computed tokens and `suffix`, and is sampled; later rows decode. `parent` is
    /// untouched (its tokens, progress and blocks), so it can go on or finish meanwhile.
    /// A probe counts as one sequence slot; preempted, it is dropped (reported in
    /// `SchedulerOutput::preempted`, gone from the scheduler) rather than recomputed, and it
    /// is the first victim. Errors: `parent` unknown or not running (it holds no KV), no
    /// free sequence slot, an empty suffix.
    pub fn add_probe(&mut self, parent: SeqId, suffix: &[u32]) -> Result<SeqId, SchedError> {
        let p = self
            .seqs
            .get(&parent)
            .filter(|p| p.status == SeqStatus::Running)
            .ok_or(SchedError::NotRunning(parent))?;
        if suffix.is_empty() {
            return Err(SchedError::EmptyPrompt);
        }
        if self.reserved_slots() >= self.cfg.max_num_seqs {
            return Err(SchedError::NoSeqSlot {
                max: self.cfg.max_num_seqs,
            });
        }
        let id = self.next_seq_id;
        self.next_seq_id += 1;
        let mut token_ids = p.token_ids.clone();
        token_ids.extend_from_slice(suffix);
        let seq = Sequence {
            request_id: p.request_id,
            token_ids,
            num_prompt_tokens: p.num_prompt_tokens,
            num_computed_tokens: p.num_computed_tokens,
            priority: p.priority,
            arrival: p.arrival,
            status: SeqStatus::Running,
            siblings: Vec::new(),
            probe: true,
            continuation: None,
            urgent: false,
            preempted: false,
        };
        self.kv.fork(parent, id)?;
        self.groups.entry(seq.request_id).or_default().push(id);
        self.seqs.insert(id, seq);
        self.running.push(id);
        Ok(id)
    }

    /// Appends tokens to a probe that has no row in flight (teacher forcing: the next step
    /// computes them and samples the last). Errors for an unknown sequence or a non-probe.
    pub fn extend_probe(&mut self, probe: SeqId, tokens: &[u32]) -> Result<(), SchedError> {
        let s = self
            .seqs
            .get_mut(&probe)
            .filter(|s| s.probe)
            .ok_or(SchedError::NotRunning(probe))?;
        s.token_ids.extend_from_slice(tokens);
        Ok(())
    }

    /// Limits the prompt tokens (continuing chunks and admissions together) of a step that
    /// also decodes to `cap` (at least 1), so the pause running streams see while prompts
    /// are prefilled is bounded; a step with no decodes keeps the whole token budget.
    /// `None` (the default): prompts share the token budget left after the decodes.
    pub fn set_prefill_cap(&mut self, cap: Option<usize>) {
        self.prefill_cap = cap.map(|c| c.max(1));
    }

    /// Plans one step. Must be followed by `update_from_output` with its result
    /// (after the copy ops and the forward ran) before the next `schedule`.
    pub fn schedule(&mut self) -> SchedulerOutput {
        self.step += 1;
        let mut out = SchedulerOutput {
            step: self.step,
            block_size: self.kv.block_size(),
            ..Default::default()
        };
        let mut budget = self.cfg.max_num_batched_tokens;

        // 1. Running: decodes first, then continuing prefill chunks.
        let (decodes, prefills): (Vec<SeqId>, Vec<SeqId>) = self
            .running
            .iter()
            .copied()
            .partition(|&id| self.remaining(id) == 1);
        let mut prefill_left = match self.prefill_cap {
            Some(cap) if !decodes.is_empty() => cap,
            _ => usize::MAX,
        };
        for sid in decodes.into_iter().chain(prefills) {
            if budget == 0 {
                break;
            }
            if self
                .seqs
                .get(&sid)
                .is_none_or(|s| s.status != SeqStatus::Running)
                || self.remaining(sid) == 0
            {
                continue; // preempted (a probe: dropped) earlier in this step, or awaiting its finish
            }
            let remaining = self.remaining(sid);
            let n = if remaining == 1 {
                1
            } else {
                remaining.min(budget).min(prefill_left)
            };
            if n == 0 {
                continue; // the step's prompt tokens are spent; decodes may still follow
            }
            let computed = self.seqs[&sid].num_computed_tokens;
            loop {
                match self.kv.allocate_slots(sid, computed, n) {
                    Ok(()) => {
                        out.seqs.push(self.row(sid, n));
                        budget -= n;
                        if remaining > 1 {
                            prefill_left -= n;
                        }
                        break;
                    }
                    Err(KvError::NoFreeBlocks { .. }) => {
                        let victim = self.pick_victim();
                        self.preempt(victim);
                        out.preempted.push(victim);
                        if let Some(i) = out.seqs.iter().position(|r| r.seq_id == victim) {
                            budget += out.seqs.remove(i).token_ids.len();
                        }
                        if victim == sid {
                            break;
                        }
                    }
                    Err(e) => unreachable!("allocate_slots: {e}"),
                }
            }
        }

        // 2. Waiting, as gangs, in order; stop at the first that does not fit.
        if out.preempted.is_empty() {
            let mut slots = self.reserved_slots();
            while budget > 0 && prefill_left > 0 {
                let Some(idx) = self.next_waiting() else {
                    break;
                };
                let sid = self.waiting[idx];
                let seq = &self.seqs[&sid];
                let gang = 1 + seq.siblings.len();
                if slots + gang > self.cfg.max_num_seqs {
                    break;
                }
                let len = seq.token_ids.len();
                let cached = self
                    .kv
                    .get_computed_blocks(sid, &seq.token_ids)
                    .expect("waiting sequences hold no blocks");
                let need = self.kv.blocks_for(len) - self.kv.block_table(sid).len() + gang;
                let n = (len - cached).min(budget).min(prefill_left);
                if self.kv.num_free_blocks() < need
                    || self.kv.allocate_slots(sid, cached, n).is_err()
                {
                    self.kv.free(sid);
                    break;
                }
                self.waiting.remove(idx);
                self.running.push(sid);
                let seq = self.seqs.get_mut(&sid).expect("waiting seq exists");
                seq.status = SeqStatus::Running;
                seq.preempted = false;
                seq.num_computed_tokens = cached;
                slots += gang;
                out.seqs.push(self.row(sid, n));
                budget -= n;
                prefill_left = prefill_left.saturating_sub(n);
            }
        }

        out.copy_ops = self.kv.drain_copy_ops();
        out.num_batched_tokens = out.seqs.iter().map(|r| r.token_ids.len()).sum();
        self.stats.num_steps += 1;
        self.stats.num_scheduled_tokens += out.num_batched_tokens as u64;
        out
    }

    /// Applies a step: advances `num_computed_tokens` of every row, registers newly
    /// full blocks in the prefix cache, appends `sampled` tokens, and forks unstarted
    /// samples from their parent on their first token. Every id of every row's
    /// `sample_for` must get exactly one token (or be finished before this call);
    /// unstarted samples left without a token are dropped. Rows of sequences
    /// finished or aborted since `schedule` are ignored.
    pub fn update_from_output(&mut self, out: &SchedulerOutput, sampled: &[(SeqId, u32)]) {
        debug_assert_eq!(out.step, self.step, "update_from_output of a stale step");
        let mut may_sample: HashMap<SeqId, SeqId> = HashMap::new(); // sample -> row seq
        for row in &out.seqs {
            let Some(seq) = self.seqs.get_mut(&row.seq_id) else {
                continue;
            };
            if seq.status != SeqStatus::Running || seq.num_computed_tokens != row.start_pos {
                continue;
            }
            seq.num_computed_tokens += row.token_ids.len();
            self.kv
                .cache_full_blocks(row.seq_id, seq.num_computed_tokens, &seq.token_ids);
            for &s in &row.sample_for {
                may_sample.insert(s, row.seq_id);
            }
        }
        for &(sid, tok) in sampled {
            let Some(parent) = may_sample.remove(&sid) else {
                tracing::warn!(
                    seq = sid,
                    "sampled token for a sequence that had no row; ignored"
                );
                continue;
            };
            if sid == parent {
                self.seqs
                    .get_mut(&sid)
                    .expect("row seq")
                    .token_ids
                    .push(tok);
            } else if self.seqs.get(&sid).map(|s| s.status) == Some(SeqStatus::Unstarted { parent })
            {
                self.start_sibling(parent, sid, tok);
            }
        }
        for (sid, parent) in may_sample {
            if sid != parent
                && self
                    .seqs
                    .get(&sid)
                    .is_some_and(|s| s.status != SeqStatus::Running)
            {
                tracing::warn!(seq = sid, "unstarted sample got no token; dropped");
                self.finish_seq(sid);
            }
        }
    }

    /// Removes a sequence (EOS, stop, max_tokens, early stop) and frees its blocks at
    /// once. Returns its tokens (prompt + generated), or `None` if unknown.
    /// Finishing sample 0 before its prompt was sampled hands its place, progress and
    /// blocks to its first unstarted sibling.
    pub fn finish_seq(&mut self, sid: SeqId) -> Option<Vec<u32>> {
        let seq = self.seqs.remove(&sid)?;
        let heir = seq.siblings.first().copied();
        match seq.status {
            SeqStatus::Unstarted { parent } => {
                if let Some(p) = self.seqs.get_mut(&parent) {
                    p.siblings.retain(|&s| s != sid);
                }
            }
            SeqStatus::Running => {
                let i = self
                    .running
                    .iter()
                    .position(|&s| s == sid)
                    .expect("running");
                match heir {
                    Some(h) => self.running[i] = h,
                    None => {
                        self.running.remove(i);
                    }
                }
            }
            SeqStatus::Waiting => {
                let i = self
                    .waiting
                    .iter()
                    .position(|&s| s == sid)
                    .expect("waiting");
                match heir {
                    Some(h) => self.waiting[i] = h,
                    None => {
                        self.waiting.remove(i);
                    }
                }
            }
        }
        if let Some(h) = heir {
            if self.kv.has_seq(sid) {
                self.kv.fork(sid, h).expect("heir holds no blocks");
            }
            for &s in &seq.siblings[1..] {
                self.seqs.get_mut(&s).expect("sibling").status = SeqStatus::Unstarted { parent: h };
            }
            let hs = self.seqs.get_mut(&h).expect("heir exists");
            debug_assert_eq!(
                hs.token_ids, seq.token_ids,
                "unsampled parent has only its prompt"
            );
            hs.status = seq.status;
            hs.num_computed_tokens = seq.num_computed_tokens;
            hs.siblings = seq.siblings[1..].to_vec();
        }
        self.kv.free(sid);
        if let Some(g) = self.groups.get_mut(&seq.request_id) {
            g.retain(|&s| s != sid);
            if g.is_empty() {
                self.groups.remove(&seq.request_id);
            }
        }
        Some(seq.token_ids)
    }

    /// Finishes every sequence of a request; returns how many there were.
    pub fn abort_request(&mut self, request_id: u64) -> usize {
        let Some(ids) = self.groups.get(&request_id).cloned() else {
            return 0;
        };
        // Samples first, so that sample 0 never hands over to a sibling.
        for &sid in ids.iter().rev() {
            self.finish_seq(sid);
        }
        ids.len()
    }

    // ---- internals ----

    pub(super) fn remaining(&self, sid: SeqId) -> usize {
        let s = &self.seqs[&sid];
        s.token_ids.len() - s.num_computed_tokens
    }

    /// Running seqs plus their unstarted samples.
    pub(super) fn reserved_slots(&self) -> usize {
        self.running
            .iter()
            .map(|id| 1 + self.seqs[id].siblings.len())
            .sum()
    }

    fn row(&self, sid: SeqId, n: usize) -> ScheduledSeq {
        let s = &self.seqs[&sid];
        let start = s.num_computed_tokens;
        let sample_for = if start + n == s.token_ids.len() {
            std::iter::once(sid)
                .chain(s.siblings.iter().copied())
                .collect()
        } else {
            Vec::new()
        };
        ScheduledSeq {
            seq_id: sid,
            token_ids: s.token_ids[start..start + n].to_vec(),
            start_pos: start,
            block_table: self.kv.block_table(sid).to_vec(),
            sample_for,
        }
    }

    fn preempt(&mut self, sid: SeqId) {
        if self.seqs[&sid].probe {
            // A probe is cheap to redo and not worth a recompute of its whole context.
            self.finish_seq(sid);
            self.stats.num_preemptions += 1;
            return;
        }
        self.kv.free(sid);
        let s = self.seqs.get_mut(&sid).expect("victim exists");
        s.num_computed_tokens = 0;
        s.status = SeqStatus::Waiting;
        s.preempted = true;
        self.running.retain(|&r| r != sid);
        self.waiting.push_front(sid);
        self.stats.num_preemptions += 1;
    }

    fn start_sibling(&mut self, parent: SeqId, sid: SeqId, tok: u32) {
        self.kv
            .fork(parent, sid)
            .expect("unstarted sample holds no blocks");
        let computed = self.seqs[&parent].num_computed_tokens;
        self.seqs
            .get_mut(&parent)
            .expect("parent")
            .siblings
            .retain(|&s| s != sid);
        let s = self.seqs.get_mut(&sid).expect("sibling");
        debug_assert_eq!(
            computed,
            s.token_ids.len(),
            "forked at the end of the prompt"
        );
        s.num_computed_tokens = computed;
        s.token_ids.push(tok);
        s.status = SeqStatus::Running;
        self.running.push(sid);
    }
}
