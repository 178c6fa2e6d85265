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

/// `out[t] = x[t] / rms(x[t]) * w`, over rows of `w.len()`; `x` and `out` are `[T, d]`.
/// Sums in f64: the reference numerics, and d is small (<= 8192) so the cost is negligible.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xo, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ss: f64 = xo.iter().map(|&v| v as f64 * v as f64).sum();
        let scale = (1.0 / (ss / d as f64 + eps as f64).sqrt()) as f32;
        for ((o, &v), &g) in o.iter_mut().zip(xo).zip(w) {
            *o = v * scale * g;
        }
    }
}

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs `(2i, 2i+1)`: GGUF Llama (llama.cpp permutes Q/K at conversion).
    Interleaved,
    /// Pairs `(i, i + d/2)`: Hugging Face Llama/Qwen2, GGUF Qwen2.
    Neox,
}

/// Rotary embedding with precomputed inverse frequencies (`inv_freq [rot_dim/2]`).
#[derive(Debug, Clone)]
pub struct Rope {
    pub style: RopeStyle,
    pub head_dim: usize,
    pub inv_freq: Vec<f64>,
}

impl Rope {
    /// Applies the rotation in place to `x [T, n_heads, head_dim]` at `positions [T]`.
    pub fn apply(&self, x: &mut [f32], n_heads: usize, positions: &[usize]) {
        let hd = self.head_dim;
        let half = self.inv_freq.len();
        // Per token: cos/sin table of `half` entries, shared by all heads.
        let mut cs = vec![(0f32, 0f32); half];
        for (t, &pos) in positions.iter().enumerate() {
            for (c, &f) in cs.iter_mut().zip(&self.inv_freq) {
                let a = pos as f64 * f;
                *c = (a.cos() as f32, a.sin() as f32);
            }
            let row = &mut x[t * n_heads * hd..(t + 1) * n_heads * hd];
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
}

crate::multiversion! {
    /// `out[i] = silu(g[i]) * u[i]` over one row.
    pub fn silu_mul_row(g: &[f32], u: &[f32], out: &mut [f32]) {
        for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
            *o = g / (1.0 + super::simd::exp(-g)) * u;
        }
    }
}

/// `out[t, i] = silu(gate_up[t, i]) * gate_up[t, f + i]` for a fused `[T, 2f]` input.
pub fn silu_mul(gate_up: &[f32], f: usize, out: &mut [f32]) {
    let run = |(gu, o): (&[f32], &mut [f32])| {
        let (g, u) = gu.split_at(f);
        silu_mul_row(g, u, o);
    };
    if out.len() >= 1 << 15 {
        gate_up
            .par_chunks_exact(2 * f)
            .zip(out.par_chunks_exact_mut(f))
            .for_each(run);
    } else {
        gate_up
            .chunks_exact(2 * f)
            .zip(out.chunks_exact_mut(f))
            .for_each(run);
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
