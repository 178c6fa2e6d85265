//! Greedy decode of an in-memory random model (bf16 weights, so both backends read identical
//! weights) through the one forward pass (`model::forward`) on the CPU and on the CUDA backend:
//! the first 32 generated tokens must be identical. Two shapes: a Llama (no bias) and a
//! Qwen2-style model with Q/K/V bias and more query heads per KV head.

use std::sync::Arc;

use super::*;
use ponder::backend::cpu::backend::CpuBackend;
use ponder::backend::cuda::backend::CudaBackend;
use ponder::backend::seam::{Ops, Pack};
use ponder::backend::types::{Batch, KvDtype};
use ponder::model::arch::{ArchSpec, LLAMA, QWEN2};
use ponder::model::forward::Model;
use ponder::model::rope::RopeScaling;
use ponder::model::weights::{self, MemSource};
use ponder::model::ModelConfig;

#[allow(clippy::too_many_arguments)]
pub(crate) fn config(
    arch: &'static ArchSpec,
    (h, f, layers): (usize, usize, usize),
    (nh, nkv, hd): (usize, usize, usize),
    vocab: usize,
    qkv_bias: bool,
    style: RopeStyle,
) -> ModelConfig {
    ModelConfig {
        arch,
        vocab_size: vocab,
        hidden_size: h,
        intermediate_size: f,
        num_layers: layers,
        num_heads: nh,
        num_kv_heads: nkv,
        head_dim: hd,
        rms_eps: 1e-5,
        rope_theta: 10000.0,
        rope_style: style,
        rope_scaling: RopeScaling::None,
        max_position: 8192,
        qkv_bias,
        qk_norm: false,
        sliding_window: None,
    }
}

/// Every tensor `cfg` needs, random bf16 matrices and f32 vectors drawn from `seed` (matrix
/// entries in +-`a`, embeddings in +-1, norms near 1), under canonical names; the LM head is
/// tied to the embedding.
pub(crate) fn random_source(cfg: &ModelConfig, seed: u64, a: f32) -> MemSource {
    let (h, f, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
    let (qd, kvd) = (cfg.num_heads * hd, cfg.num_kv_heads * hd);
    let mut src = MemSource::default();
    let mut s = seed;
    let mut mat = |src: &mut MemSource, name: &str, r: usize, c: usize, a: f32| {
        s += 1;
        src.matrix(name, bf16_matrix(r, c, &bf(&randf(r * c, s, a))));
    };
    mat(&mut src, "token_embd.weight", cfg.vocab_size, h, 1.0);
    let near_one =
        |n: usize, seed: u64| -> Vec<f32> { randf(n, seed, 0.1).iter().map(|x| 1.0 + x).collect() };
    for l in 0..cfg.num_layers {
        let n = |x: &str| format!("blk.{l}.{x}");
        mat(&mut src, &n("attn_q.weight"), qd, h, a);
        mat(&mut src, &n("attn_k.weight"), kvd, h, a);
        mat(&mut src, &n("attn_v.weight"), kvd, h, a);
        mat(&mut src, &n("attn_output.weight"), h, qd, a);
        mat(&mut src, &n("ffn_gate.weight"), f, h, a);
        mat(&mut src, &n("ffn_up.weight"), f, h, a);
        mat(&mut src, &n("ffn_down.weight"), h, f, a);
        if cfg.qkv_bias {
            let sd = seed * 1000 + l as u64;
            src.vector(&n("attn_q.bias"), &randf(qd, sd + 1, 0.5));
            src.vector(&n("attn_k.bias"), &randf(kvd, sd + 2, 0.5));
            src.vector(&n("attn_v.bias"), &randf(kvd, sd + 3, 0.5));
        }
        src.vector(&n("attn_norm.weight"), &near_one(h, seed * 77 + l as u64));
        src.vector(&n("ffn_norm.weight"), &near_one(h, seed * 79 + l as u64));
    }
    src.vector("output_norm.weight", &near_one(h, seed * 83));
    src
}

fn argmax(row: &[f32]) -> u32 {
    let mut b = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[b] {
            b = i;
        }
    }
    b as u32
}

