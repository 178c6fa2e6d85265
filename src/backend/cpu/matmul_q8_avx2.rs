//! AVX2 kernel of the integer GEMM (`matmul_q8.rs`) for CPUs without AVX-512 VNNI (Zen 2/3,
//! most Intel client parts). Same numerics as the VNNI kernel: per block, `vpmaddwd` (16
//! s16 x s16 products summed in pairs into 8 i32 lanes, exact) over its two halves, one
//! int->float conversion, one FMA with `dw * d`, and (Q4_1) one FMA adding `mw * d * s / 8`
//! per lane. The lane grouping differs from the 512-bit kernel, so the two agree to float
//! rounding, not bitwise; within this kernel the order of one output is fixed, whatever the
//! batch.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::super::tiles::{walk, Tiles};
use super::{QActs, A_PER_PAIR};
use crate::backend::dtype::GgmlType;
use crate::backend::tensor::QMatrix;

pub fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

/// One 32-element weight block as i16 halves.
trait Block {
    const BYTES: usize;
    const HAS_MIN: bool;
    /// `(elements 0..16, elements 16..32, dw, mw)`.
    ///
    /// # Safety
    /// `BYTES` readable bytes at `p`; AVX2 and F16C enabled by the caller.
    unsafe fn load(p: *const u8) -> (__m256i, __m256i, f32, f32);
}

#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: 2 readable bytes at p (caller); F16C enabled by the caller.
    unsafe {
        let bits = (p as *const u16).read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }
}

/// The 16 nibble bytes at `q` as i16 `(low nibbles, high nibbles)`.
#[inline(always)]
unsafe fn nibbles(q: *const u8) -> (__m256i, __m256i) {
    // SAFETY: 16 readable bytes at q (caller).
    unsafe {
        let v = _mm_loadu_si128(q as *const __m128i);
        let mask = _mm_set1_epi8(15);
        let lo = _mm_and_si128(v, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(v, 4), mask);
        (_mm256_cvtepu8_epi16(lo), _mm256_cvtepu8_epi16(hi))
    }
}

struct Q41;
impl Block for Q41 {
    const BYTES: usize = 20;
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> (__m256i, __m256i, f32, f32) {
        // SAFETY: 20 readable bytes at p.
        unsafe {
            let (lo, hi) = nibbles(p.add(4));
            (lo, hi, f16_at(p), f16_at(p.add(2)))
        }
    }
}

struct Q40;
impl Block for Q40 {
    const BYTES: usize = 18;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> (__m256i, __m256i, f32, f32) {
        // SAFETY: 18 readable bytes at p.
        unsafe {
            let (lo, hi) = nibbles(p.add(2));
            let eight = _mm256_set1_epi16(8);
            (
                _mm256_sub_epi16(lo, eight),
                _mm256_sub_epi16(hi, eight),
                f16_at(p),
                0.0,
            )
        }
    }
}

struct Q80;
impl Block for Q80 {
    const BYTES: usize = 34;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> (__m256i, __m256i, f32, f32) {
        // SAFETY: 34 readable bytes at p.
        unsafe {
            let lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(2) as *const __m128i));
            let hi = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(18) as *const __m128i));
            (lo, hi, f16_at(p), 0.0)
        }
    }
}

/// `R` weight rows against `T` activation rows.
#[inline(always)]
unsafe fn tile<B: Block, const R: usize, const T: usize>(
    w0: *const u8,
    rb: usize,
    pairs: usize,
    q0: *const i16,
    a0: *const f32,
    k: usize,
) -> [[f32; T]; R] {
    // SAFETY (whole body): R rows of rb bytes (2 * pairs blocks) at w0; T activation rows of
    // k int16 at q0 and k / 2 floats at a0, k == 64 * pairs.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        for p in 0..pairs {
            for blk in 0..2 {
                for (r, ar) in acc.iter_mut().enumerate() {
                    let wp = w0.add(r * rb + (2 * p + blk) * B::BYTES);
                    _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(4 * R * rb) as *const i8);
                    let (lo, hi, dw, mw) = B::load(wp);
                    let (dwv, mwv) = (_mm256_set1_ps(dw), _mm256_set1_ps(mw));
                    for (t, a) in ar.iter_mut().enumerate() {
                        // Pair layout: [b0 0..16, b1 0..16, b0 16..32, b1 16..32].
                        let xq = q0.add(t * k + p * 64 + blk * 16);
                        let xlo = _mm256_loadu_si256(xq as *const __m256i);
                        let xhi = _mm256_loadu_si256(xq.add(32) as *const __m256i);
                        let s = _mm256_add_epi32(
                            _mm256_madd_epi16(lo, xlo),
                            _mm256_madd_epi16(hi, xhi),
                        );
                        let ap = a0.add(t * (k / 2) + p * A_PER_PAIR + blk * 8);
                        let scale = _mm256_mul_ps(dwv, _mm256_loadu_ps(ap));
                        *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, *a);
                        if B::HAS_MIN {
                            *a = _mm256_fmadd_ps(mwv, _mm256_loadu_ps(ap.add(16)), *a);
                        }
                    }
                }
            }
        }
        let mut out = [[0f32; T]; R];
        for r in 0..R {
            for t in 0..T {
                let v = acc[r][t];
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
                out[r][t] = _mm_cvtss_f32(s);
            }
        }
        out
    }
}

