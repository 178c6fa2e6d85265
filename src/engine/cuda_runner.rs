//! The GPU model runner (feature `cuda`): executes a `SchedulerOutput` with the Llama forward
//! on one CUDA device. Mirrors `model::llama::LlamaModel::forward` step for step, with the
//! CUDA kernels of `backend::cuda` in place of the CPU ops.
//!
//! Per step (T batch rows, R logits rows), buffers allocated on the stream and freed at the
//! end of the step (stream-ordered allocator):
//!
//! ```text
//!  x     f32  [T, h]            residual stream            4Th bytes
//!  xn    bf16 [T, h]            normed (GEMM input)        2Th
//!  qkv   f32  [T, qd + 2 kvd]   rope'd in place; q read by attention, k/v cached
//!  attn  bf16 [T, qd]           attention output (Wo input)
//!  proj  f32  [T, h]            Wo / down output, added into x by the next rmsnorm
//!  gu    f32  [T, 2f]  act bf16 [T, f]
//!  last  bf16 [R, h]   logits f32 [R, vocab]  -> copied to the host (4 * R * vocab bytes)
//! ```
//!
//! The residual add is fused into the next RMSNorm (`x += proj; xn = norm(x)`), including the
//! final norm. Errors inside a step are unrecoverable device faults: `execute` panics with the
//! CUDA error (the `ModelRunner` trait has no error path).

use std::sync::Arc;

use cudarc::driver::CudaSlice;
use half::bf16;

use super::core::EngineCore;
use super::runner::{batch_input, ModelRunner};
use super::EngineConfig;
use crate::backend::cpu::ops::RopeStyle;
use crate::backend::cuda::attention::{paged_attention, AttnBatch, AttnKernel, AttnSeqDesc};
use crate::backend::cuda::device::GpuDevice;
use crate::backend::cuda::gemm::linear;
use crate::backend::cuda::kv::GpuKvCache;
use crate::backend::cuda::ops::{self, NormOut};
use crate::backend::cuda::weights::GpuWeights;
use crate::backend::cuda::{CudaError, Result};
use crate::kv::KvConfig;
use crate::model::{BatchInput, LlamaModel, LoadedModel, ModelConfig};
use crate::sched::{Scheduler, SchedulerOutput};

/// How much device memory the KV cache gets.
#[derive(Debug, Clone, Copy)]
pub enum KvSizing {
    /// Exactly this many bytes.
    Bytes(usize),
    /// This fraction of the free memory after the weights are uploaded.
    FreeFraction(f64),
}

pub struct CudaRunner {
    dev: GpuDevice,
    cfg: ModelConfig,
    weights: Arc<GpuWeights>,
    kv: GpuKvCache,
}

impl CudaRunner {
    /// Opens device `ordinal`, compiles the kernels, uploads the weights (bf16) and allocates
    /// the KV cache. Errors when CUDA is unavailable or memory does not fit.
    pub fn new(
        model: &LoadedModel,
        ordinal: usize,
        kv: KvSizing,
        block_size: usize,
    ) -> Result<Self> {
        Self::with_model(&model.model, ordinal, kv, block_size)
    }

    /// As [`CudaRunner::new`], from the bare model (tests build one in memory).
    pub fn with_model(
        m: &LlamaModel,
        ordinal: usize,
        kv: KvSizing,
        block_size: usize,
    ) -> Result<Self> {
        let dev = GpuDevice::new(ordinal)?;
        let cfg = m.cfg.clone();
        let inv_freq = cfg.rope_inv_freq(m.weights.rope_freqs.as_deref());
        let weights = GpuWeights::upload(&dev, &m.weights, &inv_freq)?;
        let per_block =
            GpuKvCache::bytes_per_block(cfg.num_layers, block_size, cfg.num_kv_heads, cfg.head_dim);
        let num_blocks = match kv {
            KvSizing::Bytes(b) => b / per_block,
            KvSizing::FreeFraction(f) => GpuKvCache::blocks_for_fraction(&dev, f, per_block)?,
        };
        let kv = GpuKvCache::new(
            &dev,
            cfg.num_layers,
            num_blocks,
            block_size,
            cfg.num_kv_heads,
            cfg.head_dim,
        )?;
        tracing::info!(
            device = ordinal,
            arch = dev.arch,
            num_blocks,
            block_size,
            bytes_per_block = per_block,
            weight_bytes = weights.matrix_bytes,
            "CUDA runner ready"
        );
        Ok(CudaRunner {
            dev,
            cfg,
            weights,
            kv,
        })
    }

    pub fn num_blocks(&self) -> usize {
        self.kv.num_blocks
    }

    pub fn device(&self) -> &GpuDevice {
        &self.dev
    }

    /// Bytes of bf16 weight matrices read per decode step (bandwidth floor numerator).
    pub fn weight_bytes(&self) -> usize {
        self.weights.matrix_bytes
    }

