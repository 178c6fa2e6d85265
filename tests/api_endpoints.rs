//! Router tests for `GET /v1/models/{id}`, `POST /tokenize`, `POST /detokenize` (vLLM's
//! shapes) and the client's `X-Request-Id` (used and echoed).

mod api_support;

use api_support::*;
use axum::body::Body;
use axum::http::Request;
use serde_json::json;

#[tokio::test]
async fn model_by_id() {
    let state = app(FakeEngine::new(Behavior::Script));
    let (status, v) = call(&state, get("/v1/models/smol")).await;
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"id": "smol", "object": "model", "created": state.started, "owned_by": "ponder",
            "max_model_len": 8192})
    );
    assert_eq!(
        call(&state, get("/v1/models/org/other")).await,
        (
            404,
            envelope(
                "the model `org/other` does not exist; this server serves `smol`",
                "invalid_request_error",
                Some("model"),
                "model_not_found"
            )
        )
    );
}

#[tokio::test]
async fn tokenize_and_detokenize() {
    let state = app(FakeEngine::new(Behavior::Script));
    let hello = vec![tok("Hello"), tok(" world")];
    let (status, v) = call(
        &state,
        post(
            "/tokenize",
            r#"{"model":"smol","prompt":"Hello world","return_token_strs":true}"#,
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"count": 2, "max_model_len": 8192, "tokens": hello, "token_strs": ["Hello", " world"]})
    );
    let (status, v) = call(
        &state,
        post(
            "/tokenize",
            r#"{"messages":[{"role":"user","content":"Hi"}]}"#,
        ),
    )
    .await;
    assert_eq!(status, 200);
    let ids = chat_prompt_ids(&[("user", "Hi")]);
    assert_eq!(
        v,
        json!({"count": 31, "max_model_len": 8192, "tokens": ids, "token_strs": null})
    );
    let (status, v) = call(
        &state,
        post("/detokenize", json!({"tokens": hello}).to_string()),
    )
    .await;
    assert_eq!((status, v), (200, json!({"prompt": "Hello world"})));
    let bad = |m: &str, p: &str| {
        (
            400,
            envelope(m, "invalid_request_error", Some(p), "invalid_value"),
        )
    };
    assert_eq!(
        call(&state, post("/detokenize", r#"{"tokens":[1,49152]}"#)).await,
        bad(
            "`tokens[1]` must be a token id in [0, 49152), given 49152",
            "tokens"
        )
    );
    assert_eq!(
        call(&state, post("/tokenize", r#"{"prompt":"x","extra":1}"#)).await,
        bad(
            "`extra` is not a field of POST /tokenize; supported: model, prompt, messages, add_special_tokens, add_generation_prompt, return_token_strs",
            "extra"
        )
    );
    assert_eq!(
        call(&state, post("/tokenize", r#"{"model":"big","prompt":"x"}"#))
            .await
            .0,
        404
    );
    assert_eq!(
        call(&state, post("/tokenize", r#"{}"#)).await,
        bad("`prompt` or `messages` is required", "prompt")
    );
}

fn with_id(req: Request<Body>, id: &str) -> Request<Body> {
    let (mut parts, body) = req.into_parts();
    parts.headers.insert("x-request-id", id.parse().unwrap());
    Request::from_parts(parts, body)
}

#[tokio::test]
async fn incoming_request_id_is_echoed() {
    let state = app(FakeEngine::new(Behavior::Script));
    let body = r#"{"messages":[{"role":"user","content":"Hi"}]}"#;
    let resp = send(
        &state,
        with_id(post("/v1/chat/completions", body), "trace-42"),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["x-request-id"], "trace-42");
    let v: serde_json::Value = serde_json::from_str(&body_text(resp).await).unwrap();
    // The body keeps its own OpenAI-style id.
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let resp = send(&state, with_id(get("/health"), "h-1")).await;
    assert_eq!(resp.headers()["x-request-id"], "h-1");
    let long = "x".repeat(129);
    let resp = send(&state, with_id(get("/health"), &long)).await;
    assert_eq!(resp.status().as_u16(), 400);
    let v: serde_json::Value = serde_json::from_str(&body_text(resp).await).unwrap();
    assert_eq!(
        v["error"]["message"],
        "the X-Request-Id header must be 1 to 128 visible ASCII characters"
    );
}
