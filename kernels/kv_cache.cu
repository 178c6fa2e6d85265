// kv_cache.cu: writes into and copies within the paged KV cache. CPU twin:
// src/backend/cpu/attention.rs (CpuKvCache::reshape_and_cache, copy_block).
//
// Cache layout (bf16), one K and one V region per layer:
//   [num_blocks, block_size, n_kv_heads, head_dim]; slot s -> row s of n_kv_heads * head_dim.
//
// Launch configs:
//   reshape_and_cache_bf16  grid (T)                    block 128
//   copy_blocks_bf16        grid (n_pairs, n_regions)   block 256

// k/v are read from f32 rows of `row_stride` elements (the fused qkv rows; callers pass
// pointers already offset to the k and v columns); each token's n_kv_heads * head_dim values
// go to slot slots[t]. A negative slot means "padding: do not write".
extern "C" __global__ void reshape_and_cache_bf16(bf16_t* __restrict__ k_cache,
                                                  bf16_t* __restrict__ v_cache,
                                                  const float* __restrict__ k,
                                                  const float* __restrict__ v,
                                                  const int* __restrict__ slots, int row_stride,
                                                  int kv_row) {
    long long t = blockIdx.x;
    long long s = slots[t];
    if (s < 0) return;
    for (int i = threadIdx.x; i < kv_row; i += blockDim.x) {
        k_cache[s * kv_row + i] = f32_to_bf16(k[t * row_stride + i]);
        v_cache[s * kv_row + i] = f32_to_bf16(v[t * row_stride + i]);
    }
}

// Copy-on-write: for every pair p, block pairs[2p] -> block pairs[2p + 1], in every region
// (a region is one layer's K or V: `regions` of them laid out back to back, each
// `region_elems` long). block_elems = block_size * n_kv_heads * head_dim.
extern "C" __global__ void copy_blocks_bf16(bf16_t* __restrict__ cache,
                                            const int* __restrict__ pairs,
                                            long long region_elems, int block_elems) {
    long long p = blockIdx.x;
    long long region = blockIdx.y;
    long long src = pairs[2 * p], dst = pairs[2 * p + 1];
    bf16_t* base = cache + region * region_elems;
    for (int i = threadIdx.x; i < block_elems; i += blockDim.x) {
        base[dst * block_elems + i] = base[src * block_elems + i];
    }
}
