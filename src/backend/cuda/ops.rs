//! Typed launch wrappers, one per kernel entry point. Each checks the buffer sizes its
//! kernel will touch (so a launch can only read/write inside its buffers given in-range
//! index values), picks the launch config documented in the `.cu` file, and enqueues on the
//! device stream. Index *values* (token ids, slots, block ids) are checked by the caller
//! (the runner validates a batch before upload); kernels guard what is cheap to guard.
//!
//! CPU twins: `backend::cpu::{ops, attention}` and `backend::blocks::dequantize_row`.

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};
use half::bf16;

use super::device::GpuDevice;
use super::{CudaError, Result};
use crate::backend::dtype::GgmlType;

/// Launch config: `grid` blocks of `threads` threads, no dynamic shared memory.
pub(crate) fn cfg(grid: (usize, usize, usize), threads: u32) -> Result<LaunchConfig> {
    let g = |v: usize, lim: usize| {
        if v == 0 || v > lim {
            Err(CudaError::Config(format!(
                "grid dimension {v} outside 1..={lim}"
            )))
        } else {
            Ok(v as u32)
        }
    };
    Ok(LaunchConfig {
        grid_dim: (
            g(grid.0, i32::MAX as usize)?,
            g(grid.1, 65_535)?,
            g(grid.2, 65_535)?,
        ),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    })
}

pub(crate) fn need(what: &str, have: usize, want: usize) -> Result<()> {
    if have < want {
        return Err(CudaError::Config(format!(
            "{what}: buffer holds {have} elements, the launch needs {want}"
        )));
    }
    Ok(())
}

pub(crate) fn i32_of(v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| CudaError::Config(format!("value {v} exceeds i32")))
}

/// `out [T, d] (f32) = table [vocab, d] (bf16) [ids]`.
pub fn embedding(
    dev: &GpuDevice,
    out: &mut CudaSlice<f32>,
    table: &CudaSlice<bf16>,
    ids: &CudaView<'_, i32>,
    vocab: usize,
    d: usize,
) -> Result<()> {
    let t = ids.len();
    if t == 0 {
        return Ok(());
    }
    need("embedding out", out.len(), t * d)?;
    need("embedding table", table.len(), vocab * d)?;
    let (v, dd) = (i32_of(vocab)?, i32_of(d)?);
    let mut b = dev.stream.launch_builder(dev.func("embedding_bf16_f32"));
    b.arg(out).arg(table).arg(ids).arg(&v).arg(&dd);
    // SAFETY: grid T rows; thread reads table row ids[t] only when 0 <= id < vocab (kernel
    // guard) and writes out[t, 0..d]; sizes checked above.
    unsafe { b.launch(cfg((t, 1, 1), 256)?) }?;
    Ok(())
}

/// The output of an RMSNorm: bf16 (GEMM input) or f32 (tests, f32 consumers).
pub enum NormOut<'a, 'b> {
    Bf16(&'a mut CudaViewMut<'b, bf16>),
    F32(&'a mut CudaViewMut<'b, f32>),
}

/// `x [T, d] += residual` (if given), then `out = x / rms(x) * w`.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_residual(
    dev: &GpuDevice,
    out: NormOut<'_, '_>,
    x: &mut CudaSlice<f32>,
    residual: Option<&CudaSlice<f32>>,
    w: &CudaSlice<f32>,
    t: usize,
    d: usize,
    eps: f32,
) -> Result<()> {
    if t == 0 {
        return Ok(());
    }
    need("rmsnorm x", x.len(), t * d)?;
    need("rmsnorm w", w.len(), d)?;
    let dd = i32_of(d)?;
    let null: u64 = 0;
    let name = match &out {
        NormOut::Bf16(o) => {
            need("rmsnorm out", o.len(), t * d)?;
            "rmsnorm_residual_bf16"
        }
        NormOut::F32(o) => {
            need("rmsnorm out", o.len(), t * d)?;
            "rmsnorm_residual_f32"
        }
    };
    if let Some(r) = residual {
        need("rmsnorm residual", r.len(), t * d)?;
    }
    let mut b = dev.stream.launch_builder(dev.func(name));
    match out {
        NormOut::Bf16(o) => b.arg(o),
        NormOut::F32(o) => b.arg(o),
    };
    b.arg(x);
    match residual {
        Some(r) => b.arg(r),
        None => b.arg(&null),
    };
    b.arg(w).arg(&dd).arg(&eps);
    // SAFETY: grid T rows of d elements; x, out, residual (or NULL, checked in the kernel)
    // hold T * d elements and w holds d, checked above.
    unsafe { b.launch(cfg((t, 1, 1), 256)?) }?;
    Ok(())
}

