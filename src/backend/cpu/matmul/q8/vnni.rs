//! AVX-512 VNNI kernel of the integer GEMM (`matmul/q8.rs`): one 512-bit vector is the 16
//! columns of a Cg16 group. Per group-block the weights become eight vectors of unsigned
//! bytes `W_j` (quad j = elements 4j..4j+4 of each column: a nibble mask or shift, no
//! widening), then per activation row sixteen `vpdpbusd` against the broadcast quads of the
//! two activation planes give the exact integers `R_hi`, `R_lo`; `S = 16 R_hi + R_lo` (minus
//! the offset correction), one int->float conversion, one multiply for `dw * d` and one FMA
//! (two for Q4_1) fold the block in the header's order. No horizontal sums anywhere: the
//! 16 lanes are the 16 outputs.
//!
//! Offsets: `vpdpbusd` multiplies unsigned by signed bytes. Nibbles are unsigned already
//! (Q4_0's -8 becomes `- 8 s`); Q8_0 bytes are flipped to `c + 128` (`- 128 s`).
//!
//! The AVX-512 activation quantizers live in `vnni/quant.rs`.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::def::{spec_of, Fold, Spec};
use super::{ActBits, Out, QActs};

mod quant;
use crate::backend::dtype::GgmlType;
use crate::backend::packed::{qoff, rec, GroupLayout, GROUP};
use crate::backend::tensor::QMatrix;
pub use quant::{quantize_row, quantize_tile};

/// Whether this kernel runs: the CPU has the features, and `PONDER_CPU_ISA` is not `avx2`.
pub fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        super::isa_override().is_none_or(|v| v != "avx2")
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("f16c")
            && is_x86_feature_detected!("fma")
    })
}

/// A weight format in the Cg16 layout, as this kernel reads it.
pub(super) trait Fmt {
    const TY: GgmlType;
    /// The definition's fold, minimum and offset (`qdef`).
    const SPEC: Spec = spec_of(Self::TY);
    /// Width of the stored element integers (4, 5, 6 or 8).
    const BITS: u32;
    /// The kernel's weight operand is `u = c + VOFF` (unsigned bytes for `vpdpbusd`), so a
    /// block's sum is corrected by `- VOFF * s`: the definition's offset, or 128 for Q8_0
    /// (its bytes flipped to `c + 128`).
    const VOFF: i32 = if Self::BITS == 8 { 128 } else { Self::SPEC.off };

    /// The eight unsigned-byte vectors `W_0..W_7` (quad j = elements 4j..4j+4 of the 16
    /// columns) of the block quants at `q`.
    ///
    /// # Safety
    /// A block's quants (`form.qb` bytes) are readable at `q`; AVX-512F/BW enabled by the
    /// caller.
    #[inline(always)]
    unsafe fn weights(q: *const u8) -> [__m512i; 8] {
        // SAFETY: the block's quants at q (caller).
        unsafe {
            if Self::BITS == 8 {
                let flip = _mm512_set1_epi8(-128);
                return crate::unrolled!(|j| {
                    _mm512_xor_si512(_mm512_loadu_si512(q.add(j * 64) as *const __m512i), flip)
                }; 0 1 2 3 4 5 6 7);
            }
            let mut w = nibbles(q);
            for k in 4..Self::BITS {
                let bit = _mm512_set1_epi8(1 << k);
                for (j, wj) in w.iter_mut().enumerate() {
                    let m: __mmask64 = (q.add(qoff::plane(k, j)) as *const u64).read_unaligned();
                    *wj = _mm512_mask_add_epi8(*wj, m, *wj, bit);
                }
            }
            w
        }
    }
}

