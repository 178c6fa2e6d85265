//! SSE framing (exact lines), interleaved choices, usage chunk, errors mid-stream, and
//! cancellation when the client goes away (stream body dropped, non-stream future dropped).

mod api_support;

use std::time::Duration;

use api_support::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

const CHAT: &str = "/v1/chat/completions";

/// The SSE body as frames: each `data: ...\n\n`, prefix and terminator checked.
fn frames(text: &str) -> Vec<String> {
    assert!(text.ends_with("\n\n"), "{text:?}");
    text[..text.len() - 2]
        .split("\n\n")
        .map(|f| {
            assert!(
                f.starts_with("data: ") && !f.contains('\n'),
                "bad frame {f:?}"
            );
            f["data: ".len()..].to_string()
        })
        .collect()
}

fn parse(frames: &[String]) -> Vec<Value> {
    let (last, rest) = frames.split_last().unwrap();
    assert_eq!(last, "[DONE]");
    rest.iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect()
}

async fn stream(state: &AppStateRef, path: &str, body: &str) -> Vec<String> {
    let resp = send(state, post(path, body.to_string())).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    frames(&body_text(resp).await)
}

type AppStateRef = ponder::api::AppState;

#[tokio::test]
async fn chat_stream_exact_frames_with_usage() {
    let state = app(FakeEngine::new(Behavior::Script));
    let body = r#"{"model":"smol","messages":[{"role":"user","content":"Hi"}],"stream":true,
        "stream_options":{"include_usage":true}}"#;
    let f = stream(&state, CHAT, body).await;
    let chunks = parse(&f);
    let (id, created) = (chunks[0]["id"].clone(), chunks[0]["created"].clone());
    assert!(id.as_str().unwrap().starts_with("chatcmpl-"));
    let chunk = |choices: Value, usage: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": "smol",
            "choices": choices, "usage": usage})
    };
    let choice = |delta: Value, finish: Value| json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
    let want = vec![
        chunk(
            choice(json!({"role": "assistant", "content": ""}), Value::Null),
            Value::Null,
        ),
        chunk(
            choice(json!({"content": "Hello"}), Value::Null),
            Value::Null,
        ),
        chunk(
            choice(json!({"content": " world"}), Value::Null),
            Value::Null,
        ),
        chunk(choice(json!({}), json!("stop")), Value::Null),
        chunk(
            json!([]),
            json!({"prompt_tokens": 31, "completion_tokens": 2, "total_tokens": 33, "completion_tokens_details": {"reasoning_tokens": 0}}),
        ),
    ];
    assert_eq!(chunks, want);
    // The wire text of one frame, byte for byte (keys in OpenAI's order: serde_json keeps
    // insertion order).
    let first = format!(
        r#"{{"id":{id},"object":"chat.completion.chunk","created":{created},"model":"smol","choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#
    );
    assert_eq!(f[0], first);
}

#[tokio::test]
async fn chat_stream_n2_interleaves_choices_without_usage() {
    let state = app(FakeEngine::new(Behavior::Script));
    let body = r#"{"messages":[{"role":"user","content":"Hi"}],"stream":true,"n":2}"#;
    let chunks = parse(&stream(&state, CHAT, body).await);
    let seq: Vec<(u64, Value, Value)> = chunks
        .iter()
        .map(|c| {
            assert_eq!(c.get("usage"), None, "no usage without include_usage");
            let ch = &c["choices"][0];
            assert_eq!(c["choices"].as_array().unwrap().len(), 1);
            (
                ch["index"].as_u64().unwrap(),
                ch["delta"].clone(),
                ch["finish_reason"].clone(),
            )
        })
        .collect();
    let n = Value::Null;
    let role = json!({"role": "assistant", "content": ""});
    assert_eq!(
        seq,
        vec![
            (0, role.clone(), n.clone()),
            (1, role, n.clone()),
            (0, json!({"content": "Hello"}), n.clone()),
            (1, json!({"content": "Hello"}), n.clone()),
            (0, json!({"content": " world"}), n.clone()),
            (1, json!({"content": " world1"}), n.clone()),
            (0, json!({}), json!("stop")),
            (1, json!({}), json!("stop")),
        ]
    );
}

