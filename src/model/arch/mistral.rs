//! Mistral: Llama blocks with an optional sliding attention window (read from the config).
//! llama.cpp converts Mistral checkpoints to GGUF as `llama`; Hugging Face calls it `mistral`.

use super::ArchSpec;
use crate::backend::RopeStyle;

pub const SPEC: ArchSpec = ArchSpec {
    name: "mistral",
    gguf: &["mistral"],
    hf: &["mistral"],
    qkv_bias: false,
    qk_norm: false,
    gguf_rope: RopeStyle::Interleaved,
};
