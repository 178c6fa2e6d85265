//! Paged KV cache in host memory, `reshape_and_cache` (write new K/V into their slots) and
//! causal paged attention over block tables — the CPU twins of the CUDA kernels.
//!
//! Layout of one layer's cache, f32, block-major and head-major inside a block:
//!
//! ```text
//!  K: [num_blocks, n_kv_heads, head_dim, block_size]   (transposed: a row of 16 positions
//!                                                        per dimension, so q.K for 16
//!                                                        positions is 16-lane FMAs)
//!  V: [num_blocks, n_kv_heads, block_size, head_dim]
//!  token at position p of a sequence lives in block table[p / block_size], offset
//!  p % block_size
//! ```
//!
//! Attention for one (sequence, query token, KV head) item walks the positions in chunks of
//! 16 with an online softmax (running max and sum, the accumulators rescaled when the max
//! grows), all query heads of the GQA group together so each K/V row is read once per
//! group. Items are independent and each is computed the same way whatever else is in the
//! batch, so batching never changes a result.
//!
//! Memory: `2 * num_layers * num_blocks * block_size * n_kv_heads * head_dim * 4` bytes,
//! fixed at construction from the KV memory budget; block 0 is the null block (never written
//! by a valid batch, used as table padding).

use rayon::prelude::*;

/// Host KV cache for all layers.
pub struct CpuKvCache {
    pub block_size: usize,
    pub num_blocks: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Per layer `(K, V)` in the module header's layouts.
    layers: Vec<(Vec<f32>, Vec<f32>)>,
}

impl CpuKvCache {
    pub fn new(
        num_layers: usize,
        num_blocks: usize,
        block_size: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> Self {
        let n = num_blocks * block_size * n_kv_heads * head_dim;
        let layers = (0..num_layers)
            .map(|_| (vec![0f32; n], vec![0f32; n]))
            .collect();
        CpuKvCache {
            block_size,
            num_blocks,
            n_kv_heads,
            head_dim,
            layers,
        }
    }

    /// Bytes one block costs across all layers (K and V).
    pub fn bytes_per_block(
        num_layers: usize,
        block_size: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> usize {
        2 * num_layers * block_size * n_kv_heads * head_dim * std::mem::size_of::<f32>()
    }

    /// Layer `l`'s `(K, V)` in the header's layouts.
    pub fn layer(&self, l: usize) -> (&[f32], &[f32]) {
        let (k, v) = &self.layers[l];
        (k, v)
    }

    /// Floats of one (block, KV head) tile: `head_dim * block_size`.
    fn tile(&self) -> usize {
        self.head_dim * self.block_size
    }

    /// Copy block `src` to block `dst` in every layer (copy-on-write of a shared block).
    pub fn copy_block(&mut self, src: u32, dst: u32) {
        let bl = self.block_size * self.n_kv_heads * self.head_dim;
        let (s, d) = (src as usize * bl, dst as usize * bl);
        for (k, v) in &mut self.layers {
            k.copy_within(s..s + bl, d);
            v.copy_within(s..s + bl, d);
        }
    }

    /// Write `k, v [T, n_kv_heads, head_dim]` of layer `l` into `slots [T]`
    /// (slot = block * block_size + offset).
    pub fn reshape_and_cache(&mut self, l: usize, k: &[f32], v: &[f32], slots: &[usize]) {
        let (bs, hd, nkv) = (self.block_size, self.head_dim, self.n_kv_heads);
        let tile = self.tile();
        let (kc, vc) = &mut self.layers[l];
        for (t, &s) in slots.iter().enumerate() {
            let (blk, off) = (s / bs, s % bs);
            for h in 0..nkv {
                let base = (blk * nkv + h) * tile;
                let src = (t * nkv + h) * hd;
                for d in 0..hd {
                    kc[base + d * bs + off] = k[src + d];
                }
                vc[base + off * hd..base + (off + 1) * hd].copy_from_slice(&v[src..src + hd]);
            }
        }
    }
}

/// One sequence's part of a batch, as seen by attention.
#[derive(Debug, Clone)]
pub struct AttnSeq<'a> {
    /// First row of this sequence's query tokens in the batch.
    pub query_start: usize,
    pub query_len: usize,
    /// Tokens in the cache after this step's writes; query `i` sits at position
    /// `context_len - query_len + i` and attends to positions `0..=` that.
    pub context_len: usize,
    pub block_table: &'a [u32],
}

/// What one item reads: the layer's cache, a block table and the context length.
pub struct ItemCtx<'a> {
    pub kc: &'a [f32],
    pub vc: &'a [f32],
    pub table: &'a [u32],
    /// Positions attended: `0..n`.
    pub n: usize,
    pub kvh: usize,
    pub nkv: usize,
    pub bs: usize,
    pub hd: usize,
    pub scale: f32,
}

