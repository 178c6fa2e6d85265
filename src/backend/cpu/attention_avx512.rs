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

/// `H` heads of `NV * 16` dims from `qh` -> `oh`, over all positions of `c`.
#[inline(always)]
unsafe fn heads<T: Load16, const NV: usize, const H: usize>(
    qh: *const f32,
    c: &ItemCtx<'_, T>,
    oh: *mut f32,
) {
    let (hd, bs) = (c.hd, c.bs);
    // SAFETY (whole body): qh/oh hold H * hd floats; every position < n maps through the
    // table to a (block, KV head) tile of hd * bs floats inside kc and vc (caller).
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); NV]; H];
        let mut m = [f32::NEG_INFINITY; H];
        let mut l = [0f32; H];
        let mut pbuf = [[0f32; 16]; H];
        let mut p0 = 0;
        while p0 < c.n {
            let tile = c.tile_at(p0);
            let off = p0 % bs;
            // The next chunk's K and V (2 KiB each at hd 64, block 16) sit wherever the
            // block table says, so the prefetchers would start cold on each: ask for them now.
            if p0 + 16 < c.n {
                let (nt, no) = (c.tile_at(p0 + 16), (p0 + 16) % bs);
                let nk = c.kc.as_ptr().add(nt + no) as *const i8;
                let nv = c.vc.as_ptr().add(nt + no * hd) as *const i8;
                // K rows of the chunk span (hd - 1) * bs + 16 values; V rows 16 * hd.
                for line in (0..((hd - 1) * bs + 16) * size_of::<T>()).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T0>(nk.wrapping_add(line));
                }
                for line in (0..16 * hd * size_of::<T>()).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T0>(nv.wrapping_add(line));
                }
            }
            let valid = (c.n - p0).min(16);
            let mask: __mmask16 = if valid == 16 {
                0xffff
            } else {
                (1u16 << valid) - 1
            };
            // Scores: two partial sums per head (even / odd dims) for independent chains.
            let kt = c.kc.as_ptr().add(tile + off);
            let mut s = [[_mm512_setzero_ps(); 2]; H];
            for d in (0..hd).step_by(2) {
                let k0 = T::load16(kt.add(d * bs));
                let k1 = T::load16(kt.add((d + 1) * bs));
                for (j, sj) in s.iter_mut().enumerate() {
                    let q = qh.add(j * hd + d);
                    sj[0] = _mm512_fmadd_ps(_mm512_set1_ps(*q), k0, sj[0]);
                    sj[1] = _mm512_fmadd_ps(_mm512_set1_ps(*q.add(1)), k1, sj[1]);
                }
            }
            for j in 0..H {
                let sc = _mm512_mul_ps(_mm512_add_ps(s[j][0], s[j][1]), _mm512_set1_ps(c.scale));
                let sc = _mm512_mask_blend_ps(mask, _mm512_set1_ps(f32::NEG_INFINITY), sc);
                let mn = m[j].max(_mm512_reduce_max_ps(sc));
                let corr = super::super::simd::exp(m[j] - mn);
                let p = _mm512_maskz_mov_ps(
                    mask,
                    super::super::simd::exp16(_mm512_sub_ps(sc, _mm512_set1_ps(mn))),
                );
                l[j] = l[j] * corr + _mm512_reduce_add_ps(p);
                m[j] = mn;
                let cv = _mm512_set1_ps(corr);
                for a in acc[j].iter_mut() {
                    *a = _mm512_mul_ps(*a, cv);
                }
                _mm512_storeu_ps(pbuf[j].as_mut_ptr(), p);
            }
            let vt = c.vc.as_ptr().add(tile + off * hd);
            for t in 0..valid {
                let vr = vt.add(t * hd);
                let v: [__m512; NV] = std::array::from_fn(|i| T::load16(vr.add(16 * i)));
                for (aj, pj) in acc.iter_mut().zip(&pbuf) {
                    let w = _mm512_set1_ps(pj[t]);
                    for (a, vi) in aj.iter_mut().zip(&v) {
                        *a = _mm512_fmadd_ps(w, *vi, *a);
                    }
                }
            }
            p0 += valid;
        }
        for j in 0..H {
            let inv = _mm512_set1_ps(1.0 / l[j]);
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
    let mut j = 0;
    while j < g {
        let h = (g - j).min(max_h);
        let (qh, oh) = (qg[j * c.hd..].as_ptr(), out[j * c.hd..].as_mut_ptr());
        // SAFETY: heads j..j+h exist in qg and out; forwarded contract for the cache.
        unsafe {
            match h {
                1 => heads::<T, NV, 1>(qh, c, oh),
                2 => heads::<T, NV, 2>(qh, c, oh),
                3 => heads::<T, NV, 3>(qh, c, oh),
                _ => heads::<T, NV, 4>(qh, c, oh),
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
