//! The CPU backend behind the model seam (`backend::seam`): weights packed into the Cg16
//! layout of the integer GEMM (fused projections whose parts differ in type as stacked row
//! blocks), activations as `Vec<f32>`, the f16/f32 paged cache, and a step run on the rayon
//! pool with its workers kept polling (`pool.rs`).
//!
//! Configuration: the integer GEMM's activation precision (`--activation-bits`,
//! `matmul::q8::ActBits`), the same for every linear layer of the instance.
//!
//! Per-step state: the RoPE table of the batch's positions (`[T, head_dim / 2]` cos/sin
//! pairs, computed at layer 0 and shared by every layer: 8 bytes x T x head_dim / 2).

use std::sync::Arc;

use super::attention::{paged_attention, AttnSeq, CpuKvCache};
use super::matmul::q8::ActBits;
use super::matmul::{linear_parts, linear_with};
use super::ops::{add_in_place, add_rmsnorm, embedding, rmsnorm, silu_mul, split_qkv_rope, Rope};
use super::pool;
use crate::backend::seam::{AttnOp, Backend, Ops, Pack};
use crate::backend::tensor::{QMatrix, Storage};
use crate::backend::types::{Batch, KvDtype, KvShape, Needs, RopeParams};

/// A linear layer on the CPU: `[out, in]` as row blocks stacked in order (one block, or,
/// for a projection fused from parts of different storage types, one per run of a type),
/// each packed Cg16 when its type has that form, plus an optional bias.
#[derive(Debug, Clone)]
pub struct CpuLinear {
    pub parts: Vec<QMatrix>,
    /// `[out]`
    pub bias: Option<Vec<f32>>,
}

impl CpuLinear {
    pub fn rows(&self) -> usize {
        self.parts.iter().map(|p| p.rows).sum()
    }

    pub fn cols(&self) -> usize {
        self.parts[0].cols
    }

    /// Bytes of the weights in memory (what one decode step reads).
    pub fn size_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.size_bytes()).sum()
    }

    /// All rows decoded to f32 (tests and benches).
    pub fn to_f32(&self) -> Vec<f32> {
        self.parts.iter().flat_map(|p| p.to_f32()).collect()
    }
}

/// The CPU backend (one per model runner).
#[derive(Debug, Default)]
pub struct CpuBackend {
    /// `(cos, sin)` of the current step's positions, `[T, head_dim / 2]`.
    table: Vec<(f32, f32)>,
    /// Split q, k and v of the current layer: `[T, h d]`, `[T, kvh d]`, `[T, kvh d]`.
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Activation precision of the integer GEMM.
    act: ActBits,
}

impl CpuBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend whose integer GEMM quantizes activations to `act`.
    pub fn with_activation_bits(act: ActBits) -> Self {
        CpuBackend {
            act,
            ..Self::default()
        }
    }
}

impl Backend for CpuBackend {
    type Matrix = CpuLinear;
    type Vector = Vec<f32>;
    type Table = QMatrix;
    type Rope = Rope;
    type Kv = CpuKvCache;
    type Act = Vec<f32>;
    const NAME: &'static str = "cpu";
}

/// Stacks matrices with equal column counts row-wise, packed (Cg16) when the type has that
/// form: each run of consecutive parts of one storage type becomes one matrix (its rows
/// copied as bytes; the file's pages are released once packed), so a projection fused from
/// parts of different types (Q/K in Q5_0, V in Q8_0) stays quantized as several row blocks.
fn stack(parts: Vec<QMatrix>) -> Result<Vec<QMatrix>, String> {
    let cols = parts.first().ok_or("a linear layer needs a matrix")?.cols;
    let mut out = Vec::new();
    for run in parts.chunk_by(|a, b| a.ty == b.ty) {
        if run.iter().any(|p| p.cols != cols) {
            return Err(format!("stacked parts differ in width (expected {cols})"));
        }
        if let [one] = run {
            out.push(one.to_cg16());
            continue;
        }
        let rows: usize = run.iter().map(|p| p.rows).sum();
        let mut bytes = Vec::with_capacity(run.iter().map(|p| p.size_bytes()).sum());
        for p in run {
            bytes.extend_from_slice(p.data.bytes());
            p.data.release_pages();
        }
        out.push(QMatrix::new(run[0].ty, rows, cols, Storage::Owned(Arc::new(bytes)))?.to_cg16());
    }
    Ok(out)
}

impl Pack for CpuBackend {
    fn matrix(&self, parts: Vec<QMatrix>, bias: Option<Vec<f32>>) -> Result<CpuLinear, String> {
        let parts = stack(parts)?;
        let rows: usize = parts.iter().map(|p| p.rows).sum();
        if let Some(b) = &bias {
            if b.len() != rows {
                return Err(format!("bias of {} for {rows} rows", b.len()));
            }
        }
        Ok(CpuLinear { parts, bias })
    }

    fn vector(&self, v: &[f32]) -> Result<Vec<f32>, String> {
        Ok(v.to_vec())
    }

