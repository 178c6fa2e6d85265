// attention.cu: causal paged attention over block tables, GQA. CPU twin:
// src/backend/cpu/attention.rs (paged_attention / attend_one).
//
// Inputs shared by every entry point:
//   q            f32, token t head h at q + t * q_stride + h * head_dim (q_stride lets q be read
//                in place from the fused qkv rows)
//   k/v_cache    bf16 [num_blocks, block_size, n_kv_heads, head_dim] (one layer)
//   block_tables int [S, max_blocks] (padded with block 0, the null block)
//   context_lens int [S]  tokens in the cache after this step's writes
//   query_starts int [S], query_lens int [S]   rows of each sequence in the batch
//   out          bf16 [T, n_heads, head_dim]  (input of the Wo GEMM)
// Query i of sequence s sits at position context_lens[s] - query_lens[s] + i and attends to
// positions 0..=that (chunked prefill aware). GQA: kv head = h / (n_heads / n_kv_heads).
//
// Algorithm: each warp runs an online softmax (running max m, sum l, accumulator acc) over a
// strided subset of positions; lane j holds dims j, j+32, ... (head_dim <= 256, so <= 8
// registers); the block's warps are merged through shared memory. Nothing is sized by the
// context length, so any length fits; the split variant spreads one (sequence, head) over
// partitions of PART positions for long decodes, and a reduce kernel merges the partials.
//
// Launch configs (block = ATTN_THREADS = 128 threads, 4 warps; no dynamic shared memory):
//   paged_attention_prefill        grid (n_heads, T)          token_seq int [T] maps t -> s
//   paged_attention_decode         grid (n_heads, S)          query_lens[s] must be 1
//   paged_attention_decode_split   grid (n_heads, S, parts)   parts = ceil(max_ctx / part_len)
//     writes tmp_ml f32 [S, n_heads, parts, 2] and tmp_acc f32 [S, n_heads, parts, head_dim]
//   paged_attention_decode_reduce  grid (n_heads, S)          block 128

#define ATTN_THREADS 128
#define ATTN_WARPS (ATTN_THREADS / WARP)
#define MAX_HD 256
#define DPL (MAX_HD / WARP)  // dims per lane

struct Partial {
    float m, l;
    float acc[DPL];
};

