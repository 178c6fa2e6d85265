//! Decode steps as CUDA graphs. A step's ~10 kernels per layer cost 4-5 us each to launch on
//! the host, more than they run on the GPU at small batches; a captured graph launches them
//! all at once.
//!
//! A decode-only batch of S sequences (one row each, logits rows `0..S`, S <= 256) is padded
//! to a [`Pad`] key: S rounded up to a bucket (`step::row_bucket`) and the widest block
//! table rounded up to a power of two. Per key, the first step runs eagerly on the key's
//! own input buffers (this sizes every activation buffer for that shape) and is then
//! captured again (nothing runs during capture; the step's results are the eager run's);
//! later steps of the key write their inputs into the key's page-locked staging buffer and
//! replay the graph, whose first node copies the staging buffer to the device and whose
//! last copies the logits to the page-locked host buffer.
//!
//! Invariants: a graph holds raw pointers to the model's activation buffers, the LM head
//! buffers, the KV cache and its own inputs; the first two grow (are reallocated) when a
//! bigger step comes, which bumps `CudaBackend::gen`, and a graph captured under another
//! `gen` is recaptured before use. Nothing is allocated while capturing (asserted). A key
//! whose capture fails runs eagerly until `gen` changes (logged once).
//!
//! Memory per key: the inputs (`step` layout, a few KB to ~70 KB, twice: device and
//! page-locked), the attention partials for the padded shape, and the graph itself (one
//! node per kernel of the step, ~300-400 nodes for a 30-layer model).

use std::collections::HashMap;

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::CudaGraph;

use super::attention::{AttnBatch, AttnSeqDesc};
use super::backend::CudaBackend;
use super::kv::GpuKvCache;
use super::step::{row_bucket, Pad, StepBatch, StepLayout};
use crate::backend::types::Batch;

/// What the ops of a step do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Launch kernels one by one.
    Eager,
    /// Enqueue into the graph being captured (no results; nothing may allocate).
    Capture,
    /// Do nothing, except `logits`, which launches the captured graph and reads its logits.
    Replay,
}

/// A captured graph that can move to the engine thread.
pub(super) struct OwnedGraph(CudaGraph);

// SAFETY: CUDA graph objects may be used from any thread as long as calls on one graph are
// serialized (CUDA driver API, "Graph object thread safety"); an OwnedGraph belongs to one
// CudaBackend and is only reached through `&mut CudaBackend`, i.e. by one thread at a time.
unsafe impl Send for OwnedGraph {}

pub(super) struct GraphEntry {
    pub(super) batch: AttnBatch,
    graph: Option<OwnedGraph>,
    /// `CudaBackend::gen` when the graph was captured (or when its capture failed).
    gen: u64,
    failed: bool,
}

/// The captured graphs, by padded shape.
pub struct Graphs {
    enabled: bool,
    pub(super) entries: HashMap<Pad, GraphEntry>,
    /// The key of the step in progress (None: an eager step on `CudaBackend::inputs`).
    pub(super) active: Option<Pad>,
}

impl Graphs {
    pub(super) fn new(enabled: bool) -> Self {
        Graphs {
            enabled,
            entries: HashMap::new(),
            active: None,
        }
    }

    /// The captured graph of the step in progress.
    pub(super) fn active_graph(&self) -> Option<&CudaGraph> {
        Some(&self.entries.get(&self.active?)?.graph.as_ref()?.0)
    }

    /// Number of captured (usable or stale) graphs.
    pub fn captured(&self) -> usize {
        self.entries.values().filter(|e| e.graph.is_some()).count()
    }
}

fn fail<T>(what: &str, r: super::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("CUDA {what} failed (device state is unrecoverable): {e}"))
}

impl CudaBackend {
    /// The graph key of `batch`, when it is a decode step a graph can run.
    fn graph_key(&self, batch: &Batch) -> Option<Pad> {
        let s = batch.seqs.len();
        let decode = s > 0
            && batch.token_ids.len() == s
            && batch.seqs.iter().all(|q| q.query_len == 1)
            && batch.logits_rows.iter().copied().eq(0..s);
        if !self.graphs.enabled || !decode {
            return None;
        }
        let widest = batch.seqs.iter().map(|q| q.block_table.len()).max()?;
        Some(Pad {
            rows: row_bucket(s)?,
            max_blocks: widest.max(1).next_power_of_two(),
        })
    }

