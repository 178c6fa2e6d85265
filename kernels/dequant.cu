// dequant.cu: ggml storage -> bf16 for the float types and the 32-element block types, run
// once per weight at load (the GEMMs read bf16). The K-quants (256-element super-blocks) are
// in dequant_k.cu. CPU twin: src/backend/dtype.rs (dequantize_row, via blocks.rs Parts).
// Block formats (32 elements per block, j = 0..15 indexes qs):
//   Q8_0: f16 d | i8 q[32]                     x[i] = d * q[i]                        34 bytes
//   Q4_0: f16 d | u8 qs[16]                    x[j] = d * ((qs[j] & 15) - 8), x[j+16] = d * ((qs[j] >> 4) - 8)
//   Q4_1: f16 d | f16 m | u8 qs[16]            x[j] = d * (qs[j] & 15) + m,   x[j+16] = d * (qs[j] >> 4) + m
//   Q5_0: f16 d | u32 qh | u8 qs[16]           as Q4_0 with bit e of qh as bit 4 of element e,
//                                              x = d * (u - 16)                       22 bytes
//   Q5_1: f16 d | f16 m | u32 qh | u8 qs[16]   as Q4_1 with bit e of qh as bit 4, x = d * u + m
// F16/F32 are little-endian scalars. `src` is the raw tensor bytes (rows back to back, so
// element i of the whole tensor lives in block i / 32); bytes are assembled one at a time,
// so no alignment of `src` is assumed.
//
// Every value is computed with the operations of `Parts::values` in the same order, each
// rounded (`__fmul_rn` / `__fadd_rn` are never contracted into an FMA, which plain `d * u + m`
// would be by NVRTC's default -fmad=true), then rounded to bf16 once: bitwise the CPU's
// `bf16::from_f32(dequantize_row(..))`.
//
// Launch configs, block 256 threads, n < 2^31 elements:
//   dequant_{q8_0,q4_0,q4_1,f16,f32}_bf16   grid ceil(n / 256), one output element per thread
//   dequant_{q5_0,q5_1}_bf16                grid ceil(nb / 256), one 32-element block per
//                                           thread (nb = n / 32 blocks)

extern "C" __global__ void dequant_q8_0_bf16(bf16_t* __restrict__ out, const u8_t* __restrict__ src,
                                             int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const u8_t* b = src + (long long)(i / 32) * 34;
    float d = f16_to_f32(u16_at(b));
    out[i] = f32_to_bf16(__fmul_rn(d, (float)(signed char)b[2 + i % 32]));
}

extern "C" __global__ void dequant_q4_0_bf16(bf16_t* __restrict__ out, const u8_t* __restrict__ src,
                                             int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const u8_t* b = src + (long long)(i / 32) * 18;
    float d = f16_to_f32(u16_at(b));
    int j = i % 32;
    int q = j < 16 ? (b[2 + j] & 15) : (b[2 + j - 16] >> 4);
    out[i] = f32_to_bf16(__fmul_rn(d, (float)(q - 8)));
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
    out[i] = f32_to_bf16(__fadd_rn(__fmul_rn(d, (float)q), m));
}

// Q5_0 / Q5_1: thread t decodes block t (elements 32 t .. 32 t + 31). `head` is the offset of
// qh (2 for Q5_0, 4 for Q5_1: after d, m), qs follows qh.
template <bool WITH_MIN>
__device__ __forceinline__ void dequant_q5(bf16_t* __restrict__ out, const u8_t* __restrict__ src,
                                           int nb) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= nb) return;
    const int head = WITH_MIN ? 4 : 2;
    const u8_t* b = src + (long long)t * (head + 20);
    float d = f16_to_f32(u16_at(b));
    float m = WITH_MIN ? f16_to_f32(u16_at(b + 2)) : 0.0f;
    unsigned int qh = u32_at(b + head);
    const u8_t* qs = b + head + 4;
    bf16_t* o = out + (long long)t * 32;
    for (int e = 0; e < 32; ++e) {
        int low = e < 16 ? (qs[e] & 15) : (qs[e - 16] >> 4);
        int u = low | (((qh >> e) & 1u) << 4);
        float v = WITH_MIN ? __fadd_rn(__fmul_rn(d, (float)u), m) : __fmul_rn(d, (float)(u - 16));
        o[e] = f32_to_bf16(v);
    }
}

extern "C" __global__ void dequant_q5_0_bf16(bf16_t* __restrict__ out, const u8_t* __restrict__ src,
                                             int nb) {
    dequant_q5<false>(out, src, nb);
}

extern "C" __global__ void dequant_q5_1_bf16(bf16_t* __restrict__ out, const u8_t* __restrict__ src,
                                             int nb) {
    dequant_q5<true>(out, src, nb);
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
    out[i] = f32_to_bf16(__uint_as_float(u32_at(src + 4LL * i)));
}
