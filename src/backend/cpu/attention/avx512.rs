//! AVX-512 attention for one item (the query heads of one KV head against positions `0..n`),
//! for head dims of 64 or 128 and block sizes that are multiples of 16. Per chunk of 16
//! positions:
//!
//! ```text
//!  s_j   = sum_d q_j[d] * K^T[d][16 positions]      (hd FMAs of a broadcast q value; the
//!                                                    transposed K tile makes it lane-wise)
//!  m'    = max(m, max(s_j)),  p = exp(s_j - m') (0 past n),  l = l e^(m - m') + sum(p)
//!  acc_j = acc_j e^(m - m') + sum_t p[t] V[t]       (hd / 16 FMAs per position)
//!  out_j = acc_j / l
//! ```
//!
//! Up to 4 query heads (2 at hd 128) run in one pass so each K and V row is loaded once for
//! them and the FMA chains interleave; the accumulators stay in registers.

use std::arch::x86_64::*;

use super::ItemCtx;

/// Whether this kernel handles `hd` and block size `bs` on this CPU.
pub fn supports(hd: usize, bs: usize) -> bool {
    super::super::simd::has_avx512()
        && std::arch::is_x86_feature_detected!("f16c")
        && (hd == 64 || hd == 128)
        && bs.is_multiple_of(16)
}

/// 16 cache values at a pointer, as f32.
pub trait Load16: Sized {
    /// # Safety
    /// 16 readable values at `p`; AVX-512F and F16C enabled by the caller.
    unsafe fn load16(p: *const Self) -> __m512;
}

impl Load16 for f32 {
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> __m512 {
        // SAFETY: caller's contract.
        unsafe { _mm512_loadu_ps(p) }
    }
}

impl Load16 for half::f16 {
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> __m512 {
        // SAFETY: caller's contract (32 bytes).
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
    }
}

/// Chunks prefetched ahead of the one being computed.
const AHEAD: usize = 3;

/// Prefetches the K and V rows of the 16-position chunk at `p` into L1.
///
/// # Safety
/// SSE enabled (every x86-64 CPU); prefetches are hints and never fault, so any `p` whose
/// block is in the table is fine.
#[inline(always)]
unsafe fn prefetch_chunk<T>(c: &ItemCtx<'_, T>, p: usize) {
    let (hd, bs) = (c.hd, c.bs);
    let (nt, no) = (c.tile_at(p), p % bs);
    let nk = c.kc.as_ptr().wrapping_add(nt + no) as *const i8;
    let nv = c.vc.as_ptr().wrapping_add(nt + no * hd) as *const i8;
    // K rows of the chunk span (hd - 1) * bs + 16 values; V rows 16 * hd.
    // SAFETY: prefetch hints (caller's contract).
    unsafe {
        for line in (0..((hd - 1) * bs + 16) * size_of::<T>()).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(nk.wrapping_add(line));
        }
        for line in (0..16 * hd * size_of::<T>()).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(nv.wrapping_add(line));
        }
    }
}

