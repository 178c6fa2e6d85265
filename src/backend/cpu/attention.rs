//! Paged KV cache in host memory, `reshape_and_cache` (write new K/V into their slots) and
//! causal paged attention over block tables — the CPU twins of the CUDA kernels.
//!
//! Layout of one layer's cache (K and V alike), f32:
//!
//! ```text
//!  [num_blocks, block_size, n_kv_heads, head_dim]
//!  slot s = block_id * block_size + offset   ->  K[s, h, :] at (s * n_kv_heads + h) * head_dim
//!  token at position p of a sequence lives in slot table[p / block_size] * block_size
//!                                                    + p % block_size
//! ```
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
    /// Per layer `(K, V)`, each `[num_blocks, block_size, n_kv_heads, head_dim]`.
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

    pub fn layer(&self, l: usize) -> (&[f32], &[f32]) {
        let (k, v) = &self.layers[l];
        (k, v)
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

    /// Write `k, v [T, n_kv_heads, head_dim]` of layer `l` into `slots [T]`.
    pub fn reshape_and_cache(&mut self, l: usize, k: &[f32], v: &[f32], slots: &[usize]) {
        let row = self.n_kv_heads * self.head_dim;
        let (kc, vc) = &mut self.layers[l];
        for (t, &s) in slots.iter().enumerate() {
            kc[s * row..(s + 1) * row].copy_from_slice(&k[t * row..(t + 1) * row]);
            vc[s * row..(s + 1) * row].copy_from_slice(&v[t * row..(t + 1) * row]);
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

/// Dot product with 16 independent lanes, so the compiler vectorizes it (a plain iterator
/// sum is one serial add chain: ~4 cycles per element).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    // Pairwise tree (16 -> 8 -> 4 -> 2 -> 1): element-wise steps the compiler vectorizes, where
    // `iter().sum()` would be 15 dependent scalar adds per score.
    let mut w = 16;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            acc[i] += acc[i + w];
        }
    }
    let mut s = acc[0];
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[path = "attention_avx2.rs"]
mod avx2;

/// The query heads `qg [g, hd]` of one KV head: the AVX2 group kernel when available and
/// `hd % 16 == 0`, else the generic kernel head by head. Returns `[g, hd]`.
#[allow(clippy::too_many_arguments)]
fn attend(
    qg: &[f32],
    hd: usize,
    kc: &[f32],
    vc: &[f32],
    table: &[u32],
    pos: usize,
    kvh: usize,
    nkv: usize,
    bs: usize,
    scale: f32,
) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if hd.is_multiple_of(16) && super::simd::has_avx2() {
        // SAFETY: AVX2/FMA present, hd % 16 == 0, qg is [g, hd], and slots come from the
        // sequence's own block table, whose blocks lie inside the cache.
        return unsafe { avx2::attend_group(qg, hd, kc, vc, table, pos, kvh, nkv, bs, scale) };
    }
    qg.chunks_exact(hd)
        .flat_map(|qv| attend_one(qv, kc, vc, table, pos, kvh, nkv, bs, scale))
        .collect()
}

