//! Causal paged attention launchers and the per-batch metadata they read. CPU twin:
//! `backend::cpu::attention::paged_attention`. Kernels: `kernels/attention.cu`.
//!
//! Per-batch device metadata ([`AttnBatch`], uploaded once per step, shared by all layers):
//!
//! ```text
//!  block_tables [S, max_blocks] i32 (padded with the null block 0)   context_lens [S] i32
//!  query_starts [S] i32   query_lens [S] i32   token_seq [T] i32 (batch row -> sequence)
//! ```
//! Cost: `4 * (S * (max_blocks + 3) + T)` bytes per step.
//!
//! Kernel choice ([`AttnKernel::Auto`]): a batch of pure decodes (every query_len = 1) uses
//! the decode kernel, or the split-K decode + reduce when the longest context exceeds
//! [`SPLIT_MIN_CONTEXT`]; any batch with a prefill chunk uses the prefill kernel for all rows.

use cudarc::driver::{CudaSlice, CudaView, PushKernelArg};
use half::bf16;

use super::device::GpuDevice;
use super::kv::GpuKvCache;
use super::ops::{cfg, i32_of, need};
use super::{CudaError, Result};

/// Longest context at which a decode batch still uses the single-pass kernel.
pub const SPLIT_MIN_CONTEXT: usize = 1024;
/// Positions per split-K partition.
pub const SPLIT_PART_LEN: usize = 512;
/// Threads per attention block (`ATTN_THREADS` in attention.cu) and the head_dim limit.
const ATTN_THREADS: u32 = 128;
pub const MAX_HEAD_DIM: usize = 256;

/// Which kernel runs (tests force each one; the runner uses `Auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnKernel {
    Auto,
    Prefill,
    Decode,
    DecodeSplit { part_len: usize },
}

/// One sequence as attention sees it (the host form of a row of [`AttnBatch`]).
#[derive(Debug, Clone)]
pub struct AttnSeqDesc<'a> {
    pub query_start: usize,
    pub query_len: usize,
    pub context_len: usize,
    pub block_table: &'a [u32],
}

pub struct AttnBatch {
    block_tables: CudaSlice<i32>,
    context_lens: CudaSlice<i32>,
    query_starts: CudaSlice<i32>,
    query_lens: CudaSlice<i32>,
    token_seq: CudaSlice<i32>,
    pub num_seqs: usize,
    pub num_tokens: usize,
    pub max_blocks: usize,
    pub max_context: usize,
    pub decode_only: bool,
}

