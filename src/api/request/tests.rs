//! Wire parsing tests: field types, messages, prompts.

use super::*;

fn chat_err(body: &str) -> (String, Option<String>) {
    let e = parse_chat(body.as_bytes()).unwrap_err();
    (e.to_string(), e.param())
}

#[test]
fn chat_fields_are_read() {
    let body = r#"{"model":"m","messages":[{"role":"developer","content":[{"type":"text","text":"a"},
        {"type":"text","text":"b"}]},{"role":"user","content":"hi"},{"role":"assistant","content":null}],
        "n":2,"max_tokens":5,"max_completion_tokens":7,"temperature":0.5,"top_k":3,"stop":"x","seed":-1,
        "logprobs":true,"top_logprobs":2,"stream":true,"stream_options":{"include_usage":true},
        "user":"u","top_p":null}"#;
    let r = parse_chat(body.as_bytes()).unwrap();
    assert_eq!(
        r.prompt,
        PromptInput::Chat(vec![
            ChatMessage::new("system", "a\nb"),
            ChatMessage::new("user", "hi"),
            ChatMessage::new("assistant", "")
        ])
    );
    assert_eq!(r.model.as_deref(), Some("m"));
    assert_eq!(r.n, Some(2));
    assert_eq!(r.max_tokens, Some(("max_completion_tokens", 7)));
    assert_eq!(r.temperature, Some(0.5));
    assert_eq!(r.top_k, Some(3));
    assert_eq!(r.top_p, None);
    assert_eq!(r.stop, vec!["x".to_string()]);
    assert_eq!(r.seed, Some(u64::MAX));
    assert!(r.logprobs && r.stream && r.include_usage);
    assert_eq!(r.top_logprobs, Some(("top_logprobs", 2)));
}

#[test]
fn wrong_types_name_the_field_and_value() {
    let cases = [
        (r#"{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#, "`temperature` must be a number, given \"hot\"", "temperature"),
        (r#"{"messages":[{"role":"user","content":"x"}],"n":1.5}"#, "`n` must be an integer, given 1.5", "n"),
        (r#"{"messages":[{"role":"user","content":"x"}],"stop":["a",3]}"#, "`stop[1]` must be a string, given 3", "stop[1]"),
        (r#"{"messages":[{"role":"tool","content":"x"}]}"#, "`messages[0].tool_call_id` is required on tool messages", "messages[0].tool_call_id"),
        (r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]}"#, "`messages[0].content[0].type` must be \"text\" (this model reads text only), given \"image_url\"", "messages[0].content[0].type"),
        (r#"{"messages":[]}"#, "`messages` must hold at least one message", "messages"),
        (r#"{"model":"m"}"#, "`messages` is required", "messages"),
        (r#"[1]"#, "the request body must be a JSON object, given [1]", "body"),
        (r#"{"messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}"#, "`stream_options` is only allowed when `stream` is true", "stream_options"),
    ];
    for (body, msg, param) in cases {
        assert_eq!(
            chat_err(body),
            (msg.to_string(), Some(param.to_string())),
            "{body}"
        );
    }
    assert_eq!(
        chat_err("{\"messages\": [").0,
        "the request body is not valid JSON: EOF while parsing a list at line 1 column 14"
    );
}

#[test]
fn completion_prompts() {
    let p = |s: &str| parse_completion(s.as_bytes()).map(|r| r.prompt);
    assert_eq!(p(r#"{"prompt":"hi"}"#), Ok(PromptInput::Text("hi".into())));
    assert_eq!(
        p(r#"{"prompt":["hi"]}"#),
        Ok(PromptInput::Text("hi".into()))
    );
    assert_eq!(
        p(r#"{"prompt":[1,2,3]}"#),
        Ok(PromptInput::TokenIds(vec![1, 2, 3]))
    );
    assert_eq!(
        p(r#"{"prompt":[[4,5]]}"#),
        Ok(PromptInput::TokenIds(vec![4, 5]))
    );
    assert_eq!(
        p(r#"{"prompt":["a","b","c"]}"#).unwrap_err().to_string(),
        "`prompt` must hold a single prompt (batched prompts are not supported), given 3"
    );
    assert_eq!(
        p(r#"{"prompt":[1,"x"]}"#).unwrap_err().to_string(),
        "`prompt[1]` must be an integer, given \"x\""
    );
    assert_eq!(
        p(r#"{"prompt":{"a":1}}"#).unwrap_err().to_string(),
        "`prompt` must be a string, an array of token ids, or an array holding one of those, given {\"a\":1}"
    );
    let r = parse_completion(br#"{"prompt":"x","logprobs":3}"#).unwrap();
    assert!(r.logprobs);
    assert_eq!(r.top_logprobs, Some(("logprobs", 3)));
}
