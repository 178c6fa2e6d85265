//! The AVX-512 activation quantizers of the integer GEMM (`matmul/q8.rs`): one row, or 16
//! rows at once straight into the AMX tile layout. Both give exactly the scalar
//! `quantize_row`'s values at either precision (tested in `q8/tests.rs`).

use std::arch::x86_64::*;

use super::super::{ActBits, RowOut, LO, QMAX};
#[cfg(doc)]
use super::available;

/// The definition's q of the products `p = x / d` (NaN lanes masked off by `ordered`):
/// rounded to nearest-even by `vcvtps2dq`; 8-bit: `p / 16` rounded, times 16.
#[inline(always)]
unsafe fn round_q(p: __m512, ordered: __mmask16, bits: ActBits) -> __m512i {
    // SAFETY: register-only AVX-512F operations (enabled by the caller).
    unsafe {
        if bits == ActBits::Eight {
            let q = _mm512_maskz_cvtps_epi32(ordered, _mm512_mul_ps(p, _mm512_set1_ps(0.0625)));
            let q = _mm512_min_epi32(
                _mm512_max_epi32(q, _mm512_set1_epi32(-127)),
                _mm512_set1_epi32(127),
            );
            _mm512_slli_epi32(q, 4)
        } else {
            let q = _mm512_maskz_cvtps_epi32(ordered, p);
            _mm512_min_epi32(
                _mm512_max_epi32(q, _mm512_set1_epi32(-QMAX)),
                _mm512_set1_epi32(QMAX),
            )
        }
    }
}

/// One row of `quantize`: the scalar `quantize_row`'s arithmetic (`amax / 2032`, its
/// reciprocal, products rounded to nearest-even by `vcvtps2dq`, NaN products to 0).
///
/// # Safety
/// [`available`] is true; the planes have `x.len()` bytes, the scale slices `x.len() / 32`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn quantize_row(x: &[f32], r: RowOut<'_>, bits: ActBits) {
    let abs_mask = _mm512_set1_epi32(0x7fff_ffff);
    let c128 = _mm512_set1_epi32(8);
    for b in 0..x.len() / 32 {
        // SAFETY: b * 32 + 32 <= x.len() and the planes' lengths; b < the scale slices.
        unsafe {
            let xp = x.as_ptr().add(b * 32);
            let v = [_mm512_loadu_ps(xp), _mm512_loadu_ps(xp.add(16))];
            let abs =
                |v: __m512| _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), abs_mask));
            let amax = _mm512_reduce_max_ps(_mm512_max_ps(abs(v[0]), abs(v[1])));
            let d = amax / QMAX as f32;
            let id = _mm512_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
            let mut s = _mm512_setzero_si512();
            let mut s0 = 0;
            for (h, &vh) in v.iter().enumerate() {
                let p = _mm512_mul_ps(vh, id);
                let q = round_q(p, _mm512_cmp_ps_mask::<_CMP_ORD_Q>(p, p), bits);
                if h == 0 {
                    s0 = _mm512_reduce_add_epi32(q);
                }
                s = _mm512_add_epi32(s, q);
                let hi = _mm512_srai_epi32(_mm512_add_epi32(q, c128), 4);
                let lo = _mm512_sub_epi32(q, _mm512_slli_epi32(hi, 4));
                let at = b * 32 + h * 16;
                _mm_storeu_si128(
                    r.hi.as_mut_ptr().add(at) as *mut __m128i,
                    _mm512_cvtepi32_epi8(hi),
                );
                _mm_storeu_si128(
                    r.lo.as_mut_ptr().add(at) as *mut __m128i,
                    _mm512_cvtepi32_epi8(lo),
                );
            }
            let s = _mm512_reduce_add_epi32(s);
            r.d[b] = d;
            r.s[b] = s;
            r.s0[b] = s0;
            r.ds[b] = d * s as f32;
        }
    }
}

/// |x| with NaN as 0 (`f32::max` in the definition skips NaN); `abs_mask` = 0x7fff_ffff lanes.
#[inline(always)]
unsafe fn abs_or_zero(x: __m512, abs_mask: __m512i) -> __m512 {
    // SAFETY: register-only AVX-512F operations (enabled by the caller).
    unsafe {
        let a = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), abs_mask));
        _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(x, x), a)
    }
}

/// `out[i]` = the max over the 16 lanes of `v[i]`, for 16 vectors at once (a transpose
/// tree: 46 shuffles and maxes for all 16, where one `reduce_max` is ~8 dependent steps).
#[inline(always)]
unsafe fn reduce16_max(v: [__m512; 16]) -> __m512 {
    // SAFETY: register-only AVX-512F operations (enabled by the caller).
    unsafe {
        let t = crate::unrolled!(|i| {
            let (a, b) = (v[2 * i], v[2 * i + 1]);
            _mm512_max_ps(
                _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
                _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
            )
        }; 0 1 2 3 4 5 6 7);
        let u = crate::unrolled!(|j| {
            let (c, d) = (t[2 * j], t[2 * j + 1]);
            _mm512_max_ps(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(c, d),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(c, d),
            )
        }; 0 1 2 3);
        let w = crate::unrolled!(|l| {
            let (e, f) = (u[2 * l], u[2 * l + 1]);
            _mm512_max_ps(
                _mm512_shuffle_ps::<0b01_00_01_00>(e, f),
                _mm512_shuffle_ps::<0b11_10_11_10>(e, f),
            )
        }; 0 1);
        let z = _mm512_max_ps(
            _mm512_shuffle_ps::<0b10_00_10_00>(w[0], w[1]),
            _mm512_shuffle_ps::<0b11_01_11_01>(w[0], w[1]),
        );
        // Lane 4r + c of z holds vector 4c + r.
        let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        _mm512_permutexvar_ps(idx, z)
    }
}

