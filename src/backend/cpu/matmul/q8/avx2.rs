//! AVX2 kernel of the integer GEMM (`matmul/q8.rs`) for CPUs without AVX-512 VNNI (Zen 2/3,
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

use super::def::Fold;
use super::vnni::{dispatch, Fmt, Q2k, Q3k, Q4k, Q5k, Q6k, Q40, Q41, Q50, Q51, Q80};
use super::{ActBits, Out, QActs, RowOut, QMAX};
use crate::backend::dtype::GgmlType;
use crate::backend::packed::{qoff, rec, GroupLayout, GROUP};
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

/// Nibble chunks of column half `h` at `q` as quads 0..8.
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

/// 32 bits -> 32 bytes: byte i is 0xff where bit i is set.
#[inline(always)]
unsafe fn bits_to_bytes(bits: u32) -> __m256i {
    // SAFETY: register-only AVX2 operations (enabled by the caller).
    unsafe {
        // Byte i takes source byte i / 8 (each 128-bit lane sees the 4 bytes at 0..4).
        let spread = _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3,
            3, 3, 3,
        );
        let v = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), spread);
        let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit)
    }
}

/// Column half `h`'s weight quads of format `F` (unsigned `u`), or for Q8_0 the two nibble
/// halves `(ch + 8, cl)` of each byte.
#[inline(always)]
unsafe fn weights<F: Fmt>(q: *const u8, h: usize) -> (Quads, Quads) {
    // SAFETY: the block's quants at q (caller).
    unsafe {
        if F::BITS == 8 {
            let (mask, eight) = (_mm256_set1_epi8(15), _mm256_set1_epi8(8));
            let (mut wh, mut wl) = ([_mm256_setzero_si256(); 8], [_mm256_setzero_si256(); 8]);
            for j in 0..8 {
                let v = _mm256_loadu_si256(q.add(j * 64 + h * 32) as *const __m256i);
                wl[j] = _mm256_and_si256(v, mask);
                let u = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
                wh[j] = _mm256_xor_si256(u, eight);
            }
            return (wh, wl);
        }
        let mut w = nibbles(q, h);
        for k in 4..F::BITS {
            let bit = _mm256_set1_epi8(1 << k);
            for (j, wj) in w.iter_mut().enumerate() {
                let b = (q.add(qoff::plane(k, j) + 4 * h) as *const u32).read_unaligned();
                *wj = _mm256_add_epi8(*wj, _mm256_and_si256(bits_to_bytes(b), bit));
            }
        }
        (w, w)
    }
}

/// `sum_{j in js} sum_e w_j[col][e] * x[4j + e]` per column (8 x i32) for weights < 64:
/// `vpmaddubsw` pairs are added in i16 for `widen` quads at a time (each pair is at most
/// 2 * 63 * 127 = 16,002; 8 quads of 4-bit, 4 of 5-bit or 2 of 6-bit weights stay below
/// 32,767), then widened.
#[inline(always)]
unsafe fn quad_dot(w: &Quads, x: *const i8, js: std::ops::Range<usize>, widen: usize) -> __m256i {
    // SAFETY: 32 readable bytes at x (caller).
    unsafe {
        let x = x as *const i32;
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_si256();
        let mut s = _mm256_setzero_si256();
        for (n, j) in js.enumerate() {
            let xb = _mm256_set1_epi32(x.add(j).read_unaligned());
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(w[j], xb));
            if (n + 1) % widen == 0 {
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(s, ones));
                s = _mm256_setzero_si256();
            }
        }
        _mm256_add_epi32(acc, _mm256_madd_epi16(s, ones))
    }
}

/// `-x` with the sign bit flipped (the definition's negation).
#[inline(always)]
unsafe fn neg(x: __m256) -> __m256 {
    // SAFETY: register-only AVX operations (enabled by the caller).
    unsafe { _mm256_xor_ps(x, _mm256_set1_ps(-0.0)) }
}

/// Eight f16 at `p` as f32.
#[inline(always)]
unsafe fn f16x8(p: *const u8) -> __m256 {
    // SAFETY: 16 readable bytes at p (caller); F16C enabled by the caller.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
}

