//! Test support: the default model's path, a minimal GGUF writer, and tiny random-weight
//! Llama checkpoints (GGUF and Hugging Face layout) that reuse the default model's tokenizer.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ponder::model::gguf::{GgufFile, Value};
use ponder::model::loader::default_model_candidates;

/// The default model; fails loudly (never skips) when it has not been fetched.
pub fn default_model() -> PathBuf {
    default_model_candidates()
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "default model missing: run `scripts/fetch-model` (the README's test command does)"
            )
        })
}

/// Deterministic pseudo-random floats in [-a, a).
pub fn randf(n: usize, seed: u64, a: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
        })
        .collect()
}

/// A GGUF file under construction.
#[derive(Default)]
pub struct GgufBuilder {
    kv: Vec<(String, Value)>,
    /// name, dims (ggml order: innermost first), ggml type id, bytes
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn type_id(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend(x.to_le_bytes()),
        Value::I16(x) => out.extend(x.to_le_bytes()),
        Value::U32(x) => out.extend(x.to_le_bytes()),
        Value::I32(x) => out.extend(x.to_le_bytes()),
        Value::F32(x) => out.extend(x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::Array(a) => {
            let inner = a.first().map(type_id).unwrap_or(4);
            out.extend(inner.to_le_bytes());
            out.extend((a.len() as u64).to_le_bytes());
            for x in a {
                put_value(out, x);
            }
        }
        Value::U64(x) => out.extend(x.to_le_bytes()),
        Value::I64(x) => out.extend(x.to_le_bytes()),
        Value::F64(x) => out.extend(x.to_le_bytes()),
    }
}

impl GgufBuilder {
    pub fn kv(&mut self, k: &str, v: Value) -> &mut Self {
        self.kv.push((k.into(), v));
        self
    }

    /// An f32 tensor of PyTorch shape `shape` (outermost first).
    pub fn f32_tensor(&mut self, name: &str, shape: &[usize], data: &[f32]) -> &mut Self {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "{name}");
        let dims = shape.iter().rev().map(|&d| d as u64).collect();
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensors.push((name.into(), dims, 0, bytes));
        self
    }

    pub fn remove_tensor(&mut self, name: &str) -> &mut Self {
        self.tensors.retain(|t| t.0 != name);
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            put_str(&mut out, k);
            out.extend(type_id(v).to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offset = 0u64;
        for (name, dims, ty, data) in &self.tensors {
            put_str(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset += (data.len() as u64).div_ceil(32) * 32;
        }
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
        for (_, _, _, data) in &self.tensors {
            out.extend(data);
            while !out.len().is_multiple_of(32) {
                out.push(0);
            }
        }
        out
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.bytes()).unwrap();
    }
}

/// Shapes of a tiny Llama used in tests.
pub struct Tiny {
    pub hidden: usize,
    pub ffn: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
}

pub const TINY: Tiny = Tiny {
    hidden: 64,
    ffn: 96,
    layers: 2,
    heads: 4,
    kv_heads: 2,
    vocab: 49152,
};

/// HF-layout weights of a tiny random model: (HF name, shape, values).
pub fn tiny_hf_weights(t: &Tiny, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let hd = t.hidden / t.heads;
    let mut w = vec![
        (
            "model.embed_tokens.weight".to_string(),
            vec![t.vocab, t.hidden],
        ),
        ("model.norm.weight".to_string(), vec![t.hidden]),
    ];
    for l in 0..t.layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        w.push((p("input_layernorm.weight"), vec![t.hidden]));
        w.push((p("post_attention_layernorm.weight"), vec![t.hidden]));
        w.push((p("self_attn.q_proj.weight"), vec![t.heads * hd, t.hidden]));
        w.push((
            p("self_attn.k_proj.weight"),
            vec![t.kv_heads * hd, t.hidden],
        ));
        w.push((
            p("self_attn.v_proj.weight"),
            vec![t.kv_heads * hd, t.hidden],
        ));
        w.push((p("self_attn.o_proj.weight"), vec![t.hidden, t.heads * hd]));
        w.push((p("mlp.gate_proj.weight"), vec![t.ffn, t.hidden]));
        w.push((p("mlp.up_proj.weight"), vec![t.ffn, t.hidden]));
        w.push((p("mlp.down_proj.weight"), vec![t.hidden, t.ffn]));
    }
    w.into_iter()
        .enumerate()
        .map(|(i, (n, s))| {
            let len = s.iter().product();
            let v = if s.len() == 1 {
                randf(len, seed + i as u64, 0.2)
                    .iter()
                    .map(|x| 1.0 + x)
                    .collect()
            } else {
                randf(len, seed + i as u64, 0.5)
            };
            (n, s, v)
        })
        .collect()
}

/// llama.cpp's Q/K row permutation (HF rotate-half -> interleaved pairs).
pub fn permute_qk(w: &[f32], n_heads: usize, rows: usize, cols: usize) -> Vec<f32> {
    let hd = rows / n_heads;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_heads {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let dst = h * hd + i * 2 + j;
                let src = h * hd + j * (hd / 2) + i;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// A GGUF builder for the tiny model: real SmolLM2 tokenizer metadata, the given weights.
pub fn tiny_gguf(t: &Tiny, seed: u64) -> GgufBuilder {
    let src = GgufFile::open(&default_model()).unwrap();
    let mut b = GgufBuilder::default();
    for (k, v) in &src.metadata {
        if k.starts_with("tokenizer.") {
            b.kv(k, v.clone());
        }
    }
    b.kv("general.architecture", Value::String("llama".into()))
        .kv("llama.block_count", Value::U32(t.layers as u32))
        .kv("llama.context_length", Value::U32(2048))
        .kv("llama.embedding_length", Value::U32(t.hidden as u32))
        .kv("llama.feed_forward_length", Value::U32(t.ffn as u32))
        .kv("llama.attention.head_count", Value::U32(t.heads as u32))
        .kv(
            "llama.attention.head_count_kv",
            Value::U32(t.kv_heads as u32),
        )
        .kv("llama.rope.freq_base", Value::F32(10000.0))
        .kv("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    for (name, shape, mut v) in tiny_hf_weights(t, seed) {
        let canon = ponder::model::weights::hf_to_canonical(&name);
        if canon.ends_with("attn_q.weight") {
            v = permute_qk(&v, t.heads, shape[0], shape[1]);
        } else if canon.ends_with("attn_k.weight") {
            v = permute_qk(&v, t.kv_heads, shape[0], shape[1]);
        }
        b.f32_tensor(&canon, &shape, &v);
    }
    b
}
