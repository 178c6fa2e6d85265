//! The CUDA kernel sources (embedded with `include_str!`) and their NVRTC compilation.
//!
//! Every `kernels/*.cu` is compiled as `common.cuh` + the file (NVRTC has no standard headers
//! and we pass no include path, so the shared helpers are prepended as text). At start-up
//! each source is compiled once for the device's compute capability and loaded as a module;
//! the compile check (`tests/cuda_kernels_compile.rs`) compiles the same text for
//! `compute_80` and `compute_90` without a GPU.

use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};

/// Text prepended to every kernel source.
pub const COMMON: &str = include_str!("../../../kernels/common.cuh");

/// `(file name, source, extern "C" entry points)` of every kernel file.
pub const SOURCES: &[(&str, &str, &[&str])] = &[
    (
        "elementwise.cu",
        include_str!("../../../kernels/elementwise.cu"),
        &[
            "embedding_bf16_f32",
            "rmsnorm_residual_bf16",
            "rmsnorm_residual_f32",
            "rope_f32",
            "silu_mul_bf16",
            "silu_mul_f32",
            "add_bias_f32",
            "gather_rows_bf16",
        ],
    ),
    (
        "kv_cache.cu",
        include_str!("../../../kernels/kv_cache.cu"),
        &["reshape_and_cache_bf16", "copy_blocks_bf16"],
    ),
    (
        "attention.cu",
        include_str!("../../../kernels/attention.cu"),
        &["paged_attention", "paged_attention_reduce"],
    ),
    (
        "dequant.cu",
        include_str!("../../../kernels/dequant.cu"),
        &[
            "dequant_q8_0_bf16",
            "dequant_q4_0_bf16",
            "dequant_q4_1_bf16",
            "dequant_q5_0_bf16",
            "dequant_q5_1_bf16",
            "dequant_f16_bf16",
            "dequant_f32_bf16",
        ],
    ),
    (
        "dequant_k.cu",
        include_str!("../../../kernels/dequant_k.cu"),
        &[
            "dequant_q2_k_bf16",
            "dequant_q3_k_bf16",
            "dequant_q4_k_bf16",
            "dequant_q5_k_bf16",
            "dequant_q6_k_bf16",
            "dequant_q8_k_bf16",
        ],
    ),
    (
        "sampling.cu",
        include_str!("../../../kernels/sampling.cu"),
        &["argmax_f32"],
    ),
];

/// The full text NVRTC compiles for kernel file `src`.
pub fn full_source(src: &str) -> String {
    // `#line` keeps NVRTC error line numbers relative to the .cu file.
    format!("{COMMON}\n#line 1\n{src}")
}

/// NVRTC architecture name for a compute capability, e.g. `(9, 0)` -> `compute_90`.
/// NVRTC wants a `&'static str`; the known ones are listed, others fall back to the
/// highest listed arch not above the device (PTX is forward compatible).
pub fn arch_name(major: i32, minor: i32) -> &'static str {
    const ARCHS: &[(i32, &str)] = &[
        (75, "compute_75"),
        (80, "compute_80"),
        (86, "compute_86"),
        (89, "compute_89"),
        (90, "compute_90"),
        (100, "compute_100"),
        (120, "compute_120"),
    ];
    let cc = major * 10 + minor;
    ARCHS
        .iter()
        .rev()
        .find(|(v, _)| *v <= cc)
        .map(|(_, n)| *n)
        .unwrap_or("compute_75")
}

/// Compiles one kernel file for `arch`; the error carries NVRTC's log and the file name.
pub fn compile(name: &str, src: &str, arch: &'static str) -> Result<Ptx, String> {
    let opts = CompileOptions {
        arch: Some(arch),
        // Precise division/sqrt: the parity tests compare against the CPU at 1e-4.
        prec_div: Some(true),
        prec_sqrt: Some(true),
        options: vec!["--std=c++17".into()],
        name: Some(name.to_string()),
        ..Default::default()
    };
    compile_ptx_with_opts(full_source(src), opts).map_err(|e| format!("{name} ({arch}): {e}"))
}

/// Whether libnvrtc can be loaded (never panics: cudarc panics on first use when it is
/// missing, so callers check this first).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the candidate library names; no symbol is called.
    std::panic::catch_unwind(|| unsafe { cudarc::nvrtc::sys::is_culib_present() }).unwrap_or(false)
}