/// Eight u8 at `p` as i32.
#[inline(always)]
unsafe fn u8x8(p: *const u8) -> __m256i {
    // SAFETY: 8 readable bytes at p (caller); AVX2 enabled by the caller.
    unsafe { _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i)) }
}

/// Eight i8 at `p` as i32.
#[inline(always)]
unsafe fn i8x8(p: *const u8) -> __m256i {
    // SAFETY: 8 readable bytes at p (caller); AVX2 enabled by the caller.
    unsafe { _mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i)) }
}

/// One 32-block's scale terms for column half `h` (8 columns; `qdef`'s names).
#[derive(Clone, Copy)]
struct Scales8 {
    dw: __m256,
    mw: __m256,
    k: [__m256i; 2],
    m: [__m256i; 2],
}

/// The scale terms of 32-block `j` of the record at `r`, for column half `h`.
#[inline(always)]
unsafe fn scales<F: Fmt>(r: *const u8, j: usize, h: usize) -> Scales8 {
    // SAFETY: offsets inside the record (packed::rec); 8 or 16 bytes each.
    unsafe {
        // Functions, not closures (a closure would not get the caller's target features).
        let zero = _mm256_setzero_si256();
        let mut v = Scales8 {
            dw: f16x8(r.add(rec::D + 16 * h)),
            mw: _mm256_setzero_ps(),
            k: [zero; 2],
            m: [zero; 2],
        };
        match F::TY {
            GgmlType::Q4_1 | GgmlType::Q5_1 => v.mw = f16x8(r.add(rec::M + 16 * h)),
            GgmlType::Q4K | GgmlType::Q5K => {
                v.dw = _mm256_mul_ps(v.dw, _mm256_cvtepi32_ps(u8x8(r.add(rec::k4_sc(j) + 8 * h))));
                v.mw = neg(_mm256_mul_ps(
                    f16x8(r.add(rec::M + 16 * h)),
                    _mm256_cvtepi32_ps(u8x8(r.add(rec::k4_m(j) + 8 * h))),
                ));
            }
            GgmlType::Q2K => {
                v.mw = neg(f16x8(r.add(rec::M + 16 * h)));
                v.k = [
                    u8x8(r.add(rec::q2_sc(2 * j) + 8 * h)),
                    u8x8(r.add(rec::q2_sc(2 * j + 1) + 8 * h)),
                ];
                v.m = [
                    u8x8(r.add(rec::q2_m(2 * j) + 8 * h)),
                    u8x8(r.add(rec::q2_m(2 * j + 1) + 8 * h)),
                ];
            }
            GgmlType::Q3K | GgmlType::Q6K => {
                v.k = [
                    i8x8(r.add(rec::k16_sc(2 * j) + 8 * h)),
                    i8x8(r.add(rec::k16_sc(2 * j + 1) + 8 * h)),
                ];
            }
            _ => {}
        }
        v
    }
}

/// Both column halves of a group against `T` rows from `i`: all blocks folded (`acc[t][h]`
/// holds columns `8h..8h+8` of row `i + t`). Each block's two halves are done back to back,
/// so its cache lines are used whole while they are loaded. `LOW = false` (8-bit
/// activations, whose low plane is all zeros) skips the low plane's products.
#[inline(always)]
unsafe fn tile<F: Fmt, const T: usize, const LOW: bool>(
    gw: *const u8,
    gl: &GroupLayout,
    acts: &QActs,
    i: usize,
) -> [[__m256; 2]; T] {
    let nb = gl.nb;
    let (hi, lo) = (acts.hi_ptr(), acts.lo_ptr());
    let widen = match F::BITS {
        5 => 4,
        6 => 2,
        _ => 8,
    };
    // SAFETY (whole body): a whole group at gw; rows i..i+T of acts exist.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; T];
        for b in 0..nb {
            let qp = gw.add(gl.quants(b));
            // Four blocks ahead (the weights stream from memory at decode).
            let ahead = gw.wrapping_add(gl.quants(b + 4));
            for line in (0..gl.qb).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line) as *const i8);
            }
            for h in 0..2 {
                let v = scales::<F>(gw.add(gl.record(b)), b % gl.form.sbk, h);
                let (wa, wb) = weights::<F>(qp, h);
                for (t, at) in acc.iter_mut().enumerate() {
                    let row = i + t;
                    let xh = hi.add(acts.plane_at(row, b));
                    let xl = lo.add(acts.plane_at(row, b));
                    let blk = acts.at(row, b);
                    let (a_s, a_s0) = (acts.s[blk], acts.s0[blk]);
                    // Plain functions, not closures: a closure is compiled without the
                    // caller's target features, so its intrinsics would become calls.
                    let w = (&wa, &wb, widen);
                    let s = match F::SPEC.fold {
                        Fold::Plain => {
                            let s = half_dot::<F, LOW>(w, xh, xl, 0..8);
                            let voff = if F::BITS == 8 { 128 } else { F::SPEC.off };
                            [sub_set1(s, voff * a_s), _mm256_setzero_si256()]
                        }
                        Fold::Halves => {
                            let off = F::SPEC.off;
                            [
                                sub_set1(half_dot::<F, LOW>(w, xh, xl, 0..4), off * a_s0),
                                sub_set1(half_dot::<F, LOW>(w, xh, xl, 4..8), off * (a_s - a_s0)),
                            ]
                        }
                    };
                    at[h] = fold::<F>(at[h], s, &v, acts, blk);
                }
            }
        }
        acc
    }
}

