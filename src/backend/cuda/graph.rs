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

use super::attention::AttnBatch;
use super::device::GpuDevice;
use super::step::{row_bucket, Pad, StepLayout};
use super::Result;
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

/// What a graph-shaped step does next.
pub(super) enum Plan {
    /// The key's graph is current: run the ops in [`Mode::Replay`].
    Replay,
    /// Run eagerly on the key's inputs (already copied), then capture the step if `capture`.
    Eager { capture: bool },
}

impl Graphs {
    /// The graph key of `batch`, when it is a decode step a graph can run.
    pub(super) fn key(&self, batch: &Batch) -> Option<Pad> {
        let s = batch.seqs.len();
        let decode = s > 0
            && batch.token_ids.len() == s
            && batch.seqs.iter().all(|q| q.query_len == 1)
            && batch.logits_rows.iter().copied().eq(0..s);
        if !self.enabled || !decode {
            return None;
        }
        let widest = batch.seqs.iter().map(|q| q.block_table.len()).max()?;
        Some(Pad {
            rows: row_bucket(s)?,
            max_blocks: widest.max(1).next_power_of_two(),
        })
    }

    /// Stages `layout` (padded to `key`) in the key's inputs, makes the key active, and says
    /// whether its graph can be replayed under allocation generation `gen`. For an eager
    /// run the inputs are copied to the device here.
    pub(super) fn prepare(
        &mut self,
        dev: &GpuDevice,
        key: Pad,
        layout: &StepLayout,
        gen: u64,
    ) -> Result<Plan> {
        let e = match self.entries.entry(key) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(GraphEntry {
                batch: AttnBatch::staged(dev, layout.clone())?,
                graph: None,
                gen: 0,
                failed: false,
            }),
        };
        e.batch.stage(layout)?;
        self.active = Some(key);
        if e.graph.is_some() && e.gen == gen {
            return Ok(Plan::Replay);
        }
        // Stale or new: an eager run on this key's buffers, then (unless its capture already
        // failed under this generation) a capture of the same step.
        e.graph = None;
        e.batch.copy_staged(dev)?;
        Ok(Plan::Eager {
            capture: !(e.failed && e.gen == gen),
        })
    }

    /// Starts capturing the active key's step: its first node copies the staged inputs.
    pub(super) fn begin_capture(&mut self, dev: &GpuDevice) -> Result<()> {
        let key = self.active.expect("a graph step is active");
        let mode = CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        dev.stream.begin_capture(mode)?;
        let e = self.entries.get_mut(&key).expect("the active key's entry");
        e.batch.copy_staged(dev)
    }

    /// Ends the capture begun by [`Graphs::begin_capture`] (also after it failed: `begun`)
    /// and keeps the graph if nothing was reallocated meanwhile (`gen0 == gen`).
    pub(super) fn end_capture(&mut self, dev: &GpuDevice, begun: Result<()>, gen0: u64, gen: u64) {
        let key = self.active.expect("a graph step is active");
        let graph = dev.stream.end_capture(CUgraphInstantiate_flags(0));
        let e = self.entries.get_mut(&key).expect("the active key's entry");
        e.gen = gen;
        let why = match (begun, graph) {
            (Ok(()), Ok(Some(g))) if gen == gen0 => {
                e.graph = Some(OwnedGraph(g));
                e.failed = false;
                return;
            }
            (Err(err), _) => err.to_string(),
            (_, Err(err)) => err.to_string(),
            (_, Ok(None)) => "empty graph".into(),
            _ => "a buffer was reallocated during capture".into(),
        };
        tracing::warn!(?key, %why, "CUDA graph capture failed; this shape runs eagerly");
        e.failed = true;
    }
}
