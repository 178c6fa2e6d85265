//! Qwen2 / Qwen2.5, DeepSeek-R1-Distill-Qwen: Llama blocks with Q/K/V biases, NeoX RoPE.

use super::ArchSpec;
use crate::backend::RopeStyle;

pub const SPEC: ArchSpec = ArchSpec {
    name: "qwen2",
    gguf: &["qwen2"],
    hf: &["qwen2"],
    qkv_bias: true,
    qk_norm: false,
    gguf_rope: RopeStyle::Neox,
};
