// common.cuh: helpers shared by every kernels/*.cu. The loader (src/backend/cuda/kernels.rs)
// and the compile check prepend this text to each .cu before handing it to NVRTC, so no file
// needs an #include (NVRTC ships no C/C++ standard headers).
//
// Conventions of all kernels:
// - bf16 is `unsigned short` (raw bits); conversions are bit operations, f32 -> bf16 rounds to
//   nearest even (same as `half::bf16::from_f32`), NaN stays NaN.
// - Index math that can exceed 2^31 (cache slots * row, rows * cols) is done in `long long`.
// - Integer inputs (ids, positions, slots, block ids) are `int` (i32); the host checks ranges.

typedef unsigned short bf16_t;
typedef unsigned char u8_t;

#define PONDER_NEG_INF (__int_as_float(0xff800000))
#define WARP 32

__device__ __forceinline__ float bf16_to_f32(bf16_t h) {
    return __uint_as_float(((unsigned int)h) << 16);
}

__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (bf16_t)((u >> 16) | 0x40u);  // quiet NaN, keep the sign
    }
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    return (bf16_t)(u >> 16);
}

// IEEE half (raw bits) -> f32, exact, via the PTX conversion instruction.
__device__ __forceinline__ float f16_to_f32(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// Little-endian loads assembled byte by byte (no alignment of `p` assumed: ggml blocks are
// packed back to back, so a block's fields sit at any byte offset).
__device__ __forceinline__ unsigned short u16_at(const u8_t* p) {
    return (unsigned short)(p[0] | (p[1] << 8));
}
__device__ __forceinline__ unsigned int u32_at(const u8_t* p) {
    return p[0] | (p[1] << 8) | (p[2] << 16) | ((unsigned int)p[3] << 24);
}

// Output stores for the two activation types a kernel may write.
__device__ __forceinline__ void store_out(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_out(bf16_t* p, float v) { *p = f32_to_bf16(v); }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, <= 1024). Every thread gets the sum.
// `scratch` must hold 32 floats of shared memory; the call contains __syncthreads().
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x % WARP, w = threadIdx.x / WARP, nw = blockDim.x / WARP;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[w] = v;
    __syncthreads();
    float t = lane < nw ? scratch[lane] : 0.0f;
    return warp_sum(t);
}
