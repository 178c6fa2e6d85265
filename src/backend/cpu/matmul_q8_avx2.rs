//! AVX2 kernel of the integer GEMM (`matmul_q8.rs`) for CPUs without AVX-512 VNNI (Zen 2/3,
//! most Intel client parts). A Cg16 group is two halves of 8 columns (one 256-bit vector
//! each), done back to back per block. Per quad `vpmaddubsw` multiplies 4 unsigned weight
//! bytes by the 4 broadcast activation bytes of each plane into pairs of i16; for nibble
//! weights (0..15) eight quads' pairs sum to at most 8 * 2 * 15 * 128 = 30,720, so they are added in i16 and widened once
//! (`vpmaddwd` by 1) per block. The integers are exact, so results are bitwise those of the
//! other kernels.
//!
//! Q8_0 bytes (-128..127) would saturate `vpmaddubsw`'s pairs, so each is split into nibbles,
//! `c = 16 (ch + 8) + cl - 128` with `ch + 8` and `cl` in 0..15: two nibble passes, and
//! `S = 16 (16 A_hi + B_hi) + 16 A_lo + B_lo - 128 s`.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::{Out, QActs, RowOut, QMAX};
use crate::backend::dtype::GgmlType;
use crate::backend::packed::{GroupLayout, GROUP};
use crate::backend::tensor::QMatrix;

pub fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

/// Half of a group-block's quads: eight vectors of 8 columns x 4 bytes.
type Quads = [__m256i; 8];

/// Nibble chunks of half `h` at `q` as quads 0..8.
#[inline(always)]
unsafe fn nibbles(q: *const u8, h: usize) -> Quads {
    // SAFETY: 4 x 64 readable bytes at q (caller).
    unsafe {
        let mask = _mm256_set1_epi8(15);
        let mut w = [_mm256_setzero_si256(); 8];
        for c in 0..4 {
            let v = _mm256_loadu_si256(q.add(c * 64 + h * 32) as *const __m256i);
            w[c] = _mm256_and_si256(v, mask);
            w[c + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
        }
        w
    }
}

/// Q8_0 quads of half `h` at `q` split into `(ch + 8, cl)` nibbles.
#[inline(always)]
unsafe fn split_bytes(q: *const u8, h: usize) -> (Quads, Quads) {
    // SAFETY: 8 x 64 readable bytes at q (caller).
    unsafe {
        let (mask, eight) = (_mm256_set1_epi8(15), _mm256_set1_epi8(8));
        let (mut wh, mut wl) = ([_mm256_setzero_si256(); 8], [_mm256_setzero_si256(); 8]);
        for j in 0..8 {
            let v = _mm256_loadu_si256(q.add(j * 64 + h * 32) as *const __m256i);
            wl[j] = _mm256_and_si256(v, mask);
            let u = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
            wh[j] = _mm256_xor_si256(u, eight);
        }
        (wh, wl)
    }
}

/// `sum_j sum_e w_j[col][e] * x[4j + e]` per column (8 x i32): nibble weights only.
#[inline(always)]
unsafe fn quad_dot(w: &Quads, x: *const i8) -> __m256i {
    // SAFETY: 32 readable bytes at x (caller).
    unsafe {
        let x = x as *const i32;
        let mut s = _mm256_setzero_si256();
        for (j, wj) in w.iter().enumerate() {
            let xb = _mm256_set1_epi32(x.add(j).read_unaligned());
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(*wj, xb));
        }
        _mm256_madd_epi16(s, _mm256_set1_epi16(1))
    }
}

