//! Element-wise and per-token CPU ops: embedding lookup, RMSNorm, RoPE, SiLU-and-mul.
//! Each is the reference twin of a CUDA kernel; shapes are in the signatures' docs.

use rayon::prelude::*;

use crate::backend::tensor::QMatrix;

/// `out[t, :] = E[ids[t], :]`. Shapes: `E [vocab, d]`, `out [T, d]`.
/// Ids were validated against the vocabulary at the boundary; an id out of range panics.
pub fn embedding(table: &QMatrix, ids: &[u32], out: &mut [f32]) {
    let d = table.cols;
    assert_eq!(out.len(), ids.len() * d);
    for (o, &id) in out.chunks_exact_mut(d).zip(ids) {
        table.dequantize_row_into(id as usize, o);
    }
}

/// Rows per parallel task of the element-wise ops: from 16 rows up the work is split in
/// row chunks (a batched decode of 32 rows gives both cores a share, and the task runs right
/// before or after a GEMM's parallel region, so no worker has to be woken for it).
const ROWS_PER_TASK: usize = 8;

/// Runs `f(row_index, chunk...)` over row chunks of the zipped slices, in parallel from 16
/// rows.
fn rows_par<A: Sync, B: Send>(
    a: &[A],
    a_row: usize,
    b: &mut [B],
    b_row: usize,
    f: impl Fn(&[A], &mut [B]) + Sync + Send,
) {
    let rows = b.len() / b_row.max(1);
    if rows >= 2 * ROWS_PER_TASK {
        a.par_chunks(a_row * ROWS_PER_TASK)
            .zip(b.par_chunks_mut(b_row * ROWS_PER_TASK))
            .for_each(|(a, b)| f(a, b));
    } else {
        f(a, b);
    }
}

/// One row of RMSNorm: sums of squares in f64 (the reference numerics) over 8 fixed lanes,
/// so the adds vectorize instead of forming one serial chain.
fn rmsnorm_row(xo: &[f32], w: &[f32], eps: f32, o: &mut [f32]) {
    let d = w.len();
    let mut lanes = [0f64; 8];
    let chunks = xo.chunks_exact(8);
    let rest: f64 = chunks
        .remainder()
        .iter()
        .map(|&v| v as f64 * v as f64)
        .sum();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v as f64 * v as f64;
        }
    }
    let ss = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
        + rest;
    let scale = (1.0 / (ss / d as f64 + eps as f64).sqrt()) as f32;
    for ((o, &v), &g) in o.iter_mut().zip(xo).zip(w) {
        *o = v * scale * g;
    }
}

/// `out[t] = x[t] / rms(x[t]) * w`, over rows of `w.len()`; `x` and `out` are `[T, d]`.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    rows_par(x, d, out, d, |x, out| {
        for (xo, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            rmsnorm_row(xo, w, eps, o);
        }
    });
}

/// The residual step of a layer in one pass: `x += y`, then `out = rmsnorm(x) * w` (rows
/// of `w.len()`; `x`, `y`, `out` are `[T, d]`).
pub fn add_rmsnorm(x: &mut [f32], y: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    let run = |x: &mut [f32], y: &[f32], out: &mut [f32]| {
        for ((xo, yo), o) in x
            .chunks_exact_mut(d)
            .zip(y.chunks_exact(d))
            .zip(out.chunks_exact_mut(d))
        {
            for (a, &b) in xo.iter_mut().zip(yo) {
                *a += b;
            }
            rmsnorm_row(xo, w, eps, o);
        }
    };
    let rows = out.len() / d.max(1);
    if rows >= 2 * ROWS_PER_TASK {
        let n = d * ROWS_PER_TASK;
        x.par_chunks_mut(n)
            .zip(y.par_chunks(n))
            .zip(out.par_chunks_mut(n))
            .for_each(|((x, y), o)| run(x, y, o));
    } else {
        run(x, y, out);
    }
}

pub use crate::backend::types::RopeStyle;

/// Rotary embedding with precomputed inverse frequencies (`inv_freq [rot_dim/2]`); cos and
/// sin are scaled by `factor` (YaRN's attention factor, else 1).
#[derive(Debug, Clone)]
pub struct Rope {
    pub style: RopeStyle,
    pub head_dim: usize,
    pub inv_freq: Vec<f64>,
    pub factor: f32,
}

