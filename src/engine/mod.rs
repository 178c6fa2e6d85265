//! The engine: one thread owns the scheduler, the KV cache and the model runner; requests
//! come in through an `EngineHandle` and results go out as per-request event streams.
//!
//! `types` is the client contract, `core` the single-owner loop body, `handle` the thread
//! and admission control, `runner` the model execution on any backend of the seam (built
//! here: `cpu_core`, `cuda_core` with `--features cuda`), `probes` the probe prompts and
//! state, `detok` the incremental detokenizer.

pub mod act_bits;
pub mod core;
pub mod detok;
mod guide;
pub mod handle;
pub mod probes;
mod reqstate;
pub mod runner;
pub mod step_time;
pub mod types;

use std::sync::Arc;

pub use handle::EngineHandle;
pub use types::{
    EngineClient, EngineEvent, EngineStats, GenerateRequest, RequestStream, SubmitError,
    TokenLogprob,
};

use crate::backend::cpu::attention::CpuKvCache;
pub use crate::backend::cpu::matmul::q8::ActBits;
use crate::backend::KvDtype;
use crate::kv::KvConfig;
use crate::model::LoadedModel;
use crate::sched::{SchedConfig, Scheduler};
pub use act_bits::ActivationBits;

/// Engine sizing, validated at boot.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub sched: SchedConfig,
    pub block_size: usize,
    /// Bytes of KV cache; the block count is derived from it.
    pub kv_cache_bytes: usize,
    /// Element type of the CPU KV cache (the CUDA cache is bf16).
    pub kv_cache_dtype: KvDtype,
    pub enable_prefix_caching: bool,
    /// Probe prompts (`--probe-prompts`); `None`: the defaults for the model's template.
    pub probe_texts: Option<probes::ProbeTexts>,
    /// Step-time target in ms for steps that prefill prompts while others decode
    /// (`--max-step-ms`, `step_time.rs`); 0: off.
    pub max_step_ms: u32,
    /// Activation precision of the CPU integer GEMM (`--activation-bits`; `auto` measures
    /// the model at load, `act_bits`).
    pub activation_bits: ActivationBits,
    /// Decode steps as CUDA graphs (`--cuda-graphs`; CUDA backend only).
    pub cuda_graphs: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            sched: SchedConfig::default(),
            block_size: 16,
            kv_cache_bytes: 512 << 20,
            kv_cache_dtype: KvDtype::default(),
            enable_prefix_caching: true,
            probe_texts: None,
            max_step_ms: 0,
            activation_bits: ActivationBits::default(),
            cuda_graphs: true,
        }
    }
}

/// The probe prompts of `model` (or `texts`), as token ids.
pub fn probe_prompts(
    model: &LoadedModel,
    texts: Option<&probes::ProbeTexts>,
) -> Result<probes::ProbePrompts, String> {
    let default = probes::ProbeTexts::for_template(model.template.source());
    probes::ProbePrompts::new(texts.unwrap_or(&default), &model.tokenizer)
}

/// Builds the CPU engine core for `model`: sizes the KV cache from the memory budget (logged).
pub fn cpu_core(model: Arc<LoadedModel>, cfg: &EngineConfig) -> Result<core::EngineCore, String> {
    use crate::backend::cpu::backend::CpuBackend;
    use crate::backend::seam::{Ops, Pack};
    let c = &model.model.cfg;
    CpuBackend::default()
        .check(&crate::model::Model::<CpuBackend>::needs(
            c,
            cfg.kv_cache_dtype,
        ))
        .map_err(|e| format!("the cpu backend {e}"))?;
    // After the check: `auto` runs the model, which needs what the check verifies.
    let bits = act_bits::resolve(cfg.activation_bits, &model, cfg.kv_cache_dtype)?;
    let backend = CpuBackend::with_activation_bits(bits);
    tracing::info!(activation_bits = %bits, "cpu integer GEMM");
    let per_block = CpuKvCache::bytes_per_block(
        c.num_layers,
        cfg.block_size,
        c.num_kv_heads,
        c.head_dim,
        cfg.kv_cache_dtype,
    );
    let num_blocks = cfg.kv_cache_bytes / per_block;
    if num_blocks < 2 {
        return Err(format!(
            "--kv-cache-memory of {} bytes holds {num_blocks} blocks of {per_block} bytes; at least 2 are needed",
            cfg.kv_cache_bytes
        ));
    }
    tracing::info!(
        num_blocks,
        block_size = cfg.block_size,
        bytes_per_block = per_block,
        dtype = %cfg.kv_cache_dtype,
        tokens = (num_blocks - 1) * cfg.block_size,
        "KV cache sized"
    );
    let kv = KvConfig {
        num_blocks,
        block_size: cfg.block_size,
        enable_prefix_caching: cfg.enable_prefix_caching,
    };
    let sched = Scheduler::new(cfg.sched.clone(), &kv).map_err(|e| e.to_string())?;
    let cache = backend.kv_cache(
        model.model.kv_shape(num_blocks, cfg.block_size),
        cfg.kv_cache_dtype,
    )?;
    let runner = runner::Runner::new(backend, model.clone(), cache);
    let prompts = probe_prompts(&model, cfg.probe_texts.as_ref())?;
    Ok(
        core::EngineCore::new(sched, Box::new(runner), model.tokenizer.clone())
            .with_reasoning(model.reasoning.clone())
            .with_probe_prompts(prompts)
            .with_step_target(cfg.max_step_ms),
    )
}

