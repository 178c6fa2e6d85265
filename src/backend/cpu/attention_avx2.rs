//! AVX2+FMA version of `attend_one` (one query row against its sequence's cached keys and
//! values through the block table) for head dims that are multiples of 16. The generic twin in
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

/// # Safety
/// AVX2 and FMA present; `qv.len() % 16 == 0`; every slot reached through `table` for
/// positions `0..=pos` lies inside `kc`/`vc` (`[slots, nkv, hd]`).
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn attend_one(
    qv: &[f32],
    kc: &[f32],
    vc: &[f32],
    table: &[u32],
    pos: usize,
    kvh: usize,
    nkv: usize,
    bs: usize,
    scale: f32,
) -> Vec<f32> {
    let hd = qv.len();
    let q = qv.as_ptr();
    let row = |p: usize| (table[p / bs] as usize * bs + p % bs) * nkv + kvh;
    // Scratch: pos + 1 scores, one output row of hd floats.
    let mut scores = Vec::with_capacity(pos + 1);
    let mut max = f32::NEG_INFINITY;
    for p in 0..=pos {
        let off = row(p) * hd;
        debug_assert!(off + hd <= kc.len());
        // SAFETY: off + hd <= kc.len() by the caller's contract; hd % 16 == 0.
        let d = unsafe {
            let k = kc.as_ptr().add(off);
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
        } * scale;
        max = max.max(d);
        scores.push(d);
    }
    let mut denom = 0f32;
    for s in &mut scores {
        *s = crate::backend::cpu::simd::exp(*s - max);
        denom += *s;
    }
    let inv = 1.0 / denom;
    let mut acc = vec![0f32; hd];
    let a = acc.as_mut_ptr();
    for (p, &s) in scores.iter().enumerate() {
        let off = row(p) * hd;
        // SAFETY: as above for vc; acc has hd floats.
        unsafe {
            let w = _mm256_set1_ps(s * inv);
            let v = vc.as_ptr().add(off);
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
    acc
}
