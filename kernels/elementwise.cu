// elementwise.cu: per-token ops of the Llama forward. CPU twins: src/backend/cpu/ops.rs.
//
// Launch configs (all 1-D blocks, block size a multiple of 32, <= 1024):
//   embedding_bf16_f32      grid (T)       block 256   out f32 [T, d]
//   rmsnorm_residual_*      grid (T)       block 256   x f32 [T, d] (in/out), out [T, d]
//   rope_f32                grid (T)       block 128   x f32, rows of `row_stride`, in place
//   silu_mul_*              grid (T)       block 256   gate_up f32 [T, 2f] -> out [T, f]
//   add_bias_f32            grid (T)       block 256   x f32 [T, n] += bias [n]
//   gather_rows_bf16        grid (R)       block 256   out [R, d] = src[rows[r], :]

// out[t, :] = f32(table[ids[t], :]). table bf16 [vocab, d]. An id outside the vocabulary
// (never produced by a valid batch: ids are validated at the API boundary) writes NaN rather
// than reading out of bounds, so the bug is visible in the logits.
extern "C" __global__ void embedding_bf16_f32(float* __restrict__ out,
                                              const bf16_t* __restrict__ table,
                                              const int* __restrict__ ids, int vocab, int d) {
    long long t = blockIdx.x;
    int id = ids[t];
    float* o = out + t * d;
    if (id < 0 || id >= vocab) {
        for (int i = threadIdx.x; i < d; i += blockDim.x) o[i] = __int_as_float(0x7fc00000);
        return;
    }
    const bf16_t* row = table + (long long)id * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) o[i] = bf16_to_f32(row[i]);
}

// x[t] += residual[t] (when residual != NULL), then out[t] = x[t] / rms(x[t]) * w.
// Sum of squares in f32 with a block tree reduction (the CPU twin sums in f64).
template <typename OUT>
__device__ void rmsnorm_residual(OUT* __restrict__ out, float* __restrict__ x,
                                 const float* __restrict__ residual, const float* __restrict__ w,
                                 int d, float eps) {
    __shared__ float scratch[32];
    long long t = blockIdx.x;
    float* xr = x + t * d;
    const float* rr = residual ? residual + t * d : 0;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float v = xr[i];
        if (rr) {
            v += rr[i];
            xr[i] = v;
        }
        ss += v * v;
    }
    ss = block_sum(ss, scratch);
    float scale = rsqrtf(ss / (float)d + eps);
    for (int i = threadIdx.x; i < d; i += blockDim.x) store_out(out + t * d + i, xr[i] * scale * w[i]);
}

extern "C" __global__ void rmsnorm_residual_bf16(bf16_t* out, float* x, const float* residual,
                                                 const float* w, int d, float eps) {
    rmsnorm_residual<bf16_t>(out, x, residual, w, d, eps);
}

extern "C" __global__ void rmsnorm_residual_f32(float* out, float* x, const float* residual,
                                                const float* w, int d, float eps) {
    rmsnorm_residual<float>(out, x, residual, w, d, eps);
}

// Rotary embedding in place on heads `0..n_heads` of each row: head h of token t starts at
// x + t * row_stride + h * head_dim (callers offset `x` to the q or k part of a fused qkv row).
// inv_freq f64 [half]; style 0 = interleaved pairs (2i, 2i+1), 1 = neox pairs (i, i + half).
// The angle pos * inv_freq and its sin/cos are computed in f64, as in the CPU twin: in f32 the
// angle loses ~1e-4 rad at position 4096.
extern "C" __global__ void rope_f32(float* __restrict__ x, const int* __restrict__ positions,
                                    const double* __restrict__ inv_freq, int row_stride,
                                    int n_heads, int head_dim, int half, int style) {
    long long t = blockIdx.x;
    double pos = (double)positions[t];
    float* row = x + t * row_stride;
    for (int k = threadIdx.x; k < n_heads * half; k += blockDim.x) {
        int h = k / half, i = k % half;
        double s, c;
        sincos(pos * inv_freq[i], &s, &c);
        float cf = (float)c, sf = (float)s;
        int a = style == 0 ? 2 * i : i;
        int b = style == 0 ? 2 * i + 1 : i + half;
        float* hp = row + (long long)h * head_dim;
        float x0 = hp[a], x1 = hp[b];
        hp[a] = x0 * cf - x1 * sf;
        hp[b] = x0 * sf + x1 * cf;
    }
}

// out[t, i] = silu(gu[t, i]) * gu[t, f + i]; gu f32 [T, 2f].
template <typename OUT>
__device__ void silu_mul(OUT* __restrict__ out, const float* __restrict__ gu, int f) {
    long long t = blockIdx.x;
    const float* g = gu + t * 2 * f;
    for (int i = threadIdx.x; i < f; i += blockDim.x) {
        float gv = g[i];
        store_out(out + t * f + i, gv / (1.0f + expf(-gv)) * g[f + i]);
    }
}

extern "C" __global__ void silu_mul_bf16(bf16_t* out, const float* gu, int f) {
    silu_mul<bf16_t>(out, gu, f);
}

extern "C" __global__ void silu_mul_f32(float* out, const float* gu, int f) {
    silu_mul<float>(out, gu, f);
}

// x[t, :] += bias (Qwen2 QKV bias). x f32 [T, n], bias f32 [n].
extern "C" __global__ void add_bias_f32(float* __restrict__ x, const float* __restrict__ bias,
                                        int n) {
    long long t = blockIdx.x;
    for (int i = threadIdx.x; i < n; i += blockDim.x) x[t * n + i] += bias[i];
}

// out[r, :] = src[rows[r], :] for bf16 rows of d elements (the logits rows before the LM head).
extern "C" __global__ void gather_rows_bf16(bf16_t* __restrict__ out,
                                            const bf16_t* __restrict__ src,
                                            const int* __restrict__ rows, int d) {
    long long r = blockIdx.x;
    long long s = rows[r];
    for (int i = threadIdx.x; i < d; i += blockDim.x) out[r * d + i] = src[s * d + i];
}
