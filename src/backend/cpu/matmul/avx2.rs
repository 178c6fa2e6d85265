//! AVX2 + FMA variant of the GEMM in `matmul.rs` for weights without an integer path (f32,
//! f16, bf16, and quantized matrices whose width is not a multiple of 64): each 32-element
//! block decodes into four f32x8 vectors and is multiplied against up to `ROW_TILE`
//! activation rows. Tested against the same f64 reference.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::{GgmlType, QMatrix, ROW_TILE};

pub fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// A storage format whose 32-element block (or 32 consecutive elements) decodes to
/// four f32x8 vectors.
trait Block {
    /// Bytes per 32 elements.
    const BYTES: usize;
    /// # Safety
    /// `p` points at `BYTES` readable bytes; AVX2/FMA available.
    unsafe fn decode(p: *const u8) -> [__m256; 4];
}

#[inline(always)]
unsafe fn f16_scalar(p: *const u8) -> f32 {
    // SAFETY: caller guarantees 2 readable bytes at p.
    half::f16::from_bits(unsafe { (p as *const u16).read_unaligned() }).to_f32()
}

/// Widen 8 bytes (the low half of `v`) to f32x8.
#[inline(always)]
unsafe fn u8x8_to_f32(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
}

struct Q41;
impl Block for Q41 {
    const BYTES: usize = 20;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [__m256; 4] {
        // SAFETY (whole body): 20 readable bytes at p per the trait contract.
        unsafe {
            let d = _mm256_set1_ps(f16_scalar(p));
            let m = _mm256_set1_ps(f16_scalar(p.add(2)));
            let qs = _mm_loadu_si128(p.add(4) as *const __m128i);
            let mask = _mm_set1_epi8(15);
            let lo = _mm_and_si128(qs, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), mask);
            [
                _mm256_fmadd_ps(u8x8_to_f32(lo), d, m),
                _mm256_fmadd_ps(u8x8_to_f32(_mm_srli_si128(lo, 8)), d, m),
                _mm256_fmadd_ps(u8x8_to_f32(hi), d, m),
                _mm256_fmadd_ps(u8x8_to_f32(_mm_srli_si128(hi, 8)), d, m),
            ]
        }
    }
}

struct Q40;
impl Block for Q40 {
    const BYTES: usize = 18;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [__m256; 4] {
        // SAFETY (whole body): 18 readable bytes at p per the trait contract.
        unsafe {
            let d = _mm256_set1_ps(f16_scalar(p));
            let m = _mm256_set1_ps(-8.0 * f16_scalar(p));
            let qs = _mm_loadu_si128(p.add(2) as *const __m128i);
            let mask = _mm_set1_epi8(15);
            let lo = _mm_and_si128(qs, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), mask);
            [
                _mm256_fmadd_ps(u8x8_to_f32(lo), d, m),
                _mm256_fmadd_ps(u8x8_to_f32(_mm_srli_si128(lo, 8)), d, m),
                _mm256_fmadd_ps(u8x8_to_f32(hi), d, m),
                _mm256_fmadd_ps(u8x8_to_f32(_mm_srli_si128(hi, 8)), d, m),
            ]
        }
    }
}

struct Q80;
impl Block for Q80 {
    const BYTES: usize = 34;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [__m256; 4] {
        // SAFETY (whole body): 34 readable bytes at p per the trait contract.
        unsafe {
            let d = _mm256_set1_ps(f16_scalar(p));
            let q = p.add(2);
            let c = |o: usize| {
                let v = _mm_loadl_epi64(q.add(o) as *const __m128i);
                _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)), d)
            };
            [c(0), c(8), c(16), c(24)]
        }
    }
}

struct F32;
impl Block for F32 {
    const BYTES: usize = 128;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [__m256; 4] {
        let f = p as *const f32;
        // SAFETY: 128 readable bytes at p per the trait contract.
        unsafe {
            [
                _mm256_loadu_ps(f),
                _mm256_loadu_ps(f.add(8)),
                _mm256_loadu_ps(f.add(16)),
                _mm256_loadu_ps(f.add(24)),
            ]
        }
    }
}

struct F16;
impl Block for F16 {
    const BYTES: usize = 64;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [__m256; 4] {
        // SAFETY: 64 readable bytes at p; F16C is implied by every AVX2+FMA x86 CPU in
        // practice and enabled for this function's callers via target_feature.
        unsafe {
            let c = |o: usize| _mm256_cvtph_ps(_mm_loadu_si128(p.add(o) as *const __m128i));
            [c(0), c(16), c(32), c(48)]
        }
    }
}

