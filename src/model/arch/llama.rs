//! Llama 2/3, SmolLM2, DeepSeek-R1-Distill-Llama: the base block set (no biases, no q/k norm).

use super::ArchSpec;
use crate::backend::RopeStyle;

pub const SPEC: ArchSpec = ArchSpec {
    name: "llama",
    gguf: &["llama"],
    hf: &["llama"],
    qkv_bias: false,
    qk_norm: false,
    gguf_rope: RopeStyle::Interleaved,
};
