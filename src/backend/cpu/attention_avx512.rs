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
use std::sync::OnceLock;

use super::ItemCtx;

/// Whether this kernel handles `hd` and block size `bs` on this CPU.
pub fn supports(hd: usize, bs: usize) -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    let has = *HAS.get_or_init(|| {
        std::env::var("PONDER_CPU_ISA").map_or(true, |v| v != "avx2")
            && is_x86_feature_detected!("avx512f")
    });
    has && (hd == 64 || hd == 128) && bs.is_multiple_of(16)
}

/// `exp(x)` per lane: the scalar `simd::exp` (x = n ln2 + r, degree-7 polynomial of r, times
/// 2^n; clamped to [-87, 88]).
#[inline(always)]
unsafe fn exp16(x: __m512) -> __m512 {
    // SAFETY: AVX-512F enabled by the caller.
    unsafe {
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(-87.0)),
            _mm512_set1_ps(88.0),
        );
        let n =
            _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(_mm512_fmadd_ps(
                x,
                _mm512_set1_ps(std::f32::consts::LOG2_E),
                _mm512_set1_ps(0.5),
            ));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
        let c = |v: f32| _mm512_set1_ps(v);
        let mut p = c(1.0 / 5040.0);
        for k in [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            p = _mm512_fmadd_ps(p, r, c(k));
        }
        let bits = _mm512_slli_epi32(
            _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)),
            23,
        );
        _mm512_mul_ps(p, _mm512_castsi512_ps(bits))
    }
}

/// `H` heads of `NV * 16` dims from `qh` -> `oh`, over all positions of `c`.
#[inline(always)]
unsafe fn heads<const NV: usize, const H: usize>(qh: *const f32, c: &ItemCtx<'_>, oh: *mut f32) {
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
                let k0 = _mm512_loadu_ps(kt.add(d * bs));
                let k1 = _mm512_loadu_ps(kt.add((d + 1) * bs));
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
                let p = _mm512_maskz_mov_ps(mask, exp16(_mm512_sub_ps(sc, _mm512_set1_ps(mn))));
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
                let v: [__m512; NV] = std::array::from_fn(|i| _mm512_loadu_ps(vr.add(16 * i)));
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

#[target_feature(enable = "avx512f")]
unsafe fn attend_nv<const NV: usize>(qg: &[f32], c: &ItemCtx<'_>, out: &mut [f32]) {
    let g = qg.len() / c.hd;
    let max_h = if NV == 4 { 4 } else { 2 };
    let mut j = 0;
    while j < g {
        let h = (g - j).min(max_h);
        let (qh, oh) = (qg[j * c.hd..].as_ptr(), out[j * c.hd..].as_mut_ptr());
        // SAFETY: heads j..j+h exist in qg and out; forwarded contract for the cache.
        unsafe {
            match h {
                1 => heads::<NV, 1>(qh, c, oh),
                2 => heads::<NV, 2>(qh, c, oh),
                3 => heads::<NV, 3>(qh, c, oh),
                _ => heads::<NV, 4>(qh, c, oh),
            }
        }
        j += h;
    }
}

/// # Safety
/// [`supports`] is true for `c.hd`, `c.bs`; `qg` and `out` are `[g, hd]`; every position
/// `< c.n` maps through `c.table` to a block inside `c.kc` / `c.vc`.
pub unsafe fn attend(qg: &[f32], c: &ItemCtx<'_>, out: &mut [f32]) {
    // SAFETY: forwarded contract.
    unsafe {
        if c.hd == 64 {
            attend_nv::<4>(qg, c, out)
        } else {
            attend_nv::<8>(qg, c, out)
        }
    }
}
