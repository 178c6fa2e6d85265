// sampling.cu: greedy argmax over logits rows (the device-side sampling helper).
//
// Only greedy decoding runs on the device. Temperature / top-k / top-p / seeded sampling and
// logprobs stay on the host (src/sample/) for now: they need per-sequence seeded RNG streams,
// sorting for top-p, and the exact same numerics as the CPU path so a request gives the same
// tokens on either backend. The cost is one f32 vocab row copied device -> host per sampled
// row (vocab 49,152 -> 192 KiB; vocab 152,064 -> 594 KiB per row).
//
// Launch config: grid (R), block 256 (a power of two). out int [R]: the lowest index of the
// maximum of each row (ties -> lowest id, as the host sampler); NaN entries are ignored.

#define ARGMAX_THREADS 256

extern "C" __global__ void argmax_f32(int* __restrict__ out, const float* __restrict__ logits,
                                      int vocab) {
    __shared__ float sv[ARGMAX_THREADS];
    __shared__ int si[ARGMAX_THREADS];
    const float* row = logits + (long long)blockIdx.x * vocab;
    float best = PONDER_NEG_INF;
    int bi = -1;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        float v = row[i];
        if (v > best || (bi < 0 && v == v)) {  // strict >: the first (lowest) index wins
            best = v;
            bi = i;
        }
    }
    sv[threadIdx.x] = best;
    si[threadIdx.x] = bi;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if (threadIdx.x < o) {
            float v = sv[threadIdx.x + o];
            int j = si[threadIdx.x + o];
            int i0 = si[threadIdx.x];
            if (j >= 0 && (i0 < 0 || v > sv[threadIdx.x] || (v == sv[threadIdx.x] && j < i0))) {
                sv[threadIdx.x] = v;
                si[threadIdx.x] = j;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = si[0] < 0 ? 0 : si[0];
}
