//! Integer GEMM for block-quantized weights (Q4_0, Q4_1, Q8_0) in the Cg16 layout
//! (`backend::packed`): activations are quantized to 12-bit integers per 32-element block,
//! each (row, column, block) dot product is an **exact integer sum**, and only the per-block
//! scaling is floating point, in one fixed order. Every kernel (AMX, AVX-512 VNNI, AVX2,
//! portable) computes the same integers and folds them in the same order, so a result is
//! bitwise the same whatever kernel or batch computes it: batching never changes an output.
//!
//! Why 12 bits and not 8 (llama.cpp's Q8_1 activations): SmolLM2's activations have outlier
//! channels, and with 8-bit blocks the default model's greedy answer to "What is the capital
//! of France?" turns into "L'Étoile, la ..."; with 12-bit blocks the golden outputs of the
//! f64 reference hold (first-step logits within 0.031 of it; 16-bit blocks, used before,
//! were within 0.003). Why not 16: a 12-bit q splits into a high byte and a 4-bit low part,
//! so a Q4 weight c (0..15) times 16 still fits a byte and AMX multiplies both planes in
//! **one** `tdpbsud` per block (B tile = 16c against hi, c against lo) with no recombination
//! in the fold: the batched steps ran 1.08-1.10x faster than with 16 bits.
//!
//! `--activation-bits 8` ([`ActBits::Eight`]) rounds q to a multiple of 16 instead (an 8-bit
//! integer per element, llama.cpp's precision class): the low plane is then all zeros, the
//! VNNI and AVX2 kernels skip its products (half the `vpdpbusd`s: prefill ran 1.4x faster on
//! Qwen2.5-0.5B) and every other step is unchanged, so the kernels still agree bitwise. It
//! is chosen per server, by default per model at load (`engine::act_bits`: 8 bits when they
//! move the model's next-token distributions on a built-in text by at most 0.001 nats per
//! token): on SmolLM2 8 bits flip greedy tokens on 5 of 6 golden prompts (12 kept); on
//! Qwen2.5-0.5B all six hold, with first-step logits within 0.2 of the f64 reference instead
//! of 0.013 (tests/golden_qwen.rs; 8 chosen).
//!
//! Numerics (the definition; `portable_rows` is it, written plainly):
//!
//! ```text
//!  activation block x[32]:  d = max|x| / 2032,  q = round_ties_even(x / d) in [-2032, 2032]
//!                           (8-bit: q = 16 round_ties_even(x / d / 16) in [-2032, 2032])
//!                           (0 where x / d is NaN), s = sum(q), ds = d * f32(s)
//!  stored as two int8 planes: hi = (q + 8) >> 4 in [-127, 127], lo = q - 16 hi in [-8, 7]
//!  weight block as  w = dw * c + mw  with integer c:
//!      Q4_1: c = nibble (0..15), mw = m      Q4_0: c = nibble - 8      Q8_0: c = q (-128..127)
//!  S = sum(c * q)                              exact in i32 (|S| < 2^23, so f32(S) is exact)
//!  acc = 0;  for each block b in order:
//!      acc = fma(f32(S_b), dw_b * d_b, acc)
//!      acc = fma(mw_b, ds_b, acc)              (Q4_1 only)
//!  y = acc (+ bias)
//! ```
//!
//! 2032 = 127 * 16 keeps `hi` within a signed byte, so both planes can be the signed
//! operand of `vpdpbusd` / AMX `tdpbssd` / `tdpbsud` against the (unsigned or signed) weight
//! bytes: S = 16 * sum(c * hi) + sum(c * lo), with the kernels' offset corrections (Q4_0's
//! -8, the VNNI kernel's +128 on Q8_0 bytes) applied as multiples of `s`.
//!
//! Buffers (`QActs`, one per thread, reused): 2 bytes per activation (the planes, in AMX
//! tile order: 16 rows x (32 high + 32 low bytes) contiguous per block) plus 12 bytes per
//! block (d, ds, s), rows padded to a multiple of 16: 2.4 MiB for a 2,048-token prefill
//! chunk at k = 576, 80 MiB at k = 18,944 x 2,048 rows (Qwen2-7B's FFN, whose Q4 weights
//! are ~4 GiB).

use crate::backend::packed::{self, GROUP};
use crate::backend::tensor::{AlignedBytes, Layout, QMatrix};