    fn table(&self, t: QMatrix) -> Result<(QMatrix, Option<CpuLinear>), String> {
        // One packed table serves the lookup (row by row) and, tied, the LM head.
        let t = t.to_cg16();
        let head = CpuLinear {
            parts: vec![t.clone()],
            bias: None,
        };
        Ok((t, Some(head)))
    }

    fn rope(&self, r: &RopeParams) -> Result<Rope, String> {
        Ok(Rope::from_params(r))
    }

    fn check(&self, _needs: &Needs) -> Result<(), String> {
        // Every head dim (AVX-512 attention for 64 and 128, portable otherwise), q/k norm,
        // sliding windows (portable attention inside a window) and both cache types.
        Ok(())
    }
}

impl Ops for CpuBackend {
    fn kv_cache(&self, s: KvShape, dtype: KvDtype) -> Result<CpuKvCache, String> {
        Ok(CpuKvCache::with_dtype(
            s.num_layers,
            s.num_blocks,
            s.block_size,
            s.num_kv_heads,
            s.head_dim,
            dtype,
        ))
    }

    fn copy_blocks(&mut self, kv: &mut CpuKvCache, ops: &[(u32, u32)]) {
        for &(src, dst) in ops {
            kv.copy_block(src, dst);
        }
    }

    fn step<R: Send>(
        &mut self,
        _batch: &Batch,
        kv: &mut CpuKvCache,
        mut f: impl FnMut(&mut Self, &mut CpuKvCache) -> R + Send,
    ) -> R {
        pool::run_step(|| f(self, kv))
    }

    fn embed(&mut self, table: &QMatrix, ids: &[u32], x: &mut Vec<f32>) {
        x.resize(ids.len() * table.cols, 0.0); // [T, h]
        embedding(table, ids, x);
    }

    fn norm(
        &mut self,
        x: &mut Vec<f32>,
        add: Option<&Vec<f32>>,
        w: &Vec<f32>,
        eps: f32,
        out: &mut Vec<f32>,
    ) {
        out.resize(x.len(), 0.0); // [T, h]
        match add {
            Some(y) => add_rmsnorm(x, y, w, eps, out),
            None => rmsnorm(x, w, eps, out),
        }
    }

    fn linear(&mut self, x: &Vec<f32>, w: &CpuLinear, y: &mut Vec<f32>) {
        let t = x.len() / w.cols();
        y.resize(t * w.rows(), 0.0); // [T, out], every value written
        linear_parts(x, &w.parts, w.bias.as_deref(), y, self.act);
    }

    fn attention(
        &mut self,
        op: &AttnOp<'_, Self>,
        qkv: &mut Vec<f32>,
        kv: &mut CpuKvCache,
        batch: &Batch,
        out: &mut Vec<f32>,
    ) {
        let t = batch.token_ids.len();
        let hd = op.head_dim;
        let (qd, kvd) = (op.heads * hd, op.kv_heads * hd);
        if op.layer == 0 {
            self.table = op.rope.table(&batch.positions);
        }
        self.q.resize(t * qd, 0.0); // [T, h, d]
        self.k.resize(t * kvd, 0.0); // [T, kvh, d]
        self.v.resize(t * kvd, 0.0);
        out.resize(t * qd, 0.0);
        let norm = op
            .qk_norm
            .map(|(q, k, eps)| (q.as_slice(), k.as_slice(), eps));
        split_qkv_rope(
            op.rope,
            &self.table,
            qkv,
            (op.heads, op.kv_heads),
            norm,
            &mut self.q,
            &mut self.k,
            &mut self.v,
        );
        kv.reshape_and_cache(op.layer, &self.k, &self.v, &batch.slot_mapping);
        let seqs: Vec<AttnSeq<'_>> = batch
            .seqs
            .iter()
            .map(|s| AttnSeq {
                query_start: s.query_start,
                query_len: s.query_len,
                context_len: s.context_len,
                block_table: &s.block_table,
            })
            .collect();
        paged_attention(
            kv, op.layer, &self.q, op.heads, &seqs, op.scale, op.window, out,
        );
    }

    fn silu_mul(&mut self, gu: &Vec<f32>, f: usize, out: &mut Vec<f32>) {
        out.resize(gu.len() / 2, 0.0); // [T, f]
        silu_mul(gu, f, out);
    }

    fn logits(
        &mut self,
        x: &mut Vec<f32>,
        add: Option<&Vec<f32>>,
        rows: &[usize],
        norm: &Vec<f32>,
        eps: f32,
        head: &CpuLinear,
        logits: &mut Vec<f32>,
    ) {
        if let Some(y) = add {
            add_in_place(x, y);
        }
        let h = norm.len();
        let r = rows.len();
        let mut last = vec![0f32; r * h]; // [R, h]
        for (o, &row) in last.chunks_exact_mut(h).zip(rows) {
            o.copy_from_slice(&x[row * h..(row + 1) * h]);
        }
        let mut normed = vec![0f32; r * h];
        rmsnorm(&last, norm, eps, &mut normed);
        logits.resize(r * head.rows(), 0.0); // [R, vocab], every value written below
        if let [w] = &head.parts[..] {
            linear_with(&normed, w, None, logits, self.act);
        } else {
            linear_parts(&normed, &head.parts, None, logits, self.act);
        }
    }
}
