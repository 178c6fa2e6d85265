//! Causal paged attention launchers and the per-batch metadata they read. CPU twin:
//! `backend::cpu::attention::paged_attention`. Kernels: `kernels/attention.cu`.
//!
//! Per-batch device metadata ([`AttnBatch`], uploaded once per step, shared by all layers):
//!
//! ```text
//!  block_tables [S, max_blocks] i32 (padded with the null block 0)   context_lens [S] i32
//!  query_starts [S] i32   query_lens [S] i32   token_seq [T] i32 (batch row -> sequence)
//!  partials (when a row's context is split): ml f32 [T, n_heads, parts, 2],
//!            acc f32 [T, n_heads, parts, head_dim]
//! ```
//! Cost: `4 * (S * (max_blocks + 3) + T)` bytes per step for the metadata (in the step's
//! one input buffer, `cuda::step`); the partials are allocated once per step at the first
//! layer that needs them (grown, never per layer) and hold
//! `T * n_heads * parts * (head_dim + 2) * 4` bytes, `parts <= max(MAX_PARTS,
//! ceil(max_context / MAX_PART))` under `Auto`.
//!
//! One kernel serves prefill chunks and decodes alike: a block per (group of query heads
//! sharing a KV head ([`heads_per_block`]), query row, partition of the row's context).
//! [`AttnKernel::Auto`] picks the partition length: the longest of 512, 256, ..., 16 that
//! still gives the device [`BLOCKS_PER_SM`] blocks per multiprocessor without splitting a
//! row into more than [`MAX_PARTS`] partitions (a batch-1 decode is spread over many
//! partitions, a big batch is not split); rows with more than one partition are merged by
//! the reduce kernel.

use cudarc::driver::{CudaSlice, CudaView, PinnedHostSlice, PushKernelArg};
use half::bf16;

use super::device::GpuDevice;
use super::kv::GpuKvCache;
use super::ops::{cfg, i32_of, need};
pub use super::step::AttnSeqDesc;
use super::step::{StepBatch, StepLayout};
use super::{CudaError, Result};

/// Longest partition (the kernel's shared score buffer, `MAX_PART` in attention.cu).
pub const MAX_PART: usize = 512;
/// Query heads per block at most (`MAX_GROUP` in attention.cu; its shared scores hold
/// MAX_GROUP * MAX_PART floats).
pub const MAX_GROUP: usize = 8;
/// Shortest partition [`AttnKernel::Auto`] picks.
pub const MIN_PART: usize = 16;
/// Most partitions [`AttnKernel::Auto`] splits a row into by halving (the reduce kernel
/// walks a row's partials serially: at 256 partitions of a 4096-position context it cost
/// more than the attention itself on an H200).
pub const MAX_PARTS: usize = 32;
/// Blocks per multiprocessor [`AttnKernel::Auto`] aims for before it stops halving.
pub const BLOCKS_PER_SM: usize = 2;
/// Threads per attention block (`ATTN_THREADS` in attention.cu) and the head_dim limit.
const ATTN_THREADS: u32 = 128;
pub const MAX_HEAD_DIM: usize = 256;

/// How a row's context is partitioned (tests force a length; the runner uses `Auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnKernel {
    Auto,
    /// Partitions of `part_len` positions, `1..=MAX_PART`.
    Parts {
        part_len: usize,
    },
}

/// A step's device-side inputs ([`StepLayout`] in one buffer) and the attention partials.
pub struct AttnBatch {
    meta: CudaSlice<i32>,
    /// Page-locked twin of `meta` for graph steps (the graph copies it to `meta`).
    staging: Option<PinnedHostSlice<i32>>,
    layout: StepLayout,
    pub num_seqs: usize,
    pub num_tokens: usize,
    pub max_blocks: usize,
    pub max_context: usize,
    /// Partials of split rows: ml [T, n_heads, parts, 2] and acc [T, n_heads, parts, hd].
    scratch: Option<(CudaSlice<f32>, CudaSlice<f32>)>,
}

