//! The integer GEMM alone, on the default model's real matrices: one pass = every linear
//! layer of all 30 layers plus the LM head (a token's worth of weights, 96 MB, streamed as
//! decode streams them), for M = 1..256 activation rows. Prints ms per pass, the weight
//! bytes per second (what bounds M = 1) and the multiply-accumulates per second (what bounds
//! large M). The kernel is the best this CPU has; `PONDER_CPU_ISA=avx512` (no AMX) or `avx2`
//! select lower ones, to compare them in one session; `GEMM_ROWS=1,32` runs only those M and
//! `GEMM_REPS=100` repeats each pass that often (for profiling), `GEMM_ACT_BITS=8` quantizes
//! the activations to 8 bits (`--activation-bits`; default 12).
//!
//! Run: `cargo bench --bench gemm` (needs `scripts/fetch-model`).

use std::time::Instant;

use ponder::backend::cpu::matmul::linear_with;
use ponder::backend::cpu::matmul::q8::ActBits;
use ponder::backend::tensor::QMatrix;
use ponder::model::{load_model, loader::default_model_path};

fn main() {
    let path = match std::env::var("PONDER_BENCH_MODEL") {
        Ok(p) => std::path::PathBuf::from(p),
        Err(_) => default_model_path().expect("default model (run scripts/fetch-model)"),
    };
    let m = load_model(&path).expect("load");
    let w = &m.model.weights;
    let mut mats: Vec<&QMatrix> = Vec::new();
    for l in &w.layers {
        for lin in [&l.qkv, &l.wo, &l.gate_up, &l.down] {
            mats.extend(&lin.parts);
        }
    }
    mats.extend(&w.lm_head.parts);
    let bytes: usize = mats.iter().map(|q| q.size_bytes()).sum();
    let macs_per_row: usize = mats.iter().map(|q| q.rows * q.cols).sum();
    let bits = std::env::var("GEMM_ACT_BITS")
        .map(|v| ActBits::parse(&v).expect("GEMM_ACT_BITS"))
        .unwrap_or_default();
    println!(
        "isa override: {} | activation bits: {bits} | rayon threads: {} | weights per pass: {:.1} MB",
        std::env::var("PONDER_CPU_ISA").unwrap_or_else(|_| "none".into()),
        rayon::current_num_threads(),
        bytes as f64 / 1e6
    );
    println!("| M | ms per pass | weight GB/s | GMAC/s |");
    println!("|---:|---:|---:|---:|");
    // `GEMM_ROWS=32,256` runs only those M.
    let only: Option<Vec<usize>> = std::env::var("GEMM_ROWS")
        .ok()
        .map(|v| v.split(',').filter_map(|r| r.parse().ok()).collect());
    for rows in [1usize, 4, 8, 16, 32, 64, 256] {
        if only.as_ref().is_some_and(|o| !o.contains(&rows)) {
            continue;
        }
        let xs: Vec<Vec<f32>> = mats
            .iter()
            .map(|q| {
                (0..rows * q.cols)
                    .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                    .collect()
            })
            .collect();
        let mut ys: Vec<Vec<f32>> = mats.iter().map(|q| vec![0f32; rows * q.rows]).collect();
        // On a rayon worker, as the model's forward pass runs.
        let mut pass = || {
            rayon::scope(|_| {
                for ((q, x), y) in mats.iter().zip(&xs).zip(ys.iter_mut()) {
                    linear_with(x, q, None, y, bits);
                }
            })
        };
        pass();
        let reps = std::env::var("GEMM_REPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or((200 / rows).clamp(3, 50));
        let mut t: Vec<f64> = (0..reps)
            .map(|_| {
                let s = Instant::now();
                pass();
                s.elapsed().as_secs_f64()
            })
            .collect();
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let dt = t[reps / 2];
        println!(
            "| {rows} | {:.2} | {:.1} | {:.1} |",
            dt * 1e3,
            bytes as f64 / dt / 1e9,
            (macs_per_row * rows) as f64 / dt / 1e9
        );
    }
}
