// dequant_k.cu: K-quant super-blocks (256 elements) -> bf16, run once per weight at load.
// CPU twin: src/backend/dtype.rs dequantize_row, i.e. blocks.rs `Parts::decode` + `values`;
// the bit positions below are the ones blocks.rs documents (e = element in the super-block).
//
//   type  bytes  layout                                    x[e]
//   Q2_K    84   scales[16] | qs[64] | d | dmin            (d sc_i) u - dmin m_i      i = e / 16
//   Q3_K   110   hmask[32] | qs[64] | scales[12] | d       (d (sc_i - 32)) (u - 4)    i = e / 16
//   Q4_K   144   d | dmin | scales[12] | qs[128]           (d sc_j) u - dmin m_j      j = e / 32
//   Q5_K   176   d | dmin | scales[12] | qh[32] | qs[128]  (d sc_j) u - dmin m_j      j = e / 32
//   Q6_K   210   ql[128] | qh[64] | i8 scales[16] | d      (d sc_i) (u - 32)          i = e / 16
//   Q8_K   292   f32 d | i8 q[256] | i16 bsums[16]         d q
//
// Thread mapping (every kernel here): thread t owns the 32 consecutive output elements
// out[32 t .. 32 t + 31], i.e. group g = t % 8 (elements e = 32 g + l, l = 0..31) of
// super-block t / 8. Eight threads share a super-block; a group is exactly one Q4_K/Q5_K
// (scale, min) pair, two Q2_K/Q3_K/Q6_K 16-element scales, and one 32-bit lane of the
// 2-bit planes: for Q2_K/Q3_K/Q6_K, half n = g / 4 and k = g % 4 select the byte run and the
// shift (the element's r = e % 128 = 32 k + l), and Q3_K's / Q5_K's high bit of element e
// is bit g of hmask[l] / qh[l].
//
// Numerics: the operations of `Parts::values` in its order, each rounded on its own
// (`__fmul_rn` / `__fsub_rn` are never contracted into an FMA), then one rounding to bf16:
// bitwise the CPU's `bf16::from_f32`. Fields are read byte by byte (no alignment assumed).
//
// Launch config: grid ceil(ng / 256), block 256, ng = n / 32 groups (n a multiple of 256,
// n < 2^31).

// The super-block of thread t (`bytes` per super-block), its group, and its 32 outputs.
// Returns false for the threads past the last group.
__device__ __forceinline__ bool k_group(const u8_t* src, bf16_t* out, int ng, int bytes,
                                        const u8_t** b, bf16_t** o, int* g) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= ng) return false;
    *b = src + (long long)(t / 8) * bytes;
    *o = out + (long long)t * 32;
    *g = t % 8;
    return true;
}

// (d sc) u - dmin m, rounded after each operation, as `Parts::values`.
__device__ __forceinline__ bf16_t scale_min(float dsc, int u, float dm) {
    return f32_to_bf16(__fsub_rn(__fmul_rn(dsc, (float)u), dm));
}

