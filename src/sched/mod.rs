//! Continuous-batching scheduler with vLLM-v1 token accounting. Synchronous and
//! device-free: it decides which tokens of which sequences run in the next forward
//! and owns the [`KvCacheManager`](crate::kv::KvCacheManager) that places them.
//!
//! Owns: every live sequence (`token_ids`, `num_computed_tokens`), the waiting queue,
//! the running set, request groups (n samples), admission, preemption.
//!
//! Token accounting (prefill, chunked prefill, decode, prefix reuse are one rule):
//!
//! ```text
//!   token_ids     [ p0 p1 p2 p3 p4 p5 p6 | g0 g1 ]      prompt | generated
//!   computed      |<------ 5 ------>|                   KV exists for these
//!   this step                       [p5 p6 g0]          n = min(len - computed, budget_left)
//!   start_pos = 5, slot(pos) = block_table[pos / bs] * bs + pos % bs
//!   the row of the last token is sampled iff computed + n == len
//! ```
//!
//! Groups (one request, n samples): sample 0 prefills the prompt once; the row of its
//! last prompt token is sampled for all n (`ScheduledSeq::sample_for`), and in
//! [`Scheduler::update_from_output`] samples 1..n are forked from sample 0 (prompt KV
//! blocks shared, copy-on-write for the partial last block).
//!
//! Policy, per [`Scheduler::schedule`]:
//! 1. Running sequences: rows with one token to compute (decodes) first, then
//!    continuing prefill chunks, each in admission order. When a row cannot get its
//!    blocks, preempt by recompute: victim = lowest priority (largest value; only
//!    with `enable_priority`), then latest arrival, then highest seq id. The victim's
//!    blocks are freed, `num_computed_tokens = 0`, it keeps all its tokens and goes
//!    to the FRONT of the waiting queue; if it was already in this step it is
//!    removed and its tokens refunded.
//! 2. Waiting entries (only when nothing was preempted this step), FCFS (with
//!    `enable_priority`: smallest priority value, then arrival), stopping at the
//!    first that does not fit (no overtaking, so large groups cannot starve). With
//!    `wave_priority` (default) the queue is ordered: preempted sequences first (they
//!    are pushed to the front), then **continuation waves** of in-flight aggregated
//!    requests by (rank, the request's arrival), then new requests, the smallest gang first
//!    (a plain 1-sample request before a new 2-sample `auto` wave; arrival order within a
//!    size), with one exception for the job with no more work (as SRPT would): when the
//!    best new request is a gang no larger than the best wave (a plain 1-sample request
//!    against a 1- or 2-sample wave, whose request may need further waves), it goes first.
//!    An **urgent** wave (its request's deadline leaves under two of its last wave's
//!    durations: the budget controller decides) goes before every other wave, and no new
//!    request passes it.
//!    Overtaking is bounded: an entry whose request is `OVERTAKE_LIMIT` (32) arrivals
//!    older than the newest waiting entry is no longer passed (a wave by new requests, a
//!    new request by smaller ones; among aged new requests, arrival order). The engine ranks a continuation by the
//!    certainty its request has reached (rank = 1000 x (1 - leading answer's share)): the
//!    request closest to a settled vote goes first, as Dynasor's certainty-aware gang
//!    scheduling does. A request's waves, and a new request, queue behind at most 32
//!    later (smaller or no larger) arrivals, and one near its deadline behind none, so no
//!    request is starved. The aim is a lower mean latency under load at equal tokens
//!    (measured against FCFS in docs/benchmarks.md).
//!
//! Prompt-token cap (`Scheduler::set_prefill_cap`, set per step by the engine's
//! `--max-step-ms` clock): in a step that has decodes, continuing chunks and admissions
//! together take at most the cap's prompt tokens (at least 1); a step without decodes is not
//! capped. Decodes are never capped.
//!
//! Gang admission rule: an entry (sample 0 of a group with its n-1 unstarted
//! samples, or one preempted sequence with n = 1) is admitted only if
//! - `running seqs + reserved unstarted samples + n <= max_num_seqs` (a group's n
//!   samples count as n sequences from admission on), and
//! - after sharing its cached prefix, free blocks >=
//!   `blocks_for(len) - cached blocks + n` (the whole prompt plus one block of
//!   headroom per sample for its first generated token: a CoW copy or a new block).
//!
//! Fairness: decodes first keeps running samples progressing; the remaining token
//! budget is shared in arrival order; a group never takes more seq slots than its n.
//! `add_group` rejects a group that could never fit (`n > max_num_seqs`, or
//! `blocks_for(prompt) + n > capacity`).
//!
//! Engine loop (all mutation happens between `update_from_output` and `schedule`):
//!
//! ```text
//!   loop {
//!       add_group / abort_request / finish_seq   (inbox, cancellations)
//!       out = schedule()
//!       runner: run out.copy_ops in order, then forward(out.batch_layout())
//!       sample row logits_rows[i] once for every id in sample_for[i]
//!       update_from_output(&out, &sampled)
//!       for (seq, tok) in sampled: stream; on EOS/stop/max_tokens/early stop finish_seq(seq)
//!   }
//! ```
//!
//! Probes ([`Scheduler::add_probe`]): a fork of a running sequence with a suffix appended,
//! sharing its computed KV blocks; scheduled like any running sequence, dropped instead of
//! recomputed when preempted (and preempted first). The engine runs certaindex and
//! verification probes on them.
//!
//! Invariants (checked by [`Scheduler::check_invariants`]): every running sequence
//! has `0 <= computed <= len` and a block table covering `computed` tokens; waiting
//! and unstarted sequences hold no blocks; reserved seq slots <= `max_num_seqs`;
//! plus every KV invariant.

