//! The integer GEMM's definition for every weight format in the Cg16 layout
//! (`backend::packed`): which integers each format's weights are, how a 32-element block's
//! exact integer dot product is formed, and the one order in which it is scaled into the
//! float accumulator. [`portable_rows`] is the definition written plainly; every SIMD kernel
//! (`matmul_q8_{vnni,avx2,amx}.rs`) computes the same integers and folds them in the same
//! order, so results are bitwise equal whatever kernel or batch computes them.
//!
//! ```text
//!  activations (matmul::q8): per 32-block d, 12-bit q[32], s = sum(q), s0 = sum(q[0..16]),
//!                           ds = d * f32(s)
//!  weight integers c = u - OFF   (u: the element integer of `backend::blocks::Parts`)
//!     Q4_0: u - 8   Q5_0: u - 16   Q3_K: u - 4   Q6_K: u - 32   Q8_0: the byte as i8
//!     Q4_1, Q5_1, Q2_K, Q4_K, Q5_K: u
//!
//!  Plain formats, one scale per 32 elements (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K):
//!     S = sum_e c_e q_e                           exact i32, |S| < 2^23 so f32(S) is exact
//!     acc = fma(f32(S), dw * d, acc)
//!     acc = fma(mw, ds, acc)                      (formats with a minimum)
//!       Q4_0, Q5_0, Q8_0:  dw = d_w                    (f16 -> f32)
//!       Q4_1, Q5_1:        dw = d_w, mw = m
//!       Q4_K, Q5_K:        dw = d_w * f32(sc_j), mw = -(dmin * f32(m_j))   (exact products;
//!                          j = the 32-block's index in its super-block)
//!
//!  Half formats, one integer scale per 16 elements (Q2_K, Q3_K, Q6_K):
//!     S = k_0 * sum_{e<16} c_e q_e + k_1 * sum_{e>=16} c_e q_e     exact i32 (|S| < 2^29)
//!     acc = fma(f32(S), dw * d, acc)              dw = d_w
//!       k = sc (Q2_K, 0..15), sc - 32 (Q3_K, -32..31), the i8 sc (Q6_K)
//!     Q2_K: M = m_0 * s0 + m_1 * (s - s0)         exact i32
//!           acc = fma(f32(M), mw * d, acc)        mw = -dmin
//!
//!  acc starts at 0, blocks in order; y = acc (+ bias)
//! ```
//!
//! Q8_K has no Cg16 form (no checkpoint stores weights in it); it takes the f32 path.

use crate::backend::dtype::GgmlType;
use crate::backend::packed::{self, rec, GroupLayout, GROUP};
use crate::backend::tensor::QMatrix;

use super::{Out, QActs};

/// How a format's block integers are combined (module header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    Plain,
    Halves,
}

/// A format's place in the definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub fold: Fold,
    /// The fold has a minimum term (`mw`; Q2_K's `M`).
    pub min: bool,
    /// `c = u - off` (Q8_0: 0, its byte read as i8).
    pub off: i32,
}

/// The definition's parameters of `ty`, or `None` without a Cg16 form.
pub const fn spec(ty: GgmlType) -> Option<Spec> {
    let (fold, min, off) = match ty {
        GgmlType::Q4_0 => (Fold::Plain, false, 8),
        GgmlType::Q5_0 => (Fold::Plain, false, 16),
        GgmlType::Q8_0 => (Fold::Plain, false, 0),
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => (Fold::Plain, true, 0),
        GgmlType::Q2K => (Fold::Halves, true, 0),
        GgmlType::Q3K => (Fold::Halves, false, 4),
        GgmlType::Q6K => (Fold::Halves, false, 32),
        _ => return None,
    };
    Some(Spec { fold, min, off })
}

/// [`spec`] of a type that has a Cg16 form (the kernels' format constants).
pub const fn spec_of(ty: GgmlType) -> Spec {
    match spec(ty) {
        Some(s) => s,
        None => panic!("spec_of: type without a Cg16 form"),
    }
}

/// One 32-block's scale terms for the 16 columns of a group (the header's names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockScales {
    pub dw: [f32; GROUP],
    pub mw: [f32; GROUP],
    /// Half formats: `[k_0, k_1]` per column.
    pub k: [[i32; 2]; GROUP],
    /// Q2_K: `[m_0, m_1]` per column.
    pub mh: [[i32; 2]; GROUP],
}