// Q4_K/Q5_K scale and min j (6 bits each) from the 12 packed bytes `s`.
__device__ __forceinline__ void k4_scale_min(const u8_t* s, int j, int* sc, int* m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// Q3_K scale i (6 bits, stored value + 32) from the 12 packed bytes `s`.
__device__ __forceinline__ int q3_scale(const u8_t* s, int i) {
    int low = i < 8 ? (s[i] & 15) : (s[i - 8] >> 4);
    int high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
    return low | (high << 4);
}

extern "C" __global__ void dequant_q2_k_bf16(bf16_t* __restrict__ out, const u8_t* __restrict__ src,
                                             int ng) {
    const u8_t* b;
    bf16_t* o;
    int g;
    if (!k_group(src, out, ng, 84, &b, &o, &g)) return;
    float d = f16_to_f32(u16_at(b + 80)), dmin = f16_to_f32(u16_at(b + 82));
    const u8_t* qs = b + 16 + 32 * (g / 4);
    int sh = 2 * (g % 4);
    for (int h = 0; h < 2; ++h) {  // the group's two 16-element sub-blocks, i = 2 g + h
        int s = b[2 * g + h];
        float dsc = __fmul_rn(d, (float)(s & 15)), dm = __fmul_rn(dmin, (float)(s >> 4));
        for (int l = 16 * h; l < 16 * h + 16; ++l) o[l] = scale_min(dsc, (qs[l] >> sh) & 3, dm);
    }
}

extern "C" __global__ void dequant_q3_k_bf16(bf16_t* __restrict__ out, const u8_t* __restrict__ src,
                                             int ng) {
    const u8_t* b;
    bf16_t* o;
    int g;
    if (!k_group(src, out, ng, 110, &b, &o, &g)) return;
    const u8_t* hm = b;
    const u8_t* qs = b + 32 + 32 * (g / 4);
    float d = f16_to_f32(u16_at(b + 108));
    int sh = 2 * (g % 4);
    for (int h = 0; h < 2; ++h) {
        float ds = __fmul_rn(d, (float)(q3_scale(b + 96, 2 * g + h) - 32));
        for (int l = 16 * h; l < 16 * h + 16; ++l) {
            int u = ((qs[l] >> sh) & 3) | (((hm[l] >> g) & 1) << 2);
            o[l] = f32_to_bf16(__fmul_rn(ds, (float)(u - 4)));
        }
    }
}

// Q4_K (QH = false) and Q5_K (QH = true, qh[32] before qs): group g is sub-block j = g, its
// nibbles in qs[32 (g / 2) + l], the high nibble for odd g.
template <bool QH>
__device__ __forceinline__ void dequant_k4(bf16_t* __restrict__ out, const u8_t* __restrict__ src,
                                           int ng) {
    const u8_t* b;
    bf16_t* o;
    int g;
    if (!k_group(src, out, ng, QH ? 176 : 144, &b, &o, &g)) return;
    float d = f16_to_f32(u16_at(b)), dmin = f16_to_f32(u16_at(b + 2));
    int sc, m;
    k4_scale_min(b + 4, g, &sc, &m);
    float dsc = __fmul_rn(d, (float)sc), dm = __fmul_rn(dmin, (float)m);
    const u8_t* qh = b + 16;
    const u8_t* qs = b + (QH ? 48 : 16) + 32 * (g / 2);
    int nib = 4 * (g % 2);
    for (int l = 0; l < 32; ++l) {
        int u = (qs[l] >> nib) & 15;
        if (QH) u |= ((qh[l] >> g) & 1) << 4;
        o[l] = scale_min(dsc, u, dm);
    }
}

extern "C" __global__ void dequant_q4_k_bf16(bf16_t* __restrict__ out, const u8_t* __restrict__ src,
                                             int ng) {
    dequant_k4<false>(out, src, ng);
}

extern "C" __global__ void dequant_q5_k_bf16(bf16_t* __restrict__ out, const u8_t* __restrict__ src,
                                             int ng) {
    dequant_k4<true>(out, src, ng);
}

// Q6_K: half n = g / 4, k = g % 4: low 4 bits from ql[64 n + 32 (k & 1) + l] (high nibble for
// k >= 2), top 2 bits from qh[32 n + l] >> 2 k; scale i8 [2 g + l / 16].
extern "C" __global__ void dequant_q6_k_bf16(bf16_t* __restrict__ out, const u8_t* __restrict__ src,
                                             int ng) {
    const u8_t* b;
    bf16_t* o;
    int g;
    if (!k_group(src, out, ng, 210, &b, &o, &g)) return;
    int n = g / 4, k = g % 4;
    const u8_t* ql = b + 64 * n + 32 * (k & 1);
    const u8_t* qh = b + 128 + 32 * n;
    float d = f16_to_f32(u16_at(b + 208));
    int nib = 4 * (k / 2);
    for (int h = 0; h < 2; ++h) {
        float ds = __fmul_rn(d, (float)(signed char)b[192 + 2 * g + h]);
        for (int l = 16 * h; l < 16 * h + 16; ++l) {
            int u = ((ql[l] >> nib) & 15) | (((qh[l] >> (2 * k)) & 3) << 4);
            o[l] = f32_to_bf16(__fmul_rn(ds, (float)(u - 32)));
        }
    }
}

extern "C" __global__ void dequant_q8_k_bf16(bf16_t* __restrict__ out, const u8_t* __restrict__ src,
                                             int ng) {
    const u8_t* b;
    bf16_t* o;
    int g;
    if (!k_group(src, out, ng, 292, &b, &o, &g)) return;
    float d = __uint_as_float(u32_at(b));
    const u8_t* q = b + 4 + 32 * g;
    for (int l = 0; l < 32; ++l) o[l] = f32_to_bf16(__fmul_rn(d, (float)(signed char)q[l]));
}
