//! Weight packing for the CUDA backend (the seam's `Pack`): every matrix dequantized to
//! bf16 on the device at load (`weights::upload_matrix`), the embedding table shared with a
//! tied LM head, RoPE tables uploaded, and the load-time refusals of what the kernels do not
//! implement (q/k norm, sliding windows, YaRN's attention factor, an f32 cache, head_dim
//! that is not a multiple of 8 up to 256).

use std::sync::Arc;

use cudarc::driver::CudaSlice;

use super::backend::{CudaBackend, GpuLinear, GpuRope, GpuTable};
use super::weights::upload_matrix;
use crate::backend::seam::Pack;
use crate::backend::tensor::QMatrix;
use crate::backend::types::{KvDtype, Needs, RopeParams, RopeStyle};

impl Pack for CudaBackend {
    fn matrix(&self, parts: Vec<QMatrix>, bias: Option<Vec<f32>>) -> Result<GpuLinear, String> {
        // Parts of different storage types are joined on the host as f32 (the fused Q/K/V of
        // a mixed-type file: a few MB, transient), then dequantized to bf16 like any matrix.
        let m = match &parts[..] {
            [one] => one.clone(),
            _ => {
                let rows: usize = parts.iter().map(|p| p.rows).sum();
                let vals: Vec<f32> = parts.iter().flat_map(|p| p.to_f32()).collect();
                QMatrix::from_f32(rows, parts[0].cols, &vals)
            }
        };
        let w = upload_matrix(&self.dev, &m).map_err(|e| e.to_string())?;
        for p in &parts {
            p.data.release_pages();
        }
        let bias = bias
            .map(|b| self.dev.upload(&b))
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(GpuLinear {
            w: Arc::new(w),
            bias,
            rows: m.rows,
            cols: m.cols,
        })
    }

    fn vector(&self, v: &[f32]) -> Result<CudaSlice<f32>, String> {
        self.dev.upload(v).map_err(|e| e.to_string())
    }

    fn table(&self, t: QMatrix) -> Result<(GpuTable, Option<GpuLinear>), String> {
        let w = Arc::new(upload_matrix(&self.dev, &t).map_err(|e| e.to_string())?);
        t.data.release_pages();
        let head = GpuLinear {
            w: w.clone(),
            bias: None,
            rows: t.rows,
            cols: t.cols,
        };
        Ok((
            GpuTable {
                w,
                rows: t.rows,
                cols: t.cols,
            },
            Some(head),
        ))
    }

    fn rope(&self, r: &RopeParams) -> Result<GpuRope, String> {
        if r.attention_factor != 1.0 {
            return Err(format!(
                "has no RoPE attention factor (YaRN's {}) yet",
                r.attention_factor
            ));
        }
        Ok(GpuRope {
            inv_freq: self.dev.upload(&r.inv_freq).map_err(|e| e.to_string())?,
            neox: r.style == RopeStyle::Neox,
        })
    }

    fn check(&self, n: &Needs) -> Result<(), String> {
        if n.qk_norm {
            return Err("has no per-head q/k norm (Qwen3) kernel yet".into());
        }
        if n.sliding_window {
            return Err("has no sliding-window attention yet".into());
        }
        if n.kv_dtype == KvDtype::F32 {
            return Err("keeps its KV cache in bf16 (--kv-cache-dtype f32 is CPU only)".into());
        }
        if n.head_dim > super::attention::MAX_HEAD_DIM || !n.head_dim.is_multiple_of(8) {
            return Err(format!(
                "attention supports head_dim a multiple of 8 up to {}, the model has {}",
                super::attention::MAX_HEAD_DIM,
                n.head_dim
            ));
        }
        Ok(())
    }
}