    /// Checks every index the kernels trust: token ids < vocab, slots < cache slots,
    /// logits rows < T (block tables are checked by `AttnBatch::new`).
    fn validate(&self, b: &BatchInput) -> Result<()> {
        let t = b.token_ids.len();
        let bad = |m: String| Err(CudaError::Config(format!("batch: {m}")));
        if b.positions.len() != t || b.slot_mapping.len() != t {
            return bad(format!(
                "{t} tokens, {} positions, {} slots",
                b.positions.len(),
                b.slot_mapping.len()
            ));
        }
        if let Some(&id) = b
            .token_ids
            .iter()
            .find(|&&id| id as usize >= self.cfg.vocab_size)
        {
            return bad(format!("token id {id} >= vocab {}", self.cfg.vocab_size));
        }
        if let Some(&s) = b.slot_mapping.iter().find(|&&s| s >= self.kv.num_slots()) {
            return bad(format!("slot {s} >= {} slots", self.kv.num_slots()));
        }
        if let Some(&r) = b.logits_rows.iter().find(|&&r| r >= t) {
            return bad(format!("logits row {r} >= {t} rows"));
        }
        Ok(())
    }

    /// Runs the batch; returns logits `[logits_rows.len(), vocab]` on the device.
    pub fn forward(&mut self, b: &BatchInput) -> Result<CudaSlice<f32>> {
        self.validate(b)?;
        let c = &self.cfg;
        let dev = &self.dev;
        let w = &*self.weights;
        let t = b.token_ids.len();
        let (h, hd, nh, nkv, f) = (
            c.hidden_size,
            c.head_dim,
            c.num_heads,
            c.num_kv_heads,
            c.intermediate_size,
        );
        let (qd, kvd) = (nh * hd, nkv * hd);
        let qkvd = qd + 2 * kvd;
        let to_i32 = |v: &[usize]| v.iter().map(|&x| x as i32).collect::<Vec<i32>>();
        let ids: Vec<i32> = b.token_ids.iter().map(|&x| x as i32).collect();
        let ids = dev.upload(&ids)?;
        let positions = dev.upload(&to_i32(&b.positions))?;
        let slots = dev.upload(&to_i32(&b.slot_mapping))?;
        let rows = dev.upload(&to_i32(&b.logits_rows))?;
        let seqs: Vec<AttnSeqDesc<'_>> = b
            .seqs
            .iter()
            .map(|s| AttnSeqDesc {
                query_start: s.query_start,
                query_len: s.query_len,
                context_len: s.context_len,
                block_table: &s.block_table,
            })
            .collect();
        let attn_batch = AttnBatch::new(dev, &seqs, t, self.kv.block_size, self.kv.num_blocks)?;

        let s = &dev.stream;
        let mut x = s.alloc_zeros::<f32>(t * h)?; // [T, h]
        let mut xn = s.alloc_zeros::<bf16>(t * h)?; // [T, h]
        let mut qkv = s.alloc_zeros::<f32>(t * qkvd)?; // [T, qd + 2kvd]
        let mut attn = s.alloc_zeros::<bf16>(t * qd)?; // [T, qd]
        let mut proj = s.alloc_zeros::<f32>(t * h)?; // [T, h]
        let mut gu = s.alloc_zeros::<f32>(t * 2 * f)?; // [T, 2f]
        let mut act = s.alloc_zeros::<bf16>(t * f)?; // [T, f]
        let neox = c.rope_style == RopeStyle::Neox;
        let scale = 1.0 / (hd as f32).sqrt();

        ops::embedding(dev, &mut x, &w.embed, &ids, c.vocab_size, h)?;
        for (l, lw) in w.layers.iter().enumerate() {
            let residual = (l > 0).then_some(&proj);
            ops::rmsnorm_residual(
                dev,
                NormOut::Bf16(&mut xn.as_view_mut()),
                &mut x,
                residual,
                &lw.attn_norm,
                t,
                h,
                c.rms_eps,
            )?;
            linear(dev, &xn, &lw.qkv.w, &mut qkv, t, qkvd, h)?;
            if let Some(bias) = &lw.qkv.bias {
                ops::add_bias(dev, &mut qkv, bias, t)?;
            }
            ops::rope(
                dev,
                &mut qkv.slice_mut(..),
                &positions,
                &w.inv_freq,
                qkvd,
                nh,
                hd,
                neox,
            )?;
            ops::rope(
                dev,
                &mut qkv.slice_mut(qd..),
                &positions,
                &w.inv_freq,
                qkvd,
                nkv,
                hd,
                neox,
            )?;
            self.kv.reshape_and_cache(
                dev,
                l,
                &qkv.slice(qd..),
                &qkv.slice(qd + kvd..),
                &slots,
                qkvd,
            )?;
            paged_attention(
                dev,
                &mut attn,
                &qkv.slice(..),
                qkvd,
                &self.kv,
                l,
                &attn_batch,
                nh,
                scale,
                AttnKernel::Auto,
            )?;
            linear(dev, &attn, &lw.wo.w, &mut proj, t, h, qd)?;
            if let Some(bias) = &lw.wo.bias {
                ops::add_bias(dev, &mut proj, bias, t)?;
            }
            ops::rmsnorm_residual(
                dev,
                NormOut::Bf16(&mut xn.as_view_mut()),
                &mut x,
                Some(&proj),
                &lw.ffn_norm,
                t,
                h,
                c.rms_eps,
            )?;
            linear(dev, &xn, &lw.gate_up.w, &mut gu, t, 2 * f, h)?;
            ops::silu_mul(dev, NormOut::Bf16(&mut act.as_view_mut()), &gu, t, f)?;
            linear(dev, &act, &lw.down.w, &mut proj, t, h, f)?;
        }
        let residual = (!w.layers.is_empty()).then_some(&proj);
        ops::rmsnorm_residual(
            dev,
            NormOut::Bf16(&mut xn.as_view_mut()),
            &mut x,
            residual,
            &w.final_norm,
            t,
            h,
            c.rms_eps,
        )?;
        let r = b.logits_rows.len();
        let mut logits = s.alloc_zeros::<f32>(r.max(1) * c.vocab_size)?; // [R, vocab]
        if r > 0 {
            let mut last = s.alloc_zeros::<bf16>(r * h)?; // [R, h]
            ops::gather_rows(dev, &mut last, &xn, &rows, h)?;
            linear(dev, &last, w.lm_head(), &mut logits, r, c.vocab_size, h)?;
        }
        Ok(logits)
    }