/// `x - v` per lane.
#[inline(always)]
unsafe fn sub_set1(x: __m256i, v: i32) -> __m256i {
    // SAFETY: register-only AVX2 operations (enabled by the caller).
    unsafe { _mm256_sub_epi32(x, _mm256_set1_epi32(v)) }
}

/// One activation plane's dot with the block's quads `js` (8-bit weights: high nibble
/// quads `w.0` scaled by 16 plus low quads `w.1`).
#[inline(always)]
unsafe fn plane_dot<F: Fmt>(
    w: (&Quads, &Quads, usize),
    x: *const i8,
    js: std::ops::Range<usize>,
) -> __m256i {
    // SAFETY: 32 readable bytes at x (caller); AVX2 enabled by the caller.
    unsafe {
        let a = quad_dot(w.0, x, js.clone(), w.2);
        if F::BITS == 8 {
            let b = quad_dot(w.1, x, js, w.2);
            _mm256_add_epi32(_mm256_slli_epi32(a, 4), b)
        } else {
            a
        }
    }
}

/// Both activation planes (high x 16 + low; the high plane alone when not `LOW`) against
/// the block's quads `js`.
#[inline(always)]
unsafe fn half_dot<F: Fmt, const LOW: bool>(
    w: (&Quads, &Quads, usize),
    xh: *const i8,
    xl: *const i8,
    js: std::ops::Range<usize>,
) -> __m256i {
    // SAFETY: forwarded contract.
    unsafe {
        let h = _mm256_slli_epi32(plane_dot::<F>(w, xh, js.clone()), 4);
        if LOW {
            _mm256_add_epi32(h, plane_dot::<F>(w, xl, js))
        } else {
            h
        }
    }
}

