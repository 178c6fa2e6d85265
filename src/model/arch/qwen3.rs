//! Qwen3 (dense): no Q/K/V biases; q and k RMS-normalized per head before RoPE; head_dim
//! from the config (not always hidden / heads); NeoX RoPE.

use super::ArchSpec;
use crate::backend::RopeStyle;

pub const SPEC: ArchSpec = ArchSpec {
    name: "qwen3",
    gguf: &["qwen3"],
    hf: &["qwen3"],
    qkv_bias: false,
    qk_norm: true,
    gguf_rope: RopeStyle::Neox,
};
