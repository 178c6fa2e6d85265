//! AVX-512 VNNI kernel of the integer GEMM (`matmul_q8.rs`). Per pair of weight blocks: two
//! 512-bit vectors of 16-bit weights `[lo0 | lo1]` and `[hi0 | hi1]` (nibbles or int8 widened
//! once per weight row), then per activation row two chained `vpdpwssd` (lanes 0-7 end up
//! holding block 0's partial sums, lanes 8-15 block 1's), one int->float conversion and one FMA
//! with the per-lane scale `dw * d`, plus (Q4_1) one FMA adding the offset terms `mw * d * s`
//! into the same lanes.
//!
//! Exactness: a lane sums 4 products of at most 128 * 32767, below 2^24, so both the i32 sum
//! and its f32 conversion are exact. The summation order of one output is fixed (pairs in
//! order, lanes reduced at the end) and does not depend on the tile shape: batch composition
//! never changes a result.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::super::tiles::{walk, Tiles};
use super::{QActs, A_PER_PAIR};
use crate::backend::dtype::GgmlType;
use crate::backend::tensor::QMatrix;

/// Whether this kernel runs: the CPU has the features, and `PONDER_CPU_ISA` is not `avx2`
/// (which selects the AVX2 kernel on an AVX-512 machine, to measure or test it).
pub fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::env::var("PONDER_CPU_ISA").map_or(true, |v| v != "avx2")
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("f16c")
            && is_x86_feature_detected!("fma")
    })
}

/// A weight format as pairs of 32-element blocks.
trait Pair {
    /// Bytes per block.
    const BYTES: usize;
    /// The format has a per-block minimum (`mw != 0`).
    const HAS_MIN: bool;
    /// `([lo0 | lo1], [hi0 | hi1], [dw0, mw0, dw1, mw1])` of the blocks at `p` and
    /// `p + BYTES`, weights as i16 (`lo` = elements 0..16 of a block, `hi` = 16..32).
    ///
    /// # Safety
    /// `2 * BYTES` readable bytes at `p`; the caller's target features are enabled.
    unsafe fn load(p: *const u8) -> (__m512i, __m512i, __m128);
}

/// `[d0, 0, d1, 0]` from the f16 scales at `p0` and `p1`.
#[inline(always)]
unsafe fn d_pair(p0: *const u8, p1: *const u8) -> __m128 {
    // SAFETY: 2 readable bytes at p0 and at p1 (caller).
    unsafe {
        let d0 = (p0 as *const u16).read_unaligned();
        let d1 = (p1 as *const u16).read_unaligned();
        _mm_cvtph_ps(_mm_cvtsi64_si128(i64::from(d0) | i64::from(d1) << 32))
    }
}

/// Nibbles of the 16 bytes at `q0` and at `q1` as i16 `([lo0 | lo1], [hi0 | hi1])`.
#[inline(always)]
unsafe fn nibble_pair(q0: *const u8, q1: *const u8) -> (__m512i, __m512i) {
    // SAFETY: 16 readable bytes at q0 and at q1 (caller).
    unsafe {
        let v = _mm256_loadu2_m128i(q1 as *const __m128i, q0 as *const __m128i);
        let mask = _mm256_set1_epi8(15);
        let lo = _mm256_and_si256(v, mask);
        let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
        (_mm512_cvtepu8_epi16(lo), _mm512_cvtepu8_epi16(hi))
    }
}

struct Q41;
impl Pair for Q41 {
    const BYTES: usize = 20;
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> (__m512i, __m512i, __m128) {
        // SAFETY: 40 readable bytes at p.
        unsafe {
            let (lo, hi) = nibble_pair(p.add(4), p.add(24));
            // [d0 m0 | d1 m1] as four f16 -> [dw0, mw0, dw1, mw1].
            let a = _mm_cvtsi32_si128((p as *const i32).read_unaligned());
            let b = _mm_cvtsi32_si128((p.add(20) as *const i32).read_unaligned());
            (lo, hi, _mm_cvtph_ps(_mm_unpacklo_epi32(a, b)))
        }
    }
}

struct Q40;
impl Pair for Q40 {
    const BYTES: usize = 18;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> (__m512i, __m512i, __m128) {
        // SAFETY: 36 readable bytes at p.
        unsafe {
            let (lo, hi) = nibble_pair(p.add(2), p.add(20));
            let eight = _mm512_set1_epi16(8);
            (
                _mm512_sub_epi16(lo, eight),
                _mm512_sub_epi16(hi, eight),
                d_pair(p, p.add(18)),
            )
        }
    }
}

struct Q80;
impl Pair for Q80 {
    const BYTES: usize = 34;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> (__m512i, __m512i, __m128) {
        // SAFETY: 68 readable bytes at p: block 0's int8 at p + 2, block 1's at p + 36.
        unsafe {
            let (q0, q1) = (p.add(2), p.add(36));
            let lo = _mm256_loadu2_m128i(q1 as *const __m128i, q0 as *const __m128i);
            let hi =
                _mm256_loadu2_m128i(q1.add(16) as *const __m128i, q0.add(16) as *const __m128i);
            (
                _mm512_cvtepi8_epi16(lo),
                _mm512_cvtepi8_epi16(hi),
                d_pair(p, p.add(34)),
            )
        }
    }
}