/// RoPE in place on `n_heads` heads of each of the `positions.len()` rows of `x`, rows
/// `row_stride` apart (x is offset to the q or k columns of the fused qkv rows).
#[allow(clippy::too_many_arguments)]
pub fn rope(
    dev: &GpuDevice,
    x: &mut CudaViewMut<'_, f32>,
    positions: &CudaView<'_, i32>,
    inv_freq: &CudaSlice<f64>,
    row_stride: usize,
    n_heads: usize,
    head_dim: usize,
    neox: bool,
) -> Result<()> {
    let t = positions.len();
    let half = inv_freq.len();
    if t == 0 {
        return Ok(());
    }
    if 2 * half > head_dim {
        return Err(CudaError::Config(format!(
            "rope: {half} frequencies for head_dim {head_dim}"
        )));
    }
    need("rope x", x.len(), (t - 1) * row_stride + n_heads * head_dim)?;
    let (rs, nh, hd, hf, st) = (
        i32_of(row_stride)?,
        i32_of(n_heads)?,
        i32_of(head_dim)?,
        i32_of(half)?,
        i32::from(neox),
    );
    let mut b = dev.stream.launch_builder(dev.func("rope_f32"));
    b.arg(x)
        .arg(positions)
        .arg(inv_freq)
        .arg(&rs)
        .arg(&nh)
        .arg(&hd)
        .arg(&hf)
        .arg(&st);
    // SAFETY: token t touches x[t * row_stride + h * head_dim + {a, b}] with a, b < 2 * half
    // <= head_dim and h < n_heads, inside the length checked above.
    unsafe { b.launch(cfg((t, 1, 1), 128)?) }?;
    Ok(())
}

/// `out [T, f] = silu(gu[:, :f]) * gu[:, f:]`, `gu [T, 2f]` f32; out bf16 or f32.
pub fn silu_mul(
    dev: &GpuDevice,
    out: NormOut<'_, '_>,
    gu: &CudaSlice<f32>,
    t: usize,
    f: usize,
) -> Result<()> {
    if t == 0 {
        return Ok(());
    }
    need("silu_mul gu", gu.len(), t * 2 * f)?;
    let ff = i32_of(f)?;
    let mut b;
    match out {
        NormOut::Bf16(o) => {
            need("silu_mul out", o.len(), t * f)?;
            b = dev.stream.launch_builder(dev.func("silu_mul_bf16"));
            b.arg(o);
        }
        NormOut::F32(o) => {
            need("silu_mul out", o.len(), t * f)?;
            b = dev.stream.launch_builder(dev.func("silu_mul_f32"));
            b.arg(o);
        }
    }
    b.arg(gu).arg(&ff);
    // SAFETY: grid T; row t reads gu[t, 0..2f], writes out[t, 0..f]; sizes checked above.
    unsafe { b.launch(cfg((t, 1, 1), 256)?) }?;
    Ok(())
}

/// `x [T, n] += bias [n]`.
pub fn add_bias(
    dev: &GpuDevice,
    x: &mut CudaSlice<f32>,
    bias: &CudaSlice<f32>,
    t: usize,
) -> Result<()> {
    let n = bias.len();
    if t == 0 || n == 0 {
        return Ok(());
    }
    need("add_bias x", x.len(), t * n)?;
    let nn = i32_of(n)?;
    let mut b = dev.stream.launch_builder(dev.func("add_bias_f32"));
    b.arg(x).arg(bias).arg(&nn);
    // SAFETY: grid T rows of n elements, inside x (checked) and bias (n).
    unsafe { b.launch(cfg((t, 1, 1), 256)?) }?;
    Ok(())
}

/// `out [R, d] = src [rows, :]` (bf16). Row values must be < src rows (caller checks).
pub fn gather_rows(
    dev: &GpuDevice,
    out: &mut CudaSlice<bf16>,
    src: &CudaSlice<bf16>,
    rows: &CudaView<'_, i32>,
    d: usize,
) -> Result<()> {
    let r = rows.len();
    if r == 0 {
        return Ok(());
    }
    need("gather_rows out", out.len(), r * d)?;
    let dd = i32_of(d)?;
    let mut b = dev.stream.launch_builder(dev.func("gather_rows_bf16"));
    b.arg(out).arg(src).arg(rows).arg(&dd);
    // SAFETY: grid R; reads src[rows[r], 0..d] (rows validated by the caller against src's
    // row count), writes out[r, 0..d] (checked).
    unsafe { b.launch(cfg((r, 1, 1), 256)?) }?;
    Ok(())
}

/// Greedy argmax per row of `logits [R, vocab]` -> `out [R]` (lowest index on ties).
pub fn argmax(
    dev: &GpuDevice,
    out: &mut CudaSlice<i32>,
    logits: &CudaSlice<f32>,
    vocab: usize,
) -> Result<()> {
    let r = out.len();
    if r == 0 {
        return Ok(());
    }
    need("argmax logits", logits.len(), r * vocab)?;
    let v = i32_of(vocab)?;
    let mut b = dev.stream.launch_builder(dev.func("argmax_f32"));
    b.arg(out).arg(logits).arg(&v);
    // SAFETY: grid R with 256 threads (the kernel's shared arrays are sized 256); row r reads
    // logits[r, 0..vocab] (checked) and writes out[r].
    unsafe { b.launch(cfg((r, 1, 1), 256)?) }?;
    Ok(())
}

