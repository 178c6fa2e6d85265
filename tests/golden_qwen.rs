//! Golden tests for Qwen2.5-Coder-0.5B-Instruct Q4_K_M (qwen2: NeoX RoPE, QKV bias, untied
//! output; Q5_0, Q8_0, Q4_K, Q6_K and F32 tensors) against the independent Python reference
//! (tests/reference/make_goldens_qwen.py: numpy float64 on gguf-py's dequantized weights, the
//! HF `tokenizers` package, jinja2 as transformers configures it): tokenizer ids, chat-template
//! renderings (with tools and tool calls), greedy generations token by token and first-step
//! logits.
//!
//! The model is `models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf` (`scripts/fetch-model
//! qwen2.5-0.5b`). When it is missing each test prints a loud SKIPPED line and passes, except
//! with `CI=true`, where it fails. The forward-pass tests (`qwen05_forward_*`) run the model
//! and are meant for a release build (`cargo test --release --test golden_qwen`, as
//! scripts/test does); in a debug build they skip loudly (fail under `CI=true`).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use ponder::backend::cpu::backend::CpuBackend;
use ponder::backend::KvDtype;
use ponder::engine::ActBits;
use ponder::model::gguf::GgufFile;
use ponder::model::loader::default_model_candidates;
use ponder::model::template::{template_value, ChatTemplate, TemplateValue, CHATML};
use ponder::model::tokenizer::Tokenizer;
use ponder::model::{load_model, LoadedModel};
use ponder::sample::RawSamplingParams;
use serde_json::Value;

const MODEL_FILE: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips (loudly) or, under `CI=true`, fails.
fn skip(why: &str) {
    if in_ci() {
        panic!("{why} (CI=true: not skipping)");
    }
    eprintln!("\n*** SKIPPED: {why} ***\n");
}

/// The model's path, looked for where the default model is (`$PONDER_MODEL_DIR`, `models/`).
fn model_path() -> Option<PathBuf> {
    let found = default_model_candidates()
        .into_iter()
        .map(|p| p.with_file_name(MODEL_FILE))
        .find(|p| p.is_file());
    if found.is_none() {
        skip(&format!(
            "{MODEL_FILE} is missing: run `scripts/fetch-model qwen2.5-0.5b`"
        ));
    }
    found
}

/// Tokenizer and template only (no weights): cheap in any build.
fn tokenizer_and_template() -> Option<(Tokenizer, ChatTemplate)> {
    let g = GgufFile::open(&model_path()?).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    let src = g.get("tokenizer.chat_template").and_then(|v| v.as_str());
    let tpl = ChatTemplate::new(src.unwrap_or(CHATML), &tok.bos_token, &tok.eos_token).unwrap();
    Some((tok, tpl))
}

/// The loaded model, shared by the forward-pass tests; `None` = skipped.
fn model(test: &str) -> Option<&'static Arc<LoadedModel>> {
    if cfg!(debug_assertions) {
        skip(&format!(
            "{test} runs the 0.5B model and needs a release build: \
             `cargo test --release --test golden_qwen`"
        ));
        return None;
    }
    static MODEL: OnceLock<Option<Arc<LoadedModel>>> = OnceLock::new();
    MODEL
        .get_or_init(|| model_path().map(|p| Arc::new(load_model(&p).unwrap())))
        .as_ref()
}

fn golden_text(name: &str) -> String {
    let p = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(p).unwrap()
}

fn golden(name: &str) -> Vec<Value> {
    serde_json::from_str(&golden_text(name)).unwrap()
}

/// Greedy decoding of `n` tokens (stopping at EOS).
fn greedy(n: usize) -> ponder::sample::SamplingParams {
    RawSamplingParams {
        max_tokens: n as u32,
        temperature: 0.0,
        ..Default::default()
    }
    .validate()
    .unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn qwen05_tokenizer_matches_hf_tokenizers() {
    let Some((tok, _)) = tokenizer_and_template() else {
        return;
    };
    let cases = golden("qwen05_tokenizer.json");
    assert_eq!(cases.len(), 33);
    for c in &cases {
        let text = c["text"].as_str().unwrap();
        let got = tok.encode(text, false).unwrap();
        assert_eq!(got, ids(&c["ids"]), "encoding {text:?}");
        assert_eq!(
            tok.decode(&got, false),
            c["decoded"].as_str().unwrap(),
            "decoding {text:?}"
        );
    }
}

#[test]
fn qwen05_chat_template_matches_jinja2() {
    let Some((tok, tpl)) = tokenizer_and_template() else {
        return;
    };
    let cases = golden("qwen05_chat_template.json");
    // The messages and tools again, with their keys in file order (tool schemas are printed
    // with `tojson`, keys as given).
    let ordered = template_value(&golden_text("qwen05_chat_template.json")).unwrap();
    assert_eq!(cases.len(), 10);
    let mut with_tools = 0;
    for (i, c) in cases.iter().enumerate() {
        let case = ordered.get_item_by_index(i).unwrap();
        let messages = case.get_attr("messages").unwrap();
        let tools: Option<TemplateValue> =
            Some(case.get_attr("tools").unwrap()).filter(|t| !t.is_undefined());
        with_tools += tools.is_some() as usize;
        let r = tpl
            .render_with(
                &messages,
                tools.as_ref(),
                c["add_generation_prompt"].as_bool().unwrap(),
            )
            .unwrap();
        assert_eq!(r, c["rendered"].as_str().unwrap(), "case {i}");
        assert_eq!(tok.encode(&r, false).unwrap(), ids(&c["ids"]), "case {i}");
    }
    assert_eq!(with_tools, 4);
}

#[test]
fn qwen05_forward_greedy_ids_match_reference() {
    let Some(m) = model("qwen05_forward_greedy_ids_match_reference") else {
        return;
    };
    let cases = golden("qwen05_greedy.json");
    assert_eq!(cases.len(), 6);
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let text = c["prompt_text"].as_str().unwrap();
        if c["kind"] == "chat" {
            let msgs = template_value(&c["messages"].to_string()).unwrap();
            assert_eq!(m.template.render_with(&msgs, None, true).unwrap(), text);
        }
        let prompt = ids(&c["prompt_token_ids"]);
        assert_eq!(
            m.tokenizer.encode(text, false).unwrap(),
            prompt,
            "{name}: prompt ids"
        );
        let want = ids(&c["generated_token_ids"]);
        let params = greedy(want.len());
        let g = ponder::generate::generate(m, &prompt, &params).unwrap();
        // Every generated token must match. The smallest top-2 margin in the reference is
        // 0.039 logits (chat_system_square, step 6); see the logit tolerance below.
        assert_eq!(g.token_ids, want, "{name}: generated ids");
        if c["stopped_at_eos"].as_bool().unwrap() {
            assert_eq!(g.finish_reason.as_str(), "stop", "{name}");
        }
        assert_eq!(
            g.text,
            c["generated_text"].as_str().unwrap(),
            "{name}: text"
        );
    }
}

