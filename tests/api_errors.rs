//! Every error status of the HTTP layer, with the exact OpenAI envelope and headers.

mod api_support;

use api_support::*;
use serde_json::json;

const BAD: &str = "invalid_request_error";
const CHAT: &str = "/v1/chat/completions";

fn chat(extra: &str) -> String {
    format!(r#"{{"model":"smol","messages":[{{"role":"user","content":"Hi"}}]{extra}}}"#)
}

#[tokio::test]
async fn bad_json_is_400() {
    let state = app(FakeEngine::new(Behavior::Script));
    let (status, v) = call(&state, post(CHAT, r#"{"messages": ["#)).await;
    assert_eq!(status, 400);
    let msg = "the request body is not valid JSON: EOF while parsing a list at line 1 column 14";
    assert_eq!(v, envelope(msg, BAD, Some("body"), "invalid_value"));
    let (status, v) = call(&state, post("/v1/completions", "42")).await;
    assert_eq!(status, 400);
    let msg = "the request body must be a JSON object, given 42";
    assert_eq!(v, envelope(msg, BAD, Some("body"), "invalid_value"));
}

#[tokio::test]
async fn bad_fields_are_400_with_exact_messages() {
    let engine = FakeEngine::new(Behavior::Script);
    let state = app(engine.clone());
    let cases = [
        (
            CHAT,
            chat(r#","n":10000"#),
            "`n` must be in [1, 16], given 10000",
            "n",
        ),
        (
            CHAT,
            chat(r#","temperature":"hot""#),
            "`temperature` must be a number, given \"hot\"",
            "temperature",
        ),
        (
            CHAT,
            chat(r#","temperature":2.5"#),
            "`temperature` must be in [0, 2], given 2.5",
            "temperature",
        ),
        (
            CHAT,
            chat(r#","max_tokens":5000"#),
            "`max_tokens` must be <= 4096, given 5000",
            "max_tokens",
        ),
        (
            CHAT,
            chat(r#","max_completion_tokens":0"#),
            "`max_completion_tokens` must be >= 1, given 0",
            "max_completion_tokens",
        ),
        (
            CHAT,
            chat(r#","top_logprobs":2"#),
            "`top_logprobs` requires `logprobs` to be true, given top_logprobs=2",
            "top_logprobs",
        ),
        (
            CHAT,
            chat(r#","logprobs":true,"top_logprobs":21"#),
            "`top_logprobs` must be in [0, 20], given 21",
            "top_logprobs",
        ),
        (
            CHAT,
            chat(r#","stop":["a",1]"#),
            "`stop[1]` must be a string, given 1",
            "stop[1]",
        ),
        (
            CHAT,
            chat(r#","stream":"yes""#),
            "`stream` must be a boolean, given \"yes\"",
            "stream",
        ),
        (
            CHAT,
            chat(r#","stream_options":{"include_usage":true}"#),
            "`stream_options` is only allowed when `stream` is true",
            "stream_options",
        ),
        (
            CHAT,
            r#"{"messages":[{"role":"robot","content":"x"}]}"#.to_string(),
            "`messages[0].role` must be one of system, developer, user, assistant, tool, given \"robot\"",
            "messages[0].role",
        ),
        (
            CHAT,
            r#"{"messages":[{"role":"tool","content":"x"}]}"#.to_string(),
            "`messages[0].tool_call_id` is required on tool messages",
            "messages[0].tool_call_id",
        ),
        (
            CHAT,
            r#"{"messages":"hi"}"#.to_string(),
            "`messages` must be an array of messages, given \"hi\"",
            "messages",
        ),
        (
            "/v1/completions",
            r#"{"prompt":["a","b"]}"#.to_string(),
            "`prompt` must hold a single prompt (batched prompts are not supported), given 2",
            "prompt",
        ),
        (
            "/v1/completions",
            r#"{"prompt":[1,99999999]}"#.to_string(),
            "`prompt[1]` must be a token id in [0, 49152), given 99999999",
            "prompt",
        ),
        (
            "/v1/completions",
            r#"{"prompt":"x","logprobs":-1}"#.to_string(),
            "`logprobs` must be in [0, 20], given -1",
            "logprobs",
        ),
        (
            "/v1/completions",
            r#"{"prompt":""}"#.to_string(),
            "`prompt` must not be empty",
            "prompt",
        ),
    ];
    for (path, body, msg, param) in cases {
        let (status, v) = call(&state, post(path, body.clone())).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            v,
            envelope(msg, BAD, Some(param), "invalid_value"),
            "{body}"
        );
    }
    assert!(
        engine.submitted.lock().unwrap().is_empty(),
        "no invalid request reaches the engine"
    );
}

#[tokio::test]
async fn context_overflow_is_400_with_both_numbers_and_the_limit() {
    let state = app(FakeEngine::new(Behavior::Script));
    let ids = vec!["7"; 8000].join(",");
    let body = format!(r#"{{"prompt":[{ids}],"max_tokens":4000}}"#);
    let (status, v) = call(&state, post("/v1/completions", body)).await;
    assert_eq!(status, 400);
    let msg =
        "this model's maximum context length is 8192 tokens, but 12000 tokens were requested \
               (8000 in the prompt + 4000 for the completion); reduce the prompt or `max_tokens`";
    assert_eq!(
        v,
        envelope(msg, BAD, Some("prompt"), "context_length_exceeded")
    );
    // Over the context and over --max-tokens-limit: the context error wins.
    let body = r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":100000}"#;
    let (status, v) = call(&state, post(CHAT, body)).await;
    assert_eq!(status, 400);
    let msg =
        "this model's maximum context length is 8192 tokens, but 100031 tokens were requested \
               (31 in the prompt + 100000 for the completion); reduce the prompt or `max_tokens`";
    assert_eq!(
        v,
        envelope(msg, BAD, Some("messages"), "context_length_exceeded")
    );
    // Without max_tokens the default (what is left of the context) fits.
    let body = format!(r#"{{"prompt":[{ids}]}}"#);
    assert_eq!(call(&state, post("/v1/completions", body)).await.0, 200);
}

#[tokio::test]
async fn unknown_model_is_404() {
    let state = app(FakeEngine::new(Behavior::Script));
    let body = r#"{"model":"gpt-4","messages":[{"role":"user","content":"Hi"}]}"#;
    let (status, v) = call(&state, post(CHAT, body)).await;
    assert_eq!(status, 404);
    let msg = "the model `gpt-4` does not exist; this server serves `smol`";
    assert_eq!(v, envelope(msg, BAD, Some("model"), "model_not_found"));
}

#[tokio::test]
async fn unknown_route_is_404_and_wrong_method_is_405() {
    let state = app(FakeEngine::new(Behavior::Script));
    let (status, v) = call(&state, get("/v1/nope")).await;
    assert_eq!(status, 404);
    assert_eq!(
        v,
        envelope("no route for GET /v1/nope", BAD, None, "not_found")
    );

    let resp = send(&state, get(CHAT)).await;
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(
        resp.headers().get_all("allow").iter().collect::<Vec<_>>(),
        ["POST"]
    );
    let v: serde_json::Value = serde_json::from_str(&body_text(resp).await).unwrap();
    let msg = "method GET is not allowed on /v1/chat/completions (allowed: POST)";
    assert_eq!(v, envelope(msg, BAD, None, "method_not_allowed"));
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let state = app(FakeEngine::new(Behavior::Script));
    let big = format!(r#"{{"prompt":"{}"}}"#, "a".repeat(LIMITS.max_body_bytes));
    let (status, v) = call(&state, post("/v1/completions", big)).await;
    assert_eq!(status, 413);
    let msg = "the request body must be at most 65536 bytes";
    assert_eq!(v, envelope(msg, BAD, None, "payload_too_large"));
}

#[tokio::test]
async fn queue_full_is_429_with_retry_after() {
    let state = app(FakeEngine::new(Behavior::QueueFull(8)));
    let resp = send(&state, post(CHAT, chat(""))).await;
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let v: serde_json::Value = serde_json::from_str(&body_text(resp).await).unwrap();
    let msg = "the server is busy: the waiting queue is full (8 requests); retry later";
    assert_eq!(v, envelope(msg, "rate_limit_error", None, "queue_full"));
}

#[tokio::test]
async fn not_ready_is_503() {
    let engine = FakeEngine::new(Behavior::Script);
    let state = app(engine.clone());
    state.set_ready(false);
    let not_ready = envelope(
        "the server is not ready yet; retry later",
        "service_unavailable",
        None,
        "not_ready",
    );
    assert_eq!(call(&state, get("/ready")).await, (503, not_ready.clone()));
    assert_eq!(
        call(&state, post(CHAT, chat(""))).await,
        (503, not_ready.clone())
    );
    assert_eq!(
        call(&state, post("/v1/completions", r#"{"prompt":"x"}"#)).await,
        (503, not_ready)
    );
    // Starting or draining: the client is told when to retry (a load balancer may route the
    // retry to another replica).
    let resp = send(&state, post(CHAT, chat(""))).await;
    assert_eq!(resp.headers()["retry-after"], "1");
    // Liveness is separate from readiness.
    assert_eq!(
        call(&state, get("/health")).await,
        (200, json!({"status": "ok"}))
    );
    assert!(engine.submitted.lock().unwrap().is_empty());
}

#[tokio::test]
async fn dead_engine_is_503() {
    let state = app(FakeEngine::new(Behavior::Dead));
    let dead = envelope(
        "the inference engine is not running",
        "service_unavailable",
        None,
        "engine_dead",
    );
    assert_eq!(call(&state, get("/health")).await, (503, dead.clone()));
    assert_eq!(call(&state, get("/ready")).await, (503, dead.clone()));
    assert_eq!(call(&state, post(CHAT, chat(""))).await, (503, dead));
}

#[tokio::test]
async fn engine_error_mid_request_is_500() {
    let state = app(FakeEngine::new(Behavior::FailAfterDelta(
        "out of KV blocks".into(),
    )));
    let (status, v) = call(&state, post(CHAT, chat(""))).await;
    assert_eq!(status, 500);
    let msg = "generation failed: out of KV blocks";
    assert_eq!(v, envelope(msg, "server_error", None, "internal_error"));
}
