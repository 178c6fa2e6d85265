//! `y = x W^T (+ bias)` for weights in their storage format: the CPU GEMM/GEMV of every
//! linear layer and the LM head.
//!
//! Weights stay quantized in memory (Q4_1 is 5 bits/weight against 32 for f32): decode reads
//! each weight byte once per step, which is what bounds single-sequence decode speed. Each
//! 32-element block is decoded in registers and multiplied against a tile of up to
//! [`ROW_TILE`] activation rows, so for a batch of M rows the decode work is amortized over
//! the tile and the kernel approaches FMA peak for prefill and batched decode.
//!
//! ```text
//!  x [m, k] (f32)            W [n, k] (blocks of 32)          y [m, n]
//!  rows m0..m0+T  ---------> for each W row r (parallel over r chunks):
//!                              for each block b: w = decode(W[r, b])      (4 x f32x8)
//!                                for t in tile: acc[t] += w . x[m0+t, b]  (4 FMAs)
//!                              y[m0+t, r] = hsum(acc[t]) (+ bias[r])
//! ```
//!
//! Dispatch: AVX2+FMA when the CPU has it (checked once at run time), else a portable path
//! that decodes a row with the reference decoder. Both are tested against a plain f64 dot.

use rayon::prelude::*;

use crate::backend::dtype::GgmlType;
use crate::backend::tensor::QMatrix;

/// Activation rows handled per pass over a weight row; 8 accumulators + 4 decoded vectors fit
/// in the 16 ymm registers.
pub const ROW_TILE: usize = 8;

/// Raw output pointer shared by tasks that write disjoint columns of `y`.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint (row, column) elements; see `linear`.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `y[m, n] = sum_k x[m, k] * W[n, k] + bias[n]`.
///
/// Shapes: `x` is `[m, w.cols]`, `y` is `[m, w.rows]`, `bias` is `[w.rows]`.
pub fn linear(x: &[f32], w: &QMatrix, bias: Option<&[f32]>, y: &mut [f32]) {
    let (n, k) = (w.rows, w.cols);
    assert_eq!(
        x.len() % k,
        0,
        "linear: x length {} not a multiple of k={k}",
        x.len()
    );
    let m = x.len() / k;
    assert_eq!(
        y.len(),
        m * n,
        "linear: y has {} elements, expected {m}x{n}",
        y.len()
    );
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "linear: bias length");
    }
    if m == 0 || n == 0 {
        return;
    }
    // Chunks of weight rows per task: enough tasks for load balance, each big enough that
    // scheduling overhead (a few microseconds) stays small against its work.
    let threads = rayon::current_num_threads().max(1);
    let work = m * n * k;
    let tasks = if work < 1 << 16 {
        1
    } else {
        (threads * 4).min(n.div_ceil(8))
    };
    let chunk = n.div_ceil(tasks);
    let out = OutPtr(y.as_mut_ptr());
    if q8::supported(w) {
        return with_scratch(|acts| {
            q8::quantize(x, k, acts);
            let acts = &*acts;
            let run = |c: usize| {
                let r0 = c * chunk;
                let r1 = (r0 + chunk).min(n);
                // SAFETY: as below: chunk c owns columns r0..r1 of y; acts.k == w.cols.
                unsafe { q8_rows(acts, w, bias, out, r0, r1) }
            };
            if tasks == 1 {
                run(0);
            } else {
                (0..tasks).into_par_iter().for_each(run);
            }
        });
    }
    let run = |c: usize| {
        let r0 = c * chunk;
        let r1 = (r0 + chunk).min(n);
        // SAFETY: chunk c writes only columns r0..r1 of every row of y, and the column ranges
        // of different chunks are disjoint; y outlives the parallel loop.
        unsafe { linear_rows(x, m, w, bias, out, r0, r1) }
    };
    if tasks == 1 {
        run(0);
    } else {
        (0..tasks).into_par_iter().for_each(run);
    }
}

thread_local! {
    /// Int8 activations of the last integer-path call on this thread (see matmul_q8.rs for
    /// its size: 1.25 bytes per activation of the largest batch seen).
    static SCRATCH: std::cell::RefCell<q8::QActs> = std::cell::RefCell::default();
}