    /// The `step` hook: uploads the step's inputs, then runs `f` eagerly, or replays the
    /// step's captured graph, or runs it eagerly and captures it (see the module header).
    pub(super) fn run_step<R>(
        &mut self,
        batch: &Batch,
        kv: &mut GpuKvCache,
        mut f: impl FnMut(&mut Self, &mut GpuKvCache) -> R,
    ) -> R {
        let descs: Vec<AttnSeqDesc<'_>> = batch
            .seqs
            .iter()
            .map(|s| AttnSeqDesc {
                query_start: s.query_start,
                query_len: s.query_len,
                context_len: s.context_len,
                block_table: &s.block_table,
            })
            .collect();
        let sb = StepBatch {
            seqs: &descs,
            ids: &batch.token_ids,
            positions: &batch.positions,
            slots: &batch.slot_mapping,
            logits_rows: &batch.logits_rows,
        };
        let (bs, nb) = (kv.block_size, kv.num_blocks);
        self.mode = Mode::Eager;
        self.graphs.active = None;
        let Some(key) = self.graph_key(batch) else {
            let layout = fail("step inputs", StepLayout::build(&sb, bs, nb, None));
            let inputs = fail("step upload", AttnBatch::upload(&self.dev, layout));
            self.set_eager_inputs(inputs);
            return f(self, kv);
        };
        let layout = fail("step inputs", StepLayout::build(&sb, bs, nb, Some(key)));
        if !self.graphs.entries.contains_key(&key) {
            let batch = fail("graph inputs", AttnBatch::staged(&self.dev, layout.clone()));
            let e = GraphEntry {
                batch,
                graph: None,
                gen: 0,
                failed: false,
            };
            self.graphs.entries.insert(key, e);
        }
        let gen = self.gen;
        let e = self.graphs.entries.get_mut(&key).expect("inserted above");
        fail("graph inputs", e.batch.stage(&layout));
        self.graphs.active = Some(key);
        if e.graph.is_some() && e.gen == gen {
            self.mode = Mode::Replay;
            let r = f(self, kv);
            self.mode = Mode::Eager;
            self.graphs.active = None;
            return r;
        }
        // Stale or new: an eager run on this key's buffers, then a capture of the same step.
        e.graph = None;
        let skip_capture = e.failed && e.gen == gen;
        fail("graph inputs", e.batch.copy_staged(&self.dev));
        let r = f(self, kv);
        if !skip_capture {
            self.capture(key, kv, &mut f);
        }
        self.graphs.active = None;
        r
    }

    fn capture<R>(
        &mut self,
        key: Pad,
        kv: &mut GpuKvCache,
        f: &mut impl FnMut(&mut Self, &mut GpuKvCache) -> R,
    ) {
        let gen0 = self.gen;
        let stream = self.dev.stream.clone();
        let mode = CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        let mut result = stream.begin_capture(mode).map_err(super::CudaError::from);
        if result.is_ok() {
            let e = self.graphs.entries.get_mut(&key).expect("the key's entry");
            result = e.batch.copy_staged(&self.dev);
            if result.is_ok() {
                self.mode = Mode::Capture;
                let _ = f(self, kv);
                self.mode = Mode::Eager;
            }
        }
        let graph = stream.end_capture(CUgraphInstantiate_flags(0));
        let gen = self.gen;
        let e = self.graphs.entries.get_mut(&key).expect("the key's entry");
        e.gen = gen;
        match (result, graph) {
            (Ok(()), Ok(Some(g))) if gen == gen0 => {
                e.graph = Some(OwnedGraph(g));
                e.failed = false;
            }
            (r, g) => {
                let why = match (r, g) {
                    (Err(e), _) => e.to_string(),
                    (_, Err(e)) => e.to_string(),
                    (_, Ok(None)) => "empty graph".into(),
                    _ => "a buffer was reallocated during capture".into(),
                };
                tracing::warn!(?key, %why, "CUDA graph capture failed; this shape runs eagerly");
                e.failed = true;
            }
        }
    }
}
