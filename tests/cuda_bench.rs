//! GPU benchmark (ignored by default; run by scripts/gpu-check.sh with `--ignored`): decode
//! tokens/s at batch 1, 8, 64, 256 and prefill tokens/s of a SmolLM2-135M-shaped Llama with
//! random bf16 weights (no model file needed), next to two measured floors:
//! - memory bandwidth: a 1 GiB device-to-device copy (bytes read + written / time);
//!   decode floor = bf16 weight bytes / bandwidth per step;
//! - matmul: a 4096^3 bf16 GEMM with f32 output; prefill floor = 2 * matrix params * tokens / FLOP/s.
//!
//! Step times are wall time over whole steps (metadata upload, kernels, argmax, the D2H copy of
//! the sampled ids), after a warm-up; the floors are CUDA-event timed.
#![cfg(feature = "cuda")]

use std::time::Instant;

use cudarc::driver::sys::CUevent_flags;
use half::bf16;
use ponder::backend::cpu::ops::RopeStyle;
use ponder::backend::cuda::device::GpuDevice;
use ponder::backend::cuda::gemm::linear;
use ponder::backend::cuda::{cuda_available, Result};
use ponder::backend::dtype::GgmlType;
use ponder::backend::tensor::{QMatrix, Storage};
use ponder::engine::cuda_runner::{CudaRunner, KvSizing};
use ponder::model::weights::{LayerWeights, Linear, LlamaWeights};
use ponder::model::{BatchInput, LlamaModel, ModelConfig, SeqInput};

const BS: usize = 16;

fn smollm2_shaped() -> LlamaModel {
    let (h, f, layers, nh, nkv, vocab, hd) = (576, 1536, 30, 9, 3, 49152, 64);
    let cfg = ModelConfig {
        arch: ponder::model::arch::LLAMA,
        vocab_size: vocab,
        hidden_size: h,
        intermediate_size: f,
        num_layers: layers,
        num_heads: nh,
        num_kv_heads: nkv,
        head_dim: hd,
        rms_eps: 1e-5,
        rope_theta: 100000.0,
        rope_style: RopeStyle::Interleaved,
        rope_scaling: ponder::model::rope::RopeScaling::None,
        max_position: 8192,
        qkv_bias: false,
        qk_norm: false,
        sliding_window: None,
    };
    let mut seed = 1u32;
    let mut mat = |r: usize, c: usize| {
        seed = seed.wrapping_mul(747796405).wrapping_add(2891336453);
        let s = seed;
        let bytes: Vec<u8> = (0..r * c)
            .flat_map(|i| {
                let x = ((i as u32).wrapping_mul(2654435761) ^ s) >> 8;
                bf16::from_f32((x as f32 / (1u32 << 24) as f32 - 0.5) * 0.1).to_le_bytes()
            })
            .collect();
        QMatrix::new(GgmlType::BF16, r, c, Storage::Owned(bytes.into())).unwrap()
    };
    let lin = |w| Linear::new(w, None);
    let layers_w = (0..layers)
        .map(|_| LayerWeights {
            attn_norm: vec![1.0; h],
            qkv: lin(mat((nh + 2 * nkv) * hd, h)),
            wo: lin(mat(h, nh * hd)),
            ffn_norm: vec![1.0; h],
            gate_up: lin(mat(2 * f, h)),
            down: lin(mat(h, f)),
        })
        .collect();
    let embed = mat(vocab, h);
    LlamaModel::new(
        cfg,
        LlamaWeights {
            lm_head: embed.clone(),
            embed,
            layers: layers_w,
            final_norm: vec![1.0; h],
            rope_freqs: None,
        },
    )
}

/// `n` sequences, each computing `q` tokens at the end of a context of `ctx` tokens.
fn batch(n: usize, q: usize, ctx: usize) -> BatchInput {
    let per = ctx.div_ceil(BS);
    let mut b = BatchInput::default();
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
    if let Err(why) = cuda_available() {
        println!("!!! SKIPPED: no CUDA device ({why}) !!!");
        return;
    }
    let model = smollm2_shaped();
    let mut r = CudaRunner::with_model(&model, 0, KvSizing::FreeFraction(0.4), BS).unwrap();
    let (bw, flops) = floors(r.device()).unwrap();
    let wb = r.weight_bytes() as f64;
    let params = wb / 2.0;
    println!("device: {:?} arch {}", r.device().cc, r.device().arch);
    println!(
        "floors: bandwidth {:.0} GB/s, bf16 GEMM {:.1} TFLOP/s, weights {:.1} MB (bf16)",
        bw / 1e9,
        flops / 1e12,
        wb / 1e6
    );
    println!("| case | tokens/step | step ms | tokens/s | floor ms | step / floor |");
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
    for (n, q) in [(1usize, 512usize), (4, 512)] {
        let b = batch(n, q, q);
        let floor_ms = (2.0 * params * (n * q) as f64 / flops).max(wb / bw) * 1e3;
        run(&mut r, &b, &format!("prefill {n} x {q}"), n * q, floor_ms);
    }
}

fn run(r: &mut CudaRunner, b: &BatchInput, name: &str, tokens: usize, floor_ms: f64) {
    for _ in 0..3 {
        r.forward_greedy(b).unwrap();
    }
    let iters = 20;
    let t = Instant::now();
    for _ in 0..iters {
        r.forward_greedy(b).unwrap();
    }
    let ms = t.elapsed().as_secs_f64() * 1e3 / iters as f64;
    println!(
        "| {name} | {tokens} | {ms:.3} | {:.0} | {floor_ms:.3} | {:.2}x |",
        tokens as f64 / ms * 1e3,
        ms / floor_ms
    );
}