    /// `forward` + copy of the logits rows to the host (`[R, vocab]` f32).
    pub fn forward_host(&mut self, b: &BatchInput) -> Result<Vec<f32>> {
        let r = b.logits_rows.len();
        let logits = self.forward(b)?;
        let mut v = self.dev.download(&logits)?;
        v.truncate(r * self.cfg.vocab_size);
        Ok(v)
    }

    /// `forward` + greedy argmax on the device: copies back R token ids instead of R vocab
    /// rows (4 bytes per row instead of 4 * vocab).
    pub fn forward_greedy(&mut self, b: &BatchInput) -> Result<Vec<u32>> {
        let r = b.logits_rows.len();
        if r == 0 {
            self.forward(b)?;
            return Ok(Vec::new());
        }
        let logits = self.forward(b)?;
        let mut out = self.dev.stream.alloc_zeros::<i32>(r)?;
        ops::argmax(&self.dev, &mut out, &logits, self.cfg.vocab_size)?;
        Ok(self
            .dev
            .download(&out)?
            .into_iter()
            .map(|v| v as u32)
            .collect())
    }

    /// Applies copy-on-write block copies and runs the step (the fallible `execute`).
    pub fn try_execute(&mut self, out: &SchedulerOutput) -> Result<Vec<f32>> {
        self.kv.copy_blocks(&self.dev, &out.copy_ops)?;
        let b = batch_input(out);
        if b.token_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.forward_host(&b)
    }
}

impl ModelRunner for CudaRunner {
    fn execute(&mut self, out: &SchedulerOutput, logits: &mut Vec<f32>) {
        *logits = self
            .try_execute(out)
            .unwrap_or_else(|e| panic!("CUDA step failed (device state is unrecoverable): {e}"));
    }

    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }
}

/// Builds the GPU engine core for `model` on device `ordinal` (the twin of `engine::cpu_core`):
/// KV cache sized from `cfg.kv_cache_bytes`, or from `free_fraction` of the free device memory
/// when given.
pub fn cuda_core(
    model: Arc<LoadedModel>,
    cfg: &EngineConfig,
    ordinal: usize,
    free_fraction: Option<f64>,
) -> std::result::Result<EngineCore, String> {
    let sizing = free_fraction.map_or(KvSizing::Bytes(cfg.kv_cache_bytes), KvSizing::FreeFraction);
    let runner =
        CudaRunner::new(&model, ordinal, sizing, cfg.block_size).map_err(|e| e.to_string())?;
    let kv = KvConfig {
        num_blocks: runner.num_blocks(),
        block_size: cfg.block_size,
        enable_prefix_caching: cfg.enable_prefix_caching,
    };
    let sched = Scheduler::new(cfg.sched.clone(), &kv).map_err(|e| e.to_string())?;
    let prompts = super::probe_prompts(&model, cfg.probe_texts.as_ref())?;
    Ok(
        EngineCore::new(sched, Box::new(runner), model.tokenizer.clone())
            .with_reasoning(model.reasoning.clone())
            .with_probe_prompts(prompts),
    )
}