/// `H` heads of `NV * 16` dims from `qh` -> `oh`, over all positions of `c`, in two
/// passes: scores of every 16-position chunk (kept in `scores`, a running max per lane), then
/// `exp(score - max)` and the weighted sum of V rows. No per-chunk reductions or rescaling.
///
/// # Safety
/// `qh`/`oh` hold `H * hd` floats; every position `< c.n` maps through the table to a tile
/// inside `c.kc` / `c.vc`; `scores` holds `H * n.next_multiple_of(16)` floats; AVX-512F and
/// F16C enabled by the caller.
#[inline(always)]
unsafe fn heads<T: Load16, const NV: usize, const H: usize>(
    qh: *const f32,
    c: &ItemCtx<'_, T>,
    oh: *mut f32,
    scores: &mut [f32],
) {
    let (hd, bs) = (c.hd, c.bs);
    let np = c.n.next_multiple_of(16);
    // SAFETY (whole body): as the contract above; chunk offsets stay inside their tiles.
    unsafe {
        let mask_of = |p0: usize| -> __mmask16 {
            let valid = (c.n - p0).min(16);
            if valid == 16 {
                0xffff
            } else {
                (1u16 << valid) - 1
            }
        };
        // Pass 1: scores (masked lanes -inf) and a running max per lane.
        let mut mx = [_mm512_set1_ps(f32::NEG_INFINITY); H];
        for p0 in (0..c.n).step_by(16) {
            // K and V of the chunk AHEAD on sit wherever the block table says: prefetch them.
            let first = if p0 == 0 { 1 } else { AHEAD };
            for ahead in first..=AHEAD {
                let pn = p0 + 16 * ahead;
                if pn >= c.n {
                    break;
                }
                prefetch_chunk(c, pn);
            }
            let kt = c.kc.as_ptr().add(c.tile_at(p0) + p0 % bs);
            // Two partial sums per head (even / odd dims): independent FMA chains.
            let mut sv = [[_mm512_setzero_ps(); 2]; H];
            for d in (0..hd).step_by(2) {
                let k0 = T::load16(kt.add(d * bs));
                let k1 = T::load16(kt.add((d + 1) * bs));
                for (j, sj) in sv.iter_mut().enumerate() {
                    let q = qh.add(j * hd + d);
                    sj[0] = _mm512_fmadd_ps(_mm512_set1_ps(*q), k0, sj[0]);
                    sj[1] = _mm512_fmadd_ps(_mm512_set1_ps(*q.add(1)), k1, sj[1]);
                }
            }
            let mask = mask_of(p0);
            for j in 0..H {
                let sc = _mm512_mul_ps(_mm512_add_ps(sv[j][0], sv[j][1]), _mm512_set1_ps(c.scale));
                let sc = _mm512_mask_blend_ps(mask, _mm512_set1_ps(f32::NEG_INFINITY), sc);
                mx[j] = _mm512_max_ps(mx[j], sc);
                _mm512_storeu_ps(scores.as_mut_ptr().add(j * np + p0), sc);
            }
        }
        let m = crate::unrolled!([_mm512_setzero_ps(); H], |j| _mm512_set1_ps(
            _mm512_reduce_max_ps(mx[j])
        ));
        // Pass 2: weights exp(score - max) (0 past n) and the weighted sum of V rows.
        let mut acc = [[_mm512_setzero_ps(); NV]; H];
        let mut lsum = [_mm512_setzero_ps(); H];
        let mut pbuf = [[0f32; 16]; H];
        for p0 in (0..c.n).step_by(16) {
            let mask = mask_of(p0);
            for j in 0..H {
                let sc = _mm512_loadu_ps(scores.as_ptr().add(j * np + p0));
                let p =
                    _mm512_maskz_mov_ps(mask, super::super::simd::exp16(_mm512_sub_ps(sc, m[j])));
                lsum[j] = _mm512_add_ps(lsum[j], p);
                _mm512_storeu_ps(pbuf[j].as_mut_ptr(), p);
            }
            let vt = c.vc.as_ptr().add(c.tile_at(p0) + (p0 % bs) * hd);
            for t in 0..(c.n - p0).min(16) {
                let vr = vt.add(t * hd);
                let v = crate::unrolled!([_mm512_setzero_ps(); NV], |i| T::load16(vr.add(16 * i)));
                for (aj, pj) in acc.iter_mut().zip(&pbuf) {
                    let w = _mm512_set1_ps(pj[t]);
                    for (a, vi) in aj.iter_mut().zip(&v) {
                        *a = _mm512_fmadd_ps(w, *vi, *a);
                    }
                }
            }
        }
        for j in 0..H {
            let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(lsum[j]));
            for (i, a) in acc[j].iter().enumerate() {
                _mm512_storeu_ps(oh.add(j * hd + 16 * i), _mm512_mul_ps(*a, inv));
            }
        }
    }
}

#[target_feature(enable = "avx512f,f16c")]
unsafe fn attend_nv<T: Load16, const NV: usize>(qg: &[f32], c: &ItemCtx<'_, T>, out: &mut [f32]) {
    let g = qg.len() / c.hd;
    let max_h = if NV == 4 { 4 } else { 2 };
    // Scores of up to max_h heads: 4 bytes per head and position (16 KiB at 1,024 positions).
    let mut scores = vec![0f32; max_h * c.n.next_multiple_of(16)];
    let mut j = 0;
    while j < g {
        let h = (g - j).min(max_h);
        let (qh, oh) = (qg[j * c.hd..].as_ptr(), out[j * c.hd..].as_mut_ptr());
        // SAFETY: heads j..j+h exist in qg and out; forwarded contract for the cache.
        unsafe {
            match h {
                1 => heads::<T, NV, 1>(qh, c, oh, &mut scores),
                2 => heads::<T, NV, 2>(qh, c, oh, &mut scores),
                3 => heads::<T, NV, 3>(qh, c, oh, &mut scores),
                _ => heads::<T, NV, 4>(qh, c, oh, &mut scores),
            }
        }
        j += h;
    }
}

/// # Safety
/// [`supports`] is true for `c.hd`, `c.bs`; `qg` and `out` are `[g, hd]`; every position
/// `< c.n` maps through `c.table` to a block inside `c.kc` / `c.vc`.
pub unsafe fn attend<T: Load16>(qg: &[f32], c: &ItemCtx<'_, T>, out: &mut [f32]) {
    // SAFETY: forwarded contract.
    unsafe {
        if c.hd == 64 {
            attend_nv::<T, 4>(qg, c, out)
        } else {
            attend_nv::<T, 8>(qg, c, out)
        }
    }
}