/// Runs `f` on this thread's activation scratch (a fresh one if it is already in use).
fn with_scratch<T>(f: impl FnOnce(&mut q8::QActs) -> T) -> T {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut acts) => f(&mut acts),
        Err(_) => f(&mut q8::QActs::default()),
    })
}

/// # Safety
/// `out` points at `acts.m * w.rows` floats, no other thread writes columns `r0..r1`, and
/// `acts` holds the activations quantized for `w` (`acts.k == w.cols`).
unsafe fn q8_rows(
    acts: &q8::QActs,
    w: &QMatrix,
    bias: Option<&[f32]>,
    out: OutPtr,
    r0: usize,
    r1: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if q8::vnni::available() {
        // SAFETY: the CPU has AVX-512 VNNI (checked above); forwarded contract.
        unsafe { q8::vnni::rows(acts, w, bias, out.0, r0, r1) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if q8::avx2::available() {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked above); forwarded contract.
        unsafe { q8::avx2::rows(acts, w, bias, out.0, r0, r1) };
        return;
    }
    // SAFETY: forwarded contract.
    unsafe { q8::portable_rows(acts, w, bias, out.0, r0, r1) }
}

/// # Safety
/// `out` points at `m * w.rows` floats, and no other thread writes columns `r0..r1`.
unsafe fn linear_rows(
    x: &[f32],
    m: usize,
    w: &QMatrix,
    bias: Option<&[f32]>,
    out: OutPtr,
    r0: usize,
    r1: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: the CPU supports AVX-512F/BW/VL (checked above).
        unsafe { avx512::linear_rows(x, m, w, bias, out.0, r0, r1) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        unsafe { avx2::linear_rows(x, m, w, bias, out.0, r0, r1) };
        return;
    }
    // SAFETY: forwarded caller contract.
    unsafe { portable_rows(x, m, w, bias, out.0, r0, r1) }
}

/// # Safety
/// As [`linear_rows`].
pub(super) unsafe fn portable_rows(
    x: &[f32],
    m: usize,
    w: &QMatrix,
    bias: Option<&[f32]>,
    y: *mut f32,
    r0: usize,
    r1: usize,
) {
    let (n, k) = (w.rows, w.cols);
    // Scratch: one decoded weight row, k floats (<= 64 KiB for k <= 16384).
    let mut row = vec![0f32; k];
    for r in r0..r1 {
        w.dequantize_row_into(r, &mut row);
        let b = bias.map_or(0.0, |b| b[r]);
        for i in 0..m {
            let xi = &x[i * k..(i + 1) * k];
            let mut acc = [0f32; 8];
            for (wc, xc) in row.chunks_exact(8).zip(xi.chunks_exact(8)) {
                for l in 0..8 {
                    acc[l] += wc[l] * xc[l];
                }
            }
            let mut s: f32 = acc.iter().sum();
            for j in (k / 8 * 8)..k {
                s += row[j] * xi[j];
            }
            // SAFETY: i < m and r < n; caller guarantees exclusive access to column r.
            unsafe { *y.add(i * n + r) = s + b };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
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
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[path = "matmul_avx512.rs"]
mod avx512;

#[path = "matmul_q8.rs"]
pub mod q8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::tensor::Storage;
    use std::sync::Arc;

    /// Deterministic pseudo-random bytes/floats (xorshift), no RNG crate needed.
    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed.max(1);
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        }
    }

    fn random_matrix(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> QMatrix {
        let mut r = rng(seed);
        let nbytes = ty.row_bytes(cols) * rows;
        let mut bytes: Vec<u8> = (0..nbytes).map(|_| r() as u8).collect();
        // Keep f16/bf16 scales and float values finite and modest.
        let bb = ty.block_bytes();
        for blk in bytes.chunks_exact_mut(bb) {
            match ty {
                GgmlType::Q4_0 | GgmlType::Q8_0 => {
                    blk[..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes())
                }
                GgmlType::Q4_1 => {
                    blk[..2].copy_from_slice(&half::f16::from_f32(0.02).to_le_bytes());
                    blk[2..4].copy_from_slice(&half::f16::from_f32(-0.1).to_le_bytes());
                }
                GgmlType::F32 => {
                    let v = (r() % 2000) as f32 / 1000.0 - 1.0;
                    blk.copy_from_slice(&v.to_le_bytes())
                }
                GgmlType::F16 => {
                    let v = (r() % 2000) as f32 / 1000.0 - 1.0;
                    blk.copy_from_slice(&half::f16::from_f32(v).to_le_bytes())
                }
                GgmlType::BF16 => {
                    let v = (r() % 2000) as f32 / 1000.0 - 1.0;
                    blk.copy_from_slice(&half::bf16::from_f32(v).to_le_bytes())
                }
            }
        }
        QMatrix::new(ty, rows, cols, Storage::Owned(Arc::new(bytes))).unwrap()
    }

    #[test]
    fn all_types_match_f64_reference() {
        for ty in [
            GgmlType::Q4_1,
            GgmlType::Q4_0,
            GgmlType::Q8_0,
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::BF16,
        ] {
            for &(m, n, k) in &[
                (1, 5, 64),
                (3, 37, 96),
                (9, 64, 256),
                (17, 33, 64),
                (1, 39, 128),
                (5, 7, 192),
                (2, 3, 64),
            ] {
                let w = random_matrix(ty, n, k, 7 + m as u64);
                let mut r = rng(99);
                let x: Vec<f32> = (0..m * k)
                    .map(|_| (r() % 1000) as f32 / 500.0 - 1.0)
                    .collect();
                let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
                let mut y = vec![f32::NAN; m * n];
                linear(&x, &w, Some(&bias), &mut y);
                let wf = w.to_f32();
                // The integer path multiplies int8-quantized activations: its reference is
                // the f64 dot with those (dequantized) values.
                let int_path = q8::supported(&w);
                let mut acts = q8::QActs::default();
                let xr = if int_path {
                    q8::quantize(&x, k, &mut acts);
                    acts.dequantize()
                } else {
                    x.clone()
                };
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k)
                            .map(|t| xr[i * k + t] as f64 * wf[j * k + t] as f64)
                            .sum::<f64>()
                            + bias[j] as f64;
                        let got = y[i * n + j] as f64;
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{ty:?} m={m} n={n} k={k} at ({i},{j}): {got} vs {want}"
                        );
                    }
                }
                if int_path {
                    // The portable integer path agrees with the dispatched (VNNI) one.
                    let mut y2 = vec![f32::NAN; m * n];
                    // SAFETY: single thread writes all columns of y2, which has m*n floats.
                    unsafe { q8::portable_rows(&acts, &w, Some(&bias), y2.as_mut_ptr(), 0, n) };
                    for (a, b) in y.iter().zip(&y2) {
                        assert!(
                            (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                            "{ty:?}: {a} vs {b}"
                        );
                    }
                    continue;
                }
                #[cfg(target_arch = "x86_64")]
                if avx2::available() {
                    let mut y3 = vec![f32::NAN; m * n];
                    // SAFETY: AVX2 present; single thread writes all columns of y3.
                    unsafe { avx2::linear_rows(&x, m, &w, Some(&bias), y3.as_mut_ptr(), 0, n) };
                    for (a, b) in y.iter().zip(&y3) {
                        assert!(
                            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                            "{ty:?} avx2: {a} vs {b}"
                        );
                    }
                }
                // The portable path must agree with the dispatched one.
                let mut y2 = vec![f32::NAN; m * n];
                // SAFETY: single thread writes all columns of y2, which has m*n floats.
                unsafe {
                    portable_rows(&x, m, &w, Some(&bias), y2.as_mut_ptr(), 0, n);
                }
                for (a, b) in y.iter().zip(&y2) {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "{ty:?}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn large_parallel_shape() {
        let (m, n, k) = (4, 1000, 576);
        let w = random_matrix(GgmlType::Q4_1, n, k, 3);
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37) % 101) as f32 / 101.0 - 0.5)
            .collect();
        let mut y = vec![f32::NAN; m * n];
        linear(&x, &w, None, &mut y);
        let wf = w.to_f32();
        let mut acts = q8::QActs::default();
        q8::quantize(&x, k, &mut acts);
        let xq = acts.dequantize();
        for (idx, got) in y.iter().enumerate() {
            let (i, j) = (idx / n, idx % n);
            let want: f64 = (0..k)
                .map(|t| xq[i * k + t] as f64 * wf[j * k + t] as f64)
                .sum();
            assert!((*got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()));
        }
    }
}
