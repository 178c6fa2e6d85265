//! The paged KV cache in host memory and `reshape_and_cache` (new K/V rows into their
//! slots); attention over it is `attention.rs`.
//!
//! Element type (`--kv-cache-dtype`): **f16** by default (IEEE half, rounded to nearest-even
//! once, when written; llama.cpp's default cache type, and the CUDA cache is bf16): half the
//! memory of f32, so twice the sequences fit a budget, and half the bytes attention streams
//! per token, which is what bounds it at batch (at 32 sequences of ~100 tokens an f32 cache
//! is 155 MB read per decode step). **f32** keeps K/V exactly as computed (the golden
//! logits tests run with it). Arithmetic is f32 either way.
//!
//! Layout of one layer's cache, block-major and head-major inside a block:
//!
//! ```text
//!  K: [num_blocks, n_kv_heads, head_dim, block_size]   (transposed: a row of block_size
//!                                                        positions per dimension, so q.K
//!                                                        for 16 positions is 16-lane FMAs)
//!  V: [num_blocks, n_kv_heads, block_size, head_dim]
//!  token at position p of a sequence lives in block table[p / block_size], offset
//!  p % block_size
//! ```
//!
//! Memory: `2 * num_layers * num_blocks * block_size * n_kv_heads * head_dim * size(dtype)`
//! bytes, fixed at construction from the KV memory budget; block 0 is the null block (never
//! written by a valid batch, used as table padding).

use half::{
    f16,
    slice::{HalfBitsSliceExt, HalfFloatSliceExt},
};

pub use crate::backend::types::KvDtype;

/// A cache element: stored from f32, read back as f32.
pub trait KvElem: Copy + Send + Sync + 'static {
    const ZERO: Self;
    fn to_f32(self) -> f32;
    /// `dst[i] = src[i]` rounded to this type.
    fn store(dst: &mut [Self], src: &[f32]);
    /// `dst[i] = src[i]` as f32 (exact).
    fn load(dst: &mut [f32], src: &[Self]);
}

impl KvElem for f32 {
    const ZERO: Self = 0.0;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    fn store(dst: &mut [Self], src: &[f32]) {
        dst.copy_from_slice(src);
    }
    fn load(dst: &mut [f32], src: &[Self]) {
        dst.copy_from_slice(src);
    }
}

impl KvElem for f16 {
    const ZERO: Self = f16::ZERO;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn store(dst: &mut [Self], src: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("f16c") {
            // SAFETY: F16C (and so AVX) present (checked).
            unsafe { store_f16c(dst, src) };
            return;
        }
        dst.convert_from_f32_slice(src);
    }
    #[inline(always)]
    fn load(dst: &mut [f32], src: &[Self]) {
        #[cfg(target_arch = "x86_64")]
        if super::simd::has_f16c() {
            // SAFETY: F16C (and so AVX) present (checked).
            unsafe { load_f16c(dst, src) };
            return;
        }
        src.convert_to_f32_slice(dst);
    }
}

/// `dst[i] = src[i]` as f32 (exact), 8 at a time with F16C. Inlined, not a
/// `#[target_feature]` function: inside a caller compiled with F16C (the attention kernels'
/// `multiversion!` copies) the conversions become single instructions in the caller's loop,
/// where `half`'s slice conversion detects the CPU and makes a call per 8 values, which on an
/// AVX2 CPU was a third of the attention time.
///
/// # Safety
/// AVX and F16C are available.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn load_f16c(dst: &mut [f32], src: &[f16]) {
    use std::arch::x86_64::*;
    assert_eq!(dst.len(), src.len(), "load_f16c: lengths");
    let n8 = src.len() / 8 * 8;
    for i in (0..n8).step_by(8) {
        // SAFETY: i + 8 <= n8 <= both lengths; F16C present (caller).
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
    }
    for (d, s) in dst[n8..].iter_mut().zip(&src[n8..]) {
        *d = s.to_f32();
    }
}

/// `dst[i] = src[i]` rounded to nearest-even, 8 at a time with F16C (the values `half`
/// gives: it uses the same instruction, but through a call and copies per 8 values, which
/// made K/V writes ~2 ns per value).
///
/// # Safety
/// AVX and F16C are available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn store_f16c(dst: &mut [f16], src: &[f32]) {
    use std::arch::x86_64::*;
    assert_eq!(dst.len(), src.len(), "store_f16c: lengths");
    let n8 = src.len() / 8 * 8;
    for i in (0..n8).step_by(8) {
        // SAFETY: i + 8 <= n8 <= both lengths.
        unsafe {
            let v = _mm256_loadu_ps(src.as_ptr().add(i));
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm_storeu_si128(dst.as_mut_ptr().add(i) as *mut __m128i, h);
        }
    }
    dst[n8..].convert_from_f32_slice(&src[n8..]);
}

