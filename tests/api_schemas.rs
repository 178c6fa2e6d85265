//! openapi.yaml's response schemas against the response bodies: every body the router sends
//! for a spread of requests (chat and completions, n > 1, logprobs, echo, streaming with
//! usage, aggregated `ttc` requests with their report and progress chunks) and typed bodies
//! built with every optional field (reasoning, tool calls) must (1) validate against the
//! schema (JSON Schema 2020-12, the dialect of OpenAPI 3.1) and (2) use no field the schema
//! does not declare, so a field added to a `body.rs` struct fails here until the spec has it.

mod api_support;

use api_support::*;
use ponder::api::body::{
    self, ChatChoice, ChatChunkChoice, ChatLogprobs, ChatTokenLogprob, Chunk, CompletionChoice,
    Delta, Message, Reasoning, Usage,
};
use serde_json::{json, Map, Value};

fn spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    serde_json::to_value(yaml).unwrap()
}

/// `#/components/schemas/{name}` resolved inside `spec`.
fn resolve<'a>(spec: &'a Value, mut s: &'a Value) -> &'a Value {
    while let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let mut node = spec;
        for part in r.strip_prefix("#/").expect("local $ref").split('/') {
            node = &node[part];
        }
        s = node;
    }
    s
}

/// The subschemas that describe a value: the schema itself plus its allOf / oneOf / anyOf
/// branches (recursively), each resolved.
fn branches<'a>(spec: &'a Value, s: &'a Value, out: &mut Vec<&'a Value>) {
    let s = resolve(spec, s);
    out.push(s);
    for k in ["allOf", "oneOf", "anyOf"] {
        for b in s.get(k).and_then(Value::as_array).into_iter().flatten() {
            branches(spec, b, out);
        }
    }
}