#[test]
fn qwen05_forward_first_step_logits_match_reference() {
    let Some(m) = model("qwen05_forward_first_step_logits_match_reference") else {
        return;
    };
    // (KV cache type, tolerance). Measured: 0.0030 with the f32 cache, 0.0126 with the
    // default f16 cache (which rounds every K/V value once), with this model's Q5_0/Q4_K/Q6_K
    // weights on the reference path (float activations against dequantized weights). The
    // integer GEMM quantizes activations to 12-bit integers per 32-value block, which moved
    // SmolLM2's logits by up to 0.031 (f32 cache) / 0.043 (f16) (tests/golden.rs); the
    // bounds are the same as there. The greedy ids above stay exact.
    for (dtype, tol) in [(KvDtype::F32, 5e-2), (KvDtype::F16, 6e-2)] {
        let mut worst = 0f64;
        for c in &golden("qwen05_greedy.json") {
            let prompt = ids(&c["prompt_token_ids"]);
            let table: Vec<u32> = (1..=8).collect();
            let mut kv = m.model.new_kv_cache_dtype(9, 16, dtype);
            let logits = m.model.run(
                &ponder::model::Batch::single(&prompt, 0, &table, 16),
                &mut kv,
            );
            for pair in c["first_step_top5"].as_array().unwrap() {
                let id = pair[0].as_u64().unwrap() as usize;
                let want = pair[1].as_f64().unwrap();
                let got = logits[id] as f64;
                worst = worst.max((got - want).abs());
                assert!(
                    (got - want).abs() < tol,
                    "{dtype} cache, {}: logit[{id}] = {got}, reference {want}",
                    c["name"]
                );
            }
        }
        eprintln!("{dtype} KV cache: largest first-step logit error {worst:.5}");
    }
}

/// `--activation-bits 8`: the greedy goldens still hold token for token, and first-step
/// logits stay within 0.25 of the reference (measured: 0.194 at most, against 0.013 with 12
/// bits; the f16 cache).
#[test]
fn qwen05_forward_eight_bit_activations_keep_greedy_ids() {
    let Some(m) = model("qwen05_forward_eight_bit_activations_keep_greedy_ids") else {
        return;
    };
    let mut worst = 0f64;
    for c in &golden("qwen05_greedy.json") {
        let name = c["name"].as_str().unwrap();
        let prompt = ids(&c["prompt_token_ids"]);
        let want = ids(&c["generated_token_ids"]);
        let params = greedy(want.len());
        let g = ponder::generate::generate_with(m, &prompt, &params, ActBits::Eight).unwrap();
        assert_eq!(
            g.token_ids, want,
            "{name}: generated ids with 8-bit activations"
        );
        let table: Vec<u32> = (1..=8).collect();
        let mut kv = m.model.new_kv_cache_dtype(9, 16, KvDtype::F16);
        let mut logits = Vec::new();
        let mut b = CpuBackend::with_activation_bits(ActBits::Eight);
        let batch = ponder::model::Batch::single(&prompt, 0, &table, 16);
        m.model.forward(&mut b, &batch, &mut kv, &mut logits);
        for pair in c["first_step_top5"].as_array().unwrap() {
            let id = pair[0].as_u64().unwrap() as usize;
            let err = (logits[id] as f64 - pair[1].as_f64().unwrap()).abs();
            worst = worst.max(err);
            assert!(
                err < 0.25,
                "{name}: logit[{id}] off by {err} with 8-bit activations"
            );
        }
    }
    eprintln!("8-bit activations: largest first-step logit error {worst:.5}");
}

/// `--activation-bits auto` picks 8 bits on this model: on the calibration text 8-bit
/// activations move its next-token distributions by ~0.0003 nats per position (a third of
/// the threshold), and the greedy goldens hold at 8 bits (above).
#[test]
fn qwen05_forward_auto_activation_bits_choose_eight() {
    let Some(m) = model("qwen05_forward_auto_activation_bits_choose_eight") else {
        return;
    };
    use ponder::engine::act_bits::{calibrate, AUTO_MAX_KL};
    let c = calibrate(m, KvDtype::F16).unwrap();
    eprintln!("{c:?}");
    assert_eq!(c.chosen, ActBits::Eight);
    assert!(c.mean_kl < 0.5 * AUTO_MAX_KL, "{c:?}");
    assert!((c.mean_kl - 0.0003).abs() < 0.0001, "{c:?}");
}