/// The definition's fold of one block for 8 columns (as `vnni::fold`).
#[inline(always)]
unsafe fn fold<F: Fmt>(
    acc: __m256,
    s: [__m256i; 2],
    v: &Scales8,
    acts: &QActs,
    blk: usize,
) -> __m256 {
    // SAFETY: blk indexes the activation scale arrays (caller).
    unsafe {
        let d = _mm256_set1_ps(*acts.d.get_unchecked(blk));
        match F::SPEC.fold {
            Fold::Plain => {
                let s = _mm256_add_epi32(s[0], s[1]);
                let acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(v.dw, d), acc);
                if F::SPEC.min {
                    let ds = _mm256_set1_ps(*acts.ds.get_unchecked(blk));
                    _mm256_fmadd_ps(v.mw, ds, acc)
                } else {
                    acc
                }
            }
            Fold::Halves => {
                let s = _mm256_add_epi32(
                    _mm256_mullo_epi32(v.k[0], s[0]),
                    _mm256_mullo_epi32(v.k[1], s[1]),
                );
                let acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(v.dw, d), acc);
                if F::SPEC.min {
                    let s0 = *acts.s0.get_unchecked(blk);
                    let s1 = *acts.s.get_unchecked(blk) - s0;
                    let m = _mm256_add_epi32(
                        _mm256_mullo_epi32(v.m[0], _mm256_set1_epi32(s0)),
                        _mm256_mullo_epi32(v.m[1], _mm256_set1_epi32(s1)),
                    );
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(m), _mm256_mul_ps(v.mw, d), acc)
                } else {
                    acc
                }
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_impl<F: Fmt>(
    acts: &QActs,
    w: &QMatrix,
    bias: Option<&[f32]>,
    y: Out,
    g0: usize,
    g1: usize,
) {
    let gl = GroupLayout::new(F::TY, w.cols);
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
                match (t, acts.bits) {
                    (2, ActBits::Twelve) => {
                        let [a0, a1] = tile::<F, 2, true>(gw, &gl, acts, i);
                        put(0, a0);
                        put(1, a1);
                    }
                    (2, ActBits::Eight) => {
                        let [a0, a1] = tile::<F, 2, false>(gw, &gl, acts, i);
                        put(0, a0);
                        put(1, a1);
                    }
                    (_, ActBits::Twelve) => put(0, tile::<F, 1, true>(gw, &gl, acts, i)[0]),
                    (_, ActBits::Eight) => put(0, tile::<F, 1, false>(gw, &gl, acts, i)[0]),
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
pub unsafe fn quantize_row(x: &[f32], r: RowOut<'_>, bits: ActBits) {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    // 8-bit: p / 16 rounded and clamped to a signed byte, then times 16.
    let eight = bits == ActBits::Eight;
    let lim = if eight { 127 } else { QMAX };
    let (qmax, qmin) = (_mm256_set1_epi32(lim), _mm256_set1_epi32(-lim));
    let c128 = _mm256_set1_epi32(8);
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for b in 0..x.len() / 32 {
        // SAFETY: b * 32 + 32 <= x.len() and the planes' lengths; b < the scale slices.
        unsafe {
            let xp = x.as_ptr().add(b * 32);
            let v = crate::unrolled!(|j| _mm256_loadu_ps(xp.add(8 * j)); 0 1 2 3);
            let mut m = _mm256_setzero_ps();
            for vj in v {
                m = _mm256_max_ps(m, _mm256_and_ps(vj, abs_mask));
            }
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
            let d = amax / QMAX as f32;
            let id = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
            let q = crate::unrolled!(|j| {
                let p = _mm256_mul_ps(v[j], id);
                let ordered = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_ORD_Q>(p, p));
                let p = if eight { _mm256_mul_ps(p, _mm256_set1_ps(0.0625)) } else { p };
                let q = _mm256_and_si256(_mm256_cvtps_epi32(p), ordered);
                let q = _mm256_min_epi32(_mm256_max_epi32(q, qmin), qmax);
                if eight {
                    _mm256_slli_epi32(q, 4)
                } else {
                    q
                }
            }; 0 1 2 3);
            let hsum = |v: __m256i| {
                let s4 = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
                let s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01_00_11_10));
                _mm_cvtsi128_si32(_mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b10_11_00_01)))
            };
            let s0 = hsum(_mm256_add_epi32(q[0], q[1]));
            let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let s4 = _mm_add_epi32(
                _mm256_castsi256_si128(sum),
                _mm256_extracti128_si256(sum, 1),
            );
            let s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01_00_11_10));
            let s = _mm_cvtsi128_si32(_mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b10_11_00_01)));
            let hi = crate::unrolled!(|j| {
                _mm256_srai_epi32(_mm256_add_epi32(q[j], c128), 4)
            }; 0 1 2 3);
            let lo = crate::unrolled!(|j| {
                _mm256_sub_epi32(q[j], _mm256_slli_epi32(hi[j], 4))
            }; 0 1 2 3);
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
            r.s0[b] = s0;
            r.ds[b] = d * s as f32;
        }
    }
}

/// # Safety
/// [`available`] is true; otherwise as `super::portable_rows`.
pub unsafe fn rows(acts: &QActs, w: &QMatrix, bias: Option<&[f32]>, y: Out, g0: usize, g1: usize) {
    // SAFETY: forwarded contract; the format matches the storage type.
    unsafe { dispatch!(w.ty, rows_impl, (acts, w, bias, y, g0, g1)) }
}