const STEPS: usize = 32;
const BLOCK: usize = 16;
const PROMPT: [u32; 9] = [1, 500, 77, 1999, 3, 3, 42, 1024, 9];

/// The random model of a test: layers of amplitude 0.15 and an untied LM head (a tied head
/// on a random model keeps picking the last input token, which would make "32 identical
/// tokens" a check of one token).
fn test_source(cfg: &ModelConfig, seed: u64) -> MemSource {
    let mut src = random_source(cfg, seed, 0.15);
    let (v, h) = (cfg.vocab_size, cfg.hidden_size);
    src.matrix(
        "output.weight",
        bf16_matrix(v, h, &bf(&randf(v * h, seed + 9, 0.5))),
    );
    src
}

/// Greedy decode of `STEPS` tokens after `PROMPT` through `model::forward` on backend `b`:
/// the tokens and the last step's logits.
fn greedy<B: Ops + Pack>(
    mut b: B,
    cfg: &ModelConfig,
    src: &MemSource,
    kv: KvDtype,
) -> (Vec<u32>, Vec<f32>) {
    let model = Model::new(cfg.clone(), weights::load(&b, cfg, src).unwrap());
    let table: Vec<u32> = (1..9).collect(); // 8 blocks: 128 positions
    let mut cache = b.kv_cache(model.kv_shape(16, BLOCK), kv).unwrap();
    let mut toks = PROMPT.to_vec();
    let mut logits = Vec::new();
    for step in 0..STEPS {
        let n = toks.len();
        let batch = if step == 0 {
            Batch::single(&PROMPT, 0, &table, BLOCK)
        } else {
            Batch::single(&toks[n - 1..], n - 1, &table, BLOCK)
        };
        model.forward(&mut b, &batch, &mut cache, &mut logits);
        toks.push(argmax(&logits));
    }
    (toks[PROMPT.len()..].to_vec(), logits)
}

fn greedy_32(cfg: ModelConfig, seed: u64) {
    let src = test_source(&cfg, seed);
    // The CPU reference keeps K/V exactly (f32 cache).
    let (want, cpu_logits) = greedy(CpuBackend::new(), &cfg, &src, KvDtype::F32);
    let distinct: std::collections::BTreeSet<u32> = want.iter().copied().collect();
    assert!(
        distinct.len() >= 8,
        "{}: the reference decode is degenerate ({} distinct tokens): {want:?}",
        cfg.arch.name,
        distinct.len()
    );
    println!("{}: CPU reference: {want:?}", cfg.arch.name);
    let Some(dev) = device() else { return };
    let (got, gpu_logits) = greedy(CudaBackend::new(Arc::new(dev)), &cfg, &src, KvDtype::F16);
    if let Some(step) = (0..STEPS).find(|&i| got[i] != want[i]) {
        panic!(
            "{}: greedy tokens diverge at step {step}: cpu {:?}, gpu {:?}",
            cfg.arch.name,
            &want[..=step],
            &got[..=step]
        );
    }
    check("final-step logits", &gpu_logits, &cpu_logits, 1e-2);
    println!(
        "{}: greedy decode: 32 tokens identical ({} distinct): {got:?}",
        cfg.arch.name,
        distinct.len()
    );
}

/// A 3-layer Llama (hidden 128, 4 query / 2 KV heads of 32, vocab 2048).
pub(crate) fn small_llama() -> ModelConfig {
    config(
        LLAMA,
        (128, 320, 3),
        (4, 2, 32),
        2048,
        false,
        RopeStyle::Neox,
    )
}

#[test]
fn greedy_decode_32_tokens_identical_llama() {
    greedy_32(small_llama(), 100);
}

#[test]
fn greedy_decode_32_tokens_identical_qwen2_bias() {
    let cfg = config(
        QWEN2,
        (128, 256, 2),
        (8, 2, 16),
        2048,
        true,
        RopeStyle::Neox,
    );
    greedy_32(cfg, 200);
}