/// Fields of `v` (at `path`) that the schema does not declare.
fn undeclared(spec: &Value, schema: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
    let mut bs = Vec::new();
    branches(spec, schema, &mut bs);
    match v {
        Value::Object(m) => {
            let mut props: Map<String, Value> = Map::new();
            let mut open = None;
            for b in &bs {
                if let Some(p) = b.get("properties").and_then(Value::as_object) {
                    for (k, s) in p {
                        props.entry(k.clone()).or_insert_with(|| s.clone());
                    }
                }
                if let Some(a) = b.get("additionalProperties").filter(|a| a.is_object()) {
                    open = Some(a.clone());
                }
            }
            for (k, x) in m {
                match (props.get(k), &open) {
                    (Some(s), _) | (None, Some(s)) => {
                        undeclared(spec, s, x, &format!("{path}.{k}"), out)
                    }
                    (None, None) => out.push(format!("{path}.{k}")),
                }
            }
        }
        Value::Array(xs) => {
            if let Some(items) = bs.iter().find_map(|b| b.get("items")) {
                for (i, x) in xs.iter().enumerate() {
                    undeclared(spec, items, x, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// Checks `v` against `#/components/schemas/{name}`: valid, and no undeclared field.
fn check(spec: &Value, name: &str, v: &Value) {
    let mut root = spec.clone();
    root["$ref"] = json!(format!("#/components/schemas/{name}"));
    let validator = jsonschema::draft202012::new(&root).expect("openapi.yaml compiles");
    let errors: Vec<String> = validator
        .iter_errors(v)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:?}\n{v:#}");
    let mut extra = Vec::new();
    undeclared(
        spec,
        &spec["components"]["schemas"][name],
        v,
        name,
        &mut extra,
    );
    assert!(
        extra.is_empty(),
        "{name}: fields not in openapi.yaml: {extra:?}\n{v:#}"
    );
}

/// The JSON objects of an SSE body (`[DONE]` excluded).
fn sse_objects(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|f| f.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

async fn bodies(engine: std::sync::Arc<FakeEngine>, path: &str, reqs: &[Value]) -> Vec<Value> {
    let state = app(engine);
    let mut out = Vec::new();
    for r in reqs {
        let resp = send(&state, post(path, r.to_string())).await;
        let status = resp.status();
        let text = body_text(resp).await;
        assert_eq!(status, 200, "{r}: {text}");
        if r["stream"] == json!(true) {
            let chunks = sse_objects(&text);
            assert!(chunks.len() >= 2, "{text}");
            out.extend(chunks);
        } else {
            out.push(serde_json::from_str(&text).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn router_bodies_match_the_schemas() {
    let spec = spec();
    let msgs = json!([{"role": "user", "content": "Hi"}]);
    let chat = vec![
        json!({"model": "smol", "messages": msgs}),
        json!({"model": "smol", "messages": msgs, "n": 2, "logprobs": true, "top_logprobs": 2}),
        json!({"model": "smol", "messages": msgs, "stream": true, "n": 2, "logprobs": true,
            "top_logprobs": 1, "stream_options": {"include_usage": true}}),
    ];
    let mut seen = 0;
    for v in bodies(
        FakeEngine::new(Behavior::Script),
        "/v1/chat/completions",
        &chat,
    )
    .await
    {
        let name = match v["object"].as_str().unwrap() {
            "chat.completion" => "ChatCompletion",
            "chat.completion.chunk" => "ChatCompletionChunk",
            o => panic!("object {o}"),
        };
        check(&spec, name, &v);
        seen += 1;
    }
    let completions = vec![
        json!({"model": "smol", "prompt": "Hi", "n": 2, "logprobs": 2}),
        json!({"model": "smol", "prompt": "Hi", "echo": true}),
        json!({"model": "smol", "prompt": "Hi", "stream": true, "logprobs": 1,
            "stream_options": {"include_usage": true}}),
    ];
    for v in bodies(
        FakeEngine::new(Behavior::Script),
        "/v1/completions",
        &completions,
    )
    .await
    {
        // One schema for whole responses and chunks (the operation's `x-event-schema`).
        assert_eq!(
            spec["paths"]["/v1/completions"]["post"]["responses"]["200"]["content"]
                ["text/event-stream"]["schema"]["x-event-schema"]["$ref"],
            "#/components/schemas/Completion"
        );
        let name = "Completion";
        check(&spec, name, &v);
        seen += 1;
    }
    let answers = Behavior::Ttc(vec!["12".into(), "13".into(), "12".into()]);
    let ttc = json!({"n": 4, "min_samples": 2, "esc_window": 2});
    let aggregated = vec![
        json!({"model": "smol", "messages": msgs, "seed": 1, "ttc": ttc}),
        json!({"model": "smol", "messages": msgs, "seed": 1, "ttc": ttc, "stream": true,
            "stream_options": {"include_usage": true}}),
    ];
    let mut reports = 0;
    for v in bodies(
        FakeEngine::new(answers),
        "/v1/chat/completions",
        &aggregated,
    )
    .await
    {
        reports += usize::from(v.get("ttc").is_some());
        let name = if v["object"] == "chat.completion" {
            "ChatCompletion"
        } else {
            "ChatCompletionChunk"
        };
        check(&spec, name, &v);
        seen += 1;
    }
    assert_eq!(reports, 2, "a report in the JSON body and in one chunk");
    assert!(seen >= 20, "{seen} bodies checked");
}

fn token(t: &str, top: Option<Vec<ChatTokenLogprob>>) -> ChatTokenLogprob {
    ChatTokenLogprob {
        token: t.into(),
        logprob: -0.5,
        bytes: t.as_bytes().to_vec(),
        top_logprobs: top,
    }
}

#[test]
fn typed_bodies_with_every_optional_field_match_the_schemas() {
    let spec = spec();
    let calls = json!([{"id": "call_1", "type": "function",
        "function": {"name": "f", "arguments": "{}"}}]);
    let lp = ChatLogprobs {
        content: vec![token(
            "Hi",
            Some(vec![token("Hi", None), token("Yo", None)]),
        )],
    };
    let whole = body::ChatCompletion {
        id: "chatcmpl-1".into(),
        object: "chat.completion",
        created: 1,
        model: "m".into(),
        choices: vec![ChatChoice {
            index: 0,
            message: Message {
                role: "assistant",
                content: None,
                tool_calls: Some(calls.clone()),
                reasoning: Reasoning::of(true, "let me think"),
            },
            logprobs: Some(lp.clone()),
            finish_reason: "tool_calls",
        }],
        usage: Usage::new(3, 5, 2),
        ttc: None,
    };
    check(&spec, "ChatCompletion", &body::to_value(&whole));
    let mut streamed_calls = calls.clone();
    streamed_calls[0]["index"] = json!(0);
    let deltas = [
        Delta {
            role: Some("assistant"),
            content: Some(String::new()),
            ..Delta::default()
        },
        Delta {
            reasoning: Reasoning::delta("hmm"),
            ..Delta::default()
        },
        Delta {
            tool_calls: Some(streamed_calls),
            ..Delta::default()
        },
    ];
    for (i, delta) in deltas.into_iter().enumerate() {
        let chunk: body::ChatCompletionChunk = Chunk {
            id: "chatcmpl-1".into(),
            object: "chat.completion.chunk",
            created: 1,
            model: "m".into(),
            choices: vec![ChatChunkChoice {
                index: 0,
                delta,
                logprobs: (i == 1).then(|| lp.clone()),
                finish_reason: None,
            }],
            usage: Some(None),
            ttc: None,
            ttc_progress: None,
        };
        check(&spec, "ChatCompletionChunk", &body::to_value(&chunk));
    }
    let completion = body::Completion {
        id: "cmpl-1".into(),
        object: "text_completion",
        created: 1,
        model: "m".into(),
        choices: vec![CompletionChoice {
            index: 0,
            text: "x".into(),
            logprobs: None,
            finish_reason: Some("stop"),
            reasoning_content: Some(Some("thought".into())),
        }],
        usage: Usage::new(1, 1, 0),
        ttc: None,
    };
    check(&spec, "Completion", &body::to_value(&completion));
}

#[test]
fn the_checker_rejects_undeclared_and_mistyped_fields() {
    let spec = spec();
    let good = json!({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
        "completion_tokens_details": {"reasoning_tokens": 0}});
    check(&spec, "Usage", &good);
    let mut extra = good.clone();
    extra["completion_tokens_details"]["cached"] = json!(1);
    let r = std::panic::catch_unwind(|| check(&spec, "Usage", &extra));
    assert!(r.is_err(), "an undeclared nested field passed");
    let mut wrong = good;
    wrong["total_tokens"] = json!("3");
    let r = std::panic::catch_unwind(|| check(&spec, "Usage", &wrong));
    assert!(r.is_err(), "a string token count passed");
}