/// How much device memory the CUDA KV cache gets.
#[cfg(feature = "cuda")]
#[derive(Debug, Clone, Copy)]
pub enum KvSizing {
    /// Exactly this many bytes.
    Bytes(usize),
    /// This fraction of the free memory after the weights are uploaded.
    FreeFraction(f64),
}

/// Builds the GPU engine core for `model` on device `ordinal` (the twin of [`cpu_core`]):
/// the CUDA backend packs its own weights from the checkpoint; the KV cache is sized from
/// `cfg.kv_cache_bytes`, or from `free_fraction` of the free device memory when given.
#[cfg(feature = "cuda")]
pub fn cuda_core(
    model: Arc<LoadedModel>,
    cfg: &EngineConfig,
    ordinal: usize,
    free_fraction: Option<f64>,
) -> Result<core::EngineCore, String> {
    use crate::backend::cuda::backend::CudaBackend;
    use crate::backend::cuda::device::GpuDevice;
    use crate::backend::cuda::kv::GpuKvCache;
    use crate::backend::seam::Ops;
    if let ActivationBits::Fixed(bits) = cfg.activation_bits {
        return Err(format!(
            "--activation-bits {bits} applies to the CPU backend only (the CUDA backend \
             multiplies bf16 activations); use --device cpu or leave it at auto"
        ));
    }
    let dev = Arc::new(GpuDevice::new(ordinal).map_err(|e| e.to_string())?);
    let backend = CudaBackend::new(dev.clone()).with_graphs(cfg.cuda_graphs);
    let packed = Arc::new(
        model
            .pack_for(&backend, cfg.kv_cache_dtype)
            .map_err(|e| e.to_string())?,
    );
    let c = &packed.cfg;
    let per_block =
        GpuKvCache::bytes_per_block(c.num_layers, cfg.block_size, c.num_kv_heads, c.head_dim);
    let sizing = free_fraction.map_or(KvSizing::Bytes(cfg.kv_cache_bytes), KvSizing::FreeFraction);
    let num_blocks = match sizing {
        KvSizing::Bytes(b) => b / per_block,
        KvSizing::FreeFraction(f) => {
            GpuKvCache::blocks_for_fraction(&dev, f, per_block).map_err(|e| e.to_string())?
        }
    };
    let cache = backend.kv_cache(
        packed.kv_shape(num_blocks, cfg.block_size),
        cfg.kv_cache_dtype,
    )?;
    tracing::info!(
        device = ordinal,
        arch = dev.arch,
        num_blocks,
        block_size = cfg.block_size,
        bytes_per_block = per_block,
        cuda_graphs = cfg.cuda_graphs,
        "CUDA runner ready"
    );
    let kv = KvConfig {
        num_blocks,
        block_size: cfg.block_size,
        enable_prefix_caching: cfg.enable_prefix_caching,
    };
    let sched = Scheduler::new(cfg.sched.clone(), &kv).map_err(|e| e.to_string())?;
    let runner = runner::Runner::new(backend, packed, cache);
    let prompts = probe_prompts(&model, cfg.probe_texts.as_ref())?;
    Ok(
        core::EngineCore::new(sched, Box::new(runner), model.tokenizer.clone())
            .with_reasoning(model.reasoning.clone())
            .with_probe_prompts(prompts)
            .with_step_target(cfg.max_step_ms),
    )
}
