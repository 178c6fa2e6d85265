//! One test body per model feature, run against every backend (`test_device!`): a small
//! random model (bf16 weights, tied head) is packed by the backend and run through the one
//! forward pass (`model::forward`) on a batch that mixes two sequences' prefills, then decode
//! steps, over scattered cache blocks; every step's logits are compared with a plain f64
//! forward pass written here from the model's definition (no cache, no batching).
//!
//! A backend that cannot run a feature must refuse it at load (`Pack::check`) with a reason;
//! the CPU backend refuses nothing. Without a CUDA device the `cuda` cases print a loud line
//! and return, except with `PONDER_EXPECT_GPU=1`, where they fail.

use ponder::backend::dtype::GgmlType;
use ponder::backend::seam::{Ops, Pack};
use ponder::backend::tensor::{QMatrix, Storage};
use ponder::backend::types::{Batch, KvDtype, RopeStyle, SeqInput};
use ponder::model::arch::{ArchSpec, LLAMA, MISTRAL, QWEN2, QWEN3};
use ponder::model::forward::Model;
use ponder::model::rope::RopeScaling;
use ponder::model::weights::{self, MemSource};
use ponder::model::ModelConfig;

/// `name::cpu` and (with the `cuda` feature) `name::cuda` run `body` on that backend.
macro_rules! test_device {
    ($name:ident, $body:path) => {
        mod $name {
            #[test]
            fn cpu() {
                $body(ponder::backend::cpu::backend::CpuBackend::new());
            }

            #[cfg(feature = "cuda")]
            #[test]
            fn cuda() {
                if let Some(b) = super::cuda_backend() {
                    $body(b);
                }
            }
        }
    };
}

#[cfg(feature = "cuda")]
fn cuda_backend() -> Option<ponder::backend::cuda::backend::CudaBackend> {
    use ponder::backend::cuda::{backend::CudaBackend, cuda_available, device::GpuDevice};
    match cuda_available() {
        Ok(_) => {
            let dev = GpuDevice::new(0).expect("a CUDA device is present but failed to open");
            Some(CudaBackend::new(std::sync::Arc::new(dev)))
        }
        Err(why) if std::env::var("PONDER_EXPECT_GPU").as_deref() == Ok("1") => {
            panic!("PONDER_EXPECT_GPU=1 but there is no usable CUDA device: {why}")
        }
        Err(why) => {
            println!("!!! SKIPPED: no CUDA device ({why}) !!!");
            None
        }
    }
}

fn randf(n: usize, seed: u64, a: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
        })
        .collect()
}

/// The values as bf16 stores them (what every backend reads).
fn bf16_round(v: Vec<f32>) -> Vec<f32> {
    v.into_iter()
        .map(|x| half::bf16::from_f32(x).to_f32())
        .collect()
}

fn bf16_matrix(rows: usize, cols: usize, v: &[f32]) -> QMatrix {
    let bytes: Vec<u8> = v
        .iter()
        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
        .collect();
    QMatrix::new(GgmlType::BF16, rows, cols, Storage::Owned(bytes.into())).unwrap()
}

/// The test model's tensors, kept as f32 for the reference.
struct Params {
    embed: Vec<f32>,
    layers: Vec<LayerParams>,
    out_norm: Vec<f32>,
}

struct LayerParams {
    wq: Vec<f32>,
    wk: Vec<f32>,
    wv: Vec<f32>,
    wo: Vec<f32>,
    wg: Vec<f32>,
    wu: Vec<f32>,
    wd: Vec<f32>,
    bias: Option<[Vec<f32>; 3]>,
    qk_norm: Option<[Vec<f32>; 2]>,
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
}