impl Rope {
    pub fn from_params(p: &crate::backend::types::RopeParams) -> Self {
        Rope {
            style: p.style,
            head_dim: p.head_dim,
            inv_freq: p.inv_freq.clone(),
            factor: p.attention_factor,
        }
    }

    /// `(cos, sin)` of every token's angles, `[T, rot_dim / 2]`, computed in f64 once per
    /// batch and shared by every layer and head.
    pub fn table(&self, positions: &[usize]) -> Vec<(f32, f32)> {
        let m = f64::from(self.factor);
        positions
            .iter()
            .flat_map(|&pos| {
                self.inv_freq.iter().map(move |&f| {
                    let a = pos as f64 * f;
                    ((a.cos() * m) as f32, (a.sin() * m) as f32)
                })
            })
            .collect()
    }

    /// Applies the rotation in place to `x [T, n_heads, head_dim]` with `table` from
    /// [`Rope::table`] for the batch's positions.
    pub fn apply_table(&self, x: &mut [f32], n_heads: usize, table: &[(f32, f32)]) {
        let hd = self.head_dim;
        let half = self.inv_freq.len();
        for (row, cs) in x
            .chunks_exact_mut(n_heads * hd)
            .zip(table.chunks_exact(half))
        {
            for h in row.chunks_exact_mut(hd) {
                for (i, &(c, s)) in cs.iter().enumerate() {
                    let (a, b) = match self.style {
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                        RopeStyle::Neox => (i, i + half),
                    };
                    let (x0, x1) = (h[a], h[b]);
                    h[a] = x0 * c - x1 * s;
                    h[b] = x0 * s + x1 * c;
                }
            }
        }
    }

    /// Applies the rotation in place to `x [T, n_heads, head_dim]` at `positions [T]`.
    pub fn apply(&self, x: &mut [f32], n_heads: usize, positions: &[usize]) {
        self.apply_table(x, n_heads, &self.table(positions));
    }
}

