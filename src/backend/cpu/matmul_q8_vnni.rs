//! AVX-512 VNNI kernel of the integer GEMM (`matmul_q8.rs`): one 512-bit vector is the 16
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

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::{Out, QActs, RowOut, LO, QMAX};
use crate::backend::dtype::GgmlType;
use crate::backend::packed::{GroupLayout, GROUP};
use crate::backend::tensor::QMatrix;

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

/// A weight format in the Cg16 layout.
pub(super) trait Fmt {
    const TY: GgmlType;
    /// The format has a per-block minimum (`mw != 0`).
    const HAS_MIN: bool;
    /// `S = 16 R_hi + R_lo - (s << SHIFT)` (0: no correction).
    const SHIFT: u32;
    /// The eight unsigned-byte vectors `W_0..W_7` of the block quants at `q`.
    ///
    /// # Safety
    /// A block's quants (`QB` bytes) are readable at `q`; AVX-512F/BW enabled by the caller.
    unsafe fn weights(q: *const u8) -> [__m512i; 8];
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

pub(super) struct Q41;
impl Fmt for Q41 {
    const TY: GgmlType = GgmlType::Q4_1;
    const HAS_MIN: bool = true;
    const SHIFT: u32 = 0;
    #[inline(always)]
    unsafe fn weights(q: *const u8) -> [__m512i; 8] {
        // SAFETY: 256 bytes of nibbles at q (caller).
        unsafe { nibbles(q) }
    }
}

pub(super) struct Q40;
impl Fmt for Q40 {
    const TY: GgmlType = GgmlType::Q4_0;
    const HAS_MIN: bool = false;
    const SHIFT: u32 = 3;
    #[inline(always)]
    unsafe fn weights(q: *const u8) -> [__m512i; 8] {
        // SAFETY: 256 bytes of nibbles at q (caller).
        unsafe { nibbles(q) }
    }
}

pub(super) struct Q80;
impl Fmt for Q80 {
    const TY: GgmlType = GgmlType::Q8_0;
    const HAS_MIN: bool = false;
    const SHIFT: u32 = 7;
    #[inline(always)]
    unsafe fn weights(q: *const u8) -> [__m512i; 8] {
        // SAFETY: 8 x 64 int8 at q (caller).
        unsafe {
            let flip = _mm512_set1_epi8(-128);
            let mut w = [_mm512_setzero_si512(); 8];
            for (j, v) in w.iter_mut().enumerate() {
                let q = _mm512_loadu_si512(q.add(j * 64) as *const __m512i);
                *v = _mm512_xor_si512(q, flip);
            }
            w
        }
    }
}

/// One row of `quantize`: the scalar `quantize_row`'s arithmetic (`amax / 2032`, its
/// reciprocal, products rounded to nearest-even by `vcvtps2dq`, NaN products to 0).
///
/// # Safety
/// [`available`] is true; the planes have `x.len()` bytes, the scale slices `x.len() / 32`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn quantize_row(x: &[f32], r: RowOut<'_>) {
    let abs_mask = _mm512_set1_epi32(0x7fff_ffff);
    let (qmax, qmin) = (_mm512_set1_epi32(QMAX), _mm512_set1_epi32(-QMAX));
    let c128 = _mm512_set1_epi32(8);
    for b in 0..x.len() / 32 {
        // SAFETY: b * 32 + 32 <= x.len() and the planes' lengths; b < the scale slices.
        unsafe {
            let xp = x.as_ptr().add(b * 32);
            let v = [_mm512_loadu_ps(xp), _mm512_loadu_ps(xp.add(16))];
            let abs =
                |v: __m512| _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), abs_mask));
            let amax = _mm512_reduce_max_ps(_mm512_max_ps(abs(v[0]), abs(v[1])));
            let d = amax / QMAX as f32;
            let id = _mm512_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
            let mut s = _mm512_setzero_si512();
            for (h, &vh) in v.iter().enumerate() {
                let p = _mm512_mul_ps(vh, id);
                let ordered = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(p, p);
                let q = _mm512_maskz_cvtps_epi32(ordered, p);
                let q = _mm512_min_epi32(_mm512_max_epi32(q, qmin), qmax);
                s = _mm512_add_epi32(s, q);
                let hi = _mm512_srai_epi32(_mm512_add_epi32(q, c128), 4);
                let lo = _mm512_sub_epi32(q, _mm512_slli_epi32(hi, 4));
                let at = b * 32 + h * 16;
                _mm_storeu_si128(
                    r.hi.as_mut_ptr().add(at) as *mut __m128i,
                    _mm512_cvtepi32_epi8(hi),
                );
                _mm_storeu_si128(
                    r.lo.as_mut_ptr().add(at) as *mut __m128i,
                    _mm512_cvtepi32_epi8(lo),
                );
            }
            let s = _mm512_reduce_add_epi32(s);
            r.d[b] = d;
            r.s[b] = s;
            r.ds[b] = d * s as f32;
        }
    }
}

