//! Single-sequence decode and prefill speed on the default model, and this machine's memory
//! bandwidth (the decode floor is weight bytes per token / bandwidth).
//!
//! Run: `cargo bench --bench decode` (needs `scripts/fetch-model`); another model with
//! `PONDER_BENCH_MODEL=models/<file>.gguf`; `PONDER_BENCH_F32=0` skips the dequantized-f32
//! comparison (4 bytes per weight in memory). Prints, besides criterion's timings, a summary
//! line with tokens/s and the floor.

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use ponder::backend::cpu::backend::{CpuBackend, CpuLinear};
use ponder::backend::tensor::QMatrix;
use ponder::model::weights::bytes_per_token;
use ponder::model::{load_model, loader::default_model_path, Batch, Layer, Model, Weights};

const BLOCK: usize = 16;

/// Streams a 512 MiB buffer (far beyond the L3) with a parallel sum; best of 5 runs.
fn bandwidth_gbs() -> f64 {
    use rayon::prelude::*;
    let n = 512usize << 20 >> 3;
    let buf: Vec<u64> = (0..n as u64).collect();
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let s: u64 = buf
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
            .sum();
        let dt = t.elapsed().as_secs_f64();
        criterion::black_box(s);
        best = best.max((n * 8) as f64 / dt / 1e9);
    }
    best
}

/// The alternative design: every matrix dequantized to f32 at load (5.7x the bytes).
fn dequantized(w: &Weights<CpuBackend>) -> Weights<CpuBackend> {
    let f = |m: &QMatrix| QMatrix::from_f32(m.rows, m.cols, &m.to_f32());
    let lin = |l: &CpuLinear| CpuLinear {
        parts: vec![QMatrix::from_f32(l.rows(), l.cols(), &l.to_f32())],
        bias: l.bias.clone(),
    };
    Weights {
        embed: f(&w.embed),
        layers: w
            .layers
            .iter()
            .map(|l| Layer {
                attn_norm: l.attn_norm.clone(),
                qkv: lin(&l.qkv),
                qk_norm: l.qk_norm.clone(),
                wo: lin(&l.wo),
                ffn_norm: l.ffn_norm.clone(),
                gate_up: lin(&l.gate_up),
                down: lin(&l.down),
            })
            .collect(),
        final_norm: w.final_norm.clone(),
        lm_head: lin(&w.lm_head),
        rope: w.rope.clone(),
    }
}

fn bench(c: &mut Criterion) {
    let path = match std::env::var("PONDER_BENCH_MODEL") {
        Ok(p) => std::path::PathBuf::from(p),
        Err(_) => default_model_path().expect("default model (run scripts/fetch-model)"),
    };
    let m = load_model(&path).expect("load");
    let table: Vec<u32> = (1..=64).collect();
    let mut kv = m.model.new_kv_cache(65, BLOCK);
    let prompt: Vec<u32> = (0..128u32).map(|i| 100 + i * 7).collect();
    m.model
        .run(&Batch::single(&prompt[..64], 0, &table, BLOCK), &mut kv);

    let mut g = c.benchmark_group(m.name.to_lowercase());
    g.sample_size(20);
    g.bench_function("decode_step_ctx64", |b| {
        b.iter(|| {
            m.model
                .run(&Batch::single(&[42], 64, &table, BLOCK), &mut kv)
        })
    });
    g.bench_function("prefill_128", |b| {
        b.iter(|| {
            m.model
                .run(&Batch::single(&prompt, 0, &table, BLOCK), &mut kv)
        })
    });
    g.finish();

    // Summary with the same measurements done by hand (median of 50 / 10 runs).
    let time = |reps: usize, f: &mut dyn FnMut()| {
        let mut v: Vec<f64> = (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[reps / 2]
    };
    let dec = time(50, &mut || {
        m.model
            .run(&Batch::single(&[42], 64, &table, BLOCK), &mut kv);
    });
    let pre = time(10, &mut || {
        m.model
            .run(&Batch::single(&prompt, 0, &table, BLOCK), &mut kv);
    });
    let bw = bandwidth_gbs();
    let bytes = bytes_per_token(&m.model.weights) as f64;
    let floor = bytes / (bw * 1e9);
    println!(
        "SUMMARY decode {:.1} tok/s ({:.2} ms) | prefill {:.0} tok/s | weights/token {:.1} MB | \
         bandwidth {:.1} GB/s | floor {:.2} ms ({:.1} tok/s) | decode/floor {:.2}x | threads {}",
        1.0 / dec,
        dec * 1e3,
        128.0 / pre,
        bytes / 1e6,
        bw,
        floor * 1e3,
        1.0 / floor,
        dec / floor,
        rayon::current_num_threads()
    );
    if std::env::var("PONDER_BENCH_F32").is_ok_and(|v| v == "0") {
        return;
    }
    let f32_model = Model::new(m.model.cfg.clone(), dequantized(&m.model.weights));
    let mut kv2 = f32_model.new_kv_cache(65, BLOCK);
    f32_model.run(&Batch::single(&prompt[..64], 0, &table, BLOCK), &mut kv2);
    let dec_f32 = time(50, &mut || {
        f32_model.run(&Batch::single(&[42], 64, &table, BLOCK), &mut kv2);
    });
    let pre_f32 = time(10, &mut || {
        f32_model.run(&Batch::single(&prompt, 0, &table, BLOCK), &mut kv2);
    });
    println!(
        "SUMMARY-F32 (dequantized at load) decode {:.1} tok/s ({:.2} ms) | prefill {:.0} tok/s | \
         weights/token {:.1} MB | decode/floor {:.2}x",
        1.0 / dec_f32,
        dec_f32 * 1e3,
        128.0 / pre_f32,
        bytes_per_token(&f32_model.weights) as f64 / 1e6,
        dec_f32 / (bytes_per_token(&f32_model.weights) as f64 / (bw * 1e9)),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
