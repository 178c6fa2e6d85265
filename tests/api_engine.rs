//! The router over the real CPU engine and the default model (no socket): the HTTP layer and
//! the engine agree on the contract (greedy text, usage, SSE text, logprobs tokens).

mod api_support;

use std::sync::Arc;

use api_support::*;
use ponder::api::AppState;
use ponder::engine::{cpu_core, ActBits, ActivationBits, EngineConfig, EngineHandle};
use ponder::validate::HttpLimits;
use serde_json::{json, Value};

const FRANCE: &str = r#"[{"role":"user","content":"What is the capital of France?"}]"#;

fn real_app() -> AppState {
    let cfg = EngineConfig {
        kv_cache_bytes: 64 << 20,
        // Fixed: `auto` would measure the model at every app built here (and choose 12).
        activation_bits: ActivationBits::Fixed(ActBits::Twelve),
        ..EngineConfig::default()
    };
    let core = cpu_core(MODEL.clone(), &cfg).unwrap();
    let engine = Arc::new(EngineHandle::spawn(core, cfg.sched.max_waiting).unwrap());
    let state = AppState::new(engine, MODEL.clone(), None, HttpLimits::default()).unwrap();
    state.set_ready(true);
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_chat_json_and_stream_agree() {
    let state = real_app();
    let body = format!(r#"{{"messages":{FRANCE},"temperature":0,"max_tokens":32}}"#);
    let (status, v) = call(&state, post("/v1/chat/completions", body)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "SmolLM2-135M-Instruct.Q4_1");
    assert_eq!(
        v["choices"],
        json!([{"index": 0, "message": {"role": "assistant", "content": "The capital of France is Paris."},
            "logprobs": null, "finish_reason": "stop"}])
    );
    // 7 text tokens + <|im_end|>.
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 37, "completion_tokens": 8, "total_tokens": 45, "completion_tokens_details": {"reasoning_tokens": 0}})
    );

    let body = format!(
        r#"{{"messages":{FRANCE},"temperature":0,"max_tokens":32,"stream":true,"stream_options":{{"include_usage":true}}}}"#
    );
    let resp = send(&state, post("/v1/chat/completions", body)).await;
    assert_eq!(resp.status().as_u16(), 200);
    let text = body_text(resp).await;
    let frames: Vec<&str> = text
        .trim_end()
        .split("\n\n")
        .map(|f| f.strip_prefix("data: ").unwrap())
        .collect();
    assert_eq!(frames.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect::<Vec<_>>()
        .concat();
    assert_eq!(content, "The capital of France is Paris.");
    let finishes: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, [&json!("stop")]);
    assert_eq!(
        chunks.last().unwrap()["usage"],
        json!({"prompt_tokens": 37, "completion_tokens": 8, "total_tokens": 45, "completion_tokens_details": {"reasoning_tokens": 0}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_logprobs_and_completions() {
    let state = real_app();
    let body = format!(
        r#"{{"messages":{FRANCE},"temperature":0,"max_tokens":4,"logprobs":true,"top_logprobs":2}}"#
    );
    let (status, v) = call(&state, post("/v1/chat/completions", body)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    let tokens: Vec<&str> = content
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect();
    assert_eq!(tokens, ["The", " capital", " of", " France"]);
    for t in content {
        let lp = t["logprob"].as_f64().unwrap();
        assert!(lp <= 0.0, "{t}");
        let top = t["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        // Greedy picks the most likely token.
        assert_eq!(top[0]["token"], t["token"]);
        assert_eq!(t["bytes"], json!(t["token"].as_str().unwrap().as_bytes()));
    }

    let (status, v) = call(
        &state,
        post(
            "/v1/completions",
            r#"{"prompt":"1, 2, 3, 4,","temperature":0,"max_tokens":11}"#,
        ),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], " 5, 6, 7, 8");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    // Digits and spaces are single tokens: " 5, 6, 7, 8" is 11 tokens (as `ponder generate` gives).
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 11, "total_tokens": 22, "completion_tokens_details": {"reasoning_tokens": 0}})
    );
}

/// A deadline that stops every sample before one completes: no cut-off text is returned as
/// the answer; the choice says why (`deadline`) and the report has the samples' account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_before_any_sample_completes_returns_no_answer() {
    let state = real_app();
    let body = format!(
        r#"{{"messages":{FRANCE},"temperature":0.8,"seed":3,"max_tokens":200,"ttc":{{"n":2,"deadline_ms":1}}}}"#
    );
    let (status, v) = call(&state, post("/v1/chat/completions", body)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["choices"],
        json!([{"index": 0, "message": {"role": "assistant", "content": null},
            "logprobs": null, "finish_reason": "deadline"}])
    );
    assert_eq!(v["ttc"]["stop_reason"], "deadline");
    assert_eq!(v["ttc"]["answer"], Value::Null);
    assert_eq!(v["ttc"]["winner_sample"], Value::Null);
    assert_eq!(v["ttc"]["samples_completed"], 0);
}

/// A streamed aggregated request shows progress chunks (no choices, a `ttc_progress`
/// object) while its samples run, then the winner, then the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_ttc_sends_progress_then_the_winner() {
    let state = real_app();
    let body = format!(
        r#"{{"messages":{FRANCE},"temperature":0.8,"seed":5,"max_tokens":24,"stream":true,"ttc":{{"n":4,"min_samples":2}}}}"#
    );
    let resp = send(&state, post("/v1/chat/completions", body)).await;
    assert_eq!(resp.status().as_u16(), 200);
    let text = body_text(resp).await;
    let chunks: Vec<Value> = text
        .trim_end()
        .split("\n\n")
        .map(|f| f.strip_prefix("data: ").unwrap())
        .filter(|f| *f != "[DONE]")
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    let progress: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c.get("ttc_progress"))
        .collect();
    // Launch of wave 1, each of its 2 samples completing, wave 2's launch, its samples.
    assert!(progress.len() >= 4, "{text}");
    assert_eq!(progress[0]["samples_launched"], 2);
    assert_eq!(progress[0]["samples_running"], 2);
    for p in &progress {
        let c = &chunks[chunks
            .iter()
            .position(|c| c.get("ttc_progress") == Some(p))
            .unwrap()];
        assert_eq!(c["choices"], json!([]));
    }
    let last = progress.last().unwrap();
    assert_eq!(last["samples_launched"], 4);
    // The winner's content, its finish, then the report.
    let finish = chunks
        .iter()
        .position(|c| !c["choices"][0]["finish_reason"].is_null())
        .unwrap();
    assert!(
        chunks
            .iter()
            .position(|c| c.get("ttc_progress") == Some(last))
            .unwrap()
            < finish
    );
    let report = &chunks.last().unwrap()["ttc"];
    assert_eq!(report["samples_launched"], 4);
    assert_eq!(report["samples_completed"], 4);
}
