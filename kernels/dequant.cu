// dequant.cu: ggml storage -> bf16, run once per weight at load (the GEMMs read bf16).
// CPU twin: src/backend/dtype.rs (dequantize_row). Block formats (32 elements per block):
//   Q8_0: f16 d | i8 q[32]            x[i] = d * q[i]                         34 bytes
//   Q4_0: f16 d | u8 qs[16]           x[j] = d * ((qs[j] & 15) - 8), x[j+16] = d * ((qs[j] >> 4) - 8)
//   Q4_1: f16 d | f16 m | u8 qs[16]   x[j] = d * (qs[j] & 15) + m,   x[j+16] = d * (qs[j] >> 4) + m
// F16/F32 are little-endian scalars. `src` is the raw tensor bytes (rows back to back, so
// element i of the whole tensor lives in block i / 32); bytes are assembled one at a time,
// so no alignment of `src` is assumed.
//
// Launch config: grid (ceil(n / 256)), block 256, one output element per thread; n < 2^31.

__device__ __forceinline__ unsigned short u16_at(const u8_t* p) {
    return (unsigned short)(p[0] | (p[1] << 8));
}

extern "C" __global__ void dequant_q8_0_bf16(bf16_t* __restrict__ out, const u8_t* __restrict__ src,
                                             int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const u8_t* b = src + (long long)(i / 32) * 34;
    float d = f16_to_f32(u16_at(b));
    out[i] = f32_to_bf16(d * (float)(signed char)b[2 + i % 32]);
}

extern "C" __global__ void dequant_q4_0_bf16(bf16_t* __restrict__ out, const u8_t* __restrict__ src,
                                             int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const u8_t* b = src + (long long)(i / 32) * 18;
    float d = f16_to_f32(u16_at(b));
    int j = i % 32;
    int q = j < 16 ? (b[2 + j] & 15) : (b[2 + j - 16] >> 4);
    out[i] = f32_to_bf16(d * (float)(q - 8));
}

extern "C" __global__ void dequant_q4_1_bf16(bf16_t* __restrict__ out, const u8_t* __restrict__ src,
                                             int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const u8_t* b = src + (long long)(i / 32) * 20;
    float d = f16_to_f32(u16_at(b));
    float m = f16_to_f32(u16_at(b + 2));
    int j = i % 32;
    int q = j < 16 ? (b[4 + j] & 15) : (b[4 + j - 16] >> 4);
    out[i] = f32_to_bf16(d * (float)q + m);
}

extern "C" __global__ void dequant_f16_bf16(bf16_t* __restrict__ out, const u8_t* __restrict__ src,
                                            int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = f32_to_bf16(f16_to_f32(u16_at(src + 2LL * i)));
}

extern "C" __global__ void dequant_f32_bf16(bf16_t* __restrict__ out, const u8_t* __restrict__ src,
                                            int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const u8_t* p = src + 4LL * i;
    unsigned int u = p[0] | (p[1] << 8) | (p[2] << 16) | ((unsigned int)p[3] << 24);
    out[i] = f32_to_bf16(__uint_as_float(u));
}
