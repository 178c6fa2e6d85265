//! The architecture registry: a checkpoint's GGUF `general.architecture` or Hugging Face
//! `model_type` -> an [`ArchSpec`], the blocks the shared forward (`model/forward.rs`) is built
//! from. Adding an architecture is one file here with its `SPEC` plus a line in [`REGISTRY`];
//! the config readers (`model/config.rs`) and the forward read only the spec.
//!
//! ```text
//!  spec field     llama     mistral   qwen2     qwen3
//!  qkv_bias       -         -         yes       -
//!  qk_norm        -         -         -         yes  (per-head RMSNorm of q and k before RoPE)
//!  GGUF RoPE      interl.   interl.   neox      neox (llama.cpp permutes Llama/Mistral Q/K)
//!  HF RoPE        neox      neox      neox      neox
//!  sliding window from the config when the checkpoint sets one (Mistral v0.1: 4096)
//! ```
//!
//! DeepSeek-R1-Distill checkpoints are `qwen2` (Qwen distills) or `llama` (Llama distills).

mod llama;
mod mistral;
mod qwen2;
mod qwen3;

use crate::backend::RopeStyle;

/// What an architecture is built from.
#[derive(Debug, PartialEq, Eq)]
pub struct ArchSpec {
    /// The name ponder reports.
    pub name: &'static str,
    /// GGUF `general.architecture` values (the metadata keys are `<value>.*`).
    pub gguf: &'static [&'static str],
    /// Hugging Face `model_type` values.
    pub hf: &'static [&'static str],
    /// Q, K and V projections carry a bias.
    pub qkv_bias: bool,
    /// q and k are RMS-normalized per head (weights `attn_q_norm` / `attn_k_norm`) before RoPE.
    pub qk_norm: bool,
    /// RoPE pairing of GGUF checkpoints (Hugging Face checkpoints are always NeoX).
    pub gguf_rope: RopeStyle,
}

pub const LLAMA: &ArchSpec = &llama::SPEC;
pub const MISTRAL: &ArchSpec = &mistral::SPEC;
pub const QWEN2: &ArchSpec = &qwen2::SPEC;
pub const QWEN3: &ArchSpec = &qwen3::SPEC;

/// Every architecture ponder runs.
pub const REGISTRY: &[&ArchSpec] = &[&llama::SPEC, &mistral::SPEC, &qwen2::SPEC, &qwen3::SPEC];

fn supported(field: fn(&ArchSpec) -> &'static [&'static str]) -> String {
    let mut names: Vec<&str> = REGISTRY
        .iter()
        .flat_map(|a| field(a).iter().copied())
        .collect();
    names.dedup();
    names.join(", ")
}

/// The spec of GGUF architecture `name`, or an error listing the supported ones.
pub fn by_gguf(name: &str) -> Result<&'static ArchSpec, String> {
    REGISTRY
        .iter()
        .copied()
        .find(|a| a.gguf.contains(&name))
        .ok_or_else(|| {
            format!(
                "unsupported architecture `{name}` (supported: {})",
                supported(|a| a.gguf)
            )
        })
}

/// The spec of Hugging Face `model_type`, or an error listing the supported ones.
pub fn by_hf(model_type: &str) -> Result<&'static ArchSpec, String> {
    REGISTRY
        .iter()
        .copied()
        .find(|a| a.hf.contains(&model_type))
        .ok_or_else(|| {
            format!(
                "unsupported model_type {model_type:?} (supported: {})",
                supported(|a| a.hf)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_errors_list_the_registry() {
        assert_eq!(by_gguf("qwen3").unwrap().name, "qwen3");
        assert!(by_gguf("qwen2").unwrap().qkv_bias);
        assert_eq!(by_hf("mistral").unwrap().name, "mistral");
        assert_eq!(
            by_gguf("gptneox").unwrap_err(),
            "unsupported architecture `gptneox` (supported: llama, mistral, qwen2, qwen3)"
        );
        assert_eq!(
            by_hf("gpt2").unwrap_err(),
            "unsupported model_type \"gpt2\" (supported: llama, mistral, qwen2, qwen3)"
        );
    }
}
