//! AVX2+FMA attention for one query token and one KV head (all query heads of its GQA group)
//! against the sequence's cached keys and values through the block table, for head dims that
//! are multiples of 16. The generic twin in
//! `attention.rs` compiles to 4-wide multiplies without FMA contraction; this one keeps two
//! 8-lane FMA chains per dot product and FMAs the value rows.
//!
//! Same contract and result layout as the generic version; tested against it.

use std::arch::x86_64::*;

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// All `g` query heads of one KV head in one pass over the cached rows: each K/V row is
/// loaded once for the whole group (GQA), and each head's arithmetic is in the same order as
/// the single-head kernel. `qg` is `[g, hd]`; returns `[g, hd]`.
///
/// # Safety
/// AVX2 and FMA present; `hd % 16 == 0`; `qg.len() == g * hd`; every slot reached through
/// `table` for positions `0..=pos` lies inside `kc`/`vc` (`[slots, nkv, hd]`).
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn attend_group(
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
    let g = qg.len() / hd;
    let n = pos + 1;
    let row = |p: usize| (table[p / bs] as usize * bs + p % bs) * nkv + kvh;
    // Scratch: g * (pos + 1) scores ([g, n]) and the [g, hd] output.
    let mut scores = vec![0f32; g * n];
    for p in 0..n {
        let off = row(p) * hd;
        debug_assert!(off + hd <= kc.len());
        for j in 0..g {
            // SAFETY: off + hd <= kc.len() by the caller's contract; qg has g * hd floats.
            let d = unsafe {
                let k = kc.as_ptr().add(off);
                let q = qg.as_ptr().add(j * hd);
                let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let mut i = 0;
                while i < hd {
                    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(i)), _mm256_loadu_ps(k.add(i)), a0);
                    a1 = _mm256_fmadd_ps(
                        _mm256_loadu_ps(q.add(i + 8)),
                        _mm256_loadu_ps(k.add(i + 8)),
                        a1,
                    );
                    i += 16;
                }
                hsum(_mm256_add_ps(a0, a1))
            };
            scores[j * n + p] = d * scale;
        }
    }
    let mut inv = vec![0f32; g];
    for (j, sc) in scores.chunks_exact_mut(n).enumerate() {
        let max = sc.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut denom = 0f32;
        for x in sc.iter_mut() {
            *x = crate::backend::cpu::simd::exp(*x - max);
            denom += *x;
        }
        inv[j] = 1.0 / denom;
    }
    let mut acc = vec![0f32; g * hd];
    for p in 0..n {
        let off = row(p) * hd;
        for j in 0..g {
            // SAFETY: as above for vc; acc has g * hd floats.
            unsafe {
                let w = _mm256_set1_ps(scores[j * n + p] * inv[j]);
                let v = vc.as_ptr().add(off);
                let a = acc.as_mut_ptr().add(j * hd);
                let mut i = 0;
                while i < hd {
                    _mm256_storeu_ps(
                        a.add(i),
                        _mm256_fmadd_ps(w, _mm256_loadu_ps(v.add(i)), _mm256_loadu_ps(a.add(i))),
                    );
                    i += 8;
                }
            }
        }
    }
    acc
}
