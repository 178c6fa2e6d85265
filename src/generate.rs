//! One-shot generation for the CLI (`ponder generate`) and the golden tests: one request run
//! through the same engine loop the server runs (scheduler, paged KV cache, shared forward,
//! sampler, stop rules, reasoning split), on a private engine sized for it.

use std::sync::Arc;

use crate::backend::cpu::attention::CpuKvCache;
use crate::engine::core::Submission;
use crate::engine::{cpu_core, ActBits, EngineConfig, EngineEvent, GenerateRequest, RequestStream};
use crate::model::LoadedModel;
use crate::sample::{FinishReason, SamplingParams};

/// Block size of the one-shot engine's cache.
const BLOCK: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub prompt_token_ids: Vec<u32>,
    pub token_ids: Vec<u32>,
    /// The content (after stop-string truncation; without thinking for models that mark it).
    pub text: String,
    /// The thinking text (models with reasoning markers; empty otherwise).
    pub reasoning: String,
    /// Logprob of each generated token.
    pub logprobs: Vec<f32>,
    pub finish_reason: FinishReason,
}

/// Generates after `prompt` with `params` (max_tokens, stop strings/ids, EOS, seed).
pub fn generate(
    m: &Arc<LoadedModel>,
    prompt: &[u32],
    params: &SamplingParams,
) -> Result<Generation, String> {
    generate_with(m, prompt, params, ActBits::default())
}

/// [`generate`] with the CPU GEMM's activation precision `bits` (`--activation-bits`).
pub fn generate_with(
    m: &Arc<LoadedModel>,
    prompt: &[u32],
    params: &SamplingParams,
    bits: ActBits,
) -> Result<Generation, String> {
    let max_tokens = params.max_tokens as usize;
    if prompt.is_empty() {
        return Err("the prompt is empty".into());
    }
    let max_pos = m.model.cfg.max_position;
    if prompt.len() + max_tokens > max_pos {
        return Err(format!(
            "prompt ({} tokens) + max_tokens ({max_tokens}) must be <= the context length {max_pos}",
            prompt.len()
        ));
    }
    // The whole sequence plus the null block and one block of headroom.
    let blocks = (prompt.len() + max_tokens).div_ceil(BLOCK) + 2;
    let c = &m.model.cfg;
    let dtype = crate::backend::KvDtype::default();
    let per_block =
        CpuKvCache::bytes_per_block(c.num_layers, BLOCK, c.num_kv_heads, c.head_dim, dtype);
    let cfg = EngineConfig {
        block_size: BLOCK,
        kv_cache_bytes: blocks * per_block,
        kv_cache_dtype: dtype,
        activation_bits: crate::engine::ActivationBits::Fixed(bits),
        cuda_graphs: true,
        ..EngineConfig::default()
    };
    let mut core = cpu_core(m.clone(), &cfg)?;
    // Logprobs on: the generation reports each token's (turning them on changes no token).
    let params = crate::sample::RawSamplingParams {
        logprobs: true,
        ..(**params).clone()
    }
    .validate()
    .map_err(|e| e.to_string())?;
    let mut req = GenerateRequest::new(prompt.to_vec(), 1, params);
    if let Some(f) = &m.reasoning {
        let text = m.tokenizer.decode(prompt, false);
        req.starts_in_thinking = f.starts_in_thinking(&text);
    }
    let (mut stream, tx, cancelled) = RequestStream::channel();
    core.add(Submission { req, tx, cancelled });
    let mut g = Generation {
        prompt_token_ids: prompt.to_vec(),
        token_ids: Vec::new(),
        text: String::new(),
        reasoning: String::new(),
        logprobs: Vec::new(),
        finish_reason: FinishReason::Length,
    };
    loop {
        while let Some(ev) = stream.try_next() {
            match ev {
                EngineEvent::Delta {
                    token_ids,
                    text,
                    reasoning,
                    logprobs,
                    ..
                } => {
                    g.token_ids.extend(token_ids);
                    g.text.push_str(&text);
                    g.reasoning.push_str(&reasoning);
                    g.logprobs.extend(logprobs.iter().map(|l| l.logprob));
                }
                EngineEvent::Finished { reason, .. } => g.finish_reason = reason,
                EngineEvent::Error(e) => return Err(e),
                EngineEvent::Report(_) | EngineEvent::Progress(_) => {}
            }
        }
        if !core.has_work() {
            return Ok(g);
        }
        core.step();
    }
}