// One block: attention of query vector `qv` over positions [p0, p1) of one sequence. Returns
// the block-merged partial in thread 0..: after the call, shared `sm_m/sm_l/sm_acc` row 0 hold
// the merged (m, l, acc[head_dim]) (unnormalized: out = acc / l).
__device__ void attend_block(const float* __restrict__ qv, const bf16_t* __restrict__ k_cache,
                             const bf16_t* __restrict__ v_cache, const int* __restrict__ table,
                             int p0, int p1, int kvh, int n_kv_heads, int head_dim,
                             int block_size, float scale, float* sm_m, float* sm_l,
                             float* sm_acc) {
    int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    float qr[DPL];
    Partial pt;
    pt.m = PONDER_NEG_INF;
    pt.l = 0.0f;
#pragma unroll
    for (int j = 0; j < DPL; j++) {
        int d = lane + j * WARP;
        qr[j] = d < head_dim ? qv[d] * scale : 0.0f;
        pt.acc[j] = 0.0f;
    }
    for (int p = p0 + w; p < p1; p += ATTN_WARPS) {
        long long slot = (long long)table[p / block_size] * block_size + p % block_size;
        long long off = (slot * n_kv_heads + kvh) * head_dim;
        float s = 0.0f;
#pragma unroll
        for (int j = 0; j < DPL; j++) {
            int d = lane + j * WARP;
            if (d < head_dim) s += qr[j] * bf16_to_f32(k_cache[off + d]);
        }
        s = warp_sum(s);
        float m_new = fmaxf(pt.m, s);
        float alpha = expf(pt.m - m_new);  // exp(-inf) = 0 on the first position
        float e = expf(s - m_new);
        pt.l = pt.l * alpha + e;
#pragma unroll
        for (int j = 0; j < DPL; j++) {
            int d = lane + j * WARP;
            float vv = d < head_dim ? bf16_to_f32(v_cache[off + d]) : 0.0f;
            pt.acc[j] = pt.acc[j] * alpha + e * vv;
        }
        pt.m = m_new;
    }
    // Merge the warps: every warp publishes its partial, then all threads combine per dim.
    if (lane == 0) {
        sm_m[w] = pt.m;
        sm_l[w] = pt.l;
    }
#pragma unroll
    for (int j = 0; j < DPL; j++) {
        int d = lane + j * WARP;
        if (d < head_dim) sm_acc[w * MAX_HD + d] = pt.acc[j];
    }
    __syncthreads();
    float m = PONDER_NEG_INF;
    for (int i = 0; i < ATTN_WARPS; i++) m = fmaxf(m, sm_m[i]);
    float l = 0.0f;
    for (int i = 0; i < ATTN_WARPS; i++) {
        if (sm_m[i] != PONDER_NEG_INF) l += sm_l[i] * expf(sm_m[i] - m);
    }
    float accd[MAX_HD / ATTN_THREADS];
    for (int k = 0; k < MAX_HD / ATTN_THREADS; k++) {
        int d = threadIdx.x + k * ATTN_THREADS;
        float a = 0.0f;
        if (d < head_dim) {
            for (int i = 0; i < ATTN_WARPS; i++) {
                if (sm_m[i] != PONDER_NEG_INF) a += sm_acc[i * MAX_HD + d] * expf(sm_m[i] - m);
            }
        }
        accd[k] = a;
    }
    __syncthreads();  // everyone has read the per-warp rows
    for (int k = 0; k < MAX_HD / ATTN_THREADS; k++) {
        int d = threadIdx.x + k * ATTN_THREADS;
        if (d < head_dim) sm_acc[d] = accd[k];
    }
    if (threadIdx.x == 0) {
        sm_m[0] = m;
        sm_l[0] = l;
    }
    __syncthreads();
}

__device__ void write_normalized(bf16_t* __restrict__ o, const float* sm_l, const float* sm_acc,
                                 int head_dim) {
    float inv = sm_l[0] > 0.0f ? 1.0f / sm_l[0] : 0.0f;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) o[d] = f32_to_bf16(sm_acc[d] * inv);
}

extern "C" __global__ void paged_attention_prefill(
    bf16_t* __restrict__ out, const float* __restrict__ q, const bf16_t* __restrict__ k_cache,
    const bf16_t* __restrict__ v_cache, const int* __restrict__ block_tables,
    const int* __restrict__ context_lens, const int* __restrict__ query_starts,
    const int* __restrict__ query_lens, const int* __restrict__ token_seq, int q_stride,
    int n_heads, int n_kv_heads, int head_dim, int block_size, int max_blocks, float scale) {
    __shared__ float sm_m[ATTN_WARPS], sm_l[ATTN_WARPS], sm_acc[ATTN_WARPS * MAX_HD];
    int h = blockIdx.x;
    long long t = blockIdx.y;
    int s = token_seq[t];
    int pos = context_lens[s] - query_lens[s] + (int)(t - query_starts[s]);
    int kvh = h / (n_heads / n_kv_heads);
    attend_block(q + t * q_stride + (long long)h * head_dim, k_cache, v_cache,
                 block_tables + (long long)s * max_blocks, 0, pos + 1, kvh, n_kv_heads,
                 head_dim, block_size, scale, sm_m, sm_l, sm_acc);
    write_normalized(out + (t * n_heads + h) * head_dim, sm_l, sm_acc, head_dim);
}