/// `out[i] = silu(g[i]) * u[i]` over one row: AVX-512 (16 lanes of `simd::exp16`) when
/// available, else the portable loop.
pub fn silu_mul_row(g: &[f32], u: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::simd::has_avx512() {
        // SAFETY: AVX-512F present (checked); the three slices are read/written in bounds
        // (chunks of 16 and a scalar tail).
        unsafe { silu_mul_avx512(g, u, out) };
        return;
    }
    silu_mul_portable(g, u, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn silu_mul_avx512(g: &[f32], u: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = out.len().min(g.len()).min(u.len());
    let full = n / 16 * 16;
    for i in (0..full).step_by(16) {
        // SAFETY: i + 16 <= n <= every slice's length.
        unsafe {
            let gv = _mm512_loadu_ps(g.as_ptr().add(i));
            let uv = _mm512_loadu_ps(u.as_ptr().add(i));
            let e = super::simd::exp16(_mm512_sub_ps(_mm512_setzero_ps(), gv));
            let s = _mm512_div_ps(gv, _mm512_add_ps(_mm512_set1_ps(1.0), e));
            _mm512_storeu_ps(out.as_mut_ptr().add(i), _mm512_mul_ps(s, uv));
        }
    }
    silu_mul_portable(&g[full..n], &u[full..n], &mut out[full..n]);
}

crate::multiversion! {
    /// `out[i] = silu(g[i]) * u[i]` over one row (the portable definition).
    pub fn silu_mul_portable(g: &[f32], u: &[f32], out: &mut [f32]) {
        for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
            *o = g / (1.0 + super::simd::exp(-g)) * u;
        }
    }
}

/// `out[t, i] = silu(gate_up[t, i]) * gate_up[t, f + i]` for a fused `[T, 2f]` input.
pub fn silu_mul(gate_up: &[f32], f: usize, out: &mut [f32]) {
    rows_par(gate_up, 2 * f, out, f, |gu, out| {
        for (gu, o) in gu.chunks_exact(2 * f).zip(out.chunks_exact_mut(f)) {
            let (g, u) = gu.split_at(f);
            silu_mul_row(g, u, o);
        }
    });
}

/// Per-head RMSNorm of q and k before RoPE (Qwen3): `(q weights, k weights, eps)`, each
/// `[head_dim]`.
pub type QkNorm<'a> = Option<(&'a [f32], &'a [f32], f32)>;

/// Splits fused `qkv [T, qd + 2 kvd]` rows into `q [T, qd]`, `k`, `v [T, kvd]`, normalizes
/// q and k per head (`qk_norm`), and rotates them with `table` (from [`Rope::table`]), row
/// chunks in parallel.
#[allow(clippy::too_many_arguments)]
pub fn split_qkv_rope(
    rope: &Rope,
    table: &[(f32, f32)],
    qkv: &[f32],
    (nh, nkv): (usize, usize),
    qk_norm: QkNorm<'_>,
    q: &mut [f32],
    k: &mut [f32],
    v: &mut [f32],
) {
    let hd = rope.head_dim;
    let (qd, kvd) = (nh * hd, nkv * hd);
    let half = rope.inv_freq.len();
    let row = qd + 2 * kvd;
    let run = |qkv: &[f32], table: &[(f32, f32)], q: &mut [f32], k: &mut [f32], v: &mut [f32]| {
        for (i, r) in qkv.chunks_exact(row).enumerate() {
            q[i * qd..(i + 1) * qd].copy_from_slice(&r[..qd]);
            k[i * kvd..(i + 1) * kvd].copy_from_slice(&r[qd..qd + kvd]);
            v[i * kvd..(i + 1) * kvd].copy_from_slice(&r[qd + kvd..]);
        }
        if let Some((qw, kw, eps)) = qk_norm {
            let mut tmp = vec![0f32; hd]; // one head
            for (x, w) in [(&mut *q, qw), (&mut *k, kw)] {
                for head in x.chunks_exact_mut(hd) {
                    tmp.copy_from_slice(head);
                    rmsnorm_row(&tmp, w, eps, head);
                }
            }
        }
        rope.apply_table(q, nh, table);
        rope.apply_table(k, nkv, table);
    };
    let rows = qkv.len() / row.max(1);
    if rows >= 2 * ROWS_PER_TASK {
        let n = ROWS_PER_TASK;
        qkv.par_chunks(row * n)
            .zip(table.par_chunks(half * n))
            .zip(q.par_chunks_mut(qd * n))
            .zip(k.par_chunks_mut(kvd * n))
            .zip(v.par_chunks_mut(kvd * n))
            .for_each(|((((a, t), q), k), v)| run(a, t, q, k, v));
    } else {
        run(qkv, table, q, k, v);
    }
}

/// `x += y`, element-wise.
pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmsnorm_exact() {
        let x = [3.0f32, 4.0];
        let mut out = [0f32; 2];
        rmsnorm(&x, &[1.0, 2.0], 0.0, &mut out);
        let r = (12.5f64).sqrt() as f32;
        assert_eq!(out, [3.0 / r, 8.0 / r]);
    }

    #[test]
    fn rope_styles_rotate_the_right_pairs() {
        let rope = |style| Rope {
            style,
            head_dim: 4,
            inv_freq: vec![1.0, 0.0],
            factor: 1.0,
        };
        let mut x = vec![1.0f32, 0.0, 1.0, 0.0];
        rope(RopeStyle::Interleaved).apply(&mut x, 1, &[1]);
        let (c, s) = (1f64.cos() as f32, 1f64.sin() as f32);
        assert_eq!(x, vec![c, s, 1.0, 0.0]);
        let mut x = vec![1.0f32, 1.0, 0.0, 0.0];
        rope(RopeStyle::Neox).apply(&mut x, 1, &[1]);
        assert_eq!(x, vec![c, 1.0, s, 0.0]);
    }

    #[test]
    fn silu_mul_exact() {
        let gu = [0.0f32, 2.0, 3.0, 5.0];
        let mut out = [0f32; 2];
        silu_mul(&gu, 2, &mut out);
        assert_eq!(out[0], 0.0);
        let want = 2.0 / (1.0 + (-2.0f64).exp()) * 5.0;
        assert!((out[1] as f64 - want).abs() < 1e-6 * want);
    }
}
