//! Integer GEMM for block-quantized weights (Q4_0, Q4_1, Q8_0) in the Cg16 layout
//! (`backend::packed`): activations are quantized to 16-bit integers per 32-element block,
//! each (row, column, block) dot product is an **exact integer sum**, and only the per-block
//! scaling is floating point, in one fixed order. Every kernel (AMX, AVX-512 VNNI, AVX2,
//! portable) computes the same integers and folds them in the same order, so a result is
//! bitwise the same whatever kernel or batch computes it: batching never changes an output.
//!
//! Why 16 bits and not 8 (llama.cpp's Q8_1 activations): SmolLM2's activations have outlier
//! channels, and with 8-bit blocks the default model's greedy answer to "What is the capital
//! of France?" turns into "L'Étoile, la ..."; with 16-bit blocks the golden outputs of the
//! f64 reference hold.
//!
//! Numerics (the definition; `portable_rows` is it, written plainly):
//!
//! ```text
//!  activation block x[32]:  d = max|x| / 32512,  q = round_ties_even(x / d) in [-32512, 32512]
//!                           (0 where x / d is NaN), s = sum(q), ds = d * f32(s)
//!  stored as two int8 planes: hi = (q + 128) >> 8 in [-127, 127], lo = q - 256 hi in [-128, 127]
//!  weight block as  w = dw * c + mw  with integer c:
//!      Q4_1: c = nibble (0..15), mw = m      Q4_0: c = nibble - 8      Q8_0: c = q (-128..127)
//!  S = sum(c * q)                              exact in i32 (|S| < 2^27)
//!  acc = 0;  for each block b in order:
//!      acc = fma(f32(S_b), dw_b * d_b, acc)    (f32(S) rounds to nearest-even above 2^24)
//!      acc = fma(mw_b, ds_b, acc)              (Q4_1 only)
//!  y = acc (+ bias)
//! ```
//!
//! 32512 = 127 * 256 keeps `hi` within a signed byte, so both planes can be the signed
//! operand of `vpdpbusd` / AMX `tdpbssd` against the (unsigned or signed) weight bytes:
//! S = 256 * sum(c * hi) + sum(c * lo), with the kernels' offset corrections (Q4_0's -8,
//! the VNNI kernel's +128 on Q8_0 bytes) applied as multiples of `s`.
//!
//! Buffers (`QActs`, one per thread, reused): 2 bytes per activation (the planes) plus 12
//! bytes per block (d, ds, s): 2.4 MiB for a 2,048-token prefill chunk at k = 576, 80 MiB at
//! k = 18,944 x 2,048 rows (Qwen2-7B's FFN, whose Q4 weights are ~4 GiB).

use crate::backend::dtype::GgmlType;
use crate::backend::packed::{self, GROUP};
use crate::backend::tensor::{Layout, QMatrix};

/// Largest |q|: 127 * 256, so `hi` fits a signed byte.
pub const QMAX: i32 = 32512;

/// Int16 activations of `m` rows of `k` values, as two int8 planes plus per-block scales.
#[derive(Debug, Default)]
pub struct QActs {
    pub m: usize,
    pub k: usize,
    /// `[m, k]` high bytes of q.
    pub hi: Vec<i8>,
    /// `[m, k]` low bytes of q (signed: q = 256 hi + lo).
    pub lo: Vec<i8>,
    /// `[m, k / 32]` block scale d.
    pub d: Vec<f32>,
    /// `[m, k / 32]` d * f32(s).
    pub ds: Vec<f32>,
    /// `[m, k / 32]` s = sum of the block's q.
    pub s: Vec<i32>,
}

impl QActs {
    /// q of element `j` of row `i`.
    pub fn q(&self, i: usize, j: usize) -> i32 {
        let at = i * self.k + j;
        256 * i32::from(self.hi[at]) + i32::from(self.lo[at])
    }

    /// The values the integer path multiplies: `q * d`, `[m, k]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let nb = self.k / 32;
        (0..self.m * self.k)
            .map(|at| {
                let (i, j) = (at / self.k, at % self.k);
                self.q(i, j) as f32 * self.d[i * nb + j / 32]
            })
            .collect()
    }
}

/// Whether `w` runs on the integer path (any Q4_0/Q4_1/Q8_0 matrix: rows are whole blocks).
pub fn supported(w: &QMatrix) -> bool {
    packed::group_block_bytes(w.ty).is_some()
}