/// Nibble chunks at `q` (4 x 64 bytes) as quads 0..8.
#[inline(always)]
unsafe fn nibbles(q: *const u8) -> [__m512i; 8] {
    // SAFETY: 256 readable bytes at q (caller).
    unsafe {
        let mask = _mm512_set1_epi8(15);
        let mut w = [_mm512_setzero_si512(); 8];
        for c in 0..4 {
            let v = _mm512_loadu_si512(q.add(c * 64) as *const __m512i);
            w[c] = _mm512_and_si512(v, mask);
            w[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
        }
        w
    }
}

macro_rules! formats {
    ($($name:ident: $ty:ident, $bits:literal;)*) => {$(
        pub(super) struct $name;
        impl Fmt for $name {
            const TY: GgmlType = GgmlType::$ty;
            const BITS: u32 = $bits;
        }
    )*};
}

formats! {
    Q40: Q4_0, 4;
    Q41: Q4_1, 4;
    Q50: Q5_0, 5;
    Q51: Q5_1, 5;
    Q80: Q8_0, 8;
    Q2k: Q2K, 4;
    Q3k: Q3K, 4;
    Q4k: Q4K, 4;
    Q5k: Q5K, 5;
    Q6k: Q6K, 6;
}

/// Runs `$f::<F>($args)` with `F` the format of `$ty` (every type with a Cg16 form).
macro_rules! dispatch {
    ($ty:expr, $f:ident, ($($arg:expr),*)) => {
        match $ty {
            GgmlType::Q4_0 => $f::<Q40>($($arg),*),
            GgmlType::Q4_1 => $f::<Q41>($($arg),*),
            GgmlType::Q5_0 => $f::<Q50>($($arg),*),
            GgmlType::Q5_1 => $f::<Q51>($($arg),*),
            GgmlType::Q8_0 => $f::<Q80>($($arg),*),
            GgmlType::Q2K => $f::<Q2k>($($arg),*),
            GgmlType::Q3K => $f::<Q3k>($($arg),*),
            GgmlType::Q4K => $f::<Q4k>($($arg),*),
            GgmlType::Q5K => $f::<Q5k>($($arg),*),
            GgmlType::Q6K => $f::<Q6k>($($arg),*),
            other => unreachable!("{other} is not an integer-path type"),
        }
    };
}
pub(super) use dispatch;

/// One 32-block's scale terms for the 16 columns (the definition's names, `qdef`).
#[derive(Clone, Copy)]
pub(super) struct VScales {
    pub dw: __m512,
    pub mw: __m512,
    /// Half formats: the integer scales of the two 16-element halves.
    pub k0: __m512i,
    pub k1: __m512i,
    /// Q2_K: the integer minimums of the two halves.
    pub m0: __m512i,
    pub m1: __m512i,
}

/// `-x` (the sign bit flipped, as the definition's negation; `0 - x` would turn -0 into +0).
#[inline(always)]
unsafe fn neg(x: __m512) -> __m512 {
    // SAFETY: register-only AVX-512F operations (enabled by the caller).
    unsafe {
        _mm512_castsi512_ps(_mm512_xor_si512(
            _mm512_castps_si512(x),
            _mm512_set1_epi32(i32::MIN),
        ))
    }
}

/// The scale terms of 32-block `j` of the super-block whose record is at `r`.
///
/// # Safety
/// A whole record of `F` is readable at `r`, `j < form.sbk`; AVX-512F/BW enabled by the
/// caller.
#[inline(always)]
pub(super) unsafe fn scales<F: Fmt>(r: *const u8, j: usize) -> VScales {
    // SAFETY: offsets inside the record (packed::rec), 16 or 32 bytes each.
    unsafe {
        let f16 = |o: usize| _mm512_cvtph_ps(_mm256_loadu_si256(r.add(o) as *const __m256i));
        let u8s = |o: usize| _mm512_cvtepu8_epi32(_mm_loadu_si128(r.add(o) as *const __m128i));
        let i8s = |o: usize| _mm512_cvtepi8_epi32(_mm_loadu_si128(r.add(o) as *const __m128i));
        let zero = _mm512_setzero_si512();
        let mut v = VScales {
            dw: f16(rec::D),
            mw: _mm512_setzero_ps(),
            k0: zero,
            k1: zero,
            m0: zero,
            m1: zero,
        };
        match F::TY {
            GgmlType::Q4_1 | GgmlType::Q5_1 => v.mw = f16(rec::M),
            GgmlType::Q4K | GgmlType::Q5K => {
                v.dw = _mm512_mul_ps(v.dw, _mm512_cvtepi32_ps(u8s(rec::k4_sc(j))));
                v.mw = neg(_mm512_mul_ps(
                    f16(rec::M),
                    _mm512_cvtepi32_ps(u8s(rec::k4_m(j))),
                ));
            }
            GgmlType::Q2K => {
                v.mw = neg(f16(rec::M));
                (v.k0, v.k1) = (u8s(rec::q2_sc(2 * j)), u8s(rec::q2_sc(2 * j + 1)));
                (v.m0, v.m1) = (u8s(rec::q2_m(2 * j)), u8s(rec::q2_m(2 * j + 1)));
            }
            GgmlType::Q3K | GgmlType::Q6K => {
                (v.k0, v.k1) = (i8s(rec::k16_sc(2 * j)), i8s(rec::k16_sc(2 * j + 1)));
            }
            _ => {}
        }
        v
    }
}

/// Folds one block's exact integers into `acc` (the definition's order): `s_half` are the
/// two halves' sums of `c q` (Plain formats: any split of the block's sum), `blk` the row's
/// activation block index.
///
/// # Safety
/// `blk` indexes the activation scale arrays; AVX-512F enabled by the caller.
#[inline(always)]
pub(super) unsafe fn fold<F: Fmt>(
    acc: __m512,
    s_half: [__m512i; 2],
    v: &VScales,
    acts: &QActs,
    blk: usize,
) -> __m512 {
    // SAFETY: blk < the scale arrays' length (caller); register operations otherwise.
    unsafe {
        let d = _mm512_set1_ps(*acts.d.get_unchecked(blk));
        match F::SPEC.fold {
            Fold::Plain => {
                let s = _mm512_add_epi32(s_half[0], s_half[1]);
                let acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(v.dw, d), acc);
                if F::SPEC.min {
                    let ds = _mm512_set1_ps(*acts.ds.get_unchecked(blk));
                    _mm512_fmadd_ps(v.mw, ds, acc)
                } else {
                    acc
                }
            }
            Fold::Halves => {
                let s = _mm512_add_epi32(
                    _mm512_mullo_epi32(v.k0, s_half[0]),
                    _mm512_mullo_epi32(v.k1, s_half[1]),
                );
                let acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(v.dw, d), acc);
                if F::SPEC.min {
                    let s0 = *acts.s0.get_unchecked(blk);
                    let s1 = *acts.s.get_unchecked(blk) - s0;
                    let m = _mm512_add_epi32(
                        _mm512_mullo_epi32(v.m0, _mm512_set1_epi32(s0)),
                        _mm512_mullo_epi32(v.m1, _mm512_set1_epi32(s1)),
                    );
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(m), _mm512_mul_ps(v.mw, d), acc)
                } else {
                    acc
                }
            }
        }
    }
}

