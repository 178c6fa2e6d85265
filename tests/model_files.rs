//! Loading checkpoints: bad GGUF files give clear errors (never panics), and a Hugging Face
//! safetensors directory gives the same logits as the equivalent GGUF (rope styles, name
//! mapping, sharding, bf16).

mod common;

use common::*;
use ponder::model::gguf::Value;
use ponder::model::{load_model, Batch, LoadedModel};

fn load_err(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.gguf");
    std::fs::write(&p, bytes).unwrap();
    match load_model(&p) {
        Ok(_) => panic!("loading a bad file succeeded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn wrong_magic_is_named() {
    let e = load_err(b"GGUX\x03\0\0\0aaaaaaaaaaaaaaaaaaaaaaaaa");
    assert_eq!(
        e,
        "not a GGUF file: magic is [71, 71, 85, 88], expected \"GGUF\""
    );
}

#[test]
fn truncated_header_and_truncated_data() {
    let real = std::fs::read(default_model()).unwrap();
    let e = load_err(&real[..4096]);
    assert!(e.starts_with("GGUF file truncated: needed"), "{e}");
    let e = load_err(&real[..real.len() - 1000]);
    assert!(e.starts_with("GGUF file truncated: needed"), "{e}");
    assert!(
        e.ends_with(&format!("file has {}", real.len() - 1000)),
        "{e}"
    );
}

#[test]
fn unsupported_type_missing_tensor_and_shape_mismatch() {
    let mut b = tiny_gguf(&TINY, 1);
    b.remove_tensor("blk.1.ffn_up.weight");
    assert_eq!(load_err(&b.bytes()), "missing tensor `blk.1.ffn_up.weight`");

    let mut b = tiny_gguf(&TINY, 1);
    b.remove_tensor("blk.0.attn_k.weight");
    b.f32_tensor("blk.0.attn_k.weight", &[16, 64], &vec![0.0; 16 * 64]);
    assert_eq!(
        load_err(&b.bytes()),
        "tensor `blk.0.attn_k.weight` has shape [16, 64], expected [32, 64]"
    );

    let mut bytes = tiny_gguf(&TINY, 1).bytes();
    // Patch the type id of the first tensor (token_embd, f32 = 0) to IQ4_NL (20), a type
    // ponder does not read: the load names the tensor and the type.
    let key = b"token_embd.weight";
    let pos = bytes.windows(key.len()).position(|w| w == key).unwrap();
    let ty_at = pos + key.len() + 4 + 2 * 8;
    bytes[ty_at..ty_at + 4].copy_from_slice(&20u32.to_le_bytes());
    assert_eq!(
        load_err(&bytes),
        "tensor `token_embd.weight` has unsupported type IQ4_NL (supported: F32, F16, BF16, \
         Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K)"
    );
    // TQ2_0 (35) likewise.
    bytes[ty_at..ty_at + 4].copy_from_slice(&35u32.to_le_bytes());
    assert!(load_err(&bytes).contains("has unsupported type TQ2_0"));

    let mut b = tiny_gguf(&TINY, 1);
    b.kv("general.architecture", Value::String("gptneox".into()));
    assert_eq!(
        load_err(&b.bytes()),
        "model config: unsupported architecture `gptneox` (supported: llama, mistral, qwen2, qwen3)"
    );
}

#[test]
fn missing_default_model_path_names_the_fetch_command() {
    let e = load_model(std::path::Path::new("/nonexistent/x.gguf"))
        .err()
        .unwrap()
        .to_string();
    assert_eq!(e, "model path /nonexistent/x.gguf does not exist");
}

fn logits(m: &LoadedModel, ids: &[u32]) -> Vec<f32> {
    let table: Vec<u32> = (1..=8).collect();
    let mut kv = m.model.new_kv_cache(9, 16);
    m.model.run(&Batch::single(ids, 0, &table, 16), &mut kv)
}

/// Writes the tiny model as a Hugging Face directory (two shards, `dtype`) and returns it.
fn write_hf_dir(dir: &std::path::Path, bf16: bool) {
    let w = tiny_hf_weights(&TINY, 1);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = w
        .iter()
        .map(|(n, s, v)| {
            let b = if bf16 {
                v.iter()
                    .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                    .collect()
            } else {
                v.iter().flat_map(|x| x.to_le_bytes()).collect()
            };
            (n.clone(), s.clone(), b)
        })
        .collect();
    let dt = if bf16 {
        safetensors::Dtype::BF16
    } else {
        safetensors::Dtype::F32
    };
    let (a, b) = bytes.split_at(bytes.len() / 2);
    for (i, part) in [a, b].iter().enumerate() {
        let views: Vec<(String, safetensors::tensor::TensorView)> = part
            .iter()
            .map(|(n, s, b)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(dt, s.clone(), b).unwrap(),
                )
            })
            .collect();
        let out = safetensors::serialize(views, None).unwrap();
        std::fs::write(
            dir.join(format!("model-0000{}-of-00002.safetensors", i + 1)),
            out,
        )
        .unwrap();
    }
    let cfg = serde_json::json!({"model_type": "llama", "vocab_size": TINY.vocab,
        "hidden_size": TINY.hidden, "intermediate_size": TINY.ffn,
        "num_hidden_layers": TINY.layers, "num_attention_heads": TINY.heads,
        "num_key_value_heads": TINY.kv_heads, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": true});
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let g = ponder::model::gguf::GgufFile::open(&default_model()).unwrap();
    let tok = ponder::model::tokenizer::Tokenizer::from_gguf(&g).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tok.to_json()).unwrap();
    let tmpl = g.get("tokenizer.chat_template").unwrap().as_str().unwrap();
    let tc = serde_json::json!({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
        "add_bos_token": false, "chat_template": tmpl});
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
}

#[test]
fn hf_directory_matches_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let gpath = dir.path().join("tiny.gguf");
    tiny_gguf(&TINY, 1).write(&gpath);
    let g = load_model(&gpath).unwrap();
    let hf_dir = dir.path().join("hf");
    std::fs::create_dir(&hf_dir).unwrap();
    write_hf_dir(&hf_dir, false);
    let h = load_model(&hf_dir).unwrap();
    assert_eq!(h.tokenizer.eos_ids, vec![2]);
    let ids = h
        .tokenizer
        .encode("Hello there, how are you today? 1234", false)
        .unwrap();
    assert_eq!(
        ids,
        g.tokenizer
            .encode("Hello there, how are you today? 1234", false)
            .unwrap()
    );
    let (a, b) = (logits(&g, &ids), logits(&h, &ids));
    assert_eq!(a.len(), TINY.vocab);
    let max_diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        max_diff < 1e-4,
        "GGUF vs HF f32 logits differ by {max_diff}"
    );

    let bf_dir = dir.path().join("hfbf16");
    std::fs::create_dir(&bf_dir).unwrap();
    write_hf_dir(&bf_dir, true);
    let c = logits(&load_model(&bf_dir).unwrap(), &ids);
    let scale = a.iter().map(|x| x.abs()).fold(0f32, f32::max);
    let max_diff = a
        .iter()
        .zip(&c)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        max_diff < 0.02 * scale,
        "bf16 logits differ by {max_diff} (scale {scale})"
    );
}
