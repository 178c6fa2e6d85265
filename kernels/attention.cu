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
// Algorithm (`paged_attention`): one block per (group of `gsz` query heads sharing one KV
// head, query row t, partition z of `part_len` positions of that row's context), so each K
// and V row a block reads serves all its heads (GQA: a KV row is read once per group, not
// once per query head). (1) The group's q rows -> shared, pre-scaled. (2) Scores: groups of
// 8 lanes take one position each (16 positions per pass of the block); a lane loads 8 bf16
// of the K row with one 16-byte load per 64 dims, dots them with every head's q, and the
// lanes sum by 3 shuffles per head; scores land in shared memory [gsz][part_len].
// (3) Per head: block max, exp, block sum. (4) P.V: thread i owns the dim pair
// i % (head_dim / 2) for every (blockDim / (head_dim / 2))-th position, loads the bf16 pair
// once and accumulates it for every head; the position groups are summed through shared
// memory. One partition writes the normalized rows; several write their (max, sum,
// unnormalized acc) partials and `paged_attention_reduce` merges them. No loop carries an
// online-softmax chain, so the latency of the K/V loads overlaps across positions.
//
// Host-checked: head_dim even, <= MAX_HD and a multiple of 8 (16-byte K loads); gsz divides
// n_heads / n_kv_heads and is <= MAX_GROUP; gsz * part_len <= SCORES.
// Memory: static shared SCORES + MAX_GROUP * (MAX_HD + 2) + 32 floats and MAX_PART + 1
// block ids (26 KB) per block; the partials (host-allocated, once per step) are
// f32 [T, n_heads, parts, 2] and [T, n_heads, parts, head_dim].
//
// Launch configs (block = ATTN_THREADS = 128 threads, 4 warps; no dynamic shared memory):
//   paged_attention         grid (n_heads / gsz, T, parts)  parts = ceil(max context / part_len)
//   paged_attention_reduce  grid (n_heads, T)               only when parts > 1

#define ATTN_THREADS 128
#define MAX_HD 256
#define MAX_PART 512
#define MAX_GROUP 8
#define SCORES (MAX_GROUP * MAX_PART)

