//! The one forward pass of every architecture in the registry (`model/arch`), written once
//! against the backend seam (`backend::seam::Ops`): the CPU and CUDA backends run this same
//! definition with their own storage and kernels.
//!
//! Per layer, for all T tokens of the batch at once (the arch spec switches the optional
//! parts: QKV bias, per-head q/k norm, sliding window):
//!
//! ```text
//! x [T, h] -> norm -> qkv = x Wqkv^T (+b)  [T, qd + 2 kvd]
//!          -> attention: split, (q/k norm), rope(q, k), cache[slots] = k, v,
//!             paged causal attention per sequence over its block table  [T, qd]
//!          -> proj = attn Wo^T -> x += proj, norm
//!          -> gu = x Wgu^T [T, 2f] -> silu(g) * u [T, f] -> proj = . Wdown^T
//!          -> x += proj (fused with the next layer's norm)
//! logits: final norm and LM head for the batch's logits rows only (a 2,000-token prefill
//! costs one LM-head row, not 2,000)
//! ```
//!
//! Memory: the activation buffers of the last step are kept and reused (`T * (5 h + qd +
//! 2 kvd + 3 f)` floats on the CPU, sized by the scheduler's step token budget: 18 MB for
//! SmolLM2-135M at T = 512); reusing them spares every big step its fresh pages.

use std::sync::Mutex;

use super::config::ModelConfig;
use crate::backend::seam::{AttnOp, Backend, Ops};
use crate::backend::types::{Batch, KvDtype, KvShape, Needs};

/// One layer's packed weights.
pub struct Layer<B: Backend> {
    pub attn_norm: B::Vector,
    /// Fused `[q_dim + 2 kv_dim, hidden]` (+ the Q/K/V biases).
    pub qkv: B::Matrix,
    /// Per-head `[head_dim]` norms of q and k (Qwen3).
    pub qk_norm: Option<(B::Vector, B::Vector)>,
    pub wo: B::Matrix,
    pub ffn_norm: B::Vector,
    /// Fused `[2 ffn, hidden]`: gate rows then up rows.
    pub gate_up: B::Matrix,
    pub down: B::Matrix,
}

/// A model's weights, packed by backend `B`.
pub struct Weights<B: Backend> {
    /// `[vocab, hidden]`
    pub embed: B::Table,
    pub layers: Vec<Layer<B>>,
    pub final_norm: B::Vector,
    /// `[vocab, hidden]` (the embedding table's rows when embeddings are tied).
    pub lm_head: B::Matrix,
    pub rope: B::Rope,
}

/// One step's activations (reused across steps; each op sizes its output).
struct Acts<B: Backend> {
    x: B::Act,
    xn: B::Act,
    qkv: B::Act,
    attn: B::Act,
    proj: B::Act,
    gu: B::Act,
    act: B::Act,
}

impl<B: Backend> Default for Acts<B> {
    fn default() -> Self {
        Acts {
            x: B::Act::default(),
            xn: B::Act::default(),
            qkv: B::Act::default(),
            attn: B::Act::default(),
            proj: B::Act::default(),
            gu: B::Act::default(),
            act: B::Act::default(),
        }
    }
}

/// A model on backend `B`: its config and packed weights (no per-sequence state: the KV
/// cache and the batch are arguments of `forward`).
pub struct Model<B: Backend> {
    pub cfg: ModelConfig,
    pub weights: Weights<B>,
    /// The last step's activations, taken for a step (a concurrent caller allocates its own).
    scratch: Mutex<Option<Acts<B>>>,
}

impl<B: Backend> Model<B> {
    pub fn new(cfg: ModelConfig, weights: Weights<B>) -> Self {
        Model {
            cfg,
            weights,
            scratch: Mutex::new(None),
        }
    }

    /// What the model needs from a backend beyond the base op set.
    pub fn needs(cfg: &ModelConfig, kv_dtype: KvDtype) -> Needs {
        Needs {
            head_dim: cfg.head_dim,
            qk_norm: cfg.qk_norm,
            sliding_window: cfg.sliding_window.is_some(),
            kv_dtype,
        }
    }

