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

/// One sequence's slice of a step's batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqInput {
    /// First row of this sequence's tokens in the batch.
    pub query_start: usize,
    /// Tokens of this sequence computed in this step.
    pub query_len: usize,
    /// Tokens in the cache once this step's tokens are written (query `i` sits at position
    /// `context_len - query_len + i` and attends to the positions before it).
    pub context_len: usize,
    /// Block ids covering positions `0..context_len`.
    pub block_table: Vec<u32>,
}

/// A step's work in vLLM's flattened shape: the one description of a batch every backend
/// reads (built once per step from the scheduler's output).
///
/// ```text
///   seqs            A: 3 new tokens at 0      B: 1 token at 9 (decode)
///   token_ids       [a0 a1 a2 | b9]                          [T]
///   positions       [0 1 2 | 9]                              [T]
///   slot_mapping    [tA[0]*bs+0, .. | tB[9/bs]*bs + 9%bs]    [T]
///   logits_rows     rows whose logits are returned, in order [R]
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub token_ids: Vec<u32>,
    pub positions: Vec<usize>,
    pub slot_mapping: Vec<usize>,
    pub seqs: Vec<SeqInput>,
    pub logits_rows: Vec<usize>,
}

impl Batch {
    /// A single sequence computing `tokens` at positions `start..`, with block table
    /// `table` (tests and benches).
    pub fn single(tokens: &[u32], start: usize, table: &[u32], block_size: usize) -> Self {
        let positions: Vec<usize> = (start..start + tokens.len()).collect();
        let slot_mapping = positions
            .iter()
            .map(|&p| table[p / block_size] as usize * block_size + p % block_size)
            .collect();
        Batch {
            token_ids: tokens.to_vec(),
            positions,
            slot_mapping,
            seqs: vec![SeqInput {
                query_start: 0,
                query_len: tokens.len(),
                context_len: start + tokens.len(),
                block_table: table.to_vec(),
            }],
            logits_rows: vec![tokens.len() - 1],
        }
    }
}

/// RoPE as the model defines it: pairing, inverse frequencies (`head_dim / 2`, scaling
/// applied) and the factor cos and sin are scaled by (YaRN; 1 otherwise).
#[derive(Debug, Clone, PartialEq)]
pub struct RopeParams {
    pub style: RopeStyle,
    pub head_dim: usize,
    pub inv_freq: Vec<f64>,
    pub attention_factor: f32,
}

/// Shape of a paged KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvShape {
    pub num_layers: usize,
    pub num_blocks: usize,
    pub block_size: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

/// What a model needs from a backend beyond the base op set (checked at load).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    pub head_dim: usize,
    pub qk_norm: bool,
    pub sliding_window: bool,
    pub kv_dtype: KvDtype,
}