/// Both halves of a group against `T` rows from `i`: all blocks folded (`acc[t][h]` holds
/// columns `8h..8h+8` of row `i + t`). Each block's two halves are done back to back, so its
/// cache lines are used whole while they are loaded.
#[inline(always)]
unsafe fn tile<const T: usize>(
    ty: GgmlType,
    gw: *const u8,
    gl: &GroupLayout,
    acts: &QActs,
    i: usize,
) -> [[__m256; 2]; T] {
    let nb = gl.nb;
    let (hi, lo) = (acts.hi_ptr(), acts.lo_ptr());
    // SAFETY (whole body): a whole group at gw; rows i..i+T of acts exist.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; T];
        for b in 0..nb {
            let sp = gw.add(gl.scales(b));
            let qp = gw.add(gl.quants(b));
            // Four blocks ahead (the weights stream from memory at decode).
            let ahead = gw.wrapping_add(gl.quants(b + 4));
            for line in (0..gl.qb).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line) as *const i8);
            }
            for h in 0..2 {
                let dw = _mm256_cvtph_ps(_mm_loadu_si128(sp.add(h * 16) as *const __m128i));
                let mw = if ty == GgmlType::Q4_1 {
                    _mm256_cvtph_ps(_mm_loadu_si128(sp.add(32 + h * 16) as *const __m128i))
                } else {
                    _mm256_setzero_ps()
                };
                let (wa, wb) = match ty {
                    GgmlType::Q8_0 => split_bytes(qp, h),
                    _ => {
                        let w = nibbles(qp, h);
                        (w, w)
                    }
                };
                for (t, at) in acc.iter_mut().enumerate() {
                    let a = &mut at[h];
                    let row = i + t;
                    let xh = hi.add(acts.plane_at(row, b));
                    let xl = lo.add(acts.plane_at(row, b));
                    let blk = acts.at(row, b);
                    let sv = acts.s[blk];
                    let s = match ty {
                        GgmlType::Q8_0 => {
                            let hi = _mm256_add_epi32(
                                _mm256_slli_epi32(quad_dot(&wa, xh), 4),
                                quad_dot(&wb, xh),
                            );
                            let lo = _mm256_add_epi32(
                                _mm256_slli_epi32(quad_dot(&wa, xl), 4),
                                quad_dot(&wb, xl),
                            );
                            let s = _mm256_add_epi32(_mm256_slli_epi32(hi, 4), lo);
                            _mm256_sub_epi32(s, _mm256_set1_epi32(sv << 7))
                        }
                        _ => {
                            let s = _mm256_add_epi32(
                                _mm256_slli_epi32(quad_dot(&wa, xh), 4),
                                quad_dot(&wa, xl),
                            );
                            if ty == GgmlType::Q4_0 {
                                _mm256_sub_epi32(s, _mm256_set1_epi32(sv << 3))
                            } else {
                                s
                            }
                        }
                    };
                    let sc = _mm256_mul_ps(dw, _mm256_set1_ps(acts.d[blk]));
                    *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), sc, *a);
                    if ty == GgmlType::Q4_1 {
                        *a = _mm256_fmadd_ps(mw, _mm256_set1_ps(acts.ds[blk]), *a);
                    }
                }
            }
        }
        acc
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_impl<const TY: u8>(
    acts: &QActs,
    w: &QMatrix,
    bias: Option<&[f32]>,
    y: Out,
    g0: usize,
    g1: usize,
) {
    let ty = match TY {
        0 => GgmlType::Q4_1,
        1 => GgmlType::Q4_0,
        _ => GgmlType::Q8_0,
    };
    let gl = GroupLayout::new(ty, w.cols);
    let base = w.data.bytes().as_ptr();
    for g in g0..g1 {
        // SAFETY: group g is in the buffer.
        let gw = unsafe { base.add(g * gl.group_bytes()) };
        let mut i = 0;
        while i < acts.m {
            let t = (acts.m - i).min(2);
            let mut out = [[0f32; GROUP]; 2];
            // SAFETY: rows i..i+t exist.
            unsafe {
                let mut put = |r: usize, a: [__m256; 2]| {
                    _mm256_storeu_ps(out[r].as_mut_ptr(), a[0]);
                    _mm256_storeu_ps(out[r].as_mut_ptr().add(8), a[1]);
                };
                if t == 2 {
                    let [a0, a1] = tile::<2>(ty, gw, &gl, acts, i);
                    put(0, a0);
                    put(1, a1);
                } else {
                    let [a0] = tile::<1>(ty, gw, &gl, acts, i);
                    put(0, a0);
                }
            }
            for (r, o) in out.iter().enumerate().take(t) {
                // SAFETY: the caller owns the columns of group g; row i + r exists.
                unsafe { y.put(i + r, g, o, bias) };
            }
            i += t;
        }
    }
}