/// `(dw, mw)` of the block scales at `sp` (mw = 0 without a minimum).
///
/// # Safety
/// A block's scales are readable at `sp`; AVX-512F enabled by the caller.
#[inline(always)]
pub(super) unsafe fn scales<F: Fmt>(sp: *const u8) -> (__m512, __m512) {
    // SAFETY: 32 (64 with a minimum) readable bytes at sp (caller).
    unsafe {
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(sp as *const __m256i));
        let mw = if F::HAS_MIN {
            _mm512_cvtph_ps(_mm256_loadu_si256(sp.add(32) as *const __m256i))
        } else {
            _mm512_setzero_ps()
        };
        (dw, mw)
    }
}

/// `out[i]` = the max over the 16 lanes of `v[i]`, for 16 vectors at once (a transpose
/// tree: 46 shuffles and maxes for all 16, where one `reduce_max` is ~8 dependent steps).
#[inline(always)]
unsafe fn reduce16_max(v: [__m512; 16]) -> __m512 {
    // SAFETY: register-only AVX-512F operations (enabled by the caller).
    unsafe {
        let t: [__m512; 8] = std::array::from_fn(|i| {
            let (a, b) = (v[2 * i], v[2 * i + 1]);
            _mm512_max_ps(
                _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
                _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
            )
        });
        let u: [__m512; 4] = std::array::from_fn(|j| {
            let (c, d) = (t[2 * j], t[2 * j + 1]);
            _mm512_max_ps(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(c, d),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(c, d),
            )
        });
        let w: [__m512; 2] = std::array::from_fn(|l| {
            let (e, f) = (u[2 * l], u[2 * l + 1]);
            _mm512_max_ps(
                _mm512_shuffle_ps::<0b01_00_01_00>(e, f),
                _mm512_shuffle_ps::<0b11_10_11_10>(e, f),
            )
        });
        let z = _mm512_max_ps(
            _mm512_shuffle_ps::<0b10_00_10_00>(w[0], w[1]),
            _mm512_shuffle_ps::<0b11_01_11_01>(w[0], w[1]),
        );
        // Lane 4r + c of z holds vector 4c + r.
        let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        _mm512_permutexvar_ps(idx, z)
    }
}