mod inspect;
mod output;
mod scheduler;

pub use output::{BatchLayout, ScheduledSeq, SchedulerOutput};
pub use scheduler::{SchedStats, Scheduler, SeqStatus};

use thiserror::Error;

use crate::kv::KvError;
pub use crate::kv::SeqId;

/// Scheduler limits, validated by [`Scheduler::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedConfig {
    /// Token budget of one step (all rows together).
    pub max_num_batched_tokens: usize,
    /// Sequences per step; a group of n samples counts n from admission on.
    pub max_num_seqs: usize,
    /// Waiting-queue bound for `add_group`.
    pub max_waiting: usize,
    /// Order waiting entries and choose victims by `priority` (lower value first).
    pub enable_priority: bool,
    /// Continuation waves (`SeqGroupRequest::continuation`) wait ahead of new requests (see
    /// the module header); `false` = one FCFS queue, a later wave joins its back.
    pub wave_priority: bool,
}

impl Default for SchedConfig {
    /// 512 tokens per step (vLLM's chunked-prefill default; llama.cpp's physical batch is
    /// also 512). Measured against 2,048 on the CPU backend (docs/benchmarks.md): 32
    /// concurrent prompts finish 1.17-1.25x sooner (three ~500-token steps, which carry the
    /// first decodes along, cost less than one 1,500-token step), one 2,048-token prompt
    /// prefills 7% faster in four chunks, and a step, hence the longest pause a decode sees
    /// while prompts are admitted, stays under ~0.3 s; the serving load test's closed-loop
    /// capacity was 5-8% lower than with 2,048 (latencies alike).
    fn default() -> Self {
        Self {
            max_num_batched_tokens: 512,
            max_num_seqs: 64,
            max_waiting: 1024,
            enable_priority: false,
            wave_priority: true,
        }
    }
}

/// One request: a prompt and `n` samples drawn from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqGroupRequest {
    pub request_id: u64,
    pub prompt: Vec<u32>,
    /// Number of samples (>= 1).
    pub n: usize,
    /// Lower value is scheduled first (with `enable_priority`).
    pub priority: i32,
    /// Monotonic arrival counter (FCFS order and preemption victim choice).
    pub arrival: u64,
    /// A later wave of a request already in flight, with its rank (lower = sooner): waits
    /// ahead of new requests when `wave_priority` is on. `None` for a new request.
    pub continuation: Option<u32>,
    /// A continuation wave whose request's deadline is near: it goes before every other
    /// wave and no new request passes it (only with `wave_priority`).
    pub urgent: bool,
}

/// Errors of the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SchedError {
    /// The waiting queue is full; retry later (HTTP 429).
    #[error("waiting queue is full (limit {limit})")]
    QueueFull { limit: usize },
    #[error("prompt must not be empty")]
    EmptyPrompt,
    #[error("`n` must be in 1..={max}, given {n}")]
    InvalidN { n: usize, max: usize },
    #[error("request {0} is already scheduled")]
    DuplicateRequest(u64),
    /// The prompt plus one block per sample exceeds the whole KV pool.
    #[error("prompt of {prompt_len} tokens with n={n} needs {needed} KV blocks, the cache holds {capacity}")]
    PromptTooLarge {
        prompt_len: usize,
        n: usize,
        needed: usize,
        capacity: usize,
    },
    /// `add_probe` of a sequence that holds no KV (waiting, unstarted, finished, unknown).
    #[error("sequence {0} is not running")]
    NotRunning(SeqId),
    #[error("no free sequence slot (max_num_seqs {max})")]
    NoSeqSlot { max: usize },
    #[error("invalid scheduler config: `{field}` must be >= 1, given {value}")]
    InvalidConfig { field: &'static str, value: usize },
    #[error(transparent)]
    Kv(#[from] KvError),
}

#[cfg(test)]
mod tests;