crate::multiversion! {
    /// One query vector against cache positions `0..=pos` of KV head `kvh` through `table`:
    /// softmax(q.K^T * scale) V. Scratch: `pos + 1` scores and one output row.
    #[allow(clippy::too_many_arguments)]
    pub fn attend_one(
        qv: &[f32],
        kc: &[f32],
        vc: &[f32],
        table: &[u32],
        pos: usize,
        kvh: usize,
        nkv: usize,
        bs: usize,
        scale: f32
    ) -> Vec<f32> {
        let hd = qv.len();
        let mut scores = Vec::with_capacity(pos + 1);
        let mut max = f32::NEG_INFINITY;
        for p in 0..=pos {
            let slot = table[p / bs] as usize * bs + p % bs;
            let kv = &kc[(slot * nkv + kvh) * hd..(slot * nkv + kvh + 1) * hd];
            let d = dot(qv, kv) * scale;
            max = max.max(d);
            scores.push(d);
        }
        let mut denom = 0f32;
        for sc in &mut scores {
            *sc = super::simd::exp(*sc - max);
            denom += *sc;
        }
        let mut acc = vec![0f32; hd];
        for (p, &w) in scores.iter().enumerate() {
            let slot = table[p / bs] as usize * bs + p % bs;
            let vv = &vc[(slot * nkv + kvh) * hd..(slot * nkv + kvh + 1) * hd];
            let w = w / denom;
            for (a, &b) in acc.iter_mut().zip(vv) {
                *a += w * b;
            }
        }
        acc
    }
}

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
    let outs: Vec<(usize, Vec<f32>)> = items
        .par_iter()
        .with_min_len(min_len)
        .map(|&(si, i, kvh)| {
            let s = &seqs[si];
            let t = s.query_start + i;
            let off = (t * n_heads + kvh * group) * hd;
            let qg = &q[off..off + group * hd];
            let pos = s.context_len - s.query_len + i;
            (
                off,
                attend(qg, hd, kc, vc, s.block_table, pos, kvh, nkv, bs, scale),
            )
        })
        .collect();
    for (off, acc) in outs {
        out[off..off + acc.len()].copy_from_slice(&acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention over a scattered block table equals dense causal attention.
    #[test]
    fn paged_equals_dense() {
        let (hd, nkv, nh, bs) = (4, 1, 2, 2);
        let mut cache = CpuKvCache::new(1, 8, bs, nkv, hd);
        let len = 5;
        let k: Vec<f32> = (0..len * hd)
            .map(|i| ((i * 7) % 5) as f32 * 0.3 - 0.5)
            .collect();
        let v: Vec<f32> = (0..len * hd).map(|i| ((i * 3) % 7) as f32 * 0.2).collect();
        let table = [6u32, 2, 5];
        let slots: Vec<usize> = (0..len)
            .map(|p| table[p / bs] as usize * bs + p % bs)
            .collect();
        cache.reshape_and_cache(0, &k, &v, &slots);
        let q: Vec<f32> = (0..len * nh * hd)
            .map(|i| ((i * 5) % 9) as f32 * 0.1 - 0.4)
            .collect();
        let mut out = vec![f32::NAN; len * nh * hd];
        let seqs = [AttnSeq {
            query_start: 0,
            query_len: len,
            context_len: len,
            block_table: &table,
        }];
        paged_attention(&cache, 0, &q, nh, &seqs, 0.5, &mut out);
        for t in 0..len {
            for h in 0..nh {
                let qv = &q[(t * nh + h) * hd..][..hd];
                let sc: Vec<f64> = (0..=t)
                    .map(|p| {
                        qv.iter()
                            .zip(&k[p * hd..][..hd])
                            .map(|(a, b)| (a * b) as f64)
                            .sum::<f64>()
                            * 0.5
                    })
                    .collect();
                let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|s| (s - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..hd {
                    let want: f64 = (0..=t).map(|p| e[p] / z * v[p * hd + d] as f64).sum();
                    let got = out[(t * nh + h) * hd + d] as f64;
                    assert!(
                        (got - want).abs() < 1e-5,
                        "t={t} h={h} d={d}: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// The AVX2 kernel (hd % 16 == 0) agrees with the generic one.
    #[test]
    fn avx2_attend_matches_generic() {
        let (hd, nkv, bs) = (64, 2, 16);
        let slots = 5 * bs;
        let k: Vec<f32> = (0..slots * nkv * hd)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let v: Vec<f32> = (0..slots * nkv * hd)
            .map(|i| ((i * 104729) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let table = [3u32, 1, 4];
        // Three query heads sharing KV head 1 (GQA group of 3).
        let qg: Vec<f32> = (0..3 * hd).map(|i| (i as f32 * 0.37).sin()).collect();
        for pos in [0, 15, 16, 40] {
            let a = attend(&qg, hd, &k, &v, &table, pos, 1, nkv, bs, 0.125);
            assert_eq!(a.len(), 3 * hd);
            for (j, qv) in qg.chunks_exact(hd).enumerate() {
                let b = attend_one(qv, &k, &v, &table, pos, 1, nkv, bs, 0.125);
                for (x, y) in a[j * hd..(j + 1) * hd].iter().zip(&b) {
                    assert!((x - y).abs() < 1e-5, "pos {pos} head {j}: {x} vs {y}");
                }
            }
        }
    }

    #[test]
    fn copy_block_copies_every_layer() {
        let mut c = CpuKvCache::new(2, 3, 2, 1, 2);
        c.reshape_and_cache(1, &[1.0, 2.0], &[3.0, 4.0], &[2]);
        c.copy_block(1, 2);
        assert_eq!(&c.layer(1).0[8..10], &[1.0, 2.0]);
        assert_eq!(&c.layer(1).1[8..10], &[3.0, 4.0]);
    }
}