/// `out[i]` = the sum of the 16 lanes of `v[i]` (i32, exact), for 16 vectors at once.
#[inline(always)]
unsafe fn reduce16_add(v: [__m512i; 16]) -> __m512i {
    // SAFETY: register-only AVX-512F operations (enabled by the caller).
    unsafe {
        let ps = _mm512_castsi512_ps;
        let si = _mm512_castps_si512;
        let t = crate::unrolled!(|i| {
            let (a, b) = (v[2 * i], v[2 * i + 1]);
            _mm512_add_epi32(
                _mm512_shuffle_i32x4::<0b01_00_01_00>(a, b),
                _mm512_shuffle_i32x4::<0b11_10_11_10>(a, b),
            )
        }; 0 1 2 3 4 5 6 7);
        let u = crate::unrolled!(|j| {
            let (c, d) = (t[2 * j], t[2 * j + 1]);
            _mm512_add_epi32(
                _mm512_shuffle_i32x4::<0b10_00_10_00>(c, d),
                _mm512_shuffle_i32x4::<0b11_01_11_01>(c, d),
            )
        }; 0 1 2 3);
        let w = crate::unrolled!(|l| {
            let (e, f) = (ps(u[2 * l]), ps(u[2 * l + 1]));
            _mm512_add_epi32(
                si(_mm512_shuffle_ps::<0b01_00_01_00>(e, f)),
                si(_mm512_shuffle_ps::<0b11_10_11_10>(e, f)),
            )
        }; 0 1);
        let (g, h) = (ps(w[0]), ps(w[1]));
        let z = _mm512_add_epi32(
            si(_mm512_shuffle_ps::<0b10_00_10_00>(g, h)),
            si(_mm512_shuffle_ps::<0b11_01_11_01>(g, h)),
        );
        let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        _mm512_permutexvar_epi32(idx, z)
    }
}

/// One row tile of `quantize`: rows `0..t` (`t <= 16`) of `x` (`[t, k]`) straight into the
/// tile layouts (`planes`: `nb * 1024` bytes, `[d, ds]` and `[s, s0]`: `nb * 16` entries each;
/// rows `t..16` get zeros). Per block the 16 rows are done together, so the per-row reductions (max |x|
/// and the sum of q) and the two divisions are 16-lane operations. Same values as the
/// scalar `quantize_row`.
///
/// # Safety
/// [`available`] is true; `x.len() == t * k`, k % 32 == 0, the outputs have the sizes above.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn quantize_tile(
    x: &[f32],
    t: usize,
    k: usize,
    planes: &mut [i8],
    [d, ds]: [&mut [f32]; 2],
    [s, s0]: [&mut [i32]; 2],
    bits: ActBits,
) {
    let abs_mask = _mm512_set1_epi32(0x7fff_ffff);
    let c128 = _mm512_set1_epi32(8);
    for b in 0..k / 32 {
        // SAFETY (whole body): rows r < t read x[r * k + b * 32..][..32] < x.len(); the
        // writes stay in block b's 1024 plane bytes and 16 scale entries.
        unsafe {
            let v = crate::unrolled!(|r| {
                if r < t {
                    let p = x.as_ptr().add(r * k + b * 32);
                    [_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16))]
                } else {
                    [_mm512_setzero_ps(); 2]
                }
            }; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
            let amax = reduce16_max(crate::unrolled!(|r| {
                _mm512_max_ps(
                    abs_or_zero(v[r][0], abs_mask),
                    abs_or_zero(v[r][1], abs_mask),
                )
            }; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15));
            let dv = _mm512_div_ps(amax, _mm512_set1_ps(QMAX as f32));
            let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(dv, _mm512_setzero_ps());
            let idv = _mm512_maskz_div_ps(pos, _mm512_set1_ps(1.0), dv);
            let mut idr = [0f32; 16];
            _mm512_storeu_ps(idr.as_mut_ptr(), idv);
            let mut firsts = [_mm512_setzero_si512(); 16];
            let sums = crate::unrolled!(|r| {
                let id = _mm512_set1_ps(idr[r]);
                let mut acc = _mm512_setzero_si512();
                for (h, &vh) in v[r].iter().enumerate() {
                    let p = _mm512_mul_ps(vh, id);
                    let q = round_q(p, _mm512_cmp_ps_mask::<_CMP_ORD_Q>(p, p), bits);
                    if h == 0 {
                        firsts[r] = q;
                    }
                    acc = _mm512_add_epi32(acc, q);
                    let qh = _mm512_srai_epi32(_mm512_add_epi32(q, c128), 4);
                    let ql = _mm512_sub_epi32(q, _mm512_slli_epi32(qh, 4));
                    let at = b * 1024 + r * 64 + h * 16;
                    _mm_storeu_si128(
                        planes.as_mut_ptr().add(at) as *mut __m128i,
                        _mm512_cvtepi32_epi8(qh),
                    );
                    _mm_storeu_si128(
                        planes.as_mut_ptr().add(at + LO) as *mut __m128i,
                        _mm512_cvtepi32_epi8(ql),
                    );
                }
                acc
            }; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
            let sv = reduce16_add(sums);
            _mm512_storeu_ps(d.as_mut_ptr().add(b * 16), dv);
            _mm512_storeu_si512(s.as_mut_ptr().add(b * 16) as *mut __m512i, sv);
            _mm512_storeu_si512(
                s0.as_mut_ptr().add(b * 16) as *mut __m512i,
                reduce16_add(firsts),
            );
            _mm512_storeu_ps(
                ds.as_mut_ptr().add(b * 16),
                _mm512_mul_ps(dv, _mm512_cvtepi32_ps(sv)),
            );
        }
    }
}