/// One row of `quantize` (same arithmetic as the scalar `quantize_row`: `amax / 32767`, its
/// reciprocal, products rounded to nearest-even by `vcvtps2dq`).
///
/// # Safety
/// [`available`] is true; `x.len() == q.len() == 2 * a.len()`, a multiple of 64.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn quantize_row(x: &[f32], q: &mut [i16], a: &mut [f32]) {
    let abs_mask = _mm512_set1_epi32(0x7fff_ffff);
    for p in 0..x.len() / 64 {
        for blk in 0..2 {
            // SAFETY: p * 64 + blk * 32 + 32 <= x.len(); the pair's 64 slots of q and 4 of a
            // are in bounds.
            unsafe {
                let xp = x.as_ptr().add(p * 64 + blk * 32);
                let v0 = _mm512_loadu_ps(xp);
                let v1 = _mm512_loadu_ps(xp.add(16));
                let abs = |v: __m512| {
                    _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), abs_mask))
                };
                let amax = _mm512_reduce_max_ps(_mm512_max_ps(abs(v0), abs(v1)));
                let d = amax / 32767.0;
                let id = if d > 0.0 { 1.0 / d } else { 0.0 };
                let idv = _mm512_set1_ps(id);
                let q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, idv));
                let q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, idv));
                let s = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
                // Elements 0..16 of the block go to slot blk * 16, 16..32 to 32 + blk * 16.
                let qp = q.as_mut_ptr().add(p * 64 + blk * 16);
                _mm256_storeu_si256(qp as *mut __m256i, _mm512_cvtsepi32_epi16(q0));
                _mm256_storeu_si256(qp.add(32) as *mut __m256i, _mm512_cvtsepi32_epi16(q1));
                let ap = a.as_mut_ptr().add(p * A_PER_PAIR + blk * 8);
                _mm256_storeu_ps(ap, _mm256_set1_ps(d));
                _mm256_storeu_ps(ap.add(16), _mm256_set1_ps(d * s as f32 / 8.0));
            }
        }
    }
}

/// `R` weight rows against `T` activation rows (see the module header for the order).
#[inline(always)]
unsafe fn tile<P: Pair, const R: usize, const T: usize>(
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
        // Lanes 0-7 hold block 0, lanes 8-15 block 1: [dw0 x8, dw1 x8] and [mw0 x8, mw1 x8]
        // from [dw0, mw0, dw1, mw1].
        let idx_d = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
        let idx_m = _mm512_setr_epi32(1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3);
        let zero = _mm512_setzero_si512();
        let mut acc = [[_mm512_setzero_ps(); T]; R];
        for p in 0..pairs {
            for (r, ar) in acc.iter_mut().enumerate() {
                let wp = w0.add(r * rb + p * 2 * P::BYTES);
                // The same spot four tiles ahead (4 * R * rb bytes, 6-15 KiB for SmolLM2's
                // rows): the hardware prefetcher alone left decode waiting on weight loads
                // (5.3 ms/token without, 4.0 ms one tile ahead, 3.4-3.6 ms four ahead).
                _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(4 * R * rb) as *const i8);
                let (lo, hi, dm) = P::load(wp);
                let dm = _mm512_castps128_ps512(dm);
                let dpat = _mm512_permutexvar_ps(idx_d, dm);
                let mpat = _mm512_permutexvar_ps(idx_m, dm);
                for (t, a) in ar.iter_mut().enumerate() {
                    let xq = q0.add(t * k + p * 64);
                    let xlo = _mm512_loadu_si512(xq as *const __m512i);
                    let xhi = _mm512_loadu_si512(xq.add(32) as *const __m512i);
                    let s = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(zero, lo, xlo), hi, xhi);
                    let ap = a0.add(t * (k / 2) + p * A_PER_PAIR);
                    let scale = _mm512_mul_ps(dpat, _mm512_loadu_ps(ap));
                    *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, *a);
                    if P::HAS_MIN {
                        // + mw * d * s, spread as d * s / 8 over the block's 8 lanes.
                        *a = _mm512_fmadd_ps(mpat, _mm512_loadu_ps(ap.add(16)), *a);
                    }
                }
            }
        }
        let mut out = [[0f32; T]; R];
        for r in 0..R {
            for t in 0..T {
                out[r][t] = _mm512_reduce_add_ps(acc[r][t]);
            }
        }
        out
    }
}

/// The kernel bound to its operands: weight storage and the quantized activations.
struct IntTiles<'a, P> {
    base: *const u8,
    rb: usize,
    acts: &'a QActs,
    _format: std::marker::PhantomData<P>,
}

impl<P: Pair> Tiles for IntTiles<'_, P> {
    #[inline(always)]
    unsafe fn tile<const R: usize, const T: usize>(&self, i: usize, r: usize) -> [[f32; T]; R] {
        let k = self.acts.k;
        // SAFETY: forwarded contract (weight rows r..r+R, activation rows i..i+T).
        unsafe {
            tile::<P, R, T>(
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

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma")]
unsafe fn rows_impl<P: Pair>(
    acts: &QActs,
    w: &QMatrix,
    bias: Option<&[f32]>,
    y: *mut f32,
    r0: usize,
    r1: usize,
) {
    let kernel = IntTiles::<P> {
        base: w.data.bytes().as_ptr(),
        rb: w.row_bytes(),
        acts,
        _format: std::marker::PhantomData,
    };
    // SAFETY: acts has acts.m rows of w.cols; forwarded contract for y and r0..r1.
    unsafe { walk(&kernel, acts.m, w.rows, bias, y, r0, r1) }
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
    // SAFETY: forwarded contract; the pair type matches the storage type.
    unsafe {
        match w.ty {
            GgmlType::Q4_1 => rows_impl::<Q41>(acts, w, bias, y, r0, r1),
            GgmlType::Q4_0 => rows_impl::<Q40>(acts, w, bias, y, r0, r1),
            GgmlType::Q8_0 => rows_impl::<Q80>(acts, w, bias, y, r0, r1),
            other => unreachable!("vnni::rows: {other:?} is not an integer-path type"),
        }
    }
}
