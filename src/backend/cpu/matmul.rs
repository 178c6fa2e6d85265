//! `y = x W^T (+ bias)` for weights in their storage format: the CPU GEMM/GEMV of every
//! linear layer and the LM head.
//!
//! Weights stay quantized in memory (Q4_1 is 5 bits/weight against 32 for f32): decode reads
//! each weight byte once per step, which is what bounds single-sequence decode speed.
//!
//! Dispatch (CPU features checked once at run time):
//! - Q4_0/Q4_1/Q8_0 weights take the integer path (`matmul/q8.rs`): the model packs them at
//!   load into the Cg16 layout (`backend::packed`), activations are quantized to 12-bit
//!   integers per 32-value block, and AMX (batches of 8+ rows), AVX-512 VNNI, AVX2 or
//!   portable kernels compute bitwise the same result. Tasks own whole 16-column groups of `y`.
//! - Everything else (f32/f16/bf16 weights) takes the f32 path: each 32-element block is
//!   decoded in registers and multiplied against a tile of up to [`ROW_TILE`] activation
//!   rows (AVX-512, AVX2+FMA, or a portable path with the reference decoder), the kernels
//!   sharing the tile walk of `matmul/tiles.rs`:
//!
//! ```text
//!  x [m, k] (f32)            W [n, k] (blocks of 32)          y [m, n]
//!  rows m0..m0+T  ---------> for each W row r (parallel over r chunks):
//!                              for each block b: w = decode(W[r, b])      (4 x f32x8)
//!                                for t in tile: acc[t] += w . x[m0+t, b]  (4 FMAs)
//!                              y[m0+t, r] = hsum(acc[t]) (+ bias[r])
//! ```
//!
//! All are tested against a plain f64 dot.

use rayon::prelude::*;

use crate::backend::dtype::GgmlType;
use crate::backend::packed;
use crate::backend::tensor::{Layout, QMatrix};
use q8::ActBits;

/// Activation rows handled per pass over a weight row; 8 accumulators + 4 decoded vectors fit
/// in the 16 ymm registers.
pub const ROW_TILE: usize = 8;

/// Raw output pointer shared by tasks that write disjoint columns of `y`.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint (row, column) elements; see `linear`.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `y[m, n] = sum_k x[m, k] * W[n, k] + bias[n]` for `W` stored as row blocks `parts`
/// stacked in order (a fused projection whose parts differ in storage type, such as Q/K in
/// Q5_0 and V in Q8_0).
///
/// Shapes: `x` is `[m, k]`, part `p` is `[n_p, k]`, `y` is `[m, sum n_p]`, `bias` is
/// `[sum n_p]`. Integer-path parts write their columns of `y` in place; float parts go
/// through a `[m, n_p]` buffer. `bits`: the integer path's activation precision.
pub fn linear_parts(
    x: &[f32],
    parts: &[QMatrix],
    bias: Option<&[f32]>,
    y: &mut [f32],
    bits: ActBits,
) {
    if let [w] = parts {
        return linear_with(x, w, bias, y, bits);
    }
    let n: usize = parts.iter().map(|p| p.rows).sum();
    let m = y.len() / n.max(1);
    assert_eq!(y.len(), m * n, "linear_parts: y is not [m, {n}]");
    let mut col = 0;
    for w in parts {
        let b = bias.map(|b| &b[col..col + w.rows]);
        if q8::supported(w) && w.layout == Layout::Cg16 {
            let out = OutPtr(y.as_mut_ptr());
            // SAFETY: the columns col..col + w.rows of every row of y ([m, n]) are this
            // part's alone.
            unsafe { linear_int(x, w, b, out, n, col, bits) };
        } else {
            let mut part = vec![0f32; m * w.rows]; // [m, n_p]
            linear_with(x, w, b, &mut part, bits);
            for (row, p) in y.chunks_exact_mut(n).zip(part.chunks_exact(w.rows)) {
                row[col..col + w.rows].copy_from_slice(p);
            }
        }
        col += w.rows;
    }
}

/// `y[m, n] = sum_k x[m, k] * W[n, k] + bias[n]` (12-bit activations on the integer path).
///
/// Shapes: `x` is `[m, w.cols]`, `y` is `[m, w.rows]`, `bias` is `[w.rows]`.
pub fn linear(x: &[f32], w: &QMatrix, bias: Option<&[f32]>, y: &mut [f32]) {
    linear_with(x, w, bias, y, ActBits::Twelve)
}