/// The kernel bound to its operands: weight storage and the quantized activations.
struct IntTiles<'a, B> {
    base: *const u8,
    rb: usize,
    acts: &'a QActs,
    _format: std::marker::PhantomData<B>,
}

impl<B: Block> Tiles for IntTiles<'_, B> {
    #[inline(always)]
    unsafe fn tile<const R: usize, const T: usize>(&self, i: usize, r: usize) -> [[f32; T]; R] {
        let k = self.acts.k;
        // SAFETY: forwarded contract (weight rows r..r+R, activation rows i..i+T).
        unsafe {
            tile::<B, R, T>(
                self.base.add(r * self.rb),
                self.rb,
                k / 64,
                self.acts.q.as_ptr().add(i * k),
                self.acts.a.as_ptr().add(i * (k / 2)),
                k,
            )
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_impl<B: Block>(
    acts: &QActs,
    w: &QMatrix,
    bias: Option<&[f32]>,
    y: *mut f32,
    r0: usize,
    r1: usize,
) {
    let kernel = IntTiles::<B> {
        base: w.data.bytes().as_ptr(),
        rb: w.row_bytes(),
        acts,
        _format: std::marker::PhantomData,
    };
    // SAFETY: acts has acts.m rows of w.cols; forwarded contract for y and r0..r1.
    unsafe { walk(&kernel, acts.m, w.rows, bias, y, r0, r1) }
}

/// One row of `quantize` with AVX2 (same arithmetic as the scalar definition).
///
/// # Safety
/// [`available`] is true; `x.len() == q.len() == 2 * a.len()`, a multiple of 64.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn quantize_row(x: &[f32], q: &mut [i16], a: &mut [f32]) {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    for p in 0..x.len() / 64 {
        for blk in 0..2 {
            // SAFETY: p * 64 + blk * 32 + 32 <= x.len(); the pair's 64 slots of q and 32 of
            // a are in bounds.
            unsafe {
                let xp = x.as_ptr().add(p * 64 + blk * 32);
                let v = [0, 8, 16, 24].map(|o| _mm256_loadu_ps(xp.add(o)));
                let m = v.iter().fold(_mm256_setzero_ps(), |m, &x| {
                    _mm256_max_ps(m, _mm256_and_ps(x, abs_mask))
                });
                let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
                let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
                let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
                let d = amax / 32767.0;
                let id = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
                let qi = v.map(|x| _mm256_cvtps_epi32(_mm256_mul_ps(x, id)));
                let sum = _mm256_add_epi32(
                    _mm256_add_epi32(qi[0], qi[1]),
                    _mm256_add_epi32(qi[2], qi[3]),
                );
                let s4 = _mm_add_epi32(
                    _mm256_castsi256_si128(sum),
                    _mm256_extracti128_si256(sum, 1),
                );
                let s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01_00_11_10));
                let s = _mm_cvtsi128_si32(_mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b10_11_00_01)));
                // Saturating packs work per 128-bit lane: fix the order with a permute.
                let pack = |a: __m256i, b: __m256i| {
                    _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0b11_01_10_00)
                };
                let qp = q.as_mut_ptr().add(p * 64 + blk * 16);
                _mm256_storeu_si256(qp as *mut __m256i, pack(qi[0], qi[1]));
                _mm256_storeu_si256(qp.add(32) as *mut __m256i, pack(qi[2], qi[3]));
                let ap = a.as_mut_ptr().add(p * A_PER_PAIR + blk * 8);
                _mm256_storeu_ps(ap, _mm256_set1_ps(d));
                _mm256_storeu_ps(ap.add(16), _mm256_set1_ps(d * s as f32 / 8.0));
            }
        }
    }
}

/// # Safety
/// [`available`] is true; `w` is supported (`super::supported`) and `acts.k == w.cols`; `y`
/// has `acts.m * w.rows` floats and columns `r0..r1` are the caller's.
pub unsafe fn rows(
    acts: &QActs,
    w: &QMatrix,
    bias: Option<&[f32]>,
    y: *mut f32,
    r0: usize,
    r1: usize,
) {
    // SAFETY: forwarded contract; the block type matches the storage type.
    unsafe {
        match w.ty {
            GgmlType::Q4_1 => rows_impl::<Q41>(acts, w, bias, y, r0, r1),
            GgmlType::Q4_0 => rows_impl::<Q40>(acts, w, bias, y, r0, r1),
            GgmlType::Q8_0 => rows_impl::<Q80>(acts, w, bias, y, r0, r1),
            other => unreachable!("avx2::rows: {other:?} is not an integer-path type"),
        }
    }
}