/// How a dequantization kernel maps threads to elements (see the `.cu` headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DequantGrid {
    /// One thread per output element (`n` threads).
    PerElement,
    /// One thread per 32 consecutive output elements (`n / 32` threads): a whole Q5_0/Q5_1
    /// block, or one of the eight 32-element groups of a K-quant super-block.
    Per32,
}

/// The dequantization kernel of `ty` (an entry point of `kernels::SOURCES`) and its thread
/// mapping. BF16 has none (its bits are uploaded as they are); a type without a kernel is an
/// error naming it, raised by [`dequantize`] before any launch, i.e. at weight upload.
pub fn dequant_kernel(ty: GgmlType) -> Result<(&'static str, DequantGrid)> {
    use DequantGrid::{Per32, PerElement};
    Ok(match ty {
        GgmlType::F32 => ("dequant_f32_bf16", PerElement),
        GgmlType::F16 => ("dequant_f16_bf16", PerElement),
        GgmlType::Q8_0 => ("dequant_q8_0_bf16", PerElement),
        GgmlType::Q4_0 => ("dequant_q4_0_bf16", PerElement),
        GgmlType::Q4_1 => ("dequant_q4_1_bf16", PerElement),
        GgmlType::Q5_0 => ("dequant_q5_0_bf16", Per32),
        GgmlType::Q5_1 => ("dequant_q5_1_bf16", Per32),
        GgmlType::Q2K => ("dequant_q2_k_bf16", Per32),
        GgmlType::Q3K => ("dequant_q3_k_bf16", Per32),
        GgmlType::Q4K => ("dequant_q4_k_bf16", Per32),
        GgmlType::Q5K => ("dequant_q5_k_bf16", Per32),
        GgmlType::Q6K => ("dequant_q6_k_bf16", Per32),
        GgmlType::Q8K => ("dequant_q8_k_bf16", Per32),
        GgmlType::BF16 => {
            return Err(CudaError::Config(
                "dequantize: tensor type BF16 has no dequantization kernel (its bits are \
                 uploaded as they are)"
                    .into(),
            ))
        }
    })
}

/// Dequantizes a whole ggml tensor (`raw` bytes, `n` elements) into `out` bf16.
/// BF16 input is not a kernel: upload its bits directly.
pub fn dequantize(
    dev: &GpuDevice,
    out: &mut CudaSlice<bf16>,
    raw: &CudaSlice<u8>,
    ty: GgmlType,
    n: usize,
) -> Result<()> {
    let (name, grid) = dequant_kernel(ty)?;
    if n == 0 {
        return Ok(());
    }
    if !n.is_multiple_of(ty.block_elems()) {
        return Err(CudaError::Config(format!(
            "dequantize: {n} elements is not whole {ty} blocks of {}",
            ty.block_elems()
        )));
    }
    need("dequantize out", out.len(), n)?;
    need("dequantize raw", raw.len(), ty.row_bytes(n))?;
    let threads = match grid {
        DequantGrid::PerElement => n,
        DequantGrid::Per32 => n / 32,
    };
    let count = i32_of(threads)?;
    i32_of(n)?;
    let mut b = dev.stream.launch_builder(dev.func(name));
    b.arg(out).arg(raw).arg(&count);
    // SAFETY: `threads` threads (those past `count` return at once). PerElement: thread i < n
    // reads block i / block_elems of raw and writes out[i]. Per32: thread t < n / 32 reads
    // block 32 t / block_elems (whole blocks: n is a multiple of block_elems, 32 divides it)
    // and writes out[32 t .. 32 t + 32). Both stay inside the n elements of out and the
    // ty.row_bytes(n) bytes of raw checked above; n < 2^31 so the kernels' int math holds.
    unsafe { b.launch(cfg((threads.div_ceil(256), 1, 1), 256)?) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::kernels::SOURCES;

    const ALL: [GgmlType; 14] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::Q8K,
    ];

    /// Every type but BF16 has a kernel that the device loads (listed in SOURCES, whose
    /// entries the compile check finds in the PTX); a Per32 kernel's 32-element groups tile
    /// its blocks exactly; BF16's error names the type.
    #[test]
    fn every_type_has_a_loaded_kernel_or_a_named_error() {
        let entries: Vec<&str> = SOURCES
            .iter()
            .flat_map(|(_, _, e)| e.iter().copied())
            .collect();
        for ty in ALL {
            match dequant_kernel(ty) {
                Ok((name, grid)) => {
                    assert!(entries.contains(&name), "{ty}: `{name}` not in SOURCES");
                    if grid == DequantGrid::Per32 {
                        assert!(ty.block_elems() % 32 == 0, "{ty}");
                    }
                }
                Err(e) => {
                    assert_eq!(ty, GgmlType::BF16);
                    assert!(e.to_string().contains("BF16"), "{e}");
                }
            }
        }
    }
}