    /// The shape of a KV cache of `num_blocks` blocks of `block_size` tokens.
    pub fn kv_shape(&self, num_blocks: usize, block_size: usize) -> KvShape {
        KvShape {
            num_layers: self.cfg.num_layers,
            num_blocks,
            block_size,
            num_kv_heads: self.cfg.num_kv_heads,
            head_dim: self.cfg.head_dim,
        }
    }
}

impl<B: Ops + Default> Model<B> {
    /// Runs the batch on a fresh backend instance and returns its logits `[logits_rows,
    /// vocab]` (tests, benches and one-off callers; runners keep their backend).
    pub fn run(&self, batch: &Batch, kv: &mut B::Kv) -> Vec<f32> {
        let mut logits = Vec::new();
        self.forward(&mut B::default(), batch, kv, &mut logits);
        logits
    }
}

impl Model<crate::backend::cpu::backend::CpuBackend> {
    /// A CPU KV cache of `num_blocks` blocks of `block_size` tokens, elements `dtype`.
    pub fn new_kv_cache_dtype(
        &self,
        num_blocks: usize,
        block_size: usize,
        dtype: KvDtype,
    ) -> crate::backend::cpu::attention::CpuKvCache {
        crate::backend::cpu::attention::CpuKvCache::with_dtype(
            self.cfg.num_layers,
            num_blocks,
            block_size,
            self.cfg.num_kv_heads,
            self.cfg.head_dim,
            dtype,
        )
    }

    /// A CPU KV cache of the default element type (f16).
    pub fn new_kv_cache(
        &self,
        num_blocks: usize,
        block_size: usize,
    ) -> crate::backend::cpu::attention::CpuKvCache {
        self.new_kv_cache_dtype(num_blocks, block_size, KvDtype::default())
    }
}

impl<B: Ops> Model<B> {
    /// Runs the batch on `b`, writing its K/V into `kv`; `logits` becomes `[logits_rows,
    /// vocab]` (capacity kept, every value written).
    pub fn forward(&self, b: &mut B, batch: &Batch, kv: &mut B::Kv, logits: &mut Vec<f32>) {
        b.step(batch, kv, |b, kv| self.forward_in(b, batch, kv, logits))
    }

    fn forward_in(&self, b: &mut B, batch: &Batch, kv: &mut B::Kv, logits: &mut Vec<f32>) {
        let c = &self.cfg;
        let w = &self.weights;
        let eps = c.rms_eps;
        let mut a = self
            .scratch
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .unwrap_or_default();
        b.embed(&w.embed, &batch.token_ids, &mut a.x);
        b.norm(&mut a.x, None, &w.layers[0].attn_norm, eps, &mut a.xn);
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        for (l, lw) in w.layers.iter().enumerate() {
            b.linear(&a.xn, &lw.qkv, &mut a.qkv);
            let op = AttnOp {
                layer: l,
                heads: c.num_heads,
                kv_heads: c.num_kv_heads,
                head_dim: c.head_dim,
                rope: &w.rope,
                qk_norm: lw.qk_norm.as_ref().map(|(q, k)| (q, k, eps)),
                window: c.sliding_window,
                scale,
            };
            b.attention(&op, &mut a.qkv, kv, batch, &mut a.attn);
            b.linear(&a.attn, &lw.wo, &mut a.proj);
            b.norm(&mut a.x, Some(&a.proj), &lw.ffn_norm, eps, &mut a.xn);
            b.linear(&a.xn, &lw.gate_up, &mut a.gu);
            b.silu_mul(&a.gu, c.intermediate_size, &mut a.act);
            b.linear(&a.act, &lw.down, &mut a.proj);
            // The residual add, fused with the next layer's input norm (the last layer's
            // residual is added by `logits`: the final norm reads only the sampled rows).
            if let Some(next) = w.layers.get(l + 1) {
                b.norm(&mut a.x, Some(&a.proj), &next.attn_norm, eps, &mut a.xn);
            }
        }
        b.logits(
            &mut a.x,
            Some(&a.proj),
            &batch.logits_rows,
            &w.final_norm,
            eps,
            &w.lm_head,
            logits,
        );
        if let Ok(mut s) = self.scratch.lock() {
            *s = Some(a);
        }
    }
}
