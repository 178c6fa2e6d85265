//! Router tests (no socket): non-streaming responses, request -> engine request mapping,
//! usage, logprobs, and the informational endpoints, against the scripted fake engine.

mod api_support;

use api_support::*;
use serde_json::{json, Value};

const HI: &str = r#"[{"role":"user","content":"Hi"}]"#;

fn chat_body(extra: &str) -> String {
    format!(r#"{{"model":"smol","messages":{HI}{extra}}}"#)
}

fn check_id(v: &Value, prefix: &str) {
    let id = v["id"].as_str().unwrap();
    assert!(id.starts_with(prefix), "{id}");
    assert_eq!(id.len(), prefix.len() + 32, "{id}");
    assert!(
        id[prefix.len()..].chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    let created = v["created"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(created <= now && created + 60 > now, "{created} vs {now}");
}

#[tokio::test]
async fn chat_non_stream_exact_response_and_engine_request() {
    let engine = FakeEngine::new(Behavior::Script);
    let state = app(engine.clone());
    let resp = send(&state, post("/v1/chat/completions", chat_body(""))).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let v: Value = serde_json::from_str(&body_text(resp).await).unwrap();
    check_id(&v, "chatcmpl-");
    assert_eq!(v["id"], request_id.as_str());
    let prompt = chat_prompt_ids(&[("user", "Hi")]);
    assert_eq!(prompt.len(), 31);
    let expected = json!({
        "id": v["id"], "object": "chat.completion", "created": v["created"], "model": "smol",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello world"},
            "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 31, "completion_tokens": 2, "total_tokens": 33, "completion_tokens_details": {"reasoning_tokens": 0}},
    });
    assert_eq!(v, expected);
    let req = engine.last_request();
    assert_eq!(req.prompt_token_ids, prompt);
    assert_eq!(req.n, 1);
    // No max_tokens: context length (8192) - prompt (31), capped by --max-tokens-limit (4096).
    assert_eq!(req.params.max_tokens, 4096);
    assert_eq!(req.params.temperature, 1.0);
    assert!(!req.params.logprobs);
}

#[tokio::test]
async fn request_fields_reach_the_engine() {
    let engine = FakeEngine::new(Behavior::Script);
    let state = app(engine.clone());
    let extra = r#","max_tokens":9,"max_completion_tokens":12,"temperature":0.25,"top_p":0.5,
        "top_k":7,"min_p":0.125,"seed":42,"presence_penalty":0.5,"frequency_penalty":-0.5,
        "repetition_penalty":1.5,"stop":"END","user":"alice""#;
    let (status, _) = call(&state, post("/v1/chat/completions", chat_body(extra))).await;
    assert_eq!(status, 200);
    let p = engine.last_request().params;
    assert_eq!(p.max_tokens, 12);
    assert_eq!(
        (p.temperature, p.top_p, p.top_k, p.min_p),
        (0.25, 0.5, 7, 0.125)
    );
    assert_eq!(p.seed, Some(42));
    assert_eq!(
        (
            p.presence_penalty,
            p.frequency_penalty,
            p.repetition_penalty
        ),
        (0.5, -0.5, 1.5)
    );
    assert_eq!(p.stop, vec!["END".to_string()]);

    let extra = r#","max_tokens":9,"stop":["a","bc"]"#;
    let (status, _) = call(&state, post("/v1/chat/completions", chat_body(extra))).await;
    assert_eq!(status, 200);
    let p = engine.last_request().params;
    assert_eq!(p.max_tokens, 9);
    assert_eq!(p.stop, vec!["a".to_string(), "bc".to_string()]);

    // null reads as absent.
    let (status, _) = call(
        &state,
        post(
            "/v1/chat/completions",
            chat_body(r#","stop":null,"n":null"#),
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(engine.last_request().params.stop, Vec::<String>::new());
    assert_eq!(engine.last_request().n, 1);
}

#[tokio::test]
async fn chat_content_parts_and_roles_build_the_prompt() {
    let engine = FakeEngine::new(Behavior::Script);
    let state = app(engine.clone());
    let body = r#"{"messages":[{"role":"system","content":"Be brief."},
        {"role":"user","content":[{"type":"text","text":"Hi"},{"type":"text","text":"there"}]}]}"#;
    let (status, _) = call(&state, post("/v1/chat/completions", body)).await;
    assert_eq!(status, 200);
    let want = chat_prompt_ids(&[("system", "Be brief."), ("user", "Hi\nthere")]);
    assert_eq!(engine.last_request().prompt_token_ids, want);
}

#[tokio::test]
async fn n3_interleaved_choices_and_usage_counts_prompt_once() {
    let engine = FakeEngine::new(Behavior::Script);
    let state = app(engine.clone());
    let (status, v) = call(&state, post("/v1/chat/completions", chat_body(r#","n":3"#))).await;
    assert_eq!(status, 200);
    let contents: Vec<_> = v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["index"].clone(), c["message"]["content"].clone()))
        .collect();
    assert_eq!(
        contents,
        vec![
            (json!(0), json!("Hello world")),
            (json!(1), json!("Hello world1")),
            (json!(2), json!("Hello world2"))
        ]
    );
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 31, "completion_tokens": 6, "total_tokens": 37, "completion_tokens_details": {"reasoning_tokens": 0}})
    );
    assert_eq!(engine.last_request().n, 3);
}

#[tokio::test]
async fn completions_with_token_ids_and_text() {
    let engine = FakeEngine::new(Behavior::Script);
    let state = app(engine.clone());
    let (status, v) = call(
        &state,
        post(
            "/v1/completions",
            r#"{"model":"smol","prompt":[5,6,7],"max_tokens":4}"#,
        ),
    )
    .await;
    assert_eq!(status, 200);
    check_id(&v, "cmpl-");
    let expected = json!({
        "id": v["id"], "object": "text_completion", "created": v["created"], "model": "smol",
        "choices": [{"index": 0, "text": "Hello world", "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5, "completion_tokens_details": {"reasoning_tokens": 0}},
    });
    assert_eq!(v, expected);
    let req = engine.last_request();
    assert_eq!(req.prompt_token_ids, vec![5, 6, 7]);
    assert_eq!(req.params.max_tokens, 4);

    let (status, _) = call(
        &state,
        post("/v1/completions", r#"{"prompt":["Hello world"]}"#),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        engine.last_request().prompt_token_ids,
        vec![tok("Hello"), tok(" world")]
    );
}

#[tokio::test]
async fn chat_logprobs_shape() {
    let engine = FakeEngine::new(Behavior::Script);
    let state = app(engine.clone());
    let (status, v) = call(
        &state,
        post(
            "/v1/chat/completions",
            chat_body(r#","logprobs":true,"top_logprobs":3"#),
        ),
    )
    .await;
    assert_eq!(status, 200);
    let p = engine.last_request().params;
    assert!(p.logprobs);
    assert_eq!(p.top_logprobs, 3);
    let entry = |t: &str, l: f64| json!({"token": t, "logprob": l, "bytes": t.as_bytes()});
    let with_top = |t: &str| {
        let mut e = entry(t, -0.5);
        e["top_logprobs"] = json!([entry(t, -0.5), entry(" world", -1.25), entry("!", -9999.0)]);
        e
    };
    assert_eq!(
        v["choices"][0]["logprobs"],
        json!({"content": [with_top("Hello"), with_top(" world")]})
    );
}

#[tokio::test]
async fn completion_logprobs_shape() {
    let engine = FakeEngine::new(Behavior::Script);
    let state = app(engine.clone());
    let (status, v) = call(
        &state,
        post("/v1/completions", r#"{"prompt":"Hi","logprobs":2}"#),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        v["choices"][0]["logprobs"],
        json!({
            "tokens": ["Hello", " world"],
            "token_logprobs": [-0.5, -0.5],
            "top_logprobs": [{"Hello": -0.5, " world": -1.25}, {" world": -0.5}],
            "text_offset": [0, 5],
        })
    );
}

#[tokio::test]
async fn models_version_health_ready() {
    let engine = FakeEngine::new(Behavior::Script);
    let state = app(engine.clone());
    let (status, v) = call(&state, get("/v1/models")).await;
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"object": "list", "data": [{"id": "smol", "object": "model", "created": state.started,
            "owned_by": "ponder", "max_model_len": 8192}]})
    );
    let (status, v) = call(&state, get("/version")).await;
    assert_eq!(
        (status, v),
        (
            200,
            json!({"name": "ponder", "version": env!("CARGO_PKG_VERSION")})
        )
    );
    assert_eq!(
        call(&state, get("/health")).await,
        (200, json!({"status": "ok"}))
    );
    assert_eq!(
        call(&state, get("/ready")).await,
        (200, json!({"status": "ready"}))
    );
}

#[tokio::test]
async fn metrics_report_engine_stats_requests_and_tokens() {
    let engine = FakeEngine::new(Behavior::Script);
    *engine.stats.lock().unwrap() = ponder::engine::EngineStats {
        // 7 sequences of 2 running requests (samples of n > 1 are sequences, not requests).
        num_running: 7,
        num_waiting: 5,
        requests_running: 2,
        requests_waiting: 5,
        kv_cache_usage: 0.5,
        num_preemptions: 1,
        prefix_cache_queries: 64,
        prefix_cache_hits: 48,
    };
    let state = app(engine.clone());
    assert_eq!(
        call(&state, post("/v1/chat/completions", chat_body(r#","n":2"#)))
            .await
            .0,
        200
    );
    assert_eq!(call(&state, get("/nope")).await.0, 404);
    let resp = send(&state, get("/metrics")).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = body_text(resp).await;
    for line in [
        "ponder_num_requests_running 2",
        "ponder_num_requests_waiting 5",
        "ponder_kv_cache_usage_perc 0.5",
        "ponder_num_preemptions_total 1",
        "ponder_prefix_cache_queries_total 64",
        "ponder_prefix_cache_hits_total 48",
        "ponder_prompt_tokens_total 31",
        "ponder_generation_tokens_total 4",
        // One request (of n = 2 choices).
        "ponder_request_success_total{finished_reason=\"stop\"} 1",
        "ponder_time_to_first_token_seconds_count 1",
        "ponder_e2e_request_latency_seconds_count 1",
        "ponder_request_queue_time_seconds_count 1",
        // Deltas: 2 per sample, 4 in all -> 3 gaps.
        "ponder_inter_token_latency_seconds_count 3",
        "ponder_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 1",
        "ponder_http_requests_total{route=\"unmatched\",status=\"404\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in\n{text}"
        );
    }
}
