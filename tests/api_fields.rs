//! Router tests for "no silent ignores": unknown and unsupported fields are 400s naming them,
//! `logit_bias` reaches the sampler checked, completions `echo` / `suffix` / `best_of` (the n
//! best of more candidates), the
//! OpenAI fields whose only supported value is the default, and logprobs `bytes` / order.

mod api_support;

use api_support::*;
use serde_json::{json, Value};

const HI: &str = r#"[{"role":"user","content":"Hi"}]"#;

fn chat_body(extra: &str) -> String {
    format!(r#"{{"model":"smol","messages":{HI}{extra}}}"#)
}

async fn chat_err(extra: &str) -> (u16, Value) {
    let state = app(FakeEngine::new(Behavior::Script));
    call(&state, post("/v1/chat/completions", chat_body(extra))).await
}

fn bad(message: &str, param: &str) -> (u16, Value) {
    (
        400,
        envelope(
            message,
            "invalid_request_error",
            Some(param),
            "invalid_value",
        ),
    )
}

#[tokio::test]
async fn unknown_and_unsupported_fields_are_400_naming_them() {
    let (status, v) = chat_err(r#","some_future_field":[1]"#).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["param"], "some_future_field");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("`some_future_field` is not a field of POST /v1/chat/completions; supported: messages, model, frequency_penalty, logit_bias,"),
        "{msg}"
    );
    assert_eq!(
        chat_err(r#","audio":{"voice":"alloy","format":"mp3"}"#).await,
        bad(
            "`audio` is not supported: this server generates text only",
            "audio"
        )
    );
    assert_eq!(
        chat_err(r#","prediction":{"type":"content","content":"x"}"#).await,
        bad(
            "`prediction` is not supported: predicted outputs (speculative decoding from given text) are not implemented",
            "prediction"
        )
    );
    // null is "not given".
    assert_eq!(chat_err(r#","audio":null,"verbosity":null"#).await.0, 200);
    assert_eq!(
        chat_err(r#","store":true"#).await,
        bad(
            "`store` must be false: this server does not store completions",
            "store"
        )
    );
    assert_eq!(chat_err(r#","store":false"#).await.0, 200);
    assert_eq!(
        chat_err(r#","modalities":["text","audio"]"#).await,
        bad(
            "`modalities` must be [\"text\"] (this server generates text only), given [\"text\",\"audio\"]",
            "modalities"
        )
    );
    assert_eq!(chat_err(r#","modalities":["text"]"#).await.0, 200);
    assert_eq!(
        chat_err(r#","service_tier":"flex""#).await,
        bad(
            "`service_tier` must be auto or default (this server has one tier), given \"flex\"",
            "service_tier"
        )
    );
    assert_eq!(chat_err(r#","service_tier":"auto""#).await.0, 200);
    assert_eq!(
        chat_err(r#","user":"alice","safety_identifier":"h1""#)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn logit_bias_reaches_the_sampler_checked() {
    let engine = FakeEngine::new(Behavior::Script);
    let state = app(engine.clone());
    let extra = r#","logit_bias":{"19556":100,"2":-100," 7":0.5}"#;
    let (status, _) = call(&state, post("/v1/chat/completions", chat_body(extra))).await;
    assert_eq!(status, 200);
    assert_eq!(
        engine.last_request().params.logit_bias,
        vec![(19556, 100.0), (2, -100.0), (7, 0.5)]
    );
    let cases = [
        (
            r#","logit_bias":{"abc":1}"#,
            "`logit_bias` keys must be token ids in [0, 49152), given \"abc\"",
            "logit_bias",
        ),
        (
            r#","logit_bias":{"49152":1}"#,
            "`logit_bias` keys must be token ids in [0, 49152), given \"49152\"",
            "logit_bias",
        ),
        (
            r#","logit_bias":{"5":101}"#,
            "`logit_bias` values must be in [-100, 100], given 101 for token 5",
            "logit_bias",
        ),
        (
            r#","logit_bias":{"5":"up"}"#,
            "`logit_bias.5` must be a number, given \"up\"",
            "logit_bias.5",
        ),
        (
            r#","logit_bias":[5]"#,
            "`logit_bias` must be an object of token id -> bias, given [5]",
            "logit_bias",
        ),
    ];
    for (extra, msg, param) in cases {
        assert_eq!(chat_err(extra).await, bad(msg, param), "{extra}");
    }
    let many: Vec<String> = (0..301).map(|i| format!("\"{i}\":1")).collect();
    let extra = format!(r#","logit_bias":{{{}}}"#, many.join(","));
    assert_eq!(
        chat_err(&extra).await,
        bad(
            "`logit_bias` must hold at most 300 entries, given 301",
            "logit_bias"
        )
    );
}

#[tokio::test]
async fn completions_echo_suffix_and_best_of() {
    let engine = FakeEngine::new(Behavior::Script);
    let state = app(engine.clone());
    let (status, v) = call(
        &state,
        post("/v1/completions", r#"{"prompt":"Say:","echo":true,"n":2}"#),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["choices"][0]["text"], "Say:Hello world");
    assert_eq!(v["choices"][1]["text"], "Say:Hello world1");
    // Token-id prompts echo their text.
    let ids = MODEL.tokenizer.encode("Say:", false).unwrap();
    let body = json!({"prompt": ids, "echo": true}).to_string();
    let (_, v) = call(&state, post("/v1/completions", body)).await;
    assert_eq!(v["choices"][0]["text"], "Say:Hello world");
    // Streaming: the prompt is the first chunk of each choice.
    let resp = send(
        &state,
        post(
            "/v1/completions",
            r#"{"prompt":"Say:","echo":true,"stream":true}"#,
        ),
    )
    .await;
    let text = body_text(resp).await;
    let first: Value =
        serde_json::from_str(text.lines().next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(
        first["choices"],
        json!([{"index": 0, "text": "Say:", "logprobs": null, "finish_reason": null}])
    );
    let body = r#"{"prompt":"Say:","echo":true,"logprobs":1}"#;
    assert_eq!(
        call(&state, post("/v1/completions", body)).await,
        bad(
            "`echo` with `logprobs` is not supported: prompt tokens are not scored",
            "echo"
        )
    );
    let body = r#"{"prompt":"def f(","suffix":"):\n    pass"}"#;
    assert_eq!(
        call(&state, post("/v1/completions", body)).await,
        bad(
            "`suffix` is not supported by this model: its vocabulary has no fill-in-the-middle tokens (<|fim_prefix|>, <|fim_suffix|>, <|fim_middle|>)",
            "suffix"
        )
    );
    // best_of > n: the engine runs best_of candidates with logprobs; n come back, without
    // logprobs unless asked for.
    let body = r#"{"prompt":"x","best_of":3,"n":2}"#;
    let (status, v) = call(&state, post("/v1/completions", body)).await;
    assert_eq!(status, 200, "{v}");
    let req = engine.last_request();
    assert_eq!((req.n, req.params.logprobs), (3, true));
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    assert_eq!(v["choices"][1]["index"], 1);
    assert_eq!(v["choices"][0]["logprobs"], Value::Null);
    // Usage counts every candidate's tokens.
    assert_eq!(v["usage"]["completion_tokens"], 6);
    let cases = [
        (
            r#"{"prompt":"x","best_of":1,"n":2}"#,
            "`best_of` must be >= `n` (2), given 1",
        ),
        (
            r#"{"prompt":"x","best_of":17}"#,
            "`best_of` must be in [n, 16], given 17",
        ),
        (
            r#"{"prompt":"x","best_of":2,"stream":true}"#,
            "`best_of` > `n` cannot be used with `stream` (candidates are ranked at the end)",
        ),
    ];
    for (body, msg) in cases {
        assert_eq!(
            call(&state, post("/v1/completions", body)).await,
            bad(msg, "best_of")
        );
    }
    let body = r#"{"prompt":"x","best_of":2,"n":2}"#;
    assert_eq!(call(&state, post("/v1/completions", body)).await.0, 200);
    assert_eq!(engine.last_request().n, 2);
}

#[tokio::test]
async fn completion_top_logprobs_come_most_likely_first() {
    let engine = FakeEngine::new(Behavior::Script);
    let state = app(engine.clone());
    let resp = send(
        &state,
        post("/v1/completions", r#"{"prompt":"Hi","logprobs":3}"#),
    )
    .await;
    let text = body_text(resp).await;
    // "Hello" (-0.5) before " world" (-1.25) before "!" (-inf), not in byte order.
    assert!(
        text.contains(r#""top_logprobs":[{"Hello":-0.5," world":-1.25,"!":-9999.0}"#),
        "{text}"
    );
}

#[test]
fn logprob_bytes_rebuild_partial_utf8_tokens() {
    let vocab = ponder::guided::TokenBytes::from_tokenizer_json(
        &serde_json::from_str(&MODEL.tokenizer.to_json()).unwrap(),
        49152,
        |_| String::new(),
    );
    let text = "I 😀 Rust ✓";
    let ids = MODEL.tokenizer.encode(text, false).unwrap();
    let lps: Vec<_> = ids
        .iter()
        .map(|&t| ponder::engine::TokenLogprob {
            token: t,
            logprob: -1.0,
            top: vec![],
        })
        .collect();
    let entries = ponder::api::response::chat_logprobs(&MODEL.tokenizer, &vocab, &lps);
    let mut bytes = Vec::new();
    let mut partial = 0;
    for e in &entries.content {
        let b = e.bytes.clone();
        partial += usize::from(std::str::from_utf8(&b).is_err());
        bytes.extend(b);
    }
    assert_eq!(String::from_utf8(bytes).unwrap(), text);
    // The emoji and the check mark are split inside their UTF-8 sequences.
    assert!(partial >= 2, "{entries:?}");
}

#[tokio::test]
async fn tool_choice_auto_leaves_plain_answers_alone_and_needs_a_parser() {
    let engine = FakeEngine::new(Behavior::Script);
    let mut state = app(engine.clone());
    let tools =
        r#","tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]"#;
    let (status, v) = call(&state, post("/v1/chat/completions", chat_body(tools))).await;
    assert_eq!(status, 200);
    assert_eq!(
        v["choices"][0],
        json!({"index": 0, "message": {"role": "assistant", "content": "Hello world"},
            "logprobs": null, "finish_reason": "stop"})
    );
    // auto sends the tools in the prompt: the fallback system prompt lists them.
    let prompt = MODEL
        .tokenizer
        .decode(&engine.last_request().prompt_token_ids, false);
    assert!(
        prompt.starts_with("<|im_start|>system\nYou may call one or more functions"),
        "{prompt}"
    );
    assert!(
        prompt.contains(
            r#"<tools>
{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}
</tools>"#
        ),
        "{prompt}"
    );
    state.tool_parser = ponder::tools::ToolParser::None;
    assert_eq!(
        call(&state, post("/v1/chat/completions", chat_body(tools))).await,
        bad(
            "`tool_choice` auto needs a tool-call parser: start the server with --tool-call-parser hermes or llama3_json",
            "tool_choice"
        )
    );
    let named = format!(r#"{tools},"tool_choice":{{"type":"function","function":{{"name":"g"}}}}"#);
    assert_eq!(
        chat_err(&named).await,
        bad(
            "`tool_choice` names \"g\", which is not in `tools`",
            "tool_choice"
        )
    );
}
