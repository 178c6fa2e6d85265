//! Compute backends and the storage types they share. `cpu` is the reference backend (and
//! what tests run on); every op there is the twin of a CUDA kernel.

pub mod blocks;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod dtype;
pub mod packed;
pub mod seam;
pub mod tensor;
pub mod types;

pub use types::{KvDtype, RopeStyle};