extern "C" __global__ void paged_attention_decode(
    bf16_t* __restrict__ out, const float* __restrict__ q, const bf16_t* __restrict__ k_cache,
    const bf16_t* __restrict__ v_cache, const int* __restrict__ block_tables,
    const int* __restrict__ context_lens, const int* __restrict__ query_starts, int q_stride,
    int n_heads, int n_kv_heads, int head_dim, int block_size, int max_blocks, float scale) {
    __shared__ float sm_m[ATTN_WARPS], sm_l[ATTN_WARPS], sm_acc[ATTN_WARPS * MAX_HD];
    int h = blockIdx.x, s = blockIdx.y;
    long long t = query_starts[s];
    int kvh = h / (n_heads / n_kv_heads);
    attend_block(q + t * q_stride + (long long)h * head_dim, k_cache, v_cache,
                 block_tables + (long long)s * max_blocks, 0, context_lens[s], kvh, n_kv_heads,
                 head_dim, block_size, scale, sm_m, sm_l, sm_acc);
    write_normalized(out + (t * n_heads + h) * head_dim, sm_l, sm_acc, head_dim);
}

extern "C" __global__ void paged_attention_decode_split(
    float* __restrict__ tmp_ml, float* __restrict__ tmp_acc, const float* __restrict__ q,
    const bf16_t* __restrict__ k_cache, const bf16_t* __restrict__ v_cache,
    const int* __restrict__ block_tables, const int* __restrict__ context_lens,
    const int* __restrict__ query_starts, int q_stride, int n_heads, int n_kv_heads,
    int head_dim, int block_size, int max_blocks, float scale, int part_len) {
    __shared__ float sm_m[ATTN_WARPS], sm_l[ATTN_WARPS], sm_acc[ATTN_WARPS * MAX_HD];
    int h = blockIdx.x, s = blockIdx.y, part = blockIdx.z, parts = gridDim.z;
    long long t = query_starts[s];
    int ctx = context_lens[s];
    int p0 = part * part_len;
    int p1 = min(p0 + part_len, ctx);  // p0 >= ctx: an empty partition (m = -inf, l = 0)
    int kvh = h / (n_heads / n_kv_heads);
    attend_block(q + t * q_stride + (long long)h * head_dim, k_cache, v_cache,
                 block_tables + (long long)s * max_blocks, p0, p1, kvh, n_kv_heads, head_dim,
                 block_size, scale, sm_m, sm_l, sm_acc);
    long long idx = ((long long)s * n_heads + h) * parts + part;
    if (threadIdx.x == 0) {
        tmp_ml[idx * 2] = sm_m[0];
        tmp_ml[idx * 2 + 1] = sm_l[0];
    }
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) tmp_acc[idx * head_dim + d] = sm_acc[d];
}

extern "C" __global__ void paged_attention_decode_reduce(
    bf16_t* __restrict__ out, const float* __restrict__ tmp_ml, const float* __restrict__ tmp_acc,
    const int* __restrict__ query_starts, int n_heads, int head_dim, int parts) {
    int h = blockIdx.x, s = blockIdx.y;
    long long t = query_starts[s];
    long long base = ((long long)s * n_heads + h) * parts;
    float m = PONDER_NEG_INF;
    for (int i = 0; i < parts; i++) m = fmaxf(m, tmp_ml[(base + i) * 2]);
    float l = 0.0f;
    for (int i = 0; i < parts; i++) {
        float mi = tmp_ml[(base + i) * 2];
        if (mi != PONDER_NEG_INF) l += tmp_ml[(base + i) * 2 + 1] * expf(mi - m);
    }
    float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float a = 0.0f;
        for (int i = 0; i < parts; i++) {
            float mi = tmp_ml[(base + i) * 2];
            if (mi != PONDER_NEG_INF) a += tmp_acc[(base + i) * head_dim + d] * expf(mi - m);
        }
        out[(t * n_heads + h) * head_dim + d] = f32_to_bf16(a * inv);
    }
}