/// Per layer `(K, V)` in the header's layouts. f16 values are kept as their bits so the
/// buffers come from zeroed pages (`vec![0u16; n]`): the cache costs no RSS until written.
pub(super) enum Layers {
    F16(Vec<(Vec<u16>, Vec<u16>)>),
    F32(Vec<(Vec<f32>, Vec<f32>)>),
}

impl Layers {
    /// Layer `l` as `(K, V)` slices of the element type, for `f`.
    pub(super) fn with<R>(
        &self,
        l: usize,
        f16s: impl FnOnce(&[f16], &[f16]) -> R,
        f32s: impl FnOnce(&[f32], &[f32]) -> R,
    ) -> R {
        match self {
            Layers::F16(ls) => f16s(
                ls[l].0.reinterpret_cast::<f16>(),
                ls[l].1.reinterpret_cast::<f16>(),
            ),
            Layers::F32(ls) => f32s(&ls[l].0, &ls[l].1),
        }
    }
}

/// Host KV cache for all layers.
pub struct CpuKvCache {
    pub block_size: usize,
    pub num_blocks: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub dtype: KvDtype,
    pub(super) layers: Layers,
}

impl CpuKvCache {
    /// An f16 cache (the default type).
    pub fn new(
        num_layers: usize,
        num_blocks: usize,
        block_size: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> Self {
        Self::with_dtype(
            num_layers,
            num_blocks,
            block_size,
            n_kv_heads,
            head_dim,
            KvDtype::F16,
        )
    }

    pub fn with_dtype(
        num_layers: usize,
        num_blocks: usize,
        block_size: usize,
        n_kv_heads: usize,
        head_dim: usize,
        dtype: KvDtype,
    ) -> Self {
        let n = num_blocks * block_size * n_kv_heads * head_dim;
        let layers = match dtype {
            KvDtype::F16 => Layers::F16(
                (0..num_layers)
                    .map(|_| (vec![0u16; n], vec![0u16; n]))
                    .collect(),
            ),
            KvDtype::F32 => Layers::F32(
                (0..num_layers)
                    .map(|_| (vec![0f32; n], vec![0f32; n]))
                    .collect(),
            ),
        };
        CpuKvCache {
            block_size,
            num_blocks,
            n_kv_heads,
            head_dim,
            dtype,
            layers,
        }
    }

    /// Bytes one block costs across all layers (K and V).
    pub fn bytes_per_block(
        num_layers: usize,
        block_size: usize,
        n_kv_heads: usize,
        head_dim: usize,
        dtype: KvDtype,
    ) -> usize {
        2 * num_layers * block_size * n_kv_heads * head_dim * dtype.size()
    }

    /// Layer `l`'s `(K, V)` in the header's layouts, as f32 (a copy; for tests and
    /// debugging).
    pub fn layer_f32(&self, l: usize) -> (Vec<f32>, Vec<f32>) {
        fn conv<T: KvElem>(v: &[T]) -> Vec<f32> {
            v.iter().map(|x| x.to_f32()).collect()
        }
        self.layers
            .with(l, |k, v| (conv(k), conv(v)), |k, v| (conv(k), conv(v)))
    }

    /// Layer `l`'s K and V as f32 in slot order, `[num_blocks * block_size, n_kv_heads,
    /// head_dim]` each (the layout of the CUDA cache: what parity tests compare against).
    pub fn slot_rows_f32(&self, l: usize) -> (Vec<f32>, Vec<f32>) {
        let (k, v) = self.layer_f32(l);
        let (bs, hd, nkv) = (self.block_size, self.head_dim, self.n_kv_heads);
        let (mut ko, mut vo) = (vec![0f32; k.len()], vec![0f32; v.len()]);
        for slot in 0..self.num_blocks * bs {
            let (blk, off) = (slot / bs, slot % bs);
            for h in 0..nkv {
                let tile = (blk * nkv + h) * hd * bs;
                for d in 0..hd {
                    let o = (slot * nkv + h) * hd + d;
                    ko[o] = k[tile + d * bs + off];
                    vo[o] = v[tile + off * hd + d];
                }
            }
        }
        (ko, vo)
    }

    /// Copy block `src` to block `dst` in every layer (copy-on-write of a shared block).
    pub fn copy_block(&mut self, src: u32, dst: u32) {
        let bl = self.block_size * self.n_kv_heads * self.head_dim;
        let (s, d) = (src as usize * bl, dst as usize * bl);
        fn copy<T: Copy>(ls: &mut [(Vec<T>, Vec<T>)], s: usize, d: usize, bl: usize) {
            for (k, v) in ls {
                k.copy_within(s..s + bl, d);
                v.copy_within(s..s + bl, d);
            }
        }
        match &mut self.layers {
            Layers::F16(ls) => copy(ls, s, d, bl),
            Layers::F32(ls) => copy(ls, s, d, bl),
        }
    }

    /// Write `k, v [T, n_kv_heads, head_dim]` of layer `l` into `slots [T]`
    /// (slot = block * block_size + offset), rounded to the cache's type.
    pub fn reshape_and_cache(&mut self, l: usize, k: &[f32], v: &[f32], slots: &[usize]) {
        let shape = (self.block_size, self.head_dim, self.n_kv_heads);
        match &mut self.layers {
            Layers::F16(ls) => {
                let (kc, vc) = &mut ls[l];
                let kv = (
                    kc.reinterpret_cast_mut::<f16>(),
                    vc.reinterpret_cast_mut::<f16>(),
                );
                write(kv, shape, k, v, slots)
            }
            Layers::F32(ls) => {
                let (kc, vc) = &mut ls[l];
                write((kc, vc), shape, k, v, slots)
            }
        }
    }
}

/// K and V of `slots` into their tiles; the two buffers are written in parallel for batches
/// of 16+ tokens (a 1,500-token prefill writes ~270k values per layer).
fn write<T: KvElem>(
    (kc, vc): (&mut [T], &mut [T]),
    (bs, hd, nkv): (usize, usize, usize),
    k: &[f32],
    v: &[f32],
    slots: &[usize],
) {
    let tile = hd * bs;
    let write_k = |kc: &mut [T]| {
        // One head's K row in the cache type, then scattered down its tile's column.
        let mut krow = vec![T::ZERO; hd];
        for (t, &s) in slots.iter().enumerate() {
            let (blk, off) = (s / bs, s % bs);
            for h in 0..nkv {
                let base = (blk * nkv + h) * tile;
                let src = (t * nkv + h) * hd;
                T::store(&mut krow, &k[src..src + hd]);
                let col = &mut kc[base + off..base + tile];
                for (c, &x) in col.iter_mut().step_by(bs).zip(&krow) {
                    *c = x;
                }
            }
        }
    };
    let write_v = |vc: &mut [T]| {
        for (t, &s) in slots.iter().enumerate() {
            let (blk, off) = (s / bs, s % bs);
            for h in 0..nkv {
                let base = (blk * nkv + h) * tile + off * hd;
                let src = (t * nkv + h) * hd;
                T::store(&mut vc[base..base + hd], &v[src..src + hd]);
            }
        }
    };
    if slots.len() >= 16 {
        rayon::join(|| write_k(kc), || write_v(vc));
    } else {
        write_k(kc);
        write_v(vc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `f16` loads (the F16C path where the CPU has it) are the exact conversion of every
    /// bit pattern, NaNs staying NaN, for every tail length around the 8-value steps.
    #[test]
    fn f16_load_is_exact_for_every_value_and_length() {
        let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        let same = |h: f16, g: f32| {
            let want = h.to_f32();
            want.to_bits() == g.to_bits() || (want.is_nan() && g.is_nan())
        };
        let mut got = vec![0f32; all.len()];
        <f16 as KvElem>::load(&mut got, &all);
        for (&h, &g) in all.iter().zip(&got) {
            assert!(same(h, g), "bits {:#06x}: {g}", h.to_bits());
        }
        for n in 0..=20 {
            let src = &all[15_000 + n..15_000 + 2 * n];
            let mut dst = vec![f32::NAN; n];
            <f16 as KvElem>::load(&mut dst, src);
            assert!(
                src.iter().zip(&dst).all(|(&h, &g)| same(h, g)),
                "length {n}"
            );
        }
    }
}
