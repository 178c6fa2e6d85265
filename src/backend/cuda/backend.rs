//! The CUDA backend behind the model seam (`backend::seam`): weights as bf16 on the device
//! (dequantized there at load from the checkpoint's rows), cuBLAS GEMMs with f32
//! accumulation, the bf16 paged cache and the kernels of `kernels/`.
//!
//! Buffers (stream-ordered, reused across steps; grown when a step is bigger):
//!
//! ```text
//!  x     f32  [T, h]            residual stream (embedding out, += proj in the norms)
//!  xn    bf16 [T, h]            normed: GEMM input      attn bf16 [T, qd]   act bf16 [T, f]
//!  qkv   f32  [T, qd + 2 kvd]   rope'd in place; q read by attention, k/v cached
//!  proj  f32  [T, h]   gu f32 [T, 2f]   logits f32 [R, vocab] (copied to the host)
//! ```
//!
//! Not implemented on CUDA (refused at load by `Pack::check`, `pack.rs`, never at step time): per-head q/k
//! norm (Qwen3), sliding windows, YaRN's attention factor, an f32 cache (the cache is bf16).
//! A device error inside a step is unrecoverable: the op panics with the CUDA error (the
//! seam's ops have no error path; the engine thread ends and requests fail).

use std::sync::Arc;

use cudarc::driver::{CudaSlice, PinnedHostSlice};
use half::bf16;

use super::attention::{paged_attention, AttnBatch, AttnKernel};
use super::device::GpuDevice;
use super::gemm::linear;
use super::graph::{Graphs, Mode, Plan};
use super::kv::GpuKvCache;
use super::ops::{self, NormOut};
use super::step::{AttnSeqDesc, StepBatch, StepLayout};
use crate::backend::seam::{AttnOp, Backend, Ops};
use crate::backend::types::{Batch, KvDtype, KvShape};

/// A linear layer on the device: `[out, in]` bf16 (shared with the embedding table when the
/// LM head is tied), an f32 bias.
pub struct GpuLinear {
    pub w: Arc<CudaSlice<bf16>>,
    pub bias: Option<CudaSlice<f32>>,
    pub rows: usize,
    pub cols: usize,
}

/// The embedding table `[vocab, hidden]` bf16.
pub struct GpuTable {
    pub w: Arc<CudaSlice<bf16>>,
    pub rows: usize,
    pub cols: usize,
}

/// RoPE on the device: inverse frequencies and the pairing.
pub struct GpuRope {
    pub inv_freq: CudaSlice<f64>,
    pub neox: bool,
}

/// An activation buffer: `len` valid elements of an f32 or bf16 allocation.
#[derive(Default)]
pub enum GpuAct {
    #[default]
    Empty,
    F32(CudaSlice<f32>, usize),
    Bf16(CudaSlice<bf16>, usize),
}

impl GpuAct {
    fn len(&self) -> usize {
        match self {
            GpuAct::Empty => 0,
            GpuAct::F32(_, n) | GpuAct::Bf16(_, n) => *n,
        }
    }
}

fn fail<T>(what: &str, r: super::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("CUDA {what} failed (device state is unrecoverable): {e}"))
}

/// The CUDA backend: one device, the current step's inputs, the captured decode graphs, and
/// the buffers of the LM head that live across steps (grown to the largest step, never per
/// step): `head_in` bf16 [R, h] (the gathered rows), `head_out` f32 [R, vocab] and its
/// page-locked host twin `host_logits` (R * vocab * 4 bytes: 50 MB for 256 rows of a 49k
/// vocabulary; pageable copies of that size ran at ~1.5 GB/s on an H200 host).
///
/// `gen` counts (re)allocations of every buffer a captured graph may point into (the
/// activations, the LM head buffers): a graph captured under another `gen` is stale.
pub struct CudaBackend {
    pub dev: Arc<GpuDevice>,
    /// The inputs of an eager step (a graph step's live in its graph entry).
    inputs: Option<AttnBatch>,
    graphs: Graphs,
    mode: Mode,
    gen: u64,
    head_norm: GpuAct,
    head_in: GpuAct,
    head_out: GpuAct,
    host_logits: Option<PinnedHostSlice<f32>>,
}

impl CudaBackend {
    /// A backend on `dev`; decode steps run as CUDA graphs (see [`CudaBackend::with_graphs`]).
    pub fn new(dev: Arc<GpuDevice>) -> Self {
        CudaBackend {
            dev,
            inputs: None,
            graphs: Graphs::new(true),
            mode: Mode::Eager,
            gen: 0,
            head_norm: GpuAct::Empty,
            head_in: GpuAct::Empty,
            head_out: GpuAct::Empty,
            host_logits: None,
        }
    }