impl AttnBatch {
    /// Validates and uploads attention metadata alone (tests and benchmarks: token ids 0,
    /// positions from the query rows, no cache writes, no logits rows).
    pub fn new(
        dev: &GpuDevice,
        seqs: &[AttnSeqDesc<'_>],
        num_tokens: usize,
        block_size: usize,
        num_blocks: usize,
    ) -> Result<Self> {
        let mut positions = vec![0; num_tokens];
        for s in seqs {
            for i in 0..s.query_len {
                if let Some(p) = positions.get_mut(s.query_start + i) {
                    *p = s.context_len - s.query_len + i;
                }
            }
        }
        let b = StepBatch {
            seqs,
            ids: &vec![0; num_tokens],
            positions: &positions,
            slots: &vec![0; num_tokens],
            logits_rows: &[],
        };
        Self::upload(dev, StepLayout::build(&b, block_size, num_blocks, None)?)
    }

    /// An eager step: the layout uploaded at once.
    pub fn upload(dev: &GpuDevice, layout: StepLayout) -> Result<Self> {
        let meta = dev.upload(&layout.host)?;
        Ok(Self::with(meta, None, layout))
    }

    /// A graph step's inputs: device and page-locked buffers for `layout`'s shape, filled by
    /// [`AttnBatch::stage`] and copied by [`AttnBatch::copy_staged`].
    pub fn staged(dev: &GpuDevice, layout: StepLayout) -> Result<Self> {
        let meta = dev.stream.alloc_zeros::<i32>(layout.host.len())?;
        // SAFETY: uninitialized page-locked memory; `stage` fills all of it before any copy.
        // Flags 0: cached memory (the host writes it, the device reads it once per step).
        let staging = unsafe { dev.ctx.alloc_pinned_with_flags::<i32>(layout.host.len(), 0) }?;
        Ok(Self::with(meta, Some(staging), layout))
    }

    fn with(
        meta: CudaSlice<i32>,
        staging: Option<PinnedHostSlice<i32>>,
        layout: StepLayout,
    ) -> Self {
        AttnBatch {
            meta,
            staging,
            num_seqs: layout.seqs,
            num_tokens: layout.rows,
            max_blocks: layout.max_blocks,
            max_context: layout.max_context,
            layout,
            scratch: None,
        }
    }

    /// Writes `layout` (same shape as at creation) into the staging buffer. The caller has
    /// synchronized the stream since the last copy out of it.
    pub fn stage(&mut self, layout: &StepLayout) -> Result<()> {
        let same = layout.host.len() == self.layout.host.len()
            && (
                layout.rows,
                layout.seqs,
                layout.max_blocks,
                layout.logit_rows,
            ) == (
                self.layout.rows,
                self.layout.seqs,
                self.layout.max_blocks,
                self.layout.logit_rows,
            );
        let Some(st) = self.staging.as_mut().filter(|_| same) else {
            return Err(CudaError::Config(
                "step: staged inputs of another shape (or an eager batch)".into(),
            ));
        };
        st.as_mut_slice()?.copy_from_slice(&layout.host);
        self.layout.host.clone_from(&layout.host);
        Ok(())
    }

    /// Enqueues the staging -> device copy (a graph's first node when captured).
    pub fn copy_staged(&mut self, dev: &GpuDevice) -> Result<()> {
        let st = self
            .staging
            .as_ref()
            .ok_or_else(|| CudaError::Config("step: no staged inputs".into()))?;
        dev.stream.memcpy_htod(st, &mut self.meta)?;
        Ok(())
    }

    fn view(&self, off: usize, len: usize) -> CudaView<'_, i32> {
        self.meta.slice(off..off + len)
    }
    pub fn ids(&self) -> CudaView<'_, i32> {
        self.view(0, self.layout.rows)
    }
    pub fn positions(&self) -> CudaView<'_, i32> {
        self.view(self.layout.off_positions(), self.layout.rows)
    }
    pub fn slots(&self) -> CudaView<'_, i32> {
        self.view(self.layout.off_slots(), self.layout.rows)
    }
    /// Logits rows of the step (R >= the batch's: padding rows on a graph step).
    pub fn layout_logit_rows(&self) -> usize {
        self.layout.logit_rows
    }
    pub fn logit_rows(&self) -> CudaView<'_, i32> {
        self.view(self.layout.off_logit_rows(), self.layout.logit_rows)
    }
}