struct Bf16;
impl Block for Bf16 {
    const BYTES: usize = 64;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [__m256; 4] {
        // SAFETY: 64 readable bytes at p per the trait contract.
        unsafe {
            let c = |o: usize| {
                let v = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.add(o) as *const __m128i));
                _mm256_castsi256_ps(_mm256_slli_epi32(v, 16))
            };
            [c(0), c(16), c(32), c(48)]
        }
    }
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// One weight row against `T` activation rows starting at `x0`.
#[inline(always)]
unsafe fn row_tile<B: Block, const T: usize>(
    wrow: *const u8,
    nblocks: usize,
    x0: *const f32,
    k: usize,
) -> [f32; T] {
    // SAFETY (whole body): wrow has nblocks * B::BYTES bytes; x0 has T rows of k floats,
    // k == nblocks * 32.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); T];
        for b in 0..nblocks {
            let w = B::decode(wrow.add(b * B::BYTES));
            for (t, a) in acc.iter_mut().enumerate() {
                let xp = x0.add(t * k + b * 32);
                *a = _mm256_fmadd_ps(w[0], _mm256_loadu_ps(xp), *a);
                *a = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xp.add(8)), *a);
                *a = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(xp.add(16)), *a);
                *a = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(xp.add(24)), *a);
            }
        }
        let mut out = [0f32; T];
        for t in 0..T {
            out[t] = hsum(acc[t]);
        }
        out
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_impl<B: Block>(
    x: &[f32],
    m: usize,
    w: &QMatrix,
    bias: Option<&[f32]>,
    y: *mut f32,
    r0: usize,
    r1: usize,
) {
    let (n, k) = (w.rows, w.cols);
    let nblocks = k / 32;
    let rb = w.row_bytes();
    let base = w.data.bytes().as_ptr();
    let xp = x.as_ptr();
    // Tiles of activation rows outermost so a tile (T * k floats, <= 48 KiB for k = 1536)
    // stays in L1/L2 while the chunk's weight rows stream past it.
    let mut i = 0;
    while i < m {
        let t = (m - i).min(ROW_TILE);
        for r in r0..r1 {
            // SAFETY: r < n so the row lies inside the storage; rows i..i+t exist in x;
            // the caller owns column r of y.
            unsafe {
                let wr = base.add(r * rb);
                let x0 = xp.add(i * k);
                let b = bias.map_or(0.0, |b| b[r]);
                macro_rules! tile {
                    ($T:literal) => {{
                        let v = row_tile::<B, $T>(wr, nblocks, x0, k);
                        for (tt, s) in v.iter().enumerate() {
                            *y.add((i + tt) * n + r) = s + b;
                        }
                    }};
                }
                match t {
                    8 => tile!(8),
                    7 => tile!(7),
                    6 => tile!(6),
                    5 => tile!(5),
                    4 => tile!(4),
                    3 => tile!(3),
                    2 => tile!(2),
                    _ => tile!(1),
                }
            }
        }
        i += t;
    }
}

/// # Safety
/// AVX2/FMA present; `y` has `m * w.rows` floats and columns `r0..r1` are the caller's.
pub(super) unsafe fn linear_rows(
    x: &[f32],
    m: usize,
    w: &QMatrix,
    bias: Option<&[f32]>,
    y: *mut f32,
    r0: usize,
    r1: usize,
) {
    if !w.cols.is_multiple_of(32) {
        // SAFETY: forwarded contract.
        return unsafe { super::portable_rows(x, m, w, bias, y, r0, r1) };
    }
    // SAFETY: forwarded contract; the block type matches the storage type.
    unsafe {
        match w.ty {
            GgmlType::Q4_1 => rows_impl::<Q41>(x, m, w, bias, y, r0, r1),
            GgmlType::Q4_0 => rows_impl::<Q40>(x, m, w, bias, y, r0, r1),
            GgmlType::Q8_0 => rows_impl::<Q80>(x, m, w, bias, y, r0, r1),
            GgmlType::F32 => rows_impl::<F32>(x, m, w, bias, y, r0, r1),
            GgmlType::F16 => rows_impl::<F16>(x, m, w, bias, y, r0, r1),
            GgmlType::BF16 => rows_impl::<Bf16>(x, m, w, bias, y, r0, r1),
            // Types without a decoder here go through the reference decoder.
            _ => super::portable_rows(x, m, w, bias, y, r0, r1),
        }
    }
}
