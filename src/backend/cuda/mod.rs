//! CUDA backend (feature `cuda`): device detection, NVRTC-compiled kernels, cuBLAS GEMMs,
//! the GPU KV cache and weight upload. Every kernel mirrors a CPU twin in `backend::cpu`.
//!
//! Invariants:
//! - Nothing here panics when CUDA is absent: cudarc loads libcuda/libnvrtc/libcublas at run
//!   time and panics on first use of a missing library, so [`cuda_available`] probes first
//!   (`is_culib_present`, then `device_count` under `catch_unwind`) and caches the answer.
//! - One context and one stream per [`device::GpuDevice`]; all work is ordered on that stream.
//! - Activations: residual stream f32, GEMM inputs bf16, GEMM outputs f32, KV cache bf16.

pub mod attention;
pub mod backend;
pub mod device;
pub mod gemm;
pub mod graph;
pub mod kernels;
pub mod kv;
pub mod ops;
pub mod pack;
pub mod step;
pub mod weights;

use std::sync::OnceLock;

/// Why the CUDA backend cannot be used, or how many devices it sees.
///
/// `Ok(n)` with `n >= 1` devices, or `Err(reason)` (no driver library, no device, or a driver
/// error). Probed once per process and cached; never panics.
pub fn cuda_available() -> Result<usize, String> {
    static PROBE: OnceLock<Result<usize, String>> = OnceLock::new();
    PROBE.get_or_init(probe).clone()
}

fn probe() -> Result<usize, String> {
    let r = std::panic::catch_unwind(|| {
        // SAFETY: tries to dlopen libcuda by its candidate names; calls no symbol.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err("libcuda (the NVIDIA driver library) was not found".to_string());
        }
        match cudarc::driver::CudaContext::device_count() {
            Ok(0) => Err("the CUDA driver reports 0 devices".to_string()),
            Ok(n) => Ok(n as usize),
            Err(e) => Err(format!("CUDA driver error while counting devices: {e}")),
        }
    });
    r.unwrap_or_else(|_| Err("the CUDA driver panicked while probing devices".to_string()))
}

/// Errors of the CUDA backend; messages name the op and the value at fault.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("CUDA unavailable: {0}")]
    Unavailable(String),
    #[error("CUDA driver: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    #[error("cuBLAS: {0}")]
    Blas(#[from] cudarc::cublas::result::CublasError),
    #[error("NVRTC: {0}")]
    Compile(String),
    #[error("{0}")]
    Config(String),
}

pub type Result<T, E = CudaError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    #[test]
    fn probe_never_panics_and_is_cached() {
        let a = super::cuda_available();
        let b = super::cuda_available();
        assert_eq!(a, b);
        if let Err(why) = a {
            assert!(!why.is_empty());
        }
    }
}