/// The scale terms of block `b` of the group at `group`.
pub fn block_scales(ty: GgmlType, gl: &GroupLayout, group: &[u8], b: usize) -> BlockScales {
    let r = &group[gl.record(b)..gl.record(b) + gl.form.sb];
    let f16 = |o: usize| half::f16::from_le_bytes([r[o], r[o + 1]]).to_f32();
    let j = b % gl.form.sbk;
    let mut s = BlockScales {
        dw: [0.0; GROUP],
        mw: [0.0; GROUP],
        k: [[0; 2]; GROUP],
        mh: [[0; 2]; GROUP],
    };
    for n in 0..GROUP {
        let d = f16(rec::D + 2 * n);
        s.dw[n] = d;
        match ty {
            GgmlType::Q4_1 | GgmlType::Q5_1 => s.mw[n] = f16(rec::M + 2 * n),
            GgmlType::Q4K | GgmlType::Q5K => {
                s.dw[n] = d * f32::from(r[rec::k4_sc(j) + n]);
                s.mw[n] = -(f16(rec::M + 2 * n) * f32::from(r[rec::k4_m(j) + n]));
            }
            GgmlType::Q2K => {
                s.mw[n] = -f16(rec::M + 2 * n);
                for h in 0..2 {
                    s.k[n][h] = i32::from(r[rec::q2_sc(2 * j + h) + n]);
                    s.mh[n][h] = i32::from(r[rec::q2_m(2 * j + h) + n]);
                }
            }
            GgmlType::Q3K | GgmlType::Q6K => {
                for h in 0..2 {
                    s.k[n][h] = i32::from(r[rec::k16_sc(2 * j + h) + n] as i8);
                }
            }
            _ => {}
        }
    }
    s
}

/// The weight integers `c[n][e]` of block `b` of the group at `group`.
pub fn block_ints(ty: GgmlType, gl: &GroupLayout, group: &[u8], b: usize) -> [[i32; 32]; GROUP] {
    let off = spec(ty).expect("block_ints: type without a Cg16 form").off;
    let q = &group[gl.quants(b)..gl.quants(b) + gl.qb];
    std::array::from_fn(|n| {
        let u = packed::get_quants(gl.form, q, n);
        std::array::from_fn(|e| {
            if ty == GgmlType::Q8_0 {
                i32::from(u[e] as i8)
            } else {
                i32::from(u[e]) - off
            }
        })
    })
}

/// Folds one block's integer sums into `acc` (the header's order): `s_half` are the two
/// halves' `sum c q`, `at` the row's activation block index.
#[inline]
pub fn fold_block(
    sp: Spec,
    sc: &BlockScales,
    n: usize,
    s_half: [i32; 2],
    acts: &QActs,
    at: usize,
    acc: f32,
) -> f32 {
    let d = acts.d[at];
    match sp.fold {
        Fold::Plain => {
            let s = s_half[0] + s_half[1];
            let acc = (s as f32).mul_add(sc.dw[n] * d, acc);
            if sp.min {
                sc.mw[n].mul_add(acts.ds[at], acc)
            } else {
                acc
            }
        }
        Fold::Halves => {
            let s = sc.k[n][0] * s_half[0] + sc.k[n][1] * s_half[1];
            let acc = (s as f32).mul_add(sc.dw[n] * d, acc);
            if sp.min {
                let (s0, s1) = (acts.s0[at], acts.s[at] - acts.s0[at]);
                let m = sc.mh[n][0] * s0 + sc.mh[n][1] * s1;
                (m as f32).mul_add(sc.mw[n] * d, acc)
            } else {
                acc
            }
        }
    }
}

/// Portable kernel: `y[i, col]` for the columns of groups `g0..g1`.
///
/// # Safety
/// `w` is Cg16 with `acts.k == w.cols`; `y` has `acts.m` rows of `y.ld` floats (the
/// `w.rows` columns at `y.y`) and no other thread writes the columns of groups `g0..g1`.
pub unsafe fn portable_rows(
    acts: &QActs,
    w: &QMatrix,
    bias: Option<&[f32]>,
    y: Out,
    g0: usize,
    g1: usize,
) {
    let gl = GroupLayout::new(w.ty, w.cols);
    let sp = spec(w.ty).expect("portable_rows: type without a Cg16 form");
    let data = w.data.bytes();
    for g in g0..g1 {
        let group = &data[g * gl.group_bytes()..(g + 1) * gl.group_bytes()];
        // One group's decoded blocks: nb x 2.6 KiB.
        let blocks: Vec<_> = (0..gl.nb)
            .map(|b| {
                (
                    block_ints(w.ty, &gl, group, b),
                    block_scales(w.ty, &gl, group, b),
                )
            })
            .collect();
        for i in 0..acts.m {
            let mut acc = [0f32; GROUP];
            for (b, (c, sc)) in blocks.iter().enumerate() {
                let at = acts.at(i, b);
                for (n, a) in acc.iter_mut().enumerate() {
                    let half = |h: usize| -> i32 {
                        (16 * h..16 * h + 16)
                            .map(|e| c[n][e] * acts.q(i, b * 32 + e))
                            .sum()
                    };
                    *a = fold_block(sp, sc, n, [half(0), half(1)], acts, at, *a);
                }
            }
            // SAFETY: forwarded contract.
            unsafe { y.put(i, g, &acc, bias) };
        }
    }
}
