//! Weight upload: a checkpoint matrix (its row-major ggml bytes) to bf16 on the device,
//! dequantized there by a kernel. The CUDA backend (`backend.rs`) packs every matrix with it.
//!
//! Memory: `2 * elements` bytes per matrix (a Q4_1 model grows ~3.2x: SmolLM2-135M's 98 MB
//! GGUF becomes ~270 MB), plus the raw bytes of one tensor at a time during upload. A tied
//! LM head shares the embedding table's allocation.

use cudarc::driver::CudaSlice;
use half::bf16;

use super::device::GpuDevice;
use super::ops::{dequant_kernel, dequantize};
use super::Result;
use crate::backend::dtype::GgmlType;
use crate::backend::tensor::QMatrix;

/// Uploads `m` as bf16 `[rows, cols]`: BF16 bits go up as they are, other types go up raw
/// and are dequantized by a kernel (`ops::dequant_kernel`: every type of `GgmlType`).
pub fn upload_matrix(dev: &GpuDevice, m: &QMatrix) -> Result<CudaSlice<bf16>> {
    let n = m.rows * m.cols;
    if m.ty != GgmlType::BF16 {
        // A type without a kernel fails here, naming it, before anything is copied.
        dequant_kernel(m.ty)?;
    }
    // The GPU kernels read checkpoint (row-major) order; the CPU's Cg16 copy is unpacked
    // on the host for the upload (a transient buffer of the matrix's size).
    let bytes = m.row_major_bytes();
    let bytes = &bytes[..];
    if m.ty == GgmlType::BF16 {
        let host: Vec<bf16> = bytes
            .chunks_exact(2)
            .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])))
            .collect();
        return dev.upload(&host);
    }
    let raw = dev.upload(bytes)?;
    let mut out = dev.stream.alloc_zeros::<bf16>(n)?;
    dequantize(dev, &mut out, &raw, m.ty, n)?;
    Ok(out)
}