impl ItemCtx<'_> {
    /// Offset of the (block, KV head) tile holding position `p`.
    #[inline(always)]
    fn tile_at(&self, p: usize) -> usize {
        (self.table[p / self.bs] as usize * self.nkv + self.kvh) * self.hd * self.bs
    }
}

crate::multiversion! {
    /// The portable kernel: query heads `qg [g, hd]` of one KV head -> `out [g, hd]`, head
    /// by head, softmax(q.K^T * scale) V with a two-pass softmax. Scratch: `n` scores.
    pub fn attend_generic(qg: &[f32], c: &ItemCtx<'_>, out: &mut [f32]) {
        let (hd, bs) = (c.hd, c.bs);
        let mut scores = vec![0f32; c.n];
        for (qv, o) in qg.chunks_exact(hd).zip(out.chunks_exact_mut(hd)) {
            let mut max = f32::NEG_INFINITY;
            for (p, sc) in scores.iter_mut().enumerate() {
                let kt = &c.kc[c.tile_at(p) + p % bs..];
                let mut d = 0f32;
                for (j, q) in qv.iter().enumerate() {
                    d += q * kt[j * bs];
                }
                *sc = d * c.scale;
                max = max.max(*sc);
            }
            let mut denom = 0f32;
            for sc in scores.iter_mut() {
                *sc = super::simd::exp(*sc - max);
                denom += *sc;
            }
            o.fill(0.0);
            for (p, &w) in scores.iter().enumerate() {
                let vt = &c.vc[c.tile_at(p) + (p % bs) * hd..][..hd];
                let w = w / denom;
                for (a, &b) in o.iter_mut().zip(vt) {
                    *a += w * b;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[path = "attention_avx512.rs"]
mod avx512;

/// One item with the fastest kernel for this CPU and shape.
fn attend(qg: &[f32], c: &ItemCtx<'_>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx512::supports(c.hd, c.bs) {
        // SAFETY: AVX-512F present and the shape is supported (checked); qg and out are
        // [g, hd]; every position < n maps through the table to a block inside the cache.
        unsafe { avx512::attend(qg, c, out) };
        return;
    }
    attend_generic(qg, c, out)
}

/// Raw output pointer shared by items that write disjoint rows.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: items write disjoint ranges of `out`; see `paged_attention`.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Causal paged attention. `q [T, n_heads, hd]` -> `out [T, n_heads, hd]`, with K/V read
/// from `cache` layer `l` through each sequence's block table. GQA: query head `h` reads
/// KV head `h / (n_heads / n_kv_heads)`.
pub fn paged_attention(
    cache: &CpuKvCache,
    l: usize,
    q: &[f32],
    n_heads: usize,
    seqs: &[AttnSeq<'_>],
    scale: f32,
    out: &mut [f32],
) {
    let hd = cache.head_dim;
    let nkv = cache.n_kv_heads;
    let group = n_heads / nkv;
    let bs = cache.block_size;
    let (kc, vc) = cache.layer(l);
    assert_eq!(out.len(), q.len(), "paged_attention: out and q shapes");
    // Work items: (sequence, query token, KV head); each writes the disjoint rows
    // out[t, kvh * group .. (kvh + 1) * group, :] and reads each K/V row once for the group.
    let mut items: Vec<(usize, usize, usize)> = Vec::new();
    for (si, s) in seqs.iter().enumerate() {
        for i in 0..s.query_len {
            for kvh in 0..nkv {
                items.push((si, i, kvh));
            }
        }
    }
    // Items per task: 4 keeps short contexts from paying a task per item; when one item reads
    // many K/V rows (one long sequence decoding has only n_kv_heads items), each item is its
    // own task so both cores share it.
    let rows: usize = seqs.iter().map(|s| s.context_len * s.query_len).sum();
    let per_item = rows * group * hd / items.len().max(1);
    let min_len = if per_item >= 1 << 15 { 1 } else { 4 };
    let dst = OutPtr(out.as_mut_ptr());
    items
        .par_iter()
        .with_min_len(min_len)
        .for_each(|&(si, i, kvh)| {
            let s = &seqs[si];
            let t = s.query_start + i;
            let off = (t * n_heads + kvh * group) * hd;
            let c = ItemCtx {
                kc,
                vc,
                table: s.block_table,
                n: s.context_len - s.query_len + i + 1,
                kvh,
                nkv,
                bs,
                hd,
                scale,
            };
            let d = dst;
            // SAFETY: item (t, kvh) owns out[off..off + group * hd] (distinct items have
            // distinct (t, kvh)); out has q.len() floats and outlives the parallel loop.
            let o = unsafe { std::slice::from_raw_parts_mut(d.0.add(off), group * hd) };
            attend(&q[off..off + group * hd], &c, o);
        });
}

#[cfg(test)]
#[path = "attention_tests.rs"]
mod tests;
