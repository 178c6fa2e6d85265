//! One-shot generation for the CLI and golden tests: a single sequence, run through the
//! same paged forward as the server (identity block table), sampled with the shared sampler
//! and finished by the shared stop rules.

use crate::backend::cpu::attention::CpuKvCache;
use crate::model::{BatchInput, LoadedModel};
use crate::sample::{
    finish_on_token, fresh_seed, FinishReason, Sampler, SamplingParams, StopChecker, StopStatus,
    TokenHistory,
};

/// Block size of the one-shot path's private cache.
const BLOCK: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub prompt_token_ids: Vec<u32>,
    pub token_ids: Vec<u32>,
    pub text: String,
    pub logprobs: Vec<f32>,
    pub finish_reason: FinishReason,
}

/// Generates after `prompt` with `params` (max_tokens, stop strings/ids, EOS).
pub fn generate(
    m: &LoadedModel,
    prompt: &[u32],
    params: &SamplingParams,
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
    let total = prompt.len() + max_tokens;
    let blocks = total.div_ceil(BLOCK) + 1;
    // Block 0 is the null block: the table is 1..=n.
    let table: Vec<u32> = (1..blocks as u32).collect();
    let mut kv: CpuKvCache = m.model.new_kv_cache(blocks, BLOCK);
    let mut sampler = Sampler::new(m.model.cfg.vocab_size, &m.tokenizer.eos_ids);
    let mut history = TokenHistory::new(prompt);
    let mut stops = StopChecker::new(&params.stop);
    let seed = params.seed.unwrap_or_else(fresh_seed);
    let mut out = Vec::new();
    let mut logprobs = Vec::new();
    let mut logits = m
        .model
        .forward(&BatchInput::single(prompt, 0, &table, BLOCK), &mut kv);
    let mut finish = FinishReason::Length;
    let mut text_end = None;
    while out.len() < max_tokens {
        let s = sampler
            .sample(&logits, params, &history, seed, out.len() as u32)
            .map_err(|e| e.to_string())?;
        out.push(s.token);
        logprobs.push(s.logprob);
        history.push_output(s.token);
        if let Some(r) = finish_on_token(params, &m.tokenizer.eos_ids, s.token, out.len()) {
            finish = r;
            break;
        }
        if !params.stop.is_empty() {
            let text = m.tokenizer.decode(&out, true);
            if let StopStatus::Stopped { truncate_at, .. } = stops.check(&text) {
                finish = FinishReason::Stop;
                text_end = Some((text, truncate_at));
                break;
            }
        }
        let pos = prompt.len() + out.len() - 1;
        logits = m
            .model
            .forward(&BatchInput::single(&[s.token], pos, &table, BLOCK), &mut kv);
    }
    let text = match text_end {
        Some((t, cut)) => t[..cut].to_string(),
        None => m.tokenizer.decode(&out, true),
    };
    Ok(Generation {
        prompt_token_ids: prompt.to_vec(),
        token_ids: out,
        text,
        logprobs,
        finish_reason: finish,
    })
}
