//! What one scheduler step hands to the model runner (plain data), and the index
//! math the runner needs to build its batch, done once here.
//!
//! Rows are flattened in `seqs` order into one token axis:
//!
//! ```text
//!   seqs            A: start 0, 3 tokens      B: start 9, 1 token (decode)
//!   token axis      [a0 a1 a2 | b9]                         (num_batched_tokens,)
//!   query_start     [0, 3, 4]                               (num_seqs + 1,)
//!   positions       [0 1 2 | 9]
//!   slot_mapping    [tA[0]*bs+0, tA[0]*bs+1, tA[0]*bs+2 | tB[9/bs]*bs + 9%bs]
//!   context_lens    [3, 10]        tokens each row attends to (start + new)
//!   logits_rows     [2?, 3]        last token of each row with a non-empty sample_for
//!   block_tables    (num_seqs, max_blocks) padded with the null block 0
//! ```

use crate::kv::{BlockId, SeqId, NULL_BLOCK};

/// One row of a step: `token_ids` are computed at positions `start_pos..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledSeq {
    pub seq_id: SeqId,
    /// Tokens whose KV this step computes.
    pub token_ids: Vec<u32>,
    /// `num_computed_tokens` before the step = position of `token_ids[0]`.
    pub start_pos: usize,
    /// Snapshot of the sequence's block table (covers `start_pos + token_ids.len()`).
    pub block_table: Vec<BlockId>,
    /// Sequences that each draw one token from this row's last logits (sample 0 and
    /// its unstarted siblings on a group's last prompt chunk, `[seq_id]` on an
    /// ordinary last row, empty for a mid-prefill chunk).
    pub sample_for: Vec<SeqId>,
}

impl ScheduledSeq {
    /// Tokens the row attends to: `start_pos + token_ids.len()`.
    pub fn context_len(&self) -> usize {
        self.start_pos + self.token_ids.len()
    }

    /// KV slot of each new token: `block_table[pos / bs] * bs + pos % bs`.
    pub fn slot_mapping(&self, block_size: usize) -> Vec<usize> {
        (self.start_pos..self.context_len())
            .map(|p| self.block_table[p / block_size] as usize * block_size + p % block_size)
            .collect()
    }
}

/// Output of [`Scheduler::schedule`](super::Scheduler::schedule).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchedulerOutput {
    /// Step counter; pass the output back to `update_from_output` unchanged.
    pub step: u64,
    /// Token slots per KV block.
    pub block_size: usize,
    pub seqs: Vec<ScheduledSeq>,
    /// Copy-on-write ops `(src, dst)`: copy block `src`'s KV (all layers) to `dst`,
    /// in order, BEFORE the forward.
    pub copy_ops: Vec<(BlockId, BlockId)>,
    /// Sequences preempted (recompute) during this step; their KV is gone.
    pub preempted: Vec<SeqId>,
    /// Sum of `token_ids.len()` over `seqs`.
    pub num_batched_tokens: usize,
}

/// Flattened batch inputs, see the module header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchLayout {
    /// (num_batched_tokens,)
    pub token_ids: Vec<u32>,
    /// (num_batched_tokens,) absolute position of each token (for RoPE).
    pub positions: Vec<usize>,
    /// (num_batched_tokens,) KV slot each token's K/V is written to.
    pub slot_mapping: Vec<usize>,
    /// (num_seqs + 1,) row boundaries on the token axis (cu_seqlens).
    pub query_start: Vec<usize>,
    /// (num_seqs,) tokens each row attends to.
    pub context_lens: Vec<usize>,
    /// (num_seqs * max_blocks,) block tables padded with the null block.
    pub block_tables: Vec<BlockId>,
    pub max_blocks: usize,
    /// (num_sampled_rows,) token-axis index of each row whose logits are sampled.
    pub logits_rows: Vec<usize>,
    /// (num_sampled_rows,) the sequences sampling from each of `logits_rows`.
    pub sample_for: Vec<Vec<SeqId>>,
}

impl SchedulerOutput {
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Flattens the rows into the runner's batch inputs.
    pub fn batch_layout(&self) -> BatchLayout {
        let bs = self.block_size;
        let max_blocks = self
            .seqs
            .iter()
            .map(|s| s.block_table.len())
            .max()
            .unwrap_or(0);
        let mut l = BatchLayout {
            max_blocks,
            query_start: vec![0],
            ..Default::default()
        };
        for s in &self.seqs {
            l.token_ids.extend_from_slice(&s.token_ids);
            l.positions.extend(s.start_pos..s.context_len());
            l.slot_mapping.extend(s.slot_mapping(bs));
            l.query_start.push(l.token_ids.len());
            l.context_lens.push(s.context_len());
            l.block_tables.extend_from_slice(&s.block_table);
            l.block_tables.extend(std::iter::repeat_n(
                NULL_BLOCK,
                max_blocks - s.block_table.len(),
            ));
            if !s.sample_for.is_empty() {
                l.logits_rows.push(l.token_ids.len() - 1);
                l.sample_for.push(s.sample_for.clone());
            }
        }
        l
    }
}