/// `T` activation rows from `i` against the group at `gw` (all its blocks) -> the 16
/// column sums per row, in the definition's order. `LOW = false` (8-bit activations: the
/// low plane is all zeros) skips the low plane's products, whose sums would be 0.
#[inline(always)]
unsafe fn tile<F: Fmt, const T: usize, const LOW: bool>(
    gw: *const u8,
    gl: &GroupLayout,
    acts: &QActs,
    i: usize,
) -> [__m512; T] {
    const { assert!(T <= 8, "row tiles have at most 8 rows") };
    let (nb, sbk) = (gl.nb, gl.form.sbk);
    // SAFETY (whole body): a whole group at gw; rows i..i+T of acts exist.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..nb {
            // Four blocks ahead: at decode the weights stream from memory and the hardware
            // prefetcher alone leaves the loads waiting (M=1 pass: 4.5 ms without, see
            // docs/benchmarks.md).
            let ahead = gw.wrapping_add(gl.quants(b + 4));
            for line in (0..gl.qb).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line) as *const i8);
            }
            let wv = F::weights(gw.add(gl.quants(b)));
            let v = scales::<F>(gw.add(gl.record(b)), b % sbk);
            // Rows unrolled by hand with constant indices, so the accumulators stay in
            // registers (a loop over `acc` kept them on the stack).
            macro_rules! each_row {
                ($($t:literal)*) => {$(
                    if $t < T {
                        acc[$t] = row_block::<F, LOW>(&wv, &v, acts, i + $t, b, acc[$t]);
                    }
                )*};
            }
            each_row!(0 1 2 3 4 5 6 7);
        }
        acc
    }
}

