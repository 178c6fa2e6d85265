//! GPU benchmarks (ignored by default; scripts/gpu-check.sh runs them with `--ignored`):
//! decode tokens/s at batch 1, 8, 64, 256 and prefill tokens/s of a SmolLM2-135M-shaped Llama
//! and a Qwen2.5-1.5B-shaped Qwen2 with random bf16 weights (no model file needed), next to
//! two measured floors:
//! - memory bandwidth: a 1 GiB device-to-device copy (bytes read + written / time);
//!   decode floor = bf16 weight bytes / bandwidth per step;
//! - matmul: a 4096^3 bf16 GEMM with f32 output; prefill floor = 2 * matrix params * tokens / FLOP/s.
//!
//! Step times are wall time over whole steps of the model's forward pass (index uploads,
//! kernels, the D2H copy of the logits rows), after a warm-up; the floors are CUDA-event timed.

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::sys::CUevent_flags;
use ponder::backend::cuda::backend::CudaBackend;
use ponder::backend::cuda::kv::GpuKvCache;
use ponder::backend::cuda::Result;
use ponder::backend::seam::Ops;
use ponder::backend::types::{Batch, KvDtype, SeqInput};
use ponder::model::arch::{LLAMA, QWEN2};
use ponder::model::forward::Model;
use ponder::model::weights;
use ponder::model::ModelConfig;

use super::decode::{config, random_source};
use super::*;

const BS: usize = 16;

/// `n` sequences, each computing `q` tokens at the end of a context of `ctx` tokens.
fn batch(n: usize, q: usize, ctx: usize) -> Batch {
    let per = ctx.div_ceil(BS);
    let mut b = Batch::default();
    for s in 0..n {
        let table: Vec<u32> = (0..per).map(|j| (1 + s * per + j) as u32).collect();
        b.seqs.push(SeqInput {
            query_start: s * q,
            query_len: q,
            context_len: ctx,
            block_table: table.clone(),
        });
        for p in ctx - q..ctx {
            b.token_ids.push(((s * 7919 + p * 31) % 49152) as u32);
            b.positions.push(p);
            b.slot_mapping.push(table[p / BS] as usize * BS + p % BS);
        }
        b.logits_rows.push(s * q + q - 1);
    }
    b
}

fn floors(dev: &GpuDevice) -> Result<(f64, f64)> {
    let s = &dev.stream;
    let n = 1usize << 29; // 1 GiB of u16
    let src = s.alloc_zeros::<u16>(n)?;
    let mut dst = s.alloc_zeros::<u16>(n)?;
    s.memcpy_dtod(&src, &mut dst)?;
    let t0 = s.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    for _ in 0..10 {
        s.memcpy_dtod(&src, &mut dst)?;
    }
    let t1 = s.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    t1.synchronize()?;
    let bw = 10.0 * 2.0 * (2 * n) as f64 / (t0.elapsed_ms(&t1)? as f64 / 1e3);
    drop((src, dst));
    let k = 4096;
    let a = s.alloc_zeros::<bf16>(k * k)?;
    let w = s.alloc_zeros::<bf16>(k * k)?;
    let mut y = s.alloc_zeros::<f32>(k * k)?;
    linear(dev, &a, &w, &mut y, k, k, k)?;
    let t0 = s.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    for _ in 0..10 {
        linear(dev, &a, &w, &mut y, k, k, k)?;
    }
    let t1 = s.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    t1.synchronize()?;
    let flops = 10.0 * 2.0 * (k * k * k) as f64 / (t0.elapsed_ms(&t1)? as f64 / 1e3);
    Ok((bw, flops))
}

#[test]
#[ignore = "GPU benchmark: run with --ignored on a GPU machine (scripts/gpu-check.sh)"]
fn gpu_bench() {
    let Some(dev) = device() else { return };
    // SmolLM2-135M's shape: hidden 576, FFN 1536, 30 layers, 9 heads / 3 KV heads of 64.
    let cfg = config(
        LLAMA,
        (576, 1536, 30),
        (9, 3, 64),
        49152,
        false,
        RopeStyle::Interleaved,
    );
    bench_shape(Arc::new(dev), cfg, "SmolLM2-135M");
}

/// A model whose weights take longer to read than its ~300 kernels take to start: the
/// bandwidth floor is a fair target here.
#[test]
#[ignore = "GPU benchmark: run with --ignored on a GPU machine (scripts/gpu-check.sh)"]
fn gpu_bench_qwen_1_5b_shape() {
    let Some(dev) = device() else { return };
    // Qwen2.5-1.5B's shape: hidden 1536, FFN 8960, 28 layers, 12 heads / 2 KV heads of 128,
    // QKV bias, vocabulary 151,936 (tied head).
    let cfg = config(
        QWEN2,
        (1536, 8960, 28),
        (12, 2, 128),
        151_936,
        true,
        RopeStyle::Neox,
    );
    bench_shape(Arc::new(dev), cfg, "Qwen2.5-1.5B");
}

