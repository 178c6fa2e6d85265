//! Device-neutral parameters of the backend operations, shared by the model definition (which
//! reads them from the checkpoint) and every backend (which implements them).

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs `(2i, 2i+1)`: GGUF Llama (llama.cpp permutes Q/K at conversion).
    Interleaved,
    /// Pairs `(i, i + d/2)`: Hugging Face checkpoints, GGUF Qwen2/Qwen3.
    Neox,
}

/// Element type of the KV cache (`--kv-cache-dtype`); a backend that cannot store one
/// says so when its cache is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvDtype {
    #[default]
    F16,
    F32,
}

impl KvDtype {
    pub fn size(self) -> usize {
        match self {
            KvDtype::F16 => 2,
            KvDtype::F32 => 4,
        }
    }

    /// `f16` / `f32` (the flag's values).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "f16" | "float16" | "fp16" => Ok(KvDtype::F16),
            "f32" | "float32" | "fp32" => Ok(KvDtype::F32),
            other => Err(format!(
                "unknown KV cache dtype `{other}` (supported: f16, f32)"
            )),
        }
    }
}

impl std::fmt::Display for KvDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KvDtype::F16 => "f16",
            KvDtype::F32 => "f32",
        })
    }
}