/// Partial buffers holding at least `ml` and `acc` elements (grown, never shrunk).
fn grow_scratch<'a>(
    dev: &GpuDevice,
    scratch: &'a mut Option<(CudaSlice<f32>, CudaSlice<f32>)>,
    ml: usize,
    acc: usize,
) -> Result<&'a mut (CudaSlice<f32>, CudaSlice<f32>)> {
    let fits = matches!(scratch, Some((a, b)) if a.len() >= ml && b.len() >= acc);
    if !fits {
        *scratch = Some((dev.stream.alloc_zeros(ml)?, dev.stream.alloc_zeros(acc)?));
    }
    Ok(scratch.as_mut().expect("allocated above"))
}

/// The partition length [`AttnKernel::Auto`] uses for `rows` query rows of `groups` head
/// groups (blocks per row and partition) whose longest context is `max_context`, on a
/// device of `sms` multiprocessors.
pub fn auto_part_len(rows: usize, groups: usize, max_context: usize, sms: usize) -> usize {
    let mut part = MAX_PART;
    while part > MIN_PART
        && rows * groups * max_context.div_ceil(part) < BLOCKS_PER_SM * sms
        && max_context.div_ceil(part / 2) <= MAX_PARTS
    {
        part /= 2;
    }
    part
}

/// Query heads one attention block serves: the largest divisor of the GQA group size
/// (`n_heads / n_kv_heads`) that is at most [`MAX_GROUP`] (the heads of a block share
/// one KV head, whose rows the block then reads once for all of them).
pub fn heads_per_block(n_heads: usize, n_kv_heads: usize) -> usize {
    let g = (n_heads / n_kv_heads.max(1)).max(1);
    (1..=g.min(MAX_GROUP))
        .rev()
        .find(|&d| g.is_multiple_of(d))
        .unwrap_or(1)
}