fn params(cfg: &ModelConfig, seed: u64) -> Params {
    let (h, f, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
    let (qd, kvd) = (cfg.num_heads * hd, cfg.num_kv_heads * hd);
    let mut s = seed * 1000;
    let mut r = |n: usize, a: f32| {
        s += 1;
        bf16_round(randf(n, s, a))
    };
    let embed = r(cfg.vocab_size * h, 1.0);
    let mut layers = Vec::new();
    for _ in 0..cfg.num_layers {
        let mut near_one = |n: usize| -> Vec<f32> { r(n, 0.2).iter().map(|x| 1.0 + x).collect() };
        let (attn_norm, ffn_norm) = (near_one(h), near_one(h));
        let qk_norm = cfg.qk_norm.then(|| [near_one(hd), near_one(hd)]);
        layers.push(LayerParams {
            attn_norm,
            ffn_norm,
            qk_norm,
            wq: r(qd * h, 0.2),
            wk: r(kvd * h, 0.2),
            wv: r(kvd * h, 0.2),
            wo: r(h * qd, 0.2),
            wg: r(f * h, 0.2),
            wu: r(f * h, 0.2),
            wd: r(h * f, 0.2),
            bias: cfg.qkv_bias.then(|| [r(qd, 0.5), r(kvd, 0.5), r(kvd, 0.5)]),
        });
    }
    let out_norm = r(h, 0.2).iter().map(|x| 1.0 + x).collect();
    Params {
        embed,
        layers,
        out_norm,
    }
}

fn source(cfg: &ModelConfig, p: &Params) -> MemSource {
    let (h, f, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
    let (qd, kvd) = (cfg.num_heads * hd, cfg.num_kv_heads * hd);
    let mut src = MemSource::default();
    src.matrix(
        "token_embd.weight",
        bf16_matrix(cfg.vocab_size, h, &p.embed),
    );
    for (i, l) in p.layers.iter().enumerate() {
        let n = |x: &str| format!("blk.{i}.{x}");
        src.matrix(&n("attn_q.weight"), bf16_matrix(qd, h, &l.wq));
        src.matrix(&n("attn_k.weight"), bf16_matrix(kvd, h, &l.wk));
        src.matrix(&n("attn_v.weight"), bf16_matrix(kvd, h, &l.wv));
        src.matrix(&n("attn_output.weight"), bf16_matrix(h, qd, &l.wo));
        src.matrix(&n("ffn_gate.weight"), bf16_matrix(f, h, &l.wg));
        src.matrix(&n("ffn_up.weight"), bf16_matrix(f, h, &l.wu));
        src.matrix(&n("ffn_down.weight"), bf16_matrix(h, f, &l.wd));
        if let Some([bq, bk, bv]) = &l.bias {
            src.vector(&n("attn_q.bias"), bq);
            src.vector(&n("attn_k.bias"), bk);
            src.vector(&n("attn_v.bias"), bv);
        }
        if let Some([qn, kn]) = &l.qk_norm {
            src.vector(&n("attn_q_norm.weight"), qn);
            src.vector(&n("attn_k_norm.weight"), kn);
        }
        src.vector(&n("attn_norm.weight"), &l.attn_norm);
        src.vector(&n("ffn_norm.weight"), &l.ffn_norm);
    }
    src.vector("output_norm.weight", &p.out_norm);
    src
}

/// `y [out] = W [out, in] x`.
fn matvec(w: &[f32], x: &[f64]) -> Vec<f64> {
    w.chunks(x.len())
        .map(|row| row.iter().zip(x).map(|(&a, &b)| a as f64 * b).sum())
        .collect()
}

fn rmsnorm(x: &[f64], w: &[f32], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, &w)| v * r * w as f64).collect()
}

/// Rotates one head `v [hd]` at `pos`.
fn rope(v: &mut [f64], pos: usize, inv_freq: &[f64], style: RopeStyle) {
    let half = v.len() / 2;
    for (i, f) in inv_freq.iter().enumerate() {
        let (a, b) = match style {
            RopeStyle::Neox => (i, i + half),
            RopeStyle::Interleaved => (2 * i, 2 * i + 1),
        };
        let (s, c) = (pos as f64 * f).sin_cos();
        let (x, y) = (v[a], v[b]);
        v[a] = x * c - y * s;
        v[b] = x * s + y * c;
    }
}

