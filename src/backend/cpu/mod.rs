//! CPU backend: quantized GEMM/GEMV (integer path on AMX / AVX-512 VNNI / AVX2 with a
//! portable definition, f32 path for float weights), per-token ops, and paged attention over
//! a host KV cache (f16 or f32). Multi-threaded with rayon.

pub mod attention;
pub mod backend;
pub mod kv_cache;
pub mod matmul;
pub mod ops;
pub mod pool;
pub mod qdef;
pub mod simd;
