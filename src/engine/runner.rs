//! Model runners: turn a `SchedulerOutput` into logits. The CPU runner owns the host KV cache
//! and executes copy-on-write block copies before the forward; a test runner can replace it.

use std::sync::Arc;

use crate::backend::cpu::attention::{CpuKvCache, KvDtype};
use crate::model::{BatchInput, LoadedModel, SeqInput};
use crate::sched::SchedulerOutput;

/// Executes one scheduled step.
pub trait ModelRunner: Send {
    /// Runs the step; leaves logits `[rows, vocab]` in `logits`, one row per entry of the
    /// output's batch layout `logits_rows`, in that order. The buffer is the caller's and
    /// comes back each step: its old contents are overwritten and its capacity reused, so a
    /// 32-row step does not fault in and zero 6 MB of fresh pages for its logits.
    fn execute(&mut self, out: &SchedulerOutput, logits: &mut Vec<f32>);
    fn vocab_size(&self) -> usize;
}

/// Builds the model's batch description from a scheduler step.
pub fn batch_input(out: &SchedulerOutput) -> BatchInput {
    let l = out.batch_layout();
    let seqs = out
        .seqs
        .iter()
        .enumerate()
        .map(|(i, s)| SeqInput {
            query_start: l.query_start[i],
            query_len: s.token_ids.len(),
            context_len: s.context_len(),
            block_table: s.block_table.clone(),
        })
        .collect();
    BatchInput {
        token_ids: l.token_ids,
        positions: l.positions,
        slot_mapping: l.slot_mapping,
        seqs,
        logits_rows: l.logits_rows,
    }
}

/// The CPU backend runner.
pub struct CpuRunner {
    model: Arc<LoadedModel>,
    kv: CpuKvCache,
}

impl CpuRunner {
    /// `num_blocks` KV blocks of `block_size` tokens (block 0 is the null block).
    pub fn new(
        model: Arc<LoadedModel>,
        num_blocks: usize,
        block_size: usize,
        dtype: KvDtype,
    ) -> Self {
        let kv = model
            .model
            .new_kv_cache_dtype(num_blocks, block_size, dtype);
        CpuRunner { model, kv }
    }
}

impl ModelRunner for CpuRunner {
    fn execute(&mut self, out: &SchedulerOutput, logits: &mut Vec<f32>) {
        for &(src, dst) in &out.copy_ops {
            self.kv.copy_block(src, dst);
        }
        let b = batch_input(out);
        if b.token_ids.is_empty() {
            logits.clear();
            return;
        }
        self.model.model.forward_into(&b, &mut self.kv, logits)
    }

    fn vocab_size(&self) -> usize {
        self.model.model.cfg.vocab_size
    }
}