/// One activation row's block `b` against the group-block's weight vectors `wv` and scale
/// terms `v`, folded into `acc`. Plain formats sum the whole block in one chain; the half
/// formats keep the two 16-element halves apart (their integer scales differ).
///
/// # Safety
/// Row `row` and block `b` exist in `acts`; AVX-512F/BW/VNNI enabled by the caller.
#[inline(always)]
unsafe fn row_block<F: Fmt, const LOW: bool>(
    wv: &[__m512i; 8],
    v: &VScales,
    acts: &QActs,
    row: usize,
    b: usize,
    acc: __m512,
) -> __m512 {
    let halves = F::SPEC.fold == Fold::Halves;
    // SAFETY: the row's planes and scales at (row, b) exist (caller).
    unsafe {
        let xh = acts.hi_ptr().add(acts.plane_at(row, b)) as *const i32;
        let xl = acts.lo_ptr().add(acts.plane_at(row, b)) as *const i32;
        let blk = acts.at(row, b);
        // Per half (quads 0..4 = elements 0..16): sum(u hi), sum(u lo).
        let mut r = [[_mm512_setzero_si512(); 2]; 2];
        for (j, w) in wv.iter().enumerate() {
            let h = if halves { j / 4 } else { 0 };
            let xhj = _mm512_set1_epi32(xh.add(j).read_unaligned());
            r[h][0] = _mm512_dpbusd_epi32(r[h][0], *w, xhj);
            if LOW {
                let xlj = _mm512_set1_epi32(xl.add(j).read_unaligned());
                r[h][1] = _mm512_dpbusd_epi32(r[h][1], *w, xlj);
            }
        }
        let s = |h: usize| {
            let hi16 = _mm512_slli_epi32(r[h][0], 4);
            if LOW {
                _mm512_add_epi32(hi16, r[h][1])
            } else {
                hi16
            }
        };
        let (mut s0, mut s1) = (s(0), if halves { s(1) } else { _mm512_setzero_si512() });
        if F::VOFF != 0 {
            // sum(c q) = sum(u q) - VOFF * sum(q), per half or for the block.
            let (a_s, a_s0) = (*acts.s.get_unchecked(blk), *acts.s0.get_unchecked(blk));
            if halves {
                s0 = _mm512_sub_epi32(s0, _mm512_set1_epi32(F::VOFF * a_s0));
                s1 = _mm512_sub_epi32(s1, _mm512_set1_epi32(F::VOFF * (a_s - a_s0)));
            } else {
                s0 = _mm512_sub_epi32(s0, _mm512_set1_epi32(F::VOFF * a_s));
            }
        }
        fold::<F>(acc, [s0, s1], v, acts, blk)
    }
}

/// Stores row `i`'s 16 sums of group `g` (+ bias).
///
/// # Safety
/// As [`Out::put`]; AVX-512F enabled by the caller.
#[inline(always)]
pub(super) unsafe fn store(y: Out, i: usize, g: usize, acc: __m512, bias: Option<&[f32]>) {
    let col = g * GROUP;
    // SAFETY: the caller owns columns col..col+16 of row i; a full group is in bounds.
    unsafe {
        if col + GROUP <= y.n {
            let v = match bias {
                Some(b) => _mm512_add_ps(acc, _mm512_loadu_ps(b.as_ptr().add(col))),
                None => acc,
            };
            _mm512_storeu_ps(y.y.add(i * y.ld + col), v);
        } else {
            let mut a = [0f32; GROUP];
            _mm512_storeu_ps(a.as_mut_ptr(), acc);
            y.put(i, g, &a, bias);
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma")]
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
        // SAFETY: group g < groups(w.rows) is in the buffer; rows of acts as below.
        let gw = unsafe { base.add(g * gl.group_bytes()) };
        let mut i = 0;
        while i < acts.m {
            macro_rules! go {
                ($T:literal, $low:literal) => {{
                    // SAFETY: rows i..i+$T < m; columns of group g are the caller's.
                    unsafe {
                        let acc = tile::<F, $T, $low>(gw, &gl, acts, i);
                        for (t, a) in acc.into_iter().enumerate() {
                            store(y, i + t, g, a, bias);
                        }
                    }
                    i += $T;
                }};
            }
            // With 8-bit activations a row needs half the accumulators, so tiles take up
            // to 8 rows (the weights are unpacked once per 8 rows instead of 4).
            match (acts.bits, acts.m - i) {
                (ActBits::Twelve, 1) => go!(1, true),
                (ActBits::Twelve, 2) => go!(2, true),
                (ActBits::Twelve, 3) => go!(3, true),
                (ActBits::Twelve, _) => go!(4, true),
                (ActBits::Eight, 1) => go!(1, false),
                (ActBits::Eight, 2) => go!(2, false),
                (ActBits::Eight, 3) => go!(3, false),
                (ActBits::Eight, 4..8) => go!(4, false),
                (ActBits::Eight, _) => go!(8, false),
            }
        }
    }
}

/// # Safety
/// [`available`] is true; otherwise as `super::portable_rows`.
pub unsafe fn rows(acts: &QActs, w: &QMatrix, bias: Option<&[f32]>, y: Out, g0: usize, g1: usize) {
    // SAFETY: forwarded contract; the format matches the storage type.
    unsafe { dispatch!(w.ty, rows_impl, (acts, w, bias, y, g0, g1)) }
}
