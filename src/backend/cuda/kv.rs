//! The GPU paged KV cache (bf16) and the kernels that write and copy it:
//! `reshape_and_cache` (new K/V rows into their slots) and `copy_blocks` (copy-on-write).
//! CPU twin: `backend::cpu::attention::CpuKvCache`.
//!
//! One allocation for all layers, K and V regions back to back:
//!
//! ```text
//!  cache [num_layers, 2 (K, V), num_blocks, block_size, n_kv_heads, head_dim]  bf16
//!  region r = 2 * layer + (0 for K, 1 for V), region_elems = num_blocks * block_elems
//!  slot s = block_id * block_size + offset -> row s of n_kv_heads * head_dim in a region
//! ```
//!
//! Memory: `2 * num_layers * num_blocks * block_size * n_kv_heads * head_dim * 2` bytes (half
//! the CPU cache, which is f32), sized from a fraction of the free device memory. Block 0 is
//! the null block (table padding, never written by a valid batch).

use cudarc::driver::{CudaSlice, CudaView, PushKernelArg};
use half::bf16;

use super::device::GpuDevice;
use super::ops::{cfg, i32_of, need};
use super::{CudaError, Result};

pub struct GpuKvCache {
    pub num_layers: usize,
    pub num_blocks: usize,
    pub block_size: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// `[num_layers, 2, num_blocks, block_size, n_kv_heads, head_dim]`.
    data: CudaSlice<bf16>,
}

impl GpuKvCache {
    /// Bytes one block costs across all layers (K and V).
    pub fn bytes_per_block(
        num_layers: usize,
        block_size: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> usize {
        2 * num_layers * block_size * n_kv_heads * head_dim * std::mem::size_of::<bf16>()
    }

    /// Blocks that fit in `fraction` of the device's free memory (after weights are loaded).
    pub fn blocks_for_fraction(dev: &GpuDevice, fraction: f64, per_block: usize) -> Result<usize> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(CudaError::Config(format!(
                "KV memory fraction must be in (0, 1), given {fraction}"
            )));
        }
        let (free, _total) = dev.mem_info()?;
        Ok((free as f64 * fraction) as usize / per_block)
    }

    /// Allocates a zeroed cache of `num_blocks` blocks.
    pub fn new(
        dev: &GpuDevice,
        num_layers: usize,
        num_blocks: usize,
        block_size: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> Result<Self> {
        if num_blocks < 2 {
            return Err(CudaError::Config(format!(
                "KV cache needs at least 2 blocks, given {num_blocks}"
            )));
        }
        let n = 2 * num_layers * num_blocks * block_size * n_kv_heads * head_dim;
        let data = dev.stream.alloc_zeros::<bf16>(n)?;
        Ok(GpuKvCache {
            num_layers,
            num_blocks,
            block_size,
            n_kv_heads,
            head_dim,
            data,
        })
    }

    pub fn block_elems(&self) -> usize {
        self.block_size * self.n_kv_heads * self.head_dim
    }

    fn region_elems(&self) -> usize {
        self.num_blocks * self.block_elems()
    }

    pub fn num_slots(&self) -> usize {
        self.num_blocks * self.block_size
    }

    /// Layer `l`'s `(K, V)` regions.
    pub fn layer(&self, l: usize) -> (CudaView<'_, bf16>, CudaView<'_, bf16>) {
        let r = self.region_elems();
        let base = 2 * l * r;
        (
            self.data.slice(base..base + r),
            self.data.slice(base + r..base + 2 * r),
        )
    }

    /// Whole cache (tests read it back to compare with the CPU cache).
    pub fn data(&self) -> &CudaSlice<bf16> {
        &self.data
    }

    /// Writes `k, v` (f32 rows `row_stride` apart, `n_kv_heads * head_dim` values each; views
    /// offset to the k / v columns of the fused qkv rows) of layer `l` into `slots [T]`.
    /// Slot values must be `< num_slots()` (validated with the batch) or negative (skipped).
    pub fn reshape_and_cache(
        &mut self,
        dev: &GpuDevice,
        l: usize,
        k: &CudaView<'_, f32>,
        v: &CudaView<'_, f32>,
        slots: &CudaView<'_, i32>,
        row_stride: usize,
    ) -> Result<()> {
        let t = slots.len();
        let kv_row = self.n_kv_heads * self.head_dim;
        if t == 0 {
            return Ok(());
        }
        if l >= self.num_layers {
            return Err(CudaError::Config(format!(
                "layer {l} >= {}",
                self.num_layers
            )));
        }
        need(
            "reshape_and_cache k",
            k.len(),
            (t - 1) * row_stride + kv_row,
        )?;
        need(
            "reshape_and_cache v",
            v.len(),
            (t - 1) * row_stride + kv_row,
        )?;
        let (rs, kr) = (i32_of(row_stride)?, i32_of(kv_row)?);
        let r = self.region_elems();
        let mut layer = self.data.slice_mut(2 * l * r..2 * (l + 1) * r);
        let (mut kc, mut vc) = layer.split_at_mut(r);
        let mut b = dev
            .stream
            .launch_builder(dev.func("reshape_and_cache_bf16"));
        b.arg(&mut kc)
            .arg(&mut vc)
            .arg(k)
            .arg(v)
            .arg(slots)
            .arg(&rs)
            .arg(&kr);
        // SAFETY: grid T; token t reads k/v[t * row_stride + 0..kv_row] (checked above) and
        // writes row slots[t] of this layer's K and V regions; slots are < num_slots (batch
        // validation) so the write stays in the region, negative slots are skipped.
        unsafe { b.launch(cfg((t, 1, 1), 128)?) }?;
        Ok(())
    }

    /// Copy-on-write: `(src, dst)` block pairs, applied in order to every layer's K and V.
    /// Independent pairs go in one launch; if a block is written by one pair and read or
    /// written by another, the pairs run one launch each, in order (the CPU twin's semantics).
    pub fn copy_blocks(&mut self, dev: &GpuDevice, pairs: &[(u32, u32)]) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let dsts: std::collections::HashSet<u32> = pairs.iter().map(|p| p.1).collect();
        let dependent = dsts.len() < pairs.len() || pairs.iter().any(|p| dsts.contains(&p.0));
        if dependent && pairs.len() > 1 {
            for p in pairs {
                self.copy_blocks(dev, std::slice::from_ref(p))?;
            }
            return Ok(());
        }
        let mut flat = Vec::with_capacity(2 * pairs.len());
        for &(s, d) in pairs {
            if s as usize >= self.num_blocks || d as usize >= self.num_blocks {
                return Err(CudaError::Config(format!(
                    "copy_blocks: pair ({s}, {d}) outside {} blocks",
                    self.num_blocks
                )));
            }
            flat.push(s as i32);
            flat.push(d as i32);
        }
        let pairs_dev = dev.upload(&flat)?;
        let region = self.region_elems() as i64;
        let be = i32_of(self.block_elems())?;
        let regions = 2 * self.num_layers;
        let mut b = dev.stream.launch_builder(dev.func("copy_blocks_bf16"));
        b.arg(&mut self.data).arg(&pairs_dev).arg(&region).arg(&be);
        // SAFETY: grid (pairs, 2 * num_layers); each block copies block_elems elements between
        // two blocks < num_blocks (checked) of one region; regions * region_elems is the
        // allocation's length.
        unsafe { b.launch(cfg((pairs.len(), regions, 1), 256)?) }?;
        Ok(())
    }
}
