//! Model runtime: checkpoint loading (GGUF, Hugging Face safetensors), the architecture
//! registry (`arch/`), tokenizer and chat template, and the one forward pass (`forward.rs`)
//! every backend runs over a paged batch.
//!
//! The model holds weights only; the KV cache and the batch description (token ids,
//! positions, slot mapping, block tables) are arguments of `forward`, so the scheduler owns
//! all per-sequence state.

pub mod arch;
pub mod config;
pub mod forward;
pub mod gguf;
pub mod loader;
pub mod rope;
pub mod template;
pub mod tokenizer;
pub mod weights;

pub use crate::backend::types::{Batch, SeqInput};
pub use config::ModelConfig;
pub use forward::{Layer, Model, Weights};
pub use loader::{load_model, LoadedModel};

/// A model packed for the CPU backend.
pub type CpuModel = Model<crate::backend::cpu::backend::CpuBackend>;

/// Errors of loading and running a model. Messages name the file, tensor or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    #[error("invalid model file: {0}")]
    Format(String),
    #[error("model config: {0}")]
    Config(String),
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
}
