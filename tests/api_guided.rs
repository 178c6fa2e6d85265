//! Constrained decoding over the real CPU engine and the default model: `guided_choice`,
//! `guided_regex`, `response_format` json_object / json_schema (n samples each keep their
//! own grammar state), Lark grammars, and schema / grammar errors as 400s naming the field.

mod api_support;

use std::sync::Arc;

use api_support::*;
use ponder::api::AppState;
use ponder::engine::{cpu_core, ActBits, ActivationBits, EngineConfig, EngineHandle};
use ponder::validate::HttpLimits;
use serde_json::{json, Value};

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

async fn chat(state: &AppState, content: &str, extra: Value) -> (u16, Value) {
    let mut body = json!({"messages": [{"role": "user", "content": content}], "max_tokens": 48});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    call(state, post("/v1/chat/completions", body.to_string())).await
}

fn contents(v: &Value) -> Vec<String> {
    v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["message"]["content"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn choices_regexes_and_json_are_followed() {
    let state = real_app();
    let (status, v) = chat(
        &state,
        "Is the sky green?",
        json!({"guided_choice": ["yes", "no", "maybe"], "n": 4, "temperature": 1.0, "seed": 3}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    for c in contents(&v) {
        assert!(["yes", "no", "maybe"].contains(&c.as_str()), "{c}");
    }
    assert!(v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["finish_reason"] == "stop"));

    let (status, v) = chat(
        &state,
        "Give a date.",
        json!({"guided_regex": "[0-9]{4}-[0-9]{2}-[0-9]{2}", "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let d = &contents(&v)[0];
    assert!(
        regex::Regex::new("^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
            .unwrap()
            .is_match(d),
        "{d}"
    );

    let schema = json!({"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer"}}, "required": ["name", "age"], "additionalProperties": false});
    let rf = json!({"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": true}});
    let (status, v) = chat(
        &state,
        "Describe a person as JSON.",
        json!({"response_format": rf, "n": 3, "temperature": 1.0, "seed": 9, "max_tokens": 64}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // Seeded, so the same request gives the same three samples again (the exact texts depend
    // on the CPU's vector width: sampling at temperature 1 turns last-bit differences of the
    // float kernels into other tokens); the samples differ from each other and each is a
    // valid instance of the schema.
    let (status2, again) = chat(
        &state,
        "Describe a person as JSON.",
        json!({"response_format": rf, "n": 3, "temperature": 1.0, "seed": 9, "max_tokens": 64}),
    )
    .await;
    assert_eq!(status2, 200, "{again}");
    assert_eq!(contents(&v), contents(&again));
    let people = contents(&v);
    assert!(
        people[0] != people[1] && people[1] != people[2] && people[0] != people[2],
        "{people:?}"
    );
    for (c, choice) in contents(&v).iter().zip(v["choices"].as_array().unwrap()) {
        if choice["finish_reason"] == "stop" {
            let p: Value = serde_json::from_str(c).unwrap_or_else(|e| panic!("{e}: {c}"));
            let keys: Vec<&String> = p.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["name", "age"], "{c}");
            assert!(p["age"].is_i64() && p["name"].as_str().unwrap().chars().count() <= 12);
        }
    }
    let (status, v) = chat(
        &state,
        "JSON please.",
        json!({"response_format": {"type": "json_object"}, "temperature": 0, "max_tokens": 64}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    if v["choices"][0]["finish_reason"] == "stop" {
        let p: Value = serde_json::from_str(&contents(&v)[0]).unwrap();
        assert!(p.is_object());
    }
    let (status, v) = chat(
        &state,
        "Pick a color.",
        json!({"guided_grammar": "start: \"color: \" (\"red\" | \"blue\")", "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(["color: red", "color: blue"].contains(&contents(&v)[0].as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_constraints_are_400s_naming_the_field() {
    let state = real_app();
    let bad = |m: &str, p: &str| {
        (
            400,
            envelope(m, "invalid_request_error", Some(p), "invalid_value"),
        )
    };
    assert_eq!(
        chat(&state, "x", json!({"response_format": {"type": "bogus"}})).await,
        bad(
            "`response_format.type` must be one of text, json_object, json_schema, given \"bogus\"",
            "response_format.type"
        )
    );
    let (status, v) = chat(
        &state,
        "x",
        json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x",
            "schema": {"type": "object", "properties": {"a": {"type": "strin"}}}}}}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "response_format.json_schema.schema");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("`response_format.json_schema.schema` cannot be used: "),
        "{msg}"
    );
    let (status, v) = chat(&state, "x", json!({"guided_grammar": "start: foo"})).await;
    assert_eq!(
        (status, v["error"]["param"].clone()),
        (400, json!("guided_grammar")),
        "{v}"
    );
    let (status, v) = chat(&state, "x", json!({"guided_regex": "(unclosed"})).await;
    assert_eq!(
        (status, v["error"]["param"].clone()),
        (400, json!("guided_regex")),
        "{v}"
    );
    assert_eq!(
        chat(
            &state,
            "x",
            json!({"guided_regex": "a", "guided_choice": ["b"]})
        )
        .await,
        bad(
            "give one output constraint, given guided_regex and guided_choice",
            "guided_choice"
        )
    );
    assert_eq!(
        chat(&state, "x", json!({"response_format": {"type": "text"}}))
            .await
            .0,
        200
    );
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"], "additionalProperties": false}}}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tool_calls_round_trip_json_and_stream() {
    let state = real_app();
    let (status, v) = chat(
        &state,
        "What is the weather in Paris?",
        json!({"tools": weather_tool(), "tool_choice": "required", "temperature": 0,
            "max_tokens": 64, "parallel_tool_calls": false}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "tool_calls", "{v}");
    assert_eq!(c["message"]["content"], Value::Null);
    let calls = c["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string(), "{args}");

    // The result goes back as a `tool` message; the answer is plain content.
    let body = json!({"messages": [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"}],
        "tools": weather_tool(), "tool_choice": "none", "temperature": 0, "max_tokens": 24});
    let (status, v) = call(&state, post("/v1/chat/completions", body.to_string())).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["choices"][0]["message"]["content"].is_string());
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());

    // Streaming: no call text leaks into content; one tool_calls delta, then the finish.
    let body = json!({"messages": [{"role": "user", "content": "Weather in Rome?"}],
        "tools": weather_tool(), "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "temperature": 0, "max_tokens": 64, "stream": true, "parallel_tool_calls": false});
    let text = body_text(send(&state, post("/v1/chat/completions", body.to_string())).await).await;
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|f| f.strip_prefix("data: "))
        .filter(|f| *f != "[DONE]")
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "");
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(deltas.len(), 1, "{text}");
    assert_eq!(deltas[0].as_array().unwrap().len(), 1, "{text}");
    assert_eq!(deltas[0][0]["index"], 0);
    assert_eq!(deltas[0][0]["function"]["name"], "get_weather");
    let last = &chunks[chunks.len() - 1]["choices"][0];
    assert_eq!(last["finish_reason"], "tool_calls");
}
