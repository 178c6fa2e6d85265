//! cuBLAS GEMM for linear layers: `y [M, N] (f32) = x [M, K] (bf16) W^T`, `W [N, K]` (bf16),
//! f32 accumulation (cublasGemmEx, CUBLAS_COMPUTE_32F). CPU twin: `backend::cpu::matmul::linear`.
//!
//! Row-major on top of column-major cuBLAS: a row-major `[R, C]` matrix is a column-major
//! `[C, R]` one, so we compute `y^T = W x^T` with
//! `transa = T, transb = N, m = N, n = M, k = K, A = W (lda = K), B = x (ldb = K), C = y (ldc = N)`.
//! The output is f32 (not bf16 as cudarc's `Gemm<bf16>` would write) so the logits and the
//! residual stream keep f32 precision.

use cudarc::cublas::{result::gemm_ex, sys};
use cudarc::driver::{DevicePtr, DevicePtrMut};
use half::bf16;

use super::device::GpuDevice;
use super::{CudaError, Result};

/// `y = x W^T` (`beta = 0`: `y` is overwritten). Shapes: `x [m, k]`, `w [n, k]`, `y [m, n]`.
pub fn linear<X, W, Y>(
    dev: &GpuDevice,
    x: &X,
    w: &W,
    y: &mut Y,
    m: usize,
    n: usize,
    k: usize,
) -> Result<()>
where
    X: DevicePtr<bf16>,
    W: DevicePtr<bf16>,
    Y: DevicePtrMut<f32>,
{
    if x.len() < m * k || w.len() < n * k || y.len() < m * n {
        return Err(CudaError::Config(format!(
            "linear: buffers too small for [{m}, {k}] x [{n}, {k}]^T: x {}, w {}, y {}",
            x.len(),
            w.len(),
            y.len()
        )));
    }
    if m == 0 {
        return Ok(());
    }
    let (alpha, beta) = (1.0f32, 0.0f32);
    let dim = |v: usize| {
        i32::try_from(v)
            .map_err(|_| CudaError::Config(format!("linear: dimension {v} exceeds i32")))
    };
    let (mi, ni, ki) = (dim(m)?, dim(n)?, dim(k)?);
    let (xp, _rx) = x.device_ptr(&dev.stream);
    let (wp, _rw) = w.device_ptr(&dev.stream);
    let (yp, _ry) = y.device_ptr_mut(&dev.stream);
    // SAFETY: the handle is bound to `dev.stream`, on which the three buffers are ordered
    // (the SyncOnDrop guards record that); sizes were checked above: W holds n*k, x m*k and
    // y m*n elements, matching lda = ldb = k, ldc = n. alpha/beta are f32 as required by
    // CUBLAS_COMPUTE_32F and live until the call returns (the call only enqueues work but
    // reads alpha/beta from host memory synchronously in host pointer mode).
    unsafe {
        gemm_ex(
            *dev.blas.handle(),
            sys::cublasOperation_t::CUBLAS_OP_T,
            sys::cublasOperation_t::CUBLAS_OP_N,
            ni,
            mi,
            ki,
            (&alpha) as *const f32 as *const _,
            wp as *const _,
            sys::cudaDataType_t::CUDA_R_16BF,
            ki,
            xp as *const _,
            sys::cudaDataType_t::CUDA_R_16BF,
            ki,
            (&beta) as *const f32 as *const _,
            yp as *mut _,
            sys::cudaDataType_t::CUDA_R_32F,
            ni,
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )?;
    }
    Ok(())
}