    /// Whether decode steps are captured and replayed as CUDA graphs (on by default; off
    /// runs every step's kernels one launch at a time).
    pub fn with_graphs(mut self, on: bool) -> Self {
        self.graphs = Graphs::new(on);
        self
    }

    /// Number of decode-step shapes with a captured graph.
    pub fn graphs_captured(&self) -> usize {
        self.graphs.captured()
    }

    /// The current step's inputs (eager, or the active graph entry's).
    fn step_inputs(&mut self) -> &mut AttnBatch {
        match self.graphs.active {
            Some(key) => {
                &mut self
                    .graphs
                    .entries
                    .get_mut(&key)
                    .expect("the active graph entry exists")
                    .batch
            }
            None => self.inputs.as_mut().expect("set by step()"),
        }
    }

    /// Counts an allocation of a buffer a graph may point into; none may happen while a
    /// graph is being captured (the warm-up step before a capture sizes every buffer).
    fn note_alloc(&mut self, what: &str) {
        assert!(
            self.mode != Mode::Capture,
            "CUDA graph capture needed a new {what} buffer (the warm-up step should have sized it)"
        );
        self.gen += 1;
    }

    /// A page-locked host buffer of at least `len` f32 (grown, never shrunk).
    fn host_buf(&mut self, len: usize) -> &mut PinnedHostSlice<f32> {
        if self.host_logits.as_ref().is_none_or(|h| h.len() < len) {
            self.note_alloc("logits host");
            // Drop the old buffer first (its drop waits for pending copies into it).
            self.host_logits = None;
            // SAFETY: the buffer is only read after a device-to-host copy has filled the
            // prefix that is read (see `logits`). Flags 0: cached, not write-combined, memory
            // (the host reads it).
            let h = unsafe { self.dev.ctx.alloc_pinned_with_flags::<f32>(len.max(1), 0) };
            self.host_logits = Some(fail("pinned alloc", h.map_err(Into::into)));
        }
        self.host_logits.as_mut().expect("allocated above")
    }

    /// `a` as an f32 buffer of `len` (reallocated only when too small).
    fn f32_buf(&mut self, a: &mut GpuAct, len: usize) {
        let fits = matches!(a, GpuAct::F32(s, _) if s.len() >= len);
        if !fits {
            self.note_alloc("f32 activation");
            *a = GpuAct::F32(
                fail(
                    "alloc",
                    self.dev
                        .stream
                        .alloc_zeros::<f32>(len.max(1))
                        .map_err(Into::into),
                ),
                len,
            );
        } else if let GpuAct::F32(_, n) = a {
            *n = len;
        }
    }

    fn bf16_buf(&mut self, a: &mut GpuAct, len: usize) {
        let fits = matches!(a, GpuAct::Bf16(s, _) if s.len() >= len);
        if !fits {
            self.note_alloc("bf16 activation");
            *a = GpuAct::Bf16(
                fail(
                    "alloc",
                    self.dev
                        .stream
                        .alloc_zeros::<bf16>(len.max(1))
                        .map_err(Into::into),
                ),
                len,
            );
        } else if let GpuAct::Bf16(_, n) = a {
            *n = len;
        }
    }
}

/// `dst = src`, copied in 1 Mi-element chunks on the rayon pool: a 256-row step's 50 MB of
/// logits took ~9 ms to reach the sampler's vector through one core on an H200 host.
fn copy_logits(dst: &mut Vec<f32>, src: &[f32]) {
    use rayon::prelude::*;
    let n = src.len();
    dst.clear();
    dst.reserve(n);
    dst.spare_capacity_mut()[..n]
        .par_chunks_mut(1 << 20)
        .zip(src.par_chunks(1 << 20))
        .for_each(|(d, s)| {
            for (a, &b) in d.iter_mut().zip(s) {
                a.write(b);
            }
        });
    // SAFETY: the first n elements of the spare capacity were all written just above (the
    // chunks of `dst` and `src` pair up one to one and cover n elements each).
    unsafe { dst.set_len(n) };
}

fn f32_of(a: &GpuAct) -> &CudaSlice<f32> {
    match a {
        GpuAct::F32(s, _) => s,
        _ => panic!("an f32 activation was expected"),
    }
}

fn f32_mut(a: &mut GpuAct) -> &mut CudaSlice<f32> {
    match a {
        GpuAct::F32(s, _) => s,
        _ => panic!("an f32 activation was expected"),
    }
}

fn bf16_of(a: &GpuAct) -> &CudaSlice<bf16> {
    match a {
        GpuAct::Bf16(s, _) => s,
        _ => panic!("a bf16 activation was expected"),
    }
}