/// Quantizes `x` (`[m, k]`, k % 32 == 0) into `out`, reusing its buffers.
pub fn quantize(x: &[f32], k: usize, out: &mut QActs) {
    assert!(
        k.is_multiple_of(32),
        "quantize: k={k} is not a multiple of 32"
    );
    let m = x.len() / k;
    let nb = k / 32;
    out.m = m;
    out.k = k;
    for v in [&mut out.hi, &mut out.lo] {
        v.clear();
        v.resize(m * k, 0);
    }
    for v in [&mut out.d, &mut out.ds] {
        v.clear();
        v.resize(m * nb, 0.0);
    }
    out.s.clear();
    out.s.resize(m * nb, 0);
    let rows = x
        .chunks_exact(k)
        .zip(out.hi.chunks_exact_mut(k))
        .zip(out.lo.chunks_exact_mut(k))
        .zip(out.d.chunks_exact_mut(nb))
        .zip(out.ds.chunks_exact_mut(nb))
        .zip(out.s.chunks_exact_mut(nb));
    for (((((x, hi), lo), d), ds), s) in rows {
        let row = RowOut { hi, lo, d, ds, s };
        #[cfg(target_arch = "x86_64")]
        if vnni::available() {
            // SAFETY: AVX-512F/BW present (checked); the planes have x.len() bytes and the
            // scale slices x.len() / 32 entries.
            unsafe { vnni::quantize_row(x, row) };
            continue;
        }
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            // SAFETY: AVX2 present (checked); sizes as above.
            unsafe { avx2::quantize_row(x, row) };
            continue;
        }
        quantize_row(x, row);
    }
}

/// One row's slices of [`QActs`].
pub struct RowOut<'a> {
    pub hi: &'a mut [i8],
    pub lo: &'a mut [i8],
    pub d: &'a mut [f32],
    pub ds: &'a mut [f32],
    pub s: &'a mut [i32],
}

/// Splits q into the planes' `(hi, lo)`.
#[inline(always)]
pub fn split(q: i32) -> (i8, i8) {
    let hi = (q + 128) >> 8;
    (hi as i8, (q - (hi << 8)) as i8)
}

/// Scalar quantization of one row (the definition; the SIMD versions match it exactly).
pub fn quantize_row(x: &[f32], r: RowOut<'_>) {
    for (b, xb) in x.chunks_exact(32).enumerate() {
        let amax = xb.iter().fold(0f32, |acc, v| acc.max(v.abs()));
        let d = amax / QMAX as f32;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut s = 0i32;
        for (e, v) in xb.iter().enumerate() {
            let p = v * id;
            let q = if p.is_nan() {
                0
            } else {
                p.round_ties_even().clamp(-QMAX as f32, QMAX as f32) as i32
            };
            s += q;
            let (h, l) = split(q);
            r.hi[b * 32 + e] = h;
            r.lo[b * 32 + e] = l;
        }
        r.d[b] = d;
        r.s[b] = s;
        r.ds[b] = d * s as f32;
    }
}

/// Weight integers of group-block `gb` (`c[n][e]` for the 16 columns) and `(dw, mw)`.
fn decode_group_block(ty: GgmlType, gb: &[u8]) -> ([[i32; 32]; GROUP], [f32; GROUP], [f32; GROUP]) {
    let f16 = |o: usize| half::f16::from_le_bytes([gb[o], gb[o + 1]]).to_f32();
    let qo = packed::quants_offset(ty);
    let mut c = [[0i32; 32]; GROUP];
    let (mut dw, mut mw) = ([0f32; GROUP], [0f32; GROUP]);
    for n in 0..GROUP {
        dw[n] = f16(2 * n);
        if ty == GgmlType::Q4_1 {
            mw[n] = f16(32 + 2 * n);
        }
        for quad in 0..8 {
            for e in 0..4 {
                c[n][quad * 4 + e] = match ty {
                    GgmlType::Q8_0 => i32::from(gb[qo + quad * 64 + n * 4 + e] as i8),
                    _ => {
                        let byte = gb[qo + (quad % 4) * 64 + n * 4 + e];
                        let nib = i32::from(if quad < 4 { byte & 15 } else { byte >> 4 });
                        if ty == GgmlType::Q4_0 {
                            nib - 8
                        } else {
                            nib
                        }
                    }
                };
            }
        }
    }
    (c, dw, mw)
}

/// Output pointer and shape shared by the kernels: `y[i, col] = ...` at `y + i * n + col`.
#[derive(Clone, Copy)]
pub struct Out {
    pub y: *mut f32,
    pub n: usize,
}