/// Decode steps at batch 1, 8, 64, 256 (context 512) and prefills of a random-weight model
/// of `cfg`'s shape, with CUDA graphs and then without, next to the floors.
fn bench_shape(dev: Arc<GpuDevice>, cfg: ModelConfig, label: &str) {
    let src = random_source(&cfg, 1, 0.05);
    // bf16 weight bytes read per step: every matrix once, the tied head once.
    let (h, f, l, v) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_layers,
        cfg.vocab_size,
    );
    let (qd, kvd) = (
        cfg.num_heads * cfg.head_dim,
        cfg.num_kv_heads * cfg.head_dim,
    );
    let params = (l * (h * (qd + 2 * kvd) + qd * h + 3 * h * f) + v * h) as f64;
    let wb = 2.0 * params;
    let per_block = GpuKvCache::bytes_per_block(l, BS, cfg.num_kv_heads, cfg.head_dim);
    // Two models (graphs on and off) share the device: 0.2 of its memory each for the cache.
    let blocks = GpuKvCache::blocks_for_fraction(&dev, 0.2, per_block).unwrap();
    let make = |graphs: bool| {
        let backend = CudaBackend::new(dev.clone()).with_graphs(graphs);
        let model = Model::new(cfg.clone(), weights::load(&backend, &cfg, &src).unwrap());
        let kv = backend
            .kv_cache(model.kv_shape(blocks, BS), KvDtype::F16)
            .unwrap();
        Bench {
            backend,
            model,
            kv,
            logits: Vec::new(),
        }
    };
    let mut r = make(true);
    let (bw, flops) = floors(&dev).unwrap();
    println!("device: {:?} arch {}", dev.cc, dev.arch);
    println!(
        "floors ({label} shape): bandwidth {:.0} GB/s, bf16 GEMM {:.1} TFLOP/s, weights {:.1} MB (bf16)",
        bw / 1e9,
        flops / 1e12,
        wb / 1e6
    );
    println!(
        "| case ({label} shape) | tokens/step | step ms | tokens/s | floor ms | step / floor |"
    );
    println!("|---|---|---|---|---|---|");
    let ctx = 512;
    for n in [1usize, 8, 64, 256] {
        let b = batch(n, 1, ctx);
        run(
            &mut r,
            &b,
            &format!("decode batch {n} (ctx {ctx})"),
            n,
            wb / bw * 1e3,
        );
    }
    // Long reasoning contexts: the attention splits each row's 4096 positions.
    for n in [1usize, 64] {
        let b = batch(n, 1, 4096);
        let name = format!("decode batch {n} (ctx 4096)");
        run(&mut r, &b, &name, n, wb / bw * 1e3);
    }
    for (n, q) in [(1usize, 512usize), (4, 512)] {
        let b = batch(n, q, q);
        let floor_ms = (2.0 * params * (n * q) as f64 / flops).max(wb / bw) * 1e3;
        run(&mut r, &b, &format!("prefill {n} x {q}"), n * q, floor_ms);
    }
    println!("graphs captured: {}", r.backend.graphs_captured());
    drop(r);
    // The same decode steps with every kernel launched on its own (--cuda-graphs false).
    let mut r = make(false);
    for n in [1usize, 8, 64, 256] {
        let b = batch(n, 1, ctx);
        let name = format!("decode batch {n} (ctx {ctx}), no graphs");
        run(&mut r, &b, &name, n, wb / bw * 1e3);
    }
}

struct Bench {
    backend: CudaBackend,
    model: Model<CudaBackend>,
    kv: GpuKvCache,
    logits: Vec<f32>,
}

impl Bench {
    /// One whole step: index uploads, kernels, and the logits rows copied to the host.
    fn step(&mut self, b: &Batch) {
        self.model
            .forward(&mut self.backend, b, &mut self.kv, &mut self.logits);
    }
}

fn run(r: &mut Bench, b: &Batch, name: &str, tokens: usize, floor_ms: f64) {
    for _ in 0..3 {
        r.step(b);
    }
    let iters = 20;
    let t = Instant::now();
    for _ in 0..iters {
        r.step(b);
    }
    let ms = t.elapsed().as_secs_f64() * 1e3 / iters as f64;
    println!(
        "| {name} | {tokens} | {ms:.3} | {:.0} | {floor_ms:.3} | {:.2}x |",
        tokens as f64 / ms * 1e3,
        ms / floor_ms
    );
}