impl Backend for CudaBackend {
    type Matrix = GpuLinear;
    type Vector = CudaSlice<f32>;
    type Table = GpuTable;
    type Rope = GpuRope;
    type Kv = GpuKvCache;
    type Act = GpuAct;
    const NAME: &'static str = "cuda";
}

impl Ops for CudaBackend {
    fn kv_cache(&self, s: KvShape, _dtype: KvDtype) -> Result<GpuKvCache, String> {
        GpuKvCache::new(
            &self.dev,
            s.num_layers,
            s.num_blocks,
            s.block_size,
            s.num_kv_heads,
            s.head_dim,
        )
        .map_err(|e| e.to_string())
    }

    fn copy_blocks(&mut self, kv: &mut GpuKvCache, pairs: &[(u32, u32)]) {
        fail("block copy", kv.copy_blocks(&self.dev, pairs));
    }

    fn step<R: Send>(
        &mut self,
        batch: &Batch,
        kv: &mut GpuKvCache,
        mut f: impl FnMut(&mut Self, &mut GpuKvCache) -> R + Send,
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
        let key = self.graphs.key(batch);
        let layout = fail("step inputs", StepLayout::build(&sb, bs, nb, key));
        let Some(key) = key else {
            self.inputs = Some(fail("step upload", AttnBatch::upload(&self.dev, layout)));
            return f(self, kv);
        };
        let dev = self.dev.clone();
        let plan = fail(
            "graph inputs",
            self.graphs.prepare(&dev, key, &layout, self.gen),
        );
        let r = match plan {
            Plan::Replay => {
                self.mode = Mode::Replay;
                let r = f(self, kv);
                self.mode = Mode::Eager;
                r
            }
            Plan::Eager { capture } => {
                let r = f(self, kv);
                if capture {
                    // The same step again, enqueued into a graph (nothing runs; this step's
                    // results are the eager run's).
                    let gen0 = self.gen;
                    let begun = self.graphs.begin_capture(&dev);
                    if begun.is_ok() {
                        self.mode = Mode::Capture;
                        let _ = f(self, kv);
                        self.mode = Mode::Eager;
                    }
                    self.graphs.end_capture(&dev, begun, gen0, self.gen);
                }
                r
            }
        };
        self.graphs.active = None;
        r
    }