/// The logits `[vocab]` after each of `tokens` (positions 0..), by the definition.
fn reference(cfg: &ModelConfig, p: &Params, inv_freq: &[f64], tokens: &[u32]) -> Vec<Vec<f64>> {
    let (h, hd, eps) = (cfg.hidden_size, cfg.head_dim, cfg.rms_eps as f64);
    let (nh, nkv) = (cfg.num_heads, cfg.num_kv_heads);
    let group = nh / nkv;
    let mut xs: Vec<Vec<f64>> = tokens
        .iter()
        .map(|&t| {
            let t = t as usize;
            p.embed[t * h..(t + 1) * h]
                .iter()
                .map(|&v| v as f64)
                .collect()
        })
        .collect();
    for l in &p.layers {
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        let mut qs = Vec::new();
        for (pos, x) in xs.iter().enumerate() {
            let xn = rmsnorm(x, &l.attn_norm, eps);
            let (mut q, mut k, mut v) =
                (matvec(&l.wq, &xn), matvec(&l.wk, &xn), matvec(&l.wv, &xn));
            if let Some([bq, bk, bv]) = &l.bias {
                for (y, b) in [(&mut q, bq), (&mut k, bk), (&mut v, bv)] {
                    y.iter_mut()
                        .zip(b.iter())
                        .for_each(|(y, &b)| *y += b as f64);
                }
            }
            for (y, norm) in [(&mut q, 0), (&mut k, 1)] {
                for head in y.chunks_mut(hd) {
                    if let Some(n) = &l.qk_norm {
                        let normed = rmsnorm(head, &n[norm], eps);
                        head.copy_from_slice(&normed);
                    }
                    rope(head, pos, inv_freq, cfg.rope_style);
                }
            }
            qs.push(q);
            ks.push(k);
            vs.push(v);
        }
        let scale = 1.0 / (hd as f64).sqrt();
        for (i, x) in xs.iter_mut().enumerate() {
            let first = cfg.sliding_window.map_or(0, |w| (i + 1).saturating_sub(w));
            let mut attn = vec![0f64; nh * hd];
            for head in 0..nh {
                let kvh = head / group;
                let q = &qs[i][head * hd..(head + 1) * hd];
                let scores: Vec<f64> = (first..=i)
                    .map(|j| {
                        let k = &ks[j][kvh * hd..(kvh + 1) * hd];
                        q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() * scale
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (w, j) in e.iter().zip(first..=i) {
                    let v = &vs[j][kvh * hd..(kvh + 1) * hd];
                    for d in 0..hd {
                        attn[head * hd + d] += w / z * v[d];
                    }
                }
            }
            let o = matvec(&l.wo, &attn);
            x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);
            let xn = rmsnorm(x, &l.ffn_norm, eps);
            let (g, u) = (matvec(&l.wg, &xn), matvec(&l.wu, &xn));
            let a: Vec<f64> = g
                .iter()
                .zip(&u)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let d = matvec(&l.wd, &a);
            x.iter_mut().zip(&d).for_each(|(x, d)| *x += d);
        }
    }
    xs.iter()
        .map(|x| matvec(&p.embed, &rmsnorm(x, &p.out_norm, eps)))
        .collect()
}

fn config(arch: &'static ArchSpec) -> ModelConfig {
    ModelConfig {
        arch,
        vocab_size: 384,
        hidden_size: 64,
        intermediate_size: 160,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 16,
        rms_eps: 1e-5,
        rope_theta: 10000.0,
        rope_style: RopeStyle::Neox,
        rope_scaling: RopeScaling::None,
        max_position: 4096,
        qkv_bias: false,
        qk_norm: false,
        sliding_window: None,
    }
}

const BS: usize = 4;

/// Positions `start..start + n` of a sequence with block table `table`.
fn push(b: &mut Batch, tokens: &[u32], start: usize, table: &[u32], logits: bool) {
    let row = b.token_ids.len();
    b.seqs.push(SeqInput {
        query_start: row,
        query_len: tokens.len(),
        context_len: start + tokens.len(),
        block_table: table.to_vec(),
    });
    for (i, &t) in tokens.iter().enumerate() {
        let p = start + i;
        b.token_ids.push(t);
        b.positions.push(p);
        b.slot_mapping.push(table[p / BS] as usize * BS + p % BS);
    }
    if logits {
        b.logits_rows.push(row + tokens.len() - 1);
    }
}

/// Two sequences (prefills of 11 and 6 tokens in one step, then 8 decode steps each) on
/// backend `b`; every returned row must match the reference within `bound` of the largest
/// reference logit.
fn matches_reference<B: Ops + Pack>(mut b: B, cfg: ModelConfig, seed: u64) {
    let kv_dtype = KvDtype::F16;
    if let Err(why) = b.check(&Model::<B>::needs(&cfg, kv_dtype)) {
        assert_ne!(B::NAME, "cpu", "the CPU backend refuses nothing: {why}");
        println!("{} backend refuses {}: {why}", B::NAME, cfg.arch.name);
        return;
    }
    let p = params(&cfg, seed);
    let model = Model::new(
        cfg.clone(),
        weights::load(&b, &cfg, &source(&cfg, &p)).unwrap(),
    );
    let inv_freq = cfg.rope_inv_freq(None);
    let mut kv = b.kv_cache(model.kv_shape(16, BS), kv_dtype).unwrap();
    // Scattered, interleaved blocks; 5 each covers 20 positions.
    let tables: [Vec<u32>; 2] = [vec![3, 9, 1, 14, 6], vec![12, 2, 7, 0, 10]];
    let mut seqs: [Vec<u32>; 2] = [
        (0..11).map(|i| (i * 37 + 5) % 384).collect(),
        (0..6).map(|i| (i * 101 + 17) % 384).collect(),
    ];
    // bf16 activations on a GPU move logits by ~1% of their range; the CPU keeps f32
    // activations and an f16 cache.
    let bound = if B::NAME == "cpu" { 2e-3 } else { 3e-2 };
    let mut logits = Vec::new();
    let mut worst = 0f64;
    for step in 0..9 {
        let mut batch = Batch::default();
        for (s, toks) in seqs.iter().enumerate() {
            let start = if step == 0 { 0 } else { toks.len() - 1 };
            push(&mut batch, &toks[start..], start, &tables[s], true);
        }
        model.forward(&mut b, &batch, &mut kv, &mut logits);
        for (s, toks) in seqs.iter_mut().enumerate() {
            let want = reference(&cfg, &p, &inv_freq, toks);
            let want = want.last().unwrap();
            let got = &logits[s * cfg.vocab_size..(s + 1) * cfg.vocab_size];
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(want)
                .fold(0f64, |m, (&g, w)| m.max((g as f64 - w).abs()));
            worst = worst.max(err / scale);
            assert!(
                err / scale < bound,
                "{} on {}: step {step}, sequence {s}: logits off by {err:.3e} (scale {scale:.2})",
                cfg.arch.name,
                B::NAME
            );
            // Continue with the reference's argmax (both sides then see the same tokens).
            let next = (0..want.len())
                .max_by(|&a, &c| want[a].total_cmp(&want[c]))
                .unwrap();
            toks.push(next as u32);
        }
    }
    println!(
        "{} on {}: worst relative logit error {worst:.2e} (bound {bound:.0e})",
        cfg.arch.name,
        B::NAME
    );
}

fn llama<B: Ops + Pack>(b: B) {
    let mut cfg = config(LLAMA);
    cfg.rope_style = RopeStyle::Interleaved;
    cfg.rope_scaling = RopeScaling::Linear { factor: 2.0 };
    matches_reference(b, cfg, 1);
}

fn qwen2<B: Ops + Pack>(b: B) {
    let mut cfg = config(QWEN2);
    cfg.qkv_bias = true;
    cfg.num_heads = 8;
    matches_reference(b, cfg, 2);
}

fn qwen3<B: Ops + Pack>(b: B) {
    let mut cfg = config(QWEN3);
    cfg.qk_norm = true;
    // head_dim * heads (4 * 32) differs from the hidden size (64), as in Qwen3.
    cfg.head_dim = 32;
    matches_reference(b, cfg, 3);
}

fn mistral_window<B: Ops + Pack>(b: B) {
    let mut cfg = config(MISTRAL);
    // Shorter than both sequences by their last steps: the window cuts in.
    cfg.sliding_window = Some(7);
    matches_reference(b, cfg, 4);
}

test_device!(llama_interleaved_linear_rope, super::llama);
test_device!(qwen2_qkv_bias_gqa4, super::qwen2);
test_device!(qwen3_qk_norm_wide_heads, super::qwen3);
test_device!(mistral_sliding_window, super::mistral_window);

#[test]
fn the_reference_differs_when_the_window_cuts_in() {
    // Guards the window test: a 7-token window changes the logits of a 17-token sequence.
    let cfg = config(MISTRAL);
    let p = params(&cfg, 4);
    let toks: Vec<u32> = (0..17).map(|i| (i * 37 + 5) % 384).collect();
    let inv = cfg.rope_inv_freq(None);
    let full = reference(&cfg, &p, &inv, &toks);
    let mut w = cfg.clone();
    w.sliding_window = Some(7);
    let windowed = reference(&w, &p, &inv, &toks);
    let d = full[16]
        .iter()
        .zip(&windowed[16])
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(d > 0.05, "window changed the last logits by only {d}");
    assert_eq!(full[5], windowed[5], "positions inside the window agree");
}