/// [`linear`] with the integer path's activation precision `bits`.
pub fn linear_with(x: &[f32], w: &QMatrix, bias: Option<&[f32]>, y: &mut [f32], bits: ActBits) {
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
    let out = OutPtr(y.as_mut_ptr());
    if q8::supported(w) {
        // Matrices loaded by the model are packed at load; others (tests, one-off callers)
        // are packed here, a copy of the weights for this call.
        let packed_here;
        let w = if w.layout == Layout::Cg16 {
            w
        } else {
            packed_here = w.to_cg16();
            &packed_here
        };
        // SAFETY: y is [m, n] and all its columns are this call's.
        return unsafe { linear_int(x, w, bias, out, n, 0, bits) };
    }
    let chunk = n.div_ceil(tasks);
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

/// The integer path: columns `col..col + w.rows` of `y` (`[m, ld]`) = `x W^T (+ bias)`.
///
/// # Safety
/// `y` points at `m * ld` floats (`m = x.len() / w.cols`), `col + w.rows <= ld`, and no one
/// else writes those columns while this runs; `w` is Cg16.
unsafe fn linear_int(
    x: &[f32],
    w: &QMatrix,
    bias: Option<&[f32]>,
    y: OutPtr,
    ld: usize,
    col: usize,
    bits: ActBits,
) {
    let (n, k) = (w.rows, w.cols);
    let m = x.len() / k;
    let threads = rayon::current_num_threads().max(1);
    let tasks = if m * n * k < 1 << 16 {
        1
    } else {
        (threads * 4).min(n.div_ceil(8))
    };
    let groups = packed::groups(n);
    let tasks = tasks.min(groups);
    with_scratch(|acts| {
        q8::quantize(x, k, acts, bits);
        let acts = &*acts;
        // Task c takes groups g0..g1, the counts differing by at most one, so the halves
        // rayon splits the tasks into carry equal work (36 groups as 5 x 7 + 1 gave one
        // core 20 of them).
        let run = |c: usize| {
            let g0 = c * groups / tasks;
            let g1 = (c + 1) * groups / tasks;
            let o = y;
            // SAFETY: col + n <= ld, inside y (caller).
            let y = q8::Out {
                y: unsafe { o.0.add(col) },
                n,
                ld,
            };
            // SAFETY: task c owns the columns of groups g0..g1 of every row of y (the
            // ranges of different tasks are disjoint); acts.k == w.cols; w is Cg16.
            unsafe { q8::rows(acts, w, bias, y, g0, g1) }
        };
        if tasks == 1 {
            run(0);
        } else {
            (0..tasks).into_par_iter().for_each(run);
        }
    })
}

thread_local! {
    /// Quantized activations of the last integer-path call on this thread (see
    /// matmul/q8.rs for its size: ~2.4 bytes per activation of the largest batch seen).
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
mod avx2;

#[cfg(target_arch = "x86_64")]
mod avx512;

pub mod q8;

mod tiles;

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
                other => blk.copy_from_slice(&crate::backend::blocks::random_blocks(other, 1, r())),
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
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q2K,
            GgmlType::Q3K,
            GgmlType::Q4K,
            GgmlType::Q5K,
            GgmlType::Q6K,
            GgmlType::Q8K,
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
                // K-quant rows are whole 256-element super-blocks.
                let k = (k as usize).next_multiple_of(ty.block_elems());
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
                    q8::quantize(&x, k, &mut acts, q8::ActBits::Twelve);
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
                    // The portable integer path is the definition: the dispatched kernel
                    // (AMX, VNNI or AVX2) must give the same bits.
                    let mut y2 = vec![f32::NAN; m * n];
                    let wp = w.to_cg16();
                    let out = q8::Out {
                        y: y2.as_mut_ptr(),
                        n,
                        ld: n,
                    };
                    let groups = crate::backend::packed::groups(n);
                    // SAFETY: single thread writes all columns of y2, which has m*n floats.
                    unsafe { q8::portable_rows(&acts, &wp, Some(&bias), out, 0, groups) };
                    assert_eq!(
                        y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        y2.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{ty:?} m={m} n={n} k={k}: dispatched vs portable"
                    );
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
        q8::quantize(&x, k, &mut acts, q8::ActBits::Twelve);
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
