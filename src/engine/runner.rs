//! Model runners: run one scheduler step's batch on a backend. The batch is described once
//! per step (`step_batch`: the flattened token axis every backend reads, plus which
//! sequences sample from which logits row, which only the engine reads); [`Runner`] runs
//! the shared forward (`model::forward`) on any backend of the seam; a test runner can
//! replace it.

use std::sync::Arc;

use crate::backend::seam::Ops;
use crate::backend::types::{Batch, SeqInput};
use crate::model::{LoadedModel, Model};
use crate::sched::{SchedulerOutput, SeqId};

/// Executes one scheduled step.
pub trait ModelRunner: Send {
    /// Runs the copy-on-write block copies `copy_ops`, then the batch; leaves logits
    /// `[rows, vocab]` in `logits`, one row per entry of `batch.logits_rows`, in that
    /// order. The buffer is the caller's and comes back each step: its old contents are
    /// overwritten and its capacity reused (a 32-row step does not fault in and zero 6 MB
    /// of fresh pages for its logits).
    fn execute(&mut self, copy_ops: &[(u32, u32)], batch: &Batch, logits: &mut Vec<f32>);
    fn vocab_size(&self) -> usize;
}

/// A step's batch, and for each of its logits rows the sequences that sample from it.
pub fn step_batch(out: &SchedulerOutput) -> (Batch, Vec<Vec<SeqId>>) {
    let bs = out.block_size;
    let mut b = Batch::default();
    let mut sample_for = Vec::new();
    for s in &out.seqs {
        let query_start = b.token_ids.len();
        b.token_ids.extend_from_slice(&s.token_ids);
        b.positions.extend(s.start_pos..s.context_len());
        b.slot_mapping.extend(s.slot_mapping(bs));
        b.seqs.push(SeqInput {
            query_start,
            query_len: s.token_ids.len(),
            context_len: s.context_len(),
            block_table: s.block_table.clone(),
        });
        if !s.sample_for.is_empty() {
            b.logits_rows.push(b.token_ids.len() - 1);
            sample_for.push(s.sample_for.clone());
        }
    }
    (b, sample_for)
}

/// Where a runner finds its model: the CPU model inside the loaded checkpoint, or a model
/// another backend packed.
pub trait ModelSource<B: Ops>: Send + Sync + 'static {
    fn model(&self) -> &Model<B>;
}

impl ModelSource<crate::backend::cpu::backend::CpuBackend> for LoadedModel {
    fn model(&self) -> &Model<crate::backend::cpu::backend::CpuBackend> {
        &self.model
    }
}

impl<B: Ops> ModelSource<B> for Model<B> {
    fn model(&self) -> &Model<B> {
        self
    }
}

/// The runner of backend `B`: its instance, the model and the KV cache.
pub struct Runner<B: Ops> {
    backend: B,
    model: Arc<dyn ModelSource<B>>,
    kv: B::Kv,
}

impl<B: Ops> Runner<B> {
    pub fn new(backend: B, model: Arc<dyn ModelSource<B>>, kv: B::Kv) -> Self {
        Runner { backend, model, kv }
    }

    pub fn kv(&self) -> &B::Kv {
        &self.kv
    }
}

impl<B: Ops> ModelRunner for Runner<B> {
    fn execute(&mut self, copy_ops: &[(u32, u32)], batch: &Batch, logits: &mut Vec<f32>) {
        self.backend.copy_blocks(&mut self.kv, copy_ops);
        if batch.token_ids.is_empty() {
            logits.clear();
            return;
        }
        self.model
            .model()
            .forward(&mut self.backend, batch, &mut self.kv, logits)
    }

    fn vocab_size(&self) -> usize {
        self.model.model().cfg.vocab_size
    }
}