/// Largest |q|: 127 * 16, so `hi` fits a signed byte.
pub const QMAX: i32 = 2032;
/// Bits of q in the low plane: q = (hi << LO_BITS) + lo.
pub const LO_BITS: u32 = 4;
/// Offset of a block's low bytes after its high bytes in [`QActs::planes`].
pub const LO: usize = 32;

/// Precision of the activation integers (`--activation-bits`; the module header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActBits {
    /// q in [-2032, 2032]: two planes, golden outputs of the f64 reference hold.
    #[default]
    Twelve,
    /// q a multiple of 16 (one signed byte per element): the low plane is zero and skipped.
    Eight,
}

impl ActBits {
    /// `8` / `12` (the flag's values).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "12" => Ok(ActBits::Twelve),
            "8" => Ok(ActBits::Eight),
            other => Err(format!(
                "unsupported activation bits `{other}` (supported: 8, 12)"
            )),
        }
    }

    pub fn bits(self) -> u32 {
        match self {
            ActBits::Twelve => 12,
            ActBits::Eight => 8,
        }
    }
}

impl std::fmt::Display for ActBits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.bits())
    }
}

/// Quantized activations of `m` rows of `k` values: two int8 planes plus per-block scales.
#[derive(Debug, Default)]
pub struct QActs {
    pub m: usize,
    pub k: usize,
    /// The two int8 planes of q, interleaved per block: row i, block b's 32 high bytes at
    /// [`QActs::plane_at`] and its 32 low bytes right after them (q = 16 hi + lo). Layout
    /// `[ceil(m / 16), k / 32, 16, 2, 32]`: one AMX A tile (16 rows x 64 bytes, hi | lo) per
    /// 1,024 contiguous bytes; 64-byte aligned.
    pub planes: AlignedBytes,
    /// Block scale d of row i, block b at [`QActs::at`]: `[ceil(m / 16), k / 32, 16]`, so
    /// the 16 rows of an AMX tile share one cache line per block (padding rows are 0).
    pub d: Vec<f32>,
    /// d * f32(s), same layout.
    pub ds: Vec<f32>,
    /// s = sum of the block's q, same layout.
    pub s: Vec<i32>,
    /// s0 = sum of q over the block's first 16 elements (the formats with 16-element
    /// sub-blocks need both halves' sums), same layout.
    pub s0: Vec<i32>,
    /// The precision `planes` hold; with [`ActBits::Eight`] every low byte is 0.
    pub bits: ActBits,
}

impl QActs {
    /// Index of row `i`, block `b` in `d`, `ds` and `s`.
    #[inline(always)]
    pub fn at(&self, i: usize, b: usize) -> usize {
        ((i / 16) * (self.k / 32) + b) * 16 + i % 16
    }

    /// Offset in `planes` of row `i`, block `b`'s 32 high bytes (its low bytes follow at
    /// `+ LO`).
    #[inline(always)]
    pub fn plane_at(&self, i: usize, b: usize) -> usize {
        ((i / 16) * (self.k / 32) + b) * 1024 + (i % 16) * 64
    }

    /// The high plane: byte `plane_at(i, b) + e` is hi of element `32 b + e` of row `i`.
    #[inline(always)]
    pub fn hi_ptr(&self) -> *const i8 {
        self.planes.as_i8().as_ptr()
    }

    /// The low plane, same offsets as [`QActs::hi_ptr`].
    #[inline(always)]
    pub fn lo_ptr(&self) -> *const i8 {
        self.planes.as_i8()[LO..].as_ptr()
    }

    /// q of element `j` of row `i`.
    pub fn q(&self, i: usize, j: usize) -> i32 {
        let at = self.plane_at(i, j / 32) + j % 32;
        let p = self.planes.as_i8();
        16 * i32::from(p[at]) + i32::from(p[at + LO])
    }

    /// The values the integer path multiplies: `q * d`, `[m, k]`.
    pub fn dequantize(&self) -> Vec<f32> {
        (0..self.m * self.k)
            .map(|at| {
                let (i, j) = (at / self.k, at % self.k);
                self.q(i, j) as f32 * self.d[self.at(i, j / 32)]
            })
            .collect()
    }
}