/// One row of `quantize` (the scalar `quantize_row`'s arithmetic).
///
/// # Safety
/// [`available`] is true; the planes have `x.len()` bytes, the scale slices `x.len() / 32`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn quantize_row(x: &[f32], r: RowOut<'_>) {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let (qmax, qmin) = (_mm256_set1_epi32(QMAX), _mm256_set1_epi32(-QMAX));
    let c128 = _mm256_set1_epi32(8);
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for b in 0..x.len() / 32 {
        // SAFETY: b * 32 + 32 <= x.len() and the planes' lengths; b < the scale slices.
        unsafe {
            let xp = x.as_ptr().add(b * 32);
            let v = [0, 8, 16, 24].map(|o| _mm256_loadu_ps(xp.add(o)));
            let m = v.iter().fold(_mm256_setzero_ps(), |m, &x| {
                _mm256_max_ps(m, _mm256_and_ps(x, abs_mask))
            });
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
            let d = amax / QMAX as f32;
            let id = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
            let q = v.map(|x| {
                let p = _mm256_mul_ps(x, id);
                let ordered = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_ORD_Q>(p, p));
                let q = _mm256_and_si256(_mm256_cvtps_epi32(p), ordered);
                _mm256_min_epi32(_mm256_max_epi32(q, qmin), qmax)
            });
            let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let s4 = _mm_add_epi32(
                _mm256_castsi256_si128(sum),
                _mm256_extracti128_si256(sum, 1),
            );
            let s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01_00_11_10));
            let s = _mm_cvtsi128_si32(_mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b10_11_00_01)));
            let hi = q.map(|q| _mm256_srai_epi32(_mm256_add_epi32(q, c128), 4));
            let lo = [0, 1, 2, 3].map(|j| _mm256_sub_epi32(q[j], _mm256_slli_epi32(hi[j], 4)));
            // Saturating packs work per 128-bit lane: restore element order with a permute.
            let bytes = |a: [__m256i; 4]| {
                let p01 = _mm256_packs_epi32(a[0], a[1]);
                let p23 = _mm256_packs_epi32(a[2], a[3]);
                _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p01, p23), order)
            };
            let at = b * 32;
            _mm256_storeu_si256(r.hi.as_mut_ptr().add(at) as *mut __m256i, bytes(hi));
            _mm256_storeu_si256(r.lo.as_mut_ptr().add(at) as *mut __m256i, bytes(lo));
            r.d[b] = d;
            r.s[b] = s;
            r.ds[b] = d * s as f32;
        }
    }
}

/// # Safety
/// [`available`] is true; otherwise as `super::portable_rows`.
pub unsafe fn rows(acts: &QActs, w: &QMatrix, bias: Option<&[f32]>, y: Out, g0: usize, g1: usize) {
    // SAFETY: forwarded contract; the format matches the storage type.
    unsafe {
        match w.ty {
            GgmlType::Q4_1 => rows_impl::<0>(acts, w, bias, y, g0, g1),
            GgmlType::Q4_0 => rows_impl::<1>(acts, w, bias, y, g0, g1),
            GgmlType::Q8_0 => rows_impl::<2>(acts, w, bias, y, g0, g1),
            other => unreachable!("avx2::rows: {other:?} is not an integer-path type"),
        }
    }
}