    fn embed(&mut self, table: &GpuTable, ids: &[u32], x: &mut GpuAct) {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= table.rows) {
            panic!("token id {id} >= vocab {}", table.rows);
        }
        if self.mode == Mode::Replay {
            return;
        }
        // The ids come from the step's inputs (padded rows included on a graph step).
        let t = self.step_inputs().num_tokens;
        self.f32_buf(x, t * table.cols);
        let dev = self.dev.clone();
        let ids = self.step_inputs().ids();
        fail(
            "embedding",
            ops::embedding(&dev, f32_mut(x), &table.w, &ids, table.rows, table.cols),
        );
    }

    fn norm(
        &mut self,
        x: &mut GpuAct,
        add: Option<&GpuAct>,
        w: &CudaSlice<f32>,
        eps: f32,
        out: &mut GpuAct,
    ) {
        if self.mode == Mode::Replay {
            return;
        }
        let d = w.len();
        let t = x.len() / d;
        self.bf16_buf(out, t * d);
        let GpuAct::Bf16(o, _) = out else {
            unreachable!("sized as bf16 above")
        };
        let r = add.map(f32_of);
        fail(
            "rmsnorm",
            ops::rmsnorm_residual(
                &self.dev,
                NormOut::Bf16(&mut o.slice_mut(..)),
                f32_mut(x),
                r,
                w,
                t,
                d,
                eps,
            ),
        );
    }

    fn linear(&mut self, x: &GpuAct, w: &GpuLinear, y: &mut GpuAct) {
        if self.mode == Mode::Replay {
            return;
        }
        let t = x.len() / w.cols;
        self.f32_buf(y, t * w.rows);
        let yb = f32_mut(y);
        fail(
            "linear",
            linear(&self.dev, bf16_of(x), &*w.w, yb, t, w.rows, w.cols),
        );
        if let Some(b) = &w.bias {
            fail("bias", ops::add_bias(&self.dev, yb, b, t));
        }
    }

    fn attention(
        &mut self,
        op: &AttnOp<'_, Self>,
        qkv: &mut GpuAct,
        kv: &mut GpuKvCache,
        batch: &Batch,
        out: &mut GpuAct,
    ) {
        let _ = batch; // uploaded (validated, padded) by step()
        if self.mode == Mode::Replay {
            return;
        }
        let t = self.step_inputs().num_tokens;
        let hd = op.head_dim;
        let (qd, kvd) = (op.heads * hd, op.kv_heads * hd);
        let stride = qd + 2 * kvd;
        self.bf16_buf(out, t * qd);
        let dev = self.dev.clone();
        let inputs = self.step_inputs();
        // RoPE in place on q and k of the f32 qkv rows (the buffer the GEMM wrote): the k
        // heads follow the q heads in a row, so one launch covers both.
        let q = f32_mut(qkv);
        let rope = op.rope;
        fail(
            "rope q, k",
            ops::rope(
                &dev,
                &mut q.slice_mut(..),
                &inputs.positions(),
                &rope.inv_freq,
                stride,
                op.heads + op.kv_heads,
                hd,
                rope.neox,
            ),
        );
        fail(
            "cache write",
            kv.reshape_and_cache(
                &dev,
                op.layer,
                &q.slice(qd..),
                &q.slice(qd + kvd..),
                &inputs.slots(),
                stride,
            ),
        );
        let GpuAct::Bf16(o, _) = out else {
            unreachable!("sized as bf16 above")
        };
        fail(
            "attention",
            paged_attention(
                &dev,
                o,
                &q.slice(..),
                stride,
                kv,
                op.layer,
                inputs,
                op.heads,
                op.scale,
                AttnKernel::Auto,
            ),
        );
    }

    fn silu_mul(&mut self, gu: &GpuAct, f: usize, out: &mut GpuAct) {
        if self.mode == Mode::Replay {
            return;
        }
        let t = gu.len() / (2 * f);
        self.bf16_buf(out, t * f);
        let GpuAct::Bf16(o, _) = out else {
            unreachable!("sized as bf16 above")
        };
        fail(
            "silu_mul",
            ops::silu_mul(
                &self.dev,
                NormOut::Bf16(&mut o.slice_mut(..)),
                f32_of(gu),
                t,
                f,
            ),
        );
    }

    fn logits(
        &mut self,
        x: &mut GpuAct,
        add: Option<&GpuAct>,
        rows: &[usize],
        norm: &CudaSlice<f32>,
        eps: f32,
        head: &GpuLinear,
        logits: &mut Vec<f32>,
    ) {
        let h = norm.len();
        match self.mode {
            Mode::Replay => {
                let g = self
                    .graphs
                    .active_graph()
                    .expect("replay of a captured graph");
                fail("graph launch", g.launch().map_err(Into::into));
                fail("graph", self.dev.synchronize());
                let n = rows.len() * head.rows;
                let host = self
                    .host_logits
                    .as_ref()
                    .expect("sized by the warm-up step");
                let vals = fail("download", host.as_slice().map_err(Into::into));
                copy_logits(logits, &vals[..n]);
                return;
            }
            Mode::Eager => logits.clear(),
            Mode::Capture => {}
        }
        let t = x.len() / h;
        if let Some(&row) = rows.iter().find(|&&row| row >= t) {
            panic!("logits row {row} >= {t} rows");
        }
        let mut xn = std::mem::take(&mut self.head_norm);
        self.norm(x, add, norm, eps, &mut xn);
        // The step's logits rows (all padded rows on a graph step: R >= rows.len()).
        let r = self.step_inputs().layout_logit_rows();
        if r == 0 {
            self.head_norm = xn;
            return;
        }
        let n = r * head.rows;
        let (mut last, mut out) = (
            std::mem::take(&mut self.head_in),
            std::mem::take(&mut self.head_out),
        );
        self.bf16_buf(&mut last, r * h); // [R, h]
        self.f32_buf(&mut out, n); // [R, vocab]
        let dev = self.dev.clone();
        let GpuAct::Bf16(last_b, _) = &mut last else {
            unreachable!("sized as bf16 above")
        };
        {
            let rows_d = self.step_inputs().logit_rows();
            fail(
                "gather",
                ops::gather_rows(&dev, last_b, bf16_of(&xn), &rows_d, h),
            );
        }
        fail(
            "lm head",
            linear(&dev, &*last_b, &*head.w, f32_mut(&mut out), r, head.rows, h),
        );
        let capture = self.mode == Mode::Capture;
        let host = self.host_buf(n);
        fail(
            "download",
            dev.stream
                .memcpy_dtoh(&f32_of(&out).slice(..n), host)
                .map_err(Into::into),
        );
        if !capture {
            // Wait for the copy on the stream itself: cudarc records the pinned buffer's
            // event (which `as_slice` waits on) only when it tracks events across streams,
            // which this backend turns off, so `as_slice` alone would read it too early.
            fail("download", dev.synchronize());
            let vals = fail("download", host.as_slice().map_err(Into::into));
            copy_logits(logits, &vals[..rows.len() * head.rows]);
        }
        (self.head_in, self.head_out, self.head_norm) = (last, out, xn);
    }
}