/// Whether `w` runs on the integer path (any matrix of a type with a Cg16 form: rows are
/// whole blocks).
pub fn supported(w: &QMatrix) -> bool {
    packed::form(w.ty).is_some()
}

/// Quantizes `x` (`[m, k]`, k % 32 == 0) into `out` with precision `bits`, reusing its
/// buffers.
pub fn quantize(x: &[f32], k: usize, out: &mut QActs, bits: ActBits) {
    assert!(
        k.is_multiple_of(32),
        "quantize: k={k} is not a multiple of 32"
    );
    let m = x.len() / k;
    let nb = k / 32;
    out.m = m;
    out.k = k;
    out.bits = bits;
    // Every real row's bytes are written below; the padding rows of the last tile keep
    // whatever they held (the AMX kernel computes them and never stores them), which saves
    // clearing 2 bytes per activation per call (4.4 MiB for a 1,440-token prefill at k = 1536).
    out.planes.resize_keep(m.div_ceil(16) * 16 * 2 * k);
    let tiled = m.div_ceil(16) * 16 * nb;
    for v in [&mut out.d, &mut out.ds] {
        v.clear();
        v.resize(tiled, 0.0);
    }
    for v in [&mut out.s, &mut out.s0] {
        v.clear();
        v.resize(tiled, 0);
    }
    // Row tiles of 16 rows own disjoint parts of every buffer (planes: nb * 1024 bytes,
    // scales: nb * 16 entries each), so they are quantized in parallel when there are many.
    let tiles = x
        .chunks(16 * k)
        .zip(out.planes.as_i8_mut().chunks_exact_mut(nb * 1024))
        .zip(out.d.chunks_exact_mut(nb * 16))
        .zip(out.ds.chunks_exact_mut(nb * 16))
        .zip(out.s.chunks_exact_mut(nb * 16))
        .zip(out.s0.chunks_exact_mut(nb * 16))
        .map(|(((((x, planes), d), ds), s), s0)| TileOut {
            x,
            planes,
            d,
            ds,
            s,
            s0,
            bits,
        });
    // Parallel from 2 tiles: the GEMM's parallel region follows at once, so the worker
    // woken here stays awake for it.
    if m > 16 {
        use rayon::prelude::*;
        tiles
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each(|t| t.quantize(k));
    } else {
        tiles.for_each(|t| t.quantize(k));
    }
}

/// One row tile's input rows and its parts of the [`QActs`] buffers.
struct TileOut<'a> {
    x: &'a [f32],
    planes: &'a mut [i8],
    d: &'a mut [f32],
    ds: &'a mut [f32],
    s: &'a mut [i32],
    s0: &'a mut [i32],
    bits: ActBits,
}

impl TileOut<'_> {
    /// Quantizes each row contiguously, then scatters it into the tile layouts (2k bytes
    /// and 3 x nb entries of scratch).
    fn quantize(self, k: usize) {
        let nb = k / 32;
        // Tiles of 8+ rows take the 16-row AVX-512 quantizer (its cost is per 16 rows).
        #[cfg(target_arch = "x86_64")]
        if vnni::available() && self.x.len() / k >= 8 {
            let t = self.x.len() / k;
            // SAFETY: AVX-512 present (checked); x is t <= 16 rows of k, the planes have
            // nb * 1024 bytes and the scales nb * 16 entries (split so by `quantize`).
            unsafe {
                vnni::quantize_tile(
                    self.x,
                    t,
                    k,
                    self.planes,
                    [self.d, self.ds],
                    [self.s, self.s0],
                    self.bits,
                )
            };
            return;
        }
        let mut buf = RowBuf::new(k);
        for (r, x) in self.x.chunks_exact(k).enumerate() {
            quantize_row_best(x, buf.out(), self.bits);
            let RowBuf {
                hi,
                lo,
                d,
                ds,
                s,
                s0,
            } = &buf;
            for b in 0..nb {
                let j = b * 16 + r;
                (self.d[j], self.ds[j], self.s[j], self.s0[j]) = (d[b], ds[b], s[b], s0[b]);
                let p = b * 1024 + r * 64;
                self.planes[p..p + 32].copy_from_slice(&hi[b * 32..b * 32 + 32]);
                self.planes[p + LO..p + LO + 32].copy_from_slice(&lo[b * 32..b * 32 + 32]);
            }
        }
    }
}

