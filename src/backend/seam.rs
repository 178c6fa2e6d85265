//! The interface a model is written against once (`model/forward.rs`), and that every
//! backend (CPU, CUDA) implements: where its packed weights, activations and KV cache live
//! ([`Backend`]), how it packs a checkpoint's tensors at load ([`Pack`]), and the operations
//! of one step ([`Ops`]).
//!
//! ```text
//!  model/forward.rs   embed -> [norm -> linear(qkv) -> attention -> linear(o)
//!  (one definition)           -> norm(+residual) -> linear(gate_up) -> silu_mul
//!                             -> linear(down)] x layers -> logits
//!        |  Ops<B>: each op reads and writes B's own buffers; fusions (residual + norm,
//!        v          split + q/k norm + RoPE + cache write + attention) are inside the ops
//!  backend/cpu  (Cg16 integer GEMM, f16 paged cache)     backend/cuda (bf16 cuBLAS, kernels)
//! ```
//!
//! Invariants: a backend refuses at load (`Pack::check`) what it cannot run, so no op fails
//! for lack of support at step time; an op resizes its output to the batch (buffers are
//! reused across steps and never read before an op writes them); activations are `[rows,
//! cols]` row-major with `rows` = the batch's tokens (or logits rows).

use super::tensor::QMatrix;
use super::types::{Batch, KvDtype, KvShape, Needs, RopeParams};

/// A backend's storage types.
pub trait Backend: Send + 'static {
    /// A packed linear layer `[out, in]` (+ bias).
    type Matrix: Send + Sync;
    /// A packed vector (norm weights).
    type Vector: Send + Sync;
    /// A packed embedding table `[vocab, hidden]`.
    type Table: Send + Sync;
    /// RoPE parameters where the backend reads them.
    type Rope: Send + Sync;
    /// The paged KV cache.
    type Kv: Send;
    /// An activation buffer (`Default` = empty; ops size it).
    type Act: Send + Default;
    const NAME: &'static str;
}

/// Packing a checkpoint's tensors the backend's way, at load.
pub trait Pack: Backend {
    /// The stacked row blocks `parts` (one per run of a storage type) as one layer.
    fn matrix(&self, parts: Vec<QMatrix>, bias: Option<Vec<f32>>) -> Result<Self::Matrix, String>;
    fn vector(&self, v: &[f32]) -> Result<Self::Vector, String>;
    /// The embedding table, and the LM head when embeddings are tied (`head: None`).
    fn table(&self, t: QMatrix) -> Result<(Self::Table, Option<Self::Matrix>), String>;
    fn rope(&self, r: &RopeParams) -> Result<Self::Rope, String>;
    /// Refuses, with the reason, a model this backend cannot run.
    fn check(&self, needs: &Needs) -> Result<(), String>;
}

/// One attention layer's parameters for [`Ops::attention`].
pub struct AttnOp<'a, B: Backend> {
    pub layer: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rope: &'a B::Rope,
    /// Per-head RMSNorm of q and k before RoPE (Qwen3), with the model's epsilon.
    pub qk_norm: Option<(&'a B::Vector, &'a B::Vector, f32)>,
    /// Each token attends to at most this many positions (itself included).
    pub window: Option<usize>,
    pub scale: f32,
}

/// The operations of one step.
pub trait Ops: Backend + Sized {
    fn kv_cache(&self, shape: KvShape, dtype: KvDtype) -> Result<Self::Kv, String>;
    /// Copy-on-write block copies `(src, dst)` (all layers), in order, before a step.
    fn copy_blocks(&mut self, kv: &mut Self::Kv, ops: &[(u32, u32)]);
    /// Runs one step's forward pass (`f`) over `batch` and the cache `kv`: a hook for
    /// backends that set up per-step state (the CPU runs it on its thread pool; CUDA uploads
    /// the step's inputs and may run `f` a second time to capture a decode step in a CUDA
    /// graph, so `f` must be repeatable and every op of it must go through `Self`).
    fn step<R: Send>(
        &mut self,
        batch: &Batch,
        kv: &mut Self::Kv,
        mut f: impl FnMut(&mut Self, &mut Self::Kv) -> R + Send,
    ) -> R {
        let _ = batch;
        f(self, kv)
    }
    /// `x [T, h]` = the table rows of `ids`.
    fn embed(&mut self, table: &Self::Table, ids: &[u32], x: &mut Self::Act);
    /// `x += add` (when given), then `out = rmsnorm(x) * w`.
    fn norm(
        &mut self,
        x: &mut Self::Act,
        add: Option<&Self::Act>,
        w: &Self::Vector,
        eps: f32,
        out: &mut Self::Act,
    );
    /// `y = x W^T (+ bias)`.
    fn linear(&mut self, x: &Self::Act, w: &Self::Matrix, y: &mut Self::Act);
    /// Splits `qkv [T, (h + 2 kvh) d]` (a backend may rotate it in place), normalizes q and k
    /// per head (if asked), rotates them,
    /// writes k and v into the cache at the batch's slots and attends causally (within the
    /// window) over each sequence's blocks: `out [T, h d]`.
    fn attention(
        &mut self,
        op: &AttnOp<'_, Self>,
        qkv: &mut Self::Act,
        kv: &mut Self::Kv,
        batch: &Batch,
        out: &mut Self::Act,
    );
    /// `out [T, f] = silu(gate) * up` of `gu [T, 2f]` (gate columns first).
    fn silu_mul(&mut self, gu: &Self::Act, f: usize, out: &mut Self::Act);
    /// The last layer's residual add (`x += add`), then for the batch's `rows` only: final
    /// norm and LM head into host `logits [rows, vocab]`.
    #[allow(clippy::too_many_arguments)]
    fn logits(
        &mut self,
        x: &mut Self::Act,
        add: Option<&Self::Act>,
        rows: &[usize],
        norm: &Self::Vector,
        eps: f32,
        head: &Self::Matrix,
        logits: &mut Vec<f32>,
    );
}
