//! Causal paged attention over block tables — the CPU twin of the CUDA kernel — reading the
//! paged KV cache of `kv_cache.rs` (f16 or f32 elements, K tiles transposed).
//!
//! One (sequence, query token, KV head) item walks the positions in chunks of 16 in two
//! passes (all scores and their max, then exp and the weighted sum of V rows), the query
//! heads of the GQA group together so each K/V row is read once per group. Items are
//! independent and each is computed the same way whatever else is in the batch, so batching
//! never changes a result.

use half::{f16, slice::HalfBitsSliceExt};

use super::kv_cache::Layers;
use rayon::prelude::*;

pub use super::kv_cache::{CpuKvCache, KvDtype, KvElem};

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
pub struct ItemCtx<'a, T> {
    pub kc: &'a [T],
    pub vc: &'a [T],
    pub table: &'a [u32],
    /// Positions attended: `start..n` (`start` > 0 only inside a sliding window).
    pub start: usize,
    pub n: usize,
    pub kvh: usize,
    pub nkv: usize,
    pub bs: usize,
    pub hd: usize,
    pub scale: f32,
}

impl<T> ItemCtx<'_, T> {
    /// Offset of the (block, KV head) tile holding position `p`.
    #[inline(always)]
    fn tile_at(&self, p: usize) -> usize {
        (self.table[p / self.bs] as usize * self.nkv + self.kvh) * self.hd * self.bs
    }
}

/// The portable kernel: query heads `qg [g, hd]` of one KV head -> `out [g, hd]`, head by
/// head, softmax(q.K^T * scale) V with a two-pass softmax. Scores are computed for chunks of
/// up to 16 positions of one block at a time, lane by lane over the transposed K tile, so the
/// loops vectorize (AVX2 through `multiversion!`). Scratch: `n` scores, `hd + 16` floats.
#[inline(always)]
fn attend_portable<T: KvElem>(qg: &[f32], c: &ItemCtx<'_, T>, out: &mut [f32]) {
    let (hd, bs, start) = (c.hd, c.bs, c.start);
    let mut scores = vec![0f32; c.n - start];
    let mut row = vec![0f32; hd];
    let mut kb = [0f32; 16];
    for (qv, o) in qg.chunks_exact(hd).zip(out.chunks_exact_mut(hd)) {
        let mut p0 = start;
        while p0 < c.n {
            let len = (c.n - p0).min(16).min(bs - p0 % bs);
            let kt = c.tile_at(p0) + p0 % bs;
            let mut s = [0f32; 16];
            for (j, &q) in qv.iter().enumerate() {
                T::load(&mut kb[..len], &c.kc[kt + j * bs..kt + j * bs + len]);
                for (sl, &k) in s.iter_mut().zip(&kb[..len]) {
                    *sl += q * k;
                }
            }
            for (sc, &v) in scores[p0 - start..p0 - start + len].iter_mut().zip(&s) {
                *sc = v * c.scale;
            }
            p0 += len;
        }
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut denom = 0f32;
        for sc in scores.iter_mut() {
            *sc = super::simd::exp(*sc - max);
            denom += *sc;
        }
        o.fill(0.0);
        for (i, &w) in scores.iter().enumerate() {
            let p = start + i;
            let at = c.tile_at(p) + (p % bs) * hd;
            T::load(&mut row, &c.vc[at..at + hd]);
            let w = w / denom;
            for (a, &b) in o.iter_mut().zip(&row) {
                *a += w * b;
            }
        }
    }
}

crate::multiversion! {
    /// [`attend_portable`] on an f16 cache (compiled for AVX2 too).
    pub fn attend_portable_f16(qg: &[f32], c: &ItemCtx<'_, f16>, out: &mut [f32]) {
        attend_portable(qg, c, out)
    }
}

crate::multiversion! {
    /// [`attend_portable`] on an f32 cache (compiled for AVX2 too).
    pub fn attend_portable_f32(qg: &[f32], c: &ItemCtx<'_, f32>, out: &mut [f32]) {
        attend_portable(qg, c, out)
    }
}

/// The portable kernel for the cache's element type.
pub trait Portable: KvElem {
    fn attend(qg: &[f32], c: &ItemCtx<'_, Self>, out: &mut [f32]);
}
impl Portable for f16 {
    fn attend(qg: &[f32], c: &ItemCtx<'_, Self>, out: &mut [f32]) {
        attend_portable_f16(qg, c, out)
    }
}
impl Portable for f32 {
    fn attend(qg: &[f32], c: &ItemCtx<'_, Self>, out: &mut [f32]) {
        attend_portable_f32(qg, c, out)
    }
}

#[cfg(target_arch = "x86_64")]
#[path = "attention_avx512.rs"]
mod avx512;

/// A cache element both kernels can read.
#[cfg(target_arch = "x86_64")]
pub trait Elem: Portable + avx512::Load16 {}
#[cfg(target_arch = "x86_64")]
impl<T: Portable + avx512::Load16> Elem for T {}
#[cfg(not(target_arch = "x86_64"))]
pub trait Elem: Portable {}
#[cfg(not(target_arch = "x86_64"))]
impl<T: Portable> Elem for T {}

/// One item with the fastest kernel for this CPU and shape.
fn attend<T: Elem>(qg: &[f32], c: &ItemCtx<'_, T>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if c.start == 0 && avx512::supports(c.hd, c.bs) {
        // SAFETY: AVX-512F and F16C present and the shape is supported (checked); qg and
        // out are [g, hd]; every position < n maps through the table to a block inside the
        // cache.
        unsafe { avx512::attend(qg, c, out) };
        return;
    }
    T::attend(qg, c, out)
}

/// Raw output pointer shared by items that write disjoint rows.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: items write disjoint ranges of `out`; see `paged_attention`.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Causal paged attention. `q [T, n_heads, hd]` -> `out [T, n_heads, hd]`, with K/V read
/// from `cache` layer `l` through each sequence's block table. GQA: query head `h` reads
/// KV head `h / (n_heads / n_kv_heads)`. With a `window`, a token attends to at most that
/// many positions, itself included (those items take the portable kernel).
#[allow(clippy::too_many_arguments)]
pub fn paged_attention(
    cache: &CpuKvCache,
    l: usize,
    q: &[f32],
    n_heads: usize,
    seqs: &[AttnSeq<'_>],
    scale: f32,
    window: Option<usize>,
    out: &mut [f32],
) {
    assert_eq!(out.len(), q.len(), "paged_attention: out and q shapes");
    match &cache.layers {
        Layers::F16(ls) => {
            let kv = (
                ls[l].0.reinterpret_cast::<f16>(),
                ls[l].1.reinterpret_cast::<f16>(),
            );
            run(cache, kv, q, n_heads, seqs, scale, window, out)
        }
        Layers::F32(ls) => run(
            cache,
            (&ls[l].0, &ls[l].1),
            q,
            n_heads,
            seqs,
            scale,
            window,
            out,
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn run<T: Elem>(
    cache: &CpuKvCache,
    (kc, vc): (&[T], &[T]),
    q: &[f32],
    n_heads: usize,
    seqs: &[AttnSeq<'_>],
    scale: f32,
    window: Option<usize>,
    out: &mut [f32],
) {
    let hd = cache.head_dim;
    let nkv = cache.n_kv_heads;
    let group = n_heads / nkv;
    let bs = cache.block_size;
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
            let n = s.context_len - s.query_len + i + 1;
            let c = ItemCtx {
                kc,
                vc,
                table: s.block_table,
                start: window.map_or(0, |w| n.saturating_sub(w)),
                n,
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