__device__ __forceinline__ float block_max(float v, float* scratch) {
    int lane = threadIdx.x % WARP, w = threadIdx.x / WARP, nw = blockDim.x / WARP;
    for (int o = WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if (lane == 0) scratch[w] = v;
    __syncthreads();
    float r = lane < nw ? scratch[lane] : PONDER_NEG_INF;
    for (int o = WARP / 2; o > 0; o >>= 1) r = fmaxf(r, __shfl_xor_sync(0xffffffffu, r, o));
    return r;
}

__device__ __forceinline__ float bf16_lo(unsigned int w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(unsigned int w) { return __uint_as_float(w & 0xffff0000u); }

extern "C" __global__ void paged_attention(
    bf16_t* __restrict__ out, float* __restrict__ tmp_ml, float* __restrict__ tmp_acc,
    const float* __restrict__ q, const bf16_t* __restrict__ k_cache,
    const bf16_t* __restrict__ v_cache, const int* __restrict__ block_tables,
    const int* __restrict__ context_lens, const int* __restrict__ query_starts,
    const int* __restrict__ query_lens, const int* __restrict__ token_seq, int q_stride,
    int n_heads, int n_kv_heads, int head_dim, int block_size, int max_blocks, float scale,
    int part_len, int gsz) {
    __shared__ float sm_s[SCORES];               // scores [gsz][part_len]
    __shared__ float sm_qa[MAX_GROUP * MAX_HD];  // q [gsz][head_dim], then P.V partials
    __shared__ float sm_red[WARP];
    __shared__ float sm_ml[2 * MAX_GROUP];  // per head: max, sum
    __shared__ int sm_tab[MAX_PART + 1];  // the partition's block ids (block_size >= 1)
    int h0 = blockIdx.x * gsz, part = blockIdx.z, parts = gridDim.z;
    long long t = blockIdx.y;
    int s = token_seq[t];
    // Positions 0..ctx-1 are visible to row t (causal, chunked-prefill aware).
    int ctx = context_lens[s] - query_lens[s] + (int)(t - query_starts[s]) + 1;
    int p0 = part * part_len;
    int p1 = min(p0 + part_len, ctx);  // p0 >= p1: an empty partition (m = -inf, l = 0)
    int n = max(p1 - p0, 0);
    int kvh = h0 / (n_heads / n_kv_heads);
    const int* table = block_tables + (long long)s * max_blocks;
    const float* qv = q + t * q_stride + (long long)h0 * head_dim;  // gsz heads, contiguous
    for (int d = threadIdx.x; d < gsz * head_dim; d += blockDim.x) sm_qa[d] = qv[d] * scale;
    // The partition's block ids, once: the K and V loads below then depend on shared memory
    // only, not on a global table load each.
    int b0 = p0 / block_size;
    int nb = n > 0 ? (p1 - 1) / block_size - b0 + 1 : 0;
    for (int j = threadIdx.x; j < nb; j += blockDim.x) sm_tab[j] = table[b0 + j];
    __syncthreads();

    int grp = threadIdx.x >> 3, g = threadIdx.x & 7, ngrp = blockDim.x >> 3;
    // The pass loop is uniform across the block (the shuffles need every lane of a warp).
    for (int i0 = 0; i0 < n; i0 += ngrp) {
        int i = i0 + grp;
        float acc[MAX_GROUP];
#pragma unroll
        for (int j = 0; j < MAX_GROUP; j++) acc[j] = 0.0f;
        if (i < n) {
            int p = p0 + i;
            long long slot = (long long)sm_tab[p / block_size - b0] * block_size + p % block_size;
            const bf16_t* kr = k_cache + (slot * n_kv_heads + kvh) * head_dim;
            for (int d0 = g * 8; d0 < head_dim; d0 += 64) {
                uint4 w = *(const uint4*)(kr + d0);
                float k8[8] = {bf16_lo(w.x), bf16_hi(w.x), bf16_lo(w.y), bf16_hi(w.y),
                               bf16_lo(w.z), bf16_hi(w.z), bf16_lo(w.w), bf16_hi(w.w)};
#pragma unroll
                for (int j = 0; j < MAX_GROUP; j++) {
                    if (j < gsz) {
                        const float* qq = sm_qa + j * head_dim + d0;
                        acc[j] += qq[0] * k8[0] + qq[1] * k8[1] + qq[2] * k8[2] +
                                  qq[3] * k8[3] + qq[4] * k8[4] + qq[5] * k8[5] +
                                  qq[6] * k8[6] + qq[7] * k8[7];
                    }
                }
            }
        }
#pragma unroll
        for (int j = 0; j < MAX_GROUP; j++) {
            if (j < gsz) {
                float a = acc[j];
                a += __shfl_xor_sync(0xffffffffu, a, 1);
                a += __shfl_xor_sync(0xffffffffu, a, 2);
                a += __shfl_xor_sync(0xffffffffu, a, 4);
                if (i < n && g == 0) sm_s[j * part_len + i] = a;
            }
        }
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < MAX_GROUP; j++) {
        if (j < gsz) {
            float* sj = sm_s + j * part_len;
            float mj = PONDER_NEG_INF;
            for (int i = threadIdx.x; i < n; i += blockDim.x) mj = fmaxf(mj, sj[i]);
            mj = block_max(mj, sm_red);
            float lj = 0.0f;
            for (int i = threadIdx.x; i < n; i += blockDim.x) {
                float e = expf(sj[i] - mj);
                sj[i] = e;
                lj += e;
            }
            lj = block_sum(lj, sm_red);  // its __syncthreads also publishes the exp'd scores
            if (threadIdx.x == 0) {
                sm_ml[2 * j] = mj;
                sm_ml[2 * j + 1] = lj;
            }
        }
    }

    int pairs = head_dim >> 1, nsub = blockDim.x / pairs;
    int dp = threadIdx.x % pairs, sub = threadIdx.x / pairs;
    float a0[MAX_GROUP], a1[MAX_GROUP];
#pragma unroll
    for (int j = 0; j < MAX_GROUP; j++) a0[j] = a1[j] = 0.0f;
    if (sub < nsub) {
        for (int i = sub; i < n; i += nsub) {
            int p = p0 + i;
            long long slot = (long long)sm_tab[p / block_size - b0] * block_size + p % block_size;
            const unsigned int* vr =
                (const unsigned int*)(v_cache + (slot * n_kv_heads + kvh) * head_dim);
            unsigned int w = vr[dp];
            float lo = bf16_lo(w), hi = bf16_hi(w);
#pragma unroll
            for (int j = 0; j < MAX_GROUP; j++) {
                if (j < gsz) {
                    float e = sm_s[j * part_len + i];
                    a0[j] += e * lo;
                    a1[j] += e * hi;
                }
            }
        }
    }
    __syncthreads();  // sm_qa's q rows are no longer read: it now takes the P.V partials
    if (sub < nsub) {
#pragma unroll
        for (int j = 0; j < MAX_GROUP; j++) {
            if (j < gsz) {
                // [nsub][gsz][head_dim] floats: nsub * head_dim <= 2 * blockDim, gsz <= 8
                // -> <= 2048 = MAX_GROUP * MAX_HD.
                float* r = sm_qa + (sub * gsz + j) * head_dim;
                r[2 * dp] = a0[j];
                r[2 * dp + 1] = a1[j];
            }
        }
    }
    __syncthreads();
    for (int k = threadIdx.x; k < gsz * head_dim; k += blockDim.x) {
        int j = k / head_dim, d = k % head_dim, h = h0 + j;
        float a = 0.0f;
        for (int u = 0; u < nsub; u++) a += sm_qa[(u * gsz + j) * head_dim + d];
        long long idx = (t * n_heads + h) * parts + part;
        if (parts == 1) {
            float l = sm_ml[2 * j + 1];
            float inv = l > 0.0f ? 1.0f / l : 0.0f;
            out[(t * n_heads + h) * head_dim + d] = f32_to_bf16(a * inv);
        } else {
            tmp_acc[idx * head_dim + d] = a;
            if (d == 0) {
                tmp_ml[idx * 2] = sm_ml[2 * j];
                tmp_ml[idx * 2 + 1] = sm_ml[2 * j + 1];
            }
        }
    }
}

extern "C" __global__ void paged_attention_reduce(
    bf16_t* __restrict__ out, const float* __restrict__ tmp_ml, const float* __restrict__ tmp_acc,
    int n_heads, int head_dim, int parts) {
    int h = blockIdx.x;
    long long t = blockIdx.y;
    long long base = (t * n_heads + h) * parts;
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
