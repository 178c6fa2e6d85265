//! The router over the real CPU engine and the default model (no socket): the HTTP layer and
//! the engine agree on the contract (greedy text, usage, SSE text, logprobs tokens).

mod api_support;

use std::sync::Arc;

use api_support::*;
use ponder::api::AppState;
use ponder::config::HttpLimits;
use ponder::engine::{cpu_core, EngineConfig, EngineHandle};
use serde_json::{json, Value};

const FRANCE: &str = r#"[{"role":"user","content":"What is the capital of France?"}]"#;

fn real_app() -> AppState {
    let cfg = EngineConfig {
        kv_cache_bytes: 64 << 20,
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
