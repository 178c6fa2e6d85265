//! Model weights on the GPU: every matrix as bf16 (dequantized on the device at load from its
//! ggml storage), norms and biases as f32, RoPE inverse frequencies as f64.
//!
//! Memory: `2 * elements` bytes per matrix (a Q4_1 model grows ~3.2x: SmolLM2-135M's 98 MB
//! GGUF becomes ~270 MB), plus the raw bytes of one tensor at a time during upload. Tied
//! embeddings are uploaded once (`lm_head` is `None` and the embedding table is used).

use std::sync::Arc;

use cudarc::driver::CudaSlice;
use half::bf16;

use super::device::GpuDevice;
use super::ops::{dequant_kernel, dequantize};
use super::Result;
use crate::backend::dtype::GgmlType;
use crate::backend::tensor::QMatrix;
use crate::model::weights::{LayerWeights, LlamaWeights};

pub struct GpuLinear {
    /// `[out, in]` bf16.
    pub w: CudaSlice<bf16>,
    /// `[out]` f32.
    pub bias: Option<CudaSlice<f32>>,
    pub rows: usize,
    pub cols: usize,
}

pub struct GpuLayer {
    pub attn_norm: CudaSlice<f32>, // [h]
    pub qkv: GpuLinear,            // [qd + 2 kvd, h]
    pub wo: GpuLinear,             // [h, qd]
    pub ffn_norm: CudaSlice<f32>,  // [h]
    pub gate_up: GpuLinear,        // [2f, h]
    pub down: GpuLinear,           // [h, f]
}

pub struct GpuWeights {
    pub embed: CudaSlice<bf16>, // [vocab, h]
    pub layers: Vec<GpuLayer>,
    pub final_norm: CudaSlice<f32>, // [h]
    /// `[vocab, h]`; `None` when tied to `embed`.
    pub lm_head: Option<CudaSlice<bf16>>,
    pub inv_freq: CudaSlice<f64>, // [rot_dim / 2]
    /// Bytes of bf16 matrices read per decoded token (the bandwidth floor's numerator).
    pub matrix_bytes: usize,
}

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

fn linear(dev: &GpuDevice, w: &QMatrix, bias: Option<&Vec<f32>>) -> Result<GpuLinear> {
    Ok(GpuLinear {
        w: upload_matrix(dev, w)?,
        bias: bias.map(|b| dev.upload(b)).transpose()?,
        rows: w.rows,
        cols: w.cols,
    })
}

fn layer(dev: &GpuDevice, l: &LayerWeights) -> Result<GpuLayer> {
    Ok(GpuLayer {
        attn_norm: dev.upload(&l.attn_norm)?,
        qkv: linear(dev, &l.qkv.single(), l.qkv.bias.as_ref())?,
        wo: linear(dev, &l.wo.single(), l.wo.bias.as_ref())?,
        ffn_norm: dev.upload(&l.ffn_norm)?,
        gate_up: linear(dev, &l.gate_up.single(), l.gate_up.bias.as_ref())?,
        down: linear(dev, &l.down.single(), l.down.bias.as_ref())?,
    })
}

/// Whether two matrices share storage (tied embeddings).
fn same_storage(a: &QMatrix, b: &QMatrix) -> bool {
    let (x, y) = (a.data.bytes(), b.data.bytes());
    a.ty == b.ty && x.len() == y.len() && std::ptr::eq(x.as_ptr(), y.as_ptr())
}

impl GpuWeights {
    pub fn upload(dev: &GpuDevice, w: &LlamaWeights, inv_freq: &[f64]) -> Result<Arc<Self>> {
        let embed = upload_matrix(dev, &w.embed)?;
        let layers = w
            .layers
            .iter()
            .map(|l| layer(dev, l))
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if same_storage(&w.embed, &w.lm_head) {
            None
        } else {
            Some(upload_matrix(dev, &w.lm_head)?)
        };
        let matrix_bytes = 2
            * (w.lm_head.rows * w.lm_head.cols
                + w.layers
                    .iter()
                    .map(|l| {
                        [&l.qkv, &l.wo, &l.gate_up, &l.down]
                            .iter()
                            .map(|m| m.rows() * m.cols())
                            .sum::<usize>()
                    })
                    .sum::<usize>());
        let out = GpuWeights {
            embed,
            layers,
            final_norm: dev.upload(&w.final_norm)?,
            lm_head,
            inv_freq: dev.upload(inv_freq)?,
            matrix_bytes,
        };
        dev.synchronize()?;
        Ok(Arc::new(out))
    }

    pub fn lm_head(&self) -> &CudaSlice<bf16> {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }
}