/// One row with the fastest quantizer this CPU has (all give the same values).
fn quantize_row_best(x: &[f32], row: RowOut<'_>, bits: ActBits) {
    #[cfg(target_arch = "x86_64")]
    if vnni::available() {
        // SAFETY: AVX-512F/BW present (checked); RowOut's planes have x.len() bytes and its
        // scale slices x.len() / 32 entries (a `RowBuf::new(x.len())`).
        unsafe { vnni::quantize_row(x, row, bits) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: AVX2 present (checked); sizes as above.
        unsafe { avx2::quantize_row(x, row, bits) };
        return;
    }
    quantize_row(x, row, bits);
}

/// One row's quantized values in row order (`hi`/`lo`: k bytes, scales: k / 32 entries),
/// owned: the scratch a [`RowOut`] borrows.
#[derive(Debug, Clone)]
pub struct RowBuf {
    pub hi: Vec<i8>,
    pub lo: Vec<i8>,
    pub d: Vec<f32>,
    pub ds: Vec<f32>,
    pub s: Vec<i32>,
    pub s0: Vec<i32>,
}

impl RowBuf {
    pub fn new(k: usize) -> Self {
        let nb = k / 32;
        RowBuf {
            hi: vec![0; k],
            lo: vec![0; k],
            d: vec![0.0; nb],
            ds: vec![0.0; nb],
            s: vec![0; nb],
            s0: vec![0; nb],
        }
    }

    pub fn out(&mut self) -> RowOut<'_> {
        RowOut {
            hi: &mut self.hi,
            lo: &mut self.lo,
            d: &mut self.d,
            ds: &mut self.ds,
            s: &mut self.s,
            s0: &mut self.s0,
        }
    }
}

/// One row's slices of [`QActs`].
pub struct RowOut<'a> {
    pub hi: &'a mut [i8],
    pub lo: &'a mut [i8],
    pub d: &'a mut [f32],
    pub ds: &'a mut [f32],
    pub s: &'a mut [i32],
    pub s0: &'a mut [i32],
}

/// Splits q into the planes' `(hi, lo)`.
#[inline(always)]
pub fn split(q: i32) -> (i8, i8) {
    let hi = (q + 8) >> 4;
    (hi as i8, (q - (hi << 4)) as i8)
}

/// Scalar quantization of one row (the definition; the SIMD versions match it exactly).
pub fn quantize_row(x: &[f32], r: RowOut<'_>, bits: ActBits) {
    for (b, xb) in x.chunks_exact(32).enumerate() {
        let amax = xb.iter().fold(0f32, |acc, v| acc.max(v.abs()));
        let d = amax / QMAX as f32;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let (mut s, mut s0) = (0i32, 0i32);
        for (e, v) in xb.iter().enumerate() {
            let p = v * id;
            let q = if p.is_nan() {
                0
            } else if bits == ActBits::Eight {
                // p / 16 is exact (a power of two), so this is round(x / (16 d)).
                let q8 = (p * 0.0625).round_ties_even().clamp(-127.0, 127.0) as i32;
                q8 << LO_BITS
            } else {
                p.round_ties_even().clamp(-QMAX as f32, QMAX as f32) as i32
            };
            s += q;
            if e < 16 {
                s0 += q;
            }
            let (h, l) = split(q);
            r.hi[b * 32 + e] = h;
            r.lo[b * 32 + e] = l;
        }
        r.d[b] = d;
        r.s[b] = s;
        r.s0[b] = s0;
        r.ds[b] = d * s as f32;
    }
}

/// Output pointer and shape shared by the kernels: `y[i, col] = ...` at `y + i * ld + col`
/// for the `n` columns of this weight matrix (`ld >= n`: a matrix may fill a column range of
/// a wider output, see `matmul::linear_parts`).
#[derive(Clone, Copy)]
pub struct Out {
    pub y: *mut f32,
    pub n: usize,
    pub ld: usize,
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
            unsafe { *self.y.add(i * self.ld + col) = bias.map_or(a, |b| a + b[col]) };
        }
    }
}

pub use def::portable_rows;

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

pub mod def;

#[cfg(target_arch = "x86_64")]
pub mod vnni;

#[cfg(target_arch = "x86_64")]
pub mod avx2;

#[cfg(target_arch = "x86_64")]
pub mod amx;

#[cfg(test)]
mod tests;