impl Out {
    /// Writes the 16 sums of group `g` for row `i` (only columns < n), plus bias.
    ///
    /// # Safety
    /// Row `i` exists and the caller owns columns `16g..16g+16` of `y`.
    #[inline(always)]
    pub unsafe fn put(&self, i: usize, g: usize, acc: &[f32; GROUP], bias: Option<&[f32]>) {
        for (c, &a) in acc
            .iter()
            .enumerate()
            .take(self.n.saturating_sub(g * GROUP))
        {
            let col = g * GROUP + c;
            // SAFETY: col < n and row i exists (caller).
            unsafe { *self.y.add(i * self.n + col) = bias.map_or(a, |b| a + b[col]) };
        }
    }
}

/// Portable kernel: `y[i, col]` for the columns of groups `g0..g1`.
///
/// # Safety
/// `w` is Cg16 with `acts.k == w.cols`; `y` has `acts.m * w.rows` floats and no other
/// thread writes the columns of groups `g0..g1`.
pub unsafe fn portable_rows(
    acts: &QActs,
    w: &QMatrix,
    bias: Option<&[f32]>,
    y: Out,
    g0: usize,
    g1: usize,
) {
    let nb = acts.k / 32;
    let gbytes = packed::group_block_bytes(w.ty).expect("integer-path type");
    let data = w.data.bytes();
    for g in g0..g1 {
        // One group's decoded blocks: nb x 2.1 KiB.
        let blocks: Vec<_> = (0..nb)
            .map(|b| {
                let at = (g * nb + b) * gbytes;
                decode_group_block(w.ty, &data[at..at + gbytes])
            })
            .collect();
        for i in 0..acts.m {
            let mut acc = [0f32; GROUP];
            for (b, (c, dw, mw)) in blocks.iter().enumerate() {
                let (d, ds) = (acts.d[i * nb + b], acts.ds[i * nb + b]);
                for n in 0..GROUP {
                    let s: i32 = (0..32).map(|e| c[n][e] * acts.q(i, b * 32 + e)).sum();
                    acc[n] = (s as f32).mul_add(dw[n] * d, acc[n]);
                    if w.ty == GgmlType::Q4_1 {
                        acc[n] = mw[n].mul_add(ds, acc[n]);
                    }
                }
            }
            // SAFETY: forwarded contract.
            unsafe { y.put(i, g, &acc, bias) };
        }
    }
}

/// Activation rows from which the AMX kernel runs instead of VNNI (same results; AMX's
/// fixed cost per tile pays off once a tile has several rows).
pub const AMX_MIN_ROWS: usize = 8;

/// The best kernel for this CPU and batch: `y` columns of groups `g0..g1`.
///
/// # Safety
/// As [`portable_rows`].
pub unsafe fn rows(acts: &QActs, w: &QMatrix, bias: Option<&[f32]>, y: Out, g0: usize, g1: usize) {
    debug_assert_eq!(w.layout, Layout::Cg16);
    #[cfg(target_arch = "x86_64")]
    {
        if acts.m >= AMX_MIN_ROWS && amx::available() {
            // SAFETY: AMX usable (checked: CPU, OS and permission); forwarded contract.
            unsafe { amx::rows(acts, w, bias, y, g0, g1) };
            return;
        }
        if vnni::available() {
            // SAFETY: AVX-512 VNNI present (checked); forwarded contract.
            unsafe { vnni::rows(acts, w, bias, y, g0, g1) };
            return;
        }
        if avx2::available() {
            // SAFETY: AVX2, FMA and F16C present (checked); forwarded contract.
            unsafe { avx2::rows(acts, w, bias, y, g0, g1) };
            return;
        }
    }
    // SAFETY: forwarded contract.
    unsafe { portable_rows(acts, w, bias, y, g0, g1) }
}

/// The `PONDER_CPU_ISA` override (`avx2`, `avx512`: the best kernel up to that level, to
/// measure or test the others on a newer CPU); `None` when unset.
pub fn isa_override() -> Option<String> {
    std::env::var("PONDER_CPU_ISA").ok()
}

#[cfg(target_arch = "x86_64")]
#[path = "matmul_q8_vnni.rs"]
pub mod vnni;

#[cfg(target_arch = "x86_64")]
#[path = "matmul_q8_avx2.rs"]
pub mod avx2;

#[cfg(target_arch = "x86_64")]
#[path = "matmul_q8_amx.rs"]
pub mod amx;

#[cfg(test)]
#[path = "matmul_q8_tests.rs"]
mod tests;