#[tokio::test]
async fn completion_stream_with_logprobs() {
    let state = app(FakeEngine::new(Behavior::Script));
    let body = r#"{"prompt":"Hi","stream":true,"logprobs":1}"#;
    let chunks = parse(&stream(&state, "/v1/completions", body).await);
    let choices: Vec<Value> = chunks
        .iter()
        .map(|c| {
            assert_eq!(c["object"], "text_completion");
            assert!(c["id"].as_str().unwrap().starts_with("cmpl-"));
            c["choices"][0].clone()
        })
        .collect();
    let lp = |t: &str, off: usize| json!({"tokens": [t], "token_logprobs": [-0.5], "top_logprobs": [{t: -0.5}], "text_offset": [off]});
    assert_eq!(
        choices,
        vec![
            json!({"index": 0, "text": "Hello", "logprobs": lp("Hello", 0), "finish_reason": null}),
            json!({"index": 0, "text": " world", "logprobs": lp(" world", 5), "finish_reason": null}),
            json!({"index": 0, "text": "", "logprobs": null, "finish_reason": "stop"}),
        ]
    );
}

#[tokio::test]
async fn chat_stream_logprobs() {
    let state = app(FakeEngine::new(Behavior::Script));
    let body = r#"{"messages":[{"role":"user","content":"Hi"}],"stream":true,"logprobs":true}"#;
    let chunks = parse(&stream(&state, CHAT, body).await);
    let entry =
        |t: &str| json!({"token": t, "logprob": -0.5, "bytes": t.as_bytes(), "top_logprobs": []});
    assert_eq!(chunks[0]["choices"][0]["logprobs"], Value::Null);
    assert_eq!(
        chunks[1]["choices"][0]["logprobs"],
        json!({"content": [entry("Hello")]})
    );
    assert_eq!(
        chunks[2]["choices"][0]["logprobs"],
        json!({"content": [entry(" world")]})
    );
    assert_eq!(chunks[3]["choices"][0]["logprobs"], Value::Null);
}

#[tokio::test]
async fn engine_error_mid_stream_is_an_error_event_then_done() {
    let state = app(FakeEngine::new(Behavior::FailAfterDelta(
        "out of KV blocks".into(),
    )));
    let body = r#"{"messages":[{"role":"user","content":"Hi"}],"stream":true}"#;
    let f = stream(&state, CHAT, body).await;
    assert_eq!(f.len(), 4, "{f:?}");
    let v: Vec<Value> = f[..3]
        .iter()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect();
    assert_eq!(
        v[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(v[1]["choices"][0]["delta"], json!({"content": "Hello"}));
    assert_eq!(
        v[2],
        envelope(
            "generation failed: out of KV blocks",
            "server_error",
            None,
            "internal_error"
        )
    );
    assert_eq!(f[3], "[DONE]");
}

#[tokio::test]
async fn dropping_the_sse_body_cancels_the_request() {
    let engine = FakeEngine::new(Behavior::Hold);
    let state = app(engine.clone());
    let body = r#"{"messages":[{"role":"user","content":"Hi"}],"stream":true}"#;
    let resp = send(&state, post(CHAT, body)).await;
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.into_body().into_data_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: {"), "{first:?}");
    let second = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&second).contains(r#""content":"Hello""#));
    assert!(!engine.cancelled(0), "still streaming");
    drop(body);
    assert!(
        engine.cancelled(0),
        "client gone -> engine request cancelled"
    );
}

#[tokio::test]
async fn dropping_a_non_stream_request_cancels_it() {
    let engine = FakeEngine::new(Behavior::Hold);
    let state = app(engine.clone());
    let body = r#"{"messages":[{"role":"user","content":"Hi"}]}"#;
    let task = tokio::spawn({
        let state = state.clone();
        async move { send(&state, post(CHAT, body)).await }
    });
    for _ in 0..500 {
        if !engine.submitted.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(engine.submitted.lock().unwrap().len(), 1);
    assert!(!engine.cancelled(0), "waiting for the engine");
    task.abort();
    let _ = task.await;
    assert!(
        engine.cancelled(0),
        "aborted handler -> engine request cancelled"
    );
}
