//! CPU backend: quantized GEMM/GEMV (AVX2+FMA with a portable fallback), per-token ops and
//! paged attention over a host KV cache. Multi-threaded with rayon.

pub mod attention;
pub mod kv_cache;
pub mod matmul;
pub mod ops;
pub mod simd;