/// `out[i]` = the sum of the 16 lanes of `v[i]` (i32, exact), for 16 vectors at once.
#[inline(always)]
unsafe fn reduce16_add(v: [__m512i; 16]) -> __m512i {
    // SAFETY: register-only AVX-512F operations (enabled by the caller).
    unsafe {
        let ps = _mm512_castsi512_ps;
        let si = _mm512_castps_si512;
        let t: [__m512i; 8] = std::array::from_fn(|i| {
            let (a, b) = (v[2 * i], v[2 * i + 1]);
            _mm512_add_epi32(
                _mm512_shuffle_i32x4::<0b01_00_01_00>(a, b),
                _mm512_shuffle_i32x4::<0b11_10_11_10>(a, b),
            )
        });
        let u: [__m512i; 4] = std::array::from_fn(|j| {
            let (c, d) = (t[2 * j], t[2 * j + 1]);
            _mm512_add_epi32(
                _mm512_shuffle_i32x4::<0b10_00_10_00>(c, d),
                _mm512_shuffle_i32x4::<0b11_01_11_01>(c, d),
            )
        });
        let w: [__m512i; 2] = std::array::from_fn(|l| {
            let (e, f) = (ps(u[2 * l]), ps(u[2 * l + 1]));
            _mm512_add_epi32(
                si(_mm512_shuffle_ps::<0b01_00_01_00>(e, f)),
                si(_mm512_shuffle_ps::<0b11_10_11_10>(e, f)),
            )
        });
        let (g, h) = (ps(w[0]), ps(w[1]));
        let z = _mm512_add_epi32(
            si(_mm512_shuffle_ps::<0b10_00_10_00>(g, h)),
            si(_mm512_shuffle_ps::<0b11_01_11_01>(g, h)),
        );
        let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        _mm512_permutexvar_epi32(idx, z)
    }
}

/// One row tile of `quantize`: rows `0..t` (`t <= 16`) of `x` (`[t, k]`) straight into the
/// tile layouts (`planes`: `nb * 1024` bytes, `d`/`ds`/`s`: `nb * 16` entries; rows `t..16`
/// get zeros). Per block the 16 rows are done together, so the per-row reductions (max |x|
/// and the sum of q) and the two divisions are 16-lane operations. Same values as the
/// scalar `quantize_row`.
///
/// # Safety
/// [`available`] is true; `x.len() == t * k`, k % 32 == 0, the outputs have the sizes above.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn quantize_tile(
    x: &[f32],
    t: usize,
    k: usize,
    planes: &mut [i8],
    d: &mut [f32],
    ds: &mut [f32],
    s: &mut [i32],
) {
    let abs_mask = _mm512_set1_epi32(0x7fff_ffff);
    let (qmax, qmin) = (_mm512_set1_epi32(QMAX), _mm512_set1_epi32(-QMAX));
    let c128 = _mm512_set1_epi32(8);
    for b in 0..k / 32 {
        // SAFETY (whole body): rows r < t read x[r * k + b * 32..][..32] < x.len(); the
        // writes stay in block b's 1024 plane bytes and 16 scale entries.
        unsafe {
            let v: [[__m512; 2]; 16] = std::array::from_fn(|r| {
                if r < t {
                    let p = x.as_ptr().add(r * k + b * 32);
                    [_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16))]
                } else {
                    [_mm512_setzero_ps(); 2]
                }
            });
            // |x| with NaN as 0 (f32::max in the definition skips NaN).
            let clean = |x: __m512| {
                let a = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), abs_mask));
                _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(x, x), a)
            };
            let amax = reduce16_max(std::array::from_fn(|r| {
                _mm512_max_ps(clean(v[r][0]), clean(v[r][1]))
            }));
            let dv = _mm512_div_ps(amax, _mm512_set1_ps(QMAX as f32));
            let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(dv, _mm512_setzero_ps());
            let idv = _mm512_maskz_div_ps(pos, _mm512_set1_ps(1.0), dv);
            let mut idr = [0f32; 16];
            _mm512_storeu_ps(idr.as_mut_ptr(), idv);
            let sums: [__m512i; 16] = std::array::from_fn(|r| {
                let id = _mm512_set1_ps(idr[r]);
                let mut acc = _mm512_setzero_si512();
                for (h, &vh) in v[r].iter().enumerate() {
                    let p = _mm512_mul_ps(vh, id);
                    let ordered = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(p, p);
                    let q = _mm512_maskz_cvtps_epi32(ordered, p);
                    let q = _mm512_min_epi32(_mm512_max_epi32(q, qmin), qmax);
                    acc = _mm512_add_epi32(acc, q);
                    let qh = _mm512_srai_epi32(_mm512_add_epi32(q, c128), 4);
                    let ql = _mm512_sub_epi32(q, _mm512_slli_epi32(qh, 4));
                    let at = b * 1024 + r * 64 + h * 16;
                    _mm_storeu_si128(
                        planes.as_mut_ptr().add(at) as *mut __m128i,
                        _mm512_cvtepi32_epi8(qh),
                    );
                    _mm_storeu_si128(
                        planes.as_mut_ptr().add(at + LO) as *mut __m128i,
                        _mm512_cvtepi32_epi8(ql),
                    );
                }
                acc
            });
            let sv = reduce16_add(sums);
            _mm512_storeu_ps(d.as_mut_ptr().add(b * 16), dv);
            _mm512_storeu_si512(s.as_mut_ptr().add(b * 16) as *mut __m512i, sv);
            _mm512_storeu_ps(
                ds.as_mut_ptr().add(b * 16),
                _mm512_mul_ps(dv, _mm512_cvtepi32_ps(sv)),
            );
        }
    }
}

