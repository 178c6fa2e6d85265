//! Compile check of every `kernels/*.cu` with NVRTC for `compute_80` and `compute_90`; needs
//! libnvrtc (not a GPU). `scripts/check-kernels` provides it from the pinned PyPI wheels.
//! Without libnvrtc the test prints a loud line and returns, except under `CI=true`, where
//! it fails: CI must never pass without compiling the kernels. The dequantization kernels'
//! PTX must also hold no `fma` (their GPU parity bound is exact bf16 bits).
#![cfg(feature = "cuda")]

use ponder::backend::cuda::kernels::{compile, nvrtc_present, SOURCES};

#[test]
fn kernels_compile() {
    if !nvrtc_present() {
        let msg = "!!! kernels_compile: libnvrtc NOT FOUND: CUDA kernels were NOT compile-checked \
                   (run scripts/check-kernels) !!!";
        eprintln!("{msg}");
        println!("{msg}");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true requires libnvrtc: {msg}"
        );
        return;
    }
    // Every file on disk must be listed in SOURCES (and so embedded in the binary).
    // The build-time path, or ./kernels when a carried binary runs from another checkout
    // (scripts/gpu-check.sh runs from the repository root).
    let dir = [concat!(env!("CARGO_MANIFEST_DIR"), "/kernels"), "kernels"]
        .into_iter()
        .find(|d| std::path::Path::new(d).is_dir())
        .expect("kernels/ directory (run from the repository root)");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .expect("kernels/ directory")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cu"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = SOURCES.iter().map(|(n, _, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "kernels/*.cu and kernels::SOURCES differ");

    let mut failures = Vec::new();
    for arch in ["compute_80", "compute_90"] {
        for (name, src, entries) in SOURCES {
            match compile(name, src, arch) {
                Ok(ptx) => {
                    let text = ptx.to_src();
                    for e in *entries {
                        if !text.contains(&format!(".entry {e}(")) {
                            failures.push(format!("{name} ({arch}): entry point `{e}` missing"));
                        }
                    }
                    // The dequantization kernels promise the CPU's bits: every f32 operation
                    // rounded on its own, so NVRTC must not have fused any into an FMA.
                    if name.starts_with("dequant") && text.contains("fma.") {
                        failures.push(format!("{name} ({arch}): FMA in a dequantization kernel"));
                    }
                    println!("compiled {name} for {arch}: {} entry points", entries.len());
                }
                Err(e) => failures.push(e),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