impl AttnBatch {
    /// Validates and uploads the metadata: tables must cover each context, block ids must be
    /// `< num_blocks`, query rows must tile `0..T` in order, 1 <= query_len <= context_len.
    pub fn new(
        dev: &GpuDevice,
        seqs: &[AttnSeqDesc<'_>],
        num_tokens: usize,
        block_size: usize,
        num_blocks: usize,
    ) -> Result<Self> {
        let max_blocks = seqs
            .iter()
            .map(|s| s.block_table.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut tables = vec![0i32; seqs.len() * max_blocks];
        let (mut ctx, mut qs, mut ql) = (Vec::new(), Vec::new(), Vec::new());
        let mut token_seq = Vec::with_capacity(num_tokens);
        for (i, s) in seqs.iter().enumerate() {
            let bad = |m: String| {
                Err(CudaError::Config(format!(
                    "attention batch, sequence {i}: {m}"
                )))
            };
            if s.query_start != token_seq.len() || s.query_len == 0 || s.query_len > s.context_len {
                return bad(format!(
                    "query rows {}+{} with context {}",
                    s.query_start, s.query_len, s.context_len
                ));
            }
            if s.block_table.len() * block_size < s.context_len {
                return bad(format!(
                    "{} blocks cannot hold {} tokens",
                    s.block_table.len(),
                    s.context_len
                ));
            }
            for (j, &b) in s.block_table.iter().enumerate() {
                if b as usize >= num_blocks {
                    return bad(format!("block id {b} >= {num_blocks}"));
                }
                tables[i * max_blocks + j] = b as i32;
            }
            ctx.push(i32_of(s.context_len)?);
            qs.push(i32_of(s.query_start)?);
            ql.push(i32_of(s.query_len)?);
            token_seq.extend(std::iter::repeat_n(i as i32, s.query_len));
        }
        if token_seq.len() != num_tokens {
            return Err(CudaError::Config(format!(
                "attention batch: sequences cover {} rows, batch has {num_tokens}",
                token_seq.len()
            )));
        }
        Ok(AttnBatch {
            block_tables: dev.upload(&tables)?,
            context_lens: dev.upload(&ctx)?,
            query_starts: dev.upload(&qs)?,
            query_lens: dev.upload(&ql)?,
            token_seq: dev.upload(&token_seq)?,
            num_seqs: seqs.len(),
            num_tokens,
            max_blocks,
            max_context: seqs.iter().map(|s| s.context_len).max().unwrap_or(0),
            decode_only: seqs.iter().all(|s| s.query_len == 1),
        })
    }
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
    batch: &AttnBatch,
    n_heads: usize,
    scale: f32,
    kernel: AttnKernel,
) -> Result<()> {
    let (t, s, hd, nkv) = (batch.num_tokens, batch.num_seqs, kv.head_dim, kv.n_kv_heads);
    if t == 0 {
        return Ok(());
    }
    if hd > MAX_HEAD_DIM || n_heads == 0 || nkv == 0 || !n_heads.is_multiple_of(nkv) {
        return Err(CudaError::Config(format!(
            "attention: head_dim {hd} (max {MAX_HEAD_DIM}), {n_heads} heads over {nkv} kv heads"
        )));
    }
    need("attention out", out.len(), t * n_heads * hd)?;
    need("attention q", q.len(), (t - 1) * q_stride + n_heads * hd)?;
    let kernel = match kernel {
        AttnKernel::Auto if !batch.decode_only => AttnKernel::Prefill,
        AttnKernel::Auto if batch.max_context > SPLIT_MIN_CONTEXT => AttnKernel::DecodeSplit {
            part_len: SPLIT_PART_LEN,
        },
        AttnKernel::Auto => AttnKernel::Decode,
        k => k,
    };
    if kernel != AttnKernel::Prefill && !batch.decode_only {
        return Err(CudaError::Config(
            "attention: decode kernels need query_len = 1 for every sequence".into(),
        ));
    }
    let (k_cache, v_cache) = kv.layer(l);
    let (qs, nh, nk, d, bs, mb) = (
        i32_of(q_stride)?,
        i32_of(n_heads)?,
        i32_of(nkv)?,
        i32_of(hd)?,
        i32_of(kv.block_size)?,
        i32_of(batch.max_blocks)?,
    );
    match kernel {
        AttnKernel::Prefill | AttnKernel::Auto => {
            let mut b = dev
                .stream
                .launch_builder(dev.func("paged_attention_prefill"));
            b.arg(out)
                .arg(q)
                .arg(&k_cache)
                .arg(&v_cache)
                .arg(&batch.block_tables)
                .arg(&batch.context_lens)
                .arg(&batch.query_starts)
                .arg(&batch.query_lens)
                .arg(&batch.token_seq)
                .arg(&qs)
                .arg(&nh)
                .arg(&nk)
                .arg(&d)
                .arg(&bs)
                .arg(&mb)
                .arg(&scale);
            // SAFETY: grid (n_heads, T), 128 threads (the kernel's static shared arrays are
            // sized for 4 warps and head_dim <= 256, checked). Row t reads q row t (checked),
            // K/V slots of blocks from its table (ids < num_blocks and table coverage of
            // positions 0..context_len validated in AttnBatch::new) and writes out[t, h, :].
            unsafe { b.launch(cfg((n_heads, t, 1), ATTN_THREADS)?) }?;
        }
        AttnKernel::Decode => {
            let mut b = dev
                .stream
                .launch_builder(dev.func("paged_attention_decode"));
            b.arg(out)
                .arg(q)
                .arg(&k_cache)
                .arg(&v_cache)
                .arg(&batch.block_tables)
                .arg(&batch.context_lens)
                .arg(&batch.query_starts)
                .arg(&qs)
                .arg(&nh)
                .arg(&nk)
                .arg(&d)
                .arg(&bs)
                .arg(&mb)
                .arg(&scale);
            // SAFETY: as for the prefill kernel, with grid (n_heads, S) and one query row per
            // sequence (decode_only checked above).
            unsafe { b.launch(cfg((n_heads, s, 1), ATTN_THREADS)?) }?;
        }
        AttnKernel::DecodeSplit { part_len } => {
            if part_len == 0 {
                return Err(CudaError::Config(
                    "attention: split part_len must be > 0".into(),
                ));
            }
            let parts = batch.max_context.div_ceil(part_len).max(1);
            let mut tmp_ml = dev.stream.alloc_zeros::<f32>(s * n_heads * parts * 2)?; // [S, nh, parts, 2]
            let mut tmp_acc = dev.stream.alloc_zeros::<f32>(s * n_heads * parts * hd)?; // [S, nh, parts, hd]
            let (pl, np) = (i32_of(part_len)?, i32_of(parts)?);
            let mut b = dev
                .stream
                .launch_builder(dev.func("paged_attention_decode_split"));
            b.arg(&mut tmp_ml)
                .arg(&mut tmp_acc)
                .arg(q)
                .arg(&k_cache)
                .arg(&v_cache)
                .arg(&batch.block_tables)
                .arg(&batch.context_lens)
                .arg(&batch.query_starts)
                .arg(&qs)
                .arg(&nh)
                .arg(&nk)
                .arg(&d)
                .arg(&bs)
                .arg(&mb)
                .arg(&scale)
                .arg(&pl);
            // SAFETY: grid (n_heads, S, parts); partition z reads positions
            // [z * part_len, min(.., context_len)) through the validated table and writes
            // entry (s, h, z) of the scratch buffers sized S * n_heads * parts above.
            unsafe { b.launch(cfg((n_heads, s, parts), ATTN_THREADS)?) }?;
            let mut r = dev
                .stream
                .launch_builder(dev.func("paged_attention_decode_reduce"));
            r.arg(out)
                .arg(&tmp_ml)
                .arg(&tmp_acc)
                .arg(&batch.query_starts)
                .arg(&nh)
                .arg(&d)
                .arg(&np);
            // SAFETY: grid (n_heads, S); reads the `parts` partials of (s, h) written above and
            // writes out[query_starts[s], h, :] (rows < T, validated).
            unsafe { r.launch(cfg((n_heads, s, 1), ATTN_THREADS)?) }?;
        }
    }
    Ok(())
}
