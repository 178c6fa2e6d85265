//! One-shot generation for the CLI and golden tests: a single sequence, run through the
//! same paged forward as the server (identity block table), sampled with the shared sampler.

use crate::backend::cpu::attention::CpuKvCache;
use crate::model::{BatchInput, LoadedModel};

/// Block size of the one-shot path's private cache.
const BLOCK: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub prompt_token_ids: Vec<u32>,
    pub token_ids: Vec<u32>,
    pub finish_reason: &'static str,
}

/// Greedy decoding of up to `max_tokens` tokens after `prompt`; stops at an EOS id.
pub fn generate_greedy(m: &LoadedModel, prompt: &[u32], max_tokens: usize) -> Generation {
    let total = prompt.len() + max_tokens;
    let blocks = total.div_ceil(BLOCK) + 1;
    // Block 0 is the null block: the table is 1..=n.
    let table: Vec<u32> = (1..blocks as u32).collect();
    let mut kv: CpuKvCache = m.model.new_kv_cache(blocks, BLOCK);
    let mut out = Vec::new();
    let mut logits = m.model.forward(&BatchInput::single(prompt, 0, &table, BLOCK), &mut kv);
    let mut finish = "length";
    for _ in 0..max_tokens {
        let next = argmax(&logits);
        out.push(next);
        if m.tokenizer.eos_ids.contains(&next) {
            finish = "stop";
            break;
        }
        if out.len() == max_tokens {
            break;
        }
        let pos = prompt.len() + out.len() - 1;
        logits = m.model.forward(&BatchInput::single(&[next], pos, &table, BLOCK), &mut kv);
    }
    Generation { prompt_token_ids: prompt.to_vec(), token_ids: out, finish_reason: finish }
}

/// Index of the largest logit; ties go to the lowest id.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}