/// `T` activation rows from `i` against the group at `gw` (all its blocks) -> the 16
/// column sums per row, in the header's order.
#[inline(always)]
unsafe fn tile<F: Fmt, const T: usize>(
    gw: *const u8,
    gl: &GroupLayout,
    acts: &QActs,
    i: usize,
) -> [__m512; T] {
    let nb = gl.nb;
    let (hi, lo) = (acts.hi_ptr(), acts.lo_ptr());
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
            let (dw, mw) = scales::<F>(gw.add(gl.scales(b)));
            for (t, a) in acc.iter_mut().enumerate() {
                let row = i + t;
                let xh = hi.add(acts.plane_at(row, b)) as *const i32;
                let xl = lo.add(acts.plane_at(row, b)) as *const i32;
                let (mut rh, mut rl) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for (j, w) in wv.iter().enumerate() {
                    rh = _mm512_dpbusd_epi32(rh, *w, _mm512_set1_epi32(xh.add(j).read_unaligned()));
                    rl = _mm512_dpbusd_epi32(rl, *w, _mm512_set1_epi32(xl.add(j).read_unaligned()));
                }
                let mut s = _mm512_add_epi32(_mm512_slli_epi32(rh, 4), rl);
                let blk = acts.at(row, b);
                if F::SHIFT > 0 {
                    s = _mm512_sub_epi32(s, _mm512_set1_epi32(acts.s[blk] << F::SHIFT));
                }
                let sc = _mm512_mul_ps(dw, _mm512_set1_ps(acts.d[blk]));
                *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), sc, *a);
                if F::HAS_MIN {
                    *a = _mm512_fmadd_ps(mw, _mm512_set1_ps(acts.ds[blk]), *a);
                }
            }
        }
        acc
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
            _mm512_storeu_ps(y.y.add(i * y.n + col), v);
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
                ($T:literal) => {{
                    // SAFETY: rows i..i+$T < m; columns of group g are the caller's.
                    unsafe {
                        let acc = tile::<F, $T>(gw, &gl, acts, i);
                        for (t, a) in acc.into_iter().enumerate() {
                            store(y, i + t, g, a, bias);
                        }
                    }
                    i += $T;
                }};
            }
            match acts.m - i {
                1 => go!(1),
                2 => go!(2),
                3 => go!(3),
                _ => go!(4),
            }
        }
    }
}

/// # Safety
/// [`available`] is true; otherwise as `super::portable_rows`.
pub unsafe fn rows(acts: &QActs, w: &QMatrix, bias: Option<&[f32]>, y: Out, g0: usize, g1: usize) {
    // SAFETY: forwarded contract; the format matches the storage type.
    unsafe {
        match w.ty {
            GgmlType::Q4_1 => rows_impl::<Q41>(acts, w, bias, y, g0, g1),
            GgmlType::Q4_0 => rows_impl::<Q40>(acts, w, bias, y, g0, g1),
            GgmlType::Q8_0 => rows_impl::<Q80>(acts, w, bias, y, g0, g1),
            other => unreachable!("vnni::rows: {other:?} is not an integer-path type"),
        }
    }
}