/// `out [T, n_heads, head_dim]` (bf16) = attention of `q` (f32, token t head h at
/// `t * q_stride + h * head_dim`) over layer `l` of `kv`.
#[allow(clippy::too_many_arguments)]
pub fn paged_attention(
    dev: &GpuDevice,
    out: &mut CudaSlice<bf16>,
    q: &CudaView<'_, f32>,
    q_stride: usize,
    kv: &GpuKvCache,
    l: usize,
    batch: &mut AttnBatch,
    n_heads: usize,
    scale: f32,
    kernel: AttnKernel,
) -> Result<()> {
    let (t, hd, nkv) = (batch.num_tokens, kv.head_dim, kv.n_kv_heads);
    if t == 0 {
        return Ok(());
    }
    if hd > MAX_HEAD_DIM
        || !hd.is_multiple_of(8)
        || n_heads == 0
        || nkv == 0
        || !n_heads.is_multiple_of(nkv)
    {
        return Err(CudaError::Config(format!(
            "attention: head_dim {hd} (a multiple of 8, at most {MAX_HEAD_DIM}), {n_heads} \
             heads over {nkv} kv heads"
        )));
    }
    need("attention out", out.len(), t * n_heads * hd)?;
    need("attention q", q.len(), (t - 1) * q_stride + n_heads * hd)?;
    let gsz = heads_per_block(n_heads, nkv);
    let groups = n_heads / gsz;
    let part_len = match kernel {
        AttnKernel::Auto => auto_part_len(t, groups, batch.max_context, dev.sms),
        AttnKernel::Parts { part_len } if (1..=MAX_PART).contains(&part_len) => part_len,
        AttnKernel::Parts { part_len } => {
            return Err(CudaError::Config(format!(
                "attention: part_len {part_len} outside 1..={MAX_PART}"
            )))
        }
    };
    let parts = batch.max_context.div_ceil(part_len).max(1);
    let (k_cache, v_cache) = kv.layer(l);
    let (qs, nh, nk, d, bs, mb, pl, np) = (
        i32_of(q_stride)?,
        i32_of(n_heads)?,
        i32_of(nkv)?,
        i32_of(hd)?,
        i32_of(kv.block_size)?,
        i32_of(batch.max_blocks)?,
        i32_of(part_len)?,
        i32_of(parts)?,
    );
    let gs = i32_of(gsz)?;
    let (ml_len, acc_len) = if parts > 1 {
        (t * n_heads * parts * 2, t * n_heads * parts * hd)
    } else {
        (1, 1)
    };
    let AttnBatch {
        meta,
        layout: lay,
        scratch,
        ..
    } = batch;
    let (s, mbw) = (lay.seqs, lay.max_blocks);
    let block_tables = meta.slice(lay.off_tables()..lay.off_tables() + s * mbw);
    let context_lens = meta.slice(lay.off_context_lens()..lay.off_context_lens() + s);
    let query_starts = meta.slice(lay.off_query_starts()..lay.off_query_starts() + s);
    let query_lens = meta.slice(lay.off_query_lens()..lay.off_query_lens() + s);
    let token_seq = meta.slice(lay.off_token_seq()..lay.off_token_seq() + t);
    let (tmp_ml, tmp_acc) = grow_scratch(dev, scratch, ml_len, acc_len)?;
    let mut b = dev.stream.launch_builder(dev.func("paged_attention"));
    b.arg(&mut *out)
        .arg(&mut *tmp_ml)
        .arg(&mut *tmp_acc)
        .arg(q)
        .arg(&k_cache)
        .arg(&v_cache)
        .arg(&block_tables)
        .arg(&context_lens)
        .arg(&query_starts)
        .arg(&query_lens)
        .arg(&token_seq)
        .arg(&qs)
        .arg(&nh)
        .arg(&nk)
        .arg(&d)
        .arg(&bs)
        .arg(&mb)
        .arg(&scale)
        .arg(&pl)
        .arg(&gs);
    // SAFETY: grid (n_heads / gsz, T, parts), 128 threads (the kernel's static shared arrays
    // hold MAX_GROUP * MAX_PART >= gsz * part_len scores and gsz <= MAX_GROUP heads of
    // head_dim <= MAX_HEAD_DIM dims, checked above; gsz divides the GQA group, so a block's
    // heads share one KV head; head_dim is a multiple of 8, so its 16-byte K loads are
    // aligned). Row t reads q row t (checked),
    // the K/V slots of positions < its context through its table (ids < num_blocks and
    // coverage validated in AttnBatch::new); it writes out[t, h, :] (one partition) or entry
    // (t, h, z) of the partials, sized T * n_heads * parts above.
    unsafe { b.launch(cfg((groups, t, parts), ATTN_THREADS)?) }?;
    if parts > 1 {
        let mut r = dev
            .stream
            .launch_builder(dev.func("paged_attention_reduce"));
        r.arg(out)
            .arg(&*tmp_ml)
            .arg(&*tmp_acc)
            .arg(&nh)
            .arg(&d)
            .arg(&np);
        // SAFETY: grid (n_heads, T); reads the `parts` partials of (t, h) written above and
        // writes out[t, h, :] (t < T, checked).
        unsafe { r.launch(cfg((n_heads, t, 1), ATTN_THREADS)?) }?;
    }
    Ok(())
}
