//! Validation tests: ranges, limits, the context arithmetic, prompt token ids.

use super::*;

const LIM: Limits = Limits {
    context_length: 100,
    vocab_size: 1000,
    max_tokens_limit: 50,
    max_n: 16,
};

fn req() -> RawRequest {
    RawRequest::new(PromptInput::TokenIds(vec![1, 2, 3]))
}

fn err(raw: RawRequest, prompt_len: usize) -> (String, Option<String>) {
    let e = check(raw, vec![7; prompt_len], &LIM).unwrap_err();
    (e.to_string(), e.param())
}

#[test]
fn defaults_and_default_max_tokens() {
    let v = check(req(), vec![5; 10], &LIM).unwrap();
    assert_eq!(v.n, 1);
    // context 100 - prompt 10 = 90, capped by the server limit 50.
    assert_eq!(v.params.max_tokens, 50);
    assert_eq!(v.params.temperature, 1.0);
    let v = check(req(), vec![5; 80], &LIM).unwrap();
    assert_eq!(v.params.max_tokens, 20);
}

#[test]
fn range_messages() {
    let s = |x: &str| Some(x.to_string());
    let small = Limits { max_n: 4, ..LIM };
    let e = check(
        RawRequest {
            n: Some(5),
            ..req()
        },
        vec![1; 3],
        &small,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "`n` must be in [1, 4], given 5");
    assert_eq!(
        err(
            RawRequest {
                n: Some(10000),
                ..req()
            },
            3
        ),
        ("`n` must be in [1, 16], given 10000".into(), s("n"))
    );
    assert_eq!(
        err(
            RawRequest {
                n: Some(0),
                ..req()
            },
            3
        )
        .0,
        "`n` must be in [1, 16], given 0"
    );
    assert_eq!(
        err(
            RawRequest {
                max_tokens: Some(("max_completion_tokens", 60)),
                ..req()
            },
            3
        ),
        (
            "`max_completion_tokens` must be <= 50, given 60".into(),
            s("max_completion_tokens")
        )
    );
    assert_eq!(
        err(
            RawRequest {
                max_tokens: Some(("max_tokens", 0)),
                ..req()
            },
            3
        )
        .0,
        "`max_tokens` must be >= 1, given 0"
    );
    assert_eq!(
        err(
            RawRequest {
                top_logprobs: Some(("logprobs", 21)),
                logprobs: true,
                ..req()
            },
            3
        ),
        (
            "`logprobs` must be in [0, 20], given 21".into(),
            s("logprobs")
        )
    );
    assert_eq!(
        err(
            RawRequest {
                temperature: Some(2.5),
                ..req()
            },
            3
        ),
        (
            "`temperature` must be in [0, 2], given 2.5".into(),
            s("temperature")
        )
    );
    assert_eq!(
        err(
            RawRequest {
                stop_token_ids: vec![5, 1000],
                ..req()
            },
            3
        )
        .0,
        "`stop_token_ids[1]` must be a token id in [0, 1000), given 1000"
    );
    assert_eq!(
        err(req(), 0),
        ("`prompt` must not be empty".into(), s("prompt"))
    );
}

#[test]
fn context_overflow_names_both_numbers_and_the_limit() {
    let (msg, _) = err(
        RawRequest {
            max_tokens: Some(("max_tokens", 30)),
            ..req()
        },
        80,
    );
    assert_eq!(
        msg,
        "this model's maximum context length is 100 tokens, but 110 tokens were requested \
         (80 in the prompt + 30 for the completion); reduce the prompt or `max_tokens`"
    );
    // Over the context and over the server limit (50): the context error wins.
    let e = check(
        RawRequest {
            max_tokens: Some(("max_tokens", i64::MAX)),
            ..req()
        },
        vec![1; 3],
        &LIM,
    )
    .unwrap_err();
    assert_eq!(
        e,
        ValidateError::ContextOverflow {
            param: "prompt",
            limit: 100,
            prompt: 3,
            max_tokens: i64::MAX as usize
        }
    );
    assert!(e
        .to_string()
        .contains("9223372036854775810 tokens were requested"));
    // A prompt that fills the context leaves no room even for the default.
    assert_eq!(
        check(req(), vec![1; 100], &LIM).unwrap_err(),
        ValidateError::ContextOverflow {
            param: "prompt",
            limit: 100,
            prompt: 100,
            max_tokens: 1
        }
    );
}

#[test]
fn prompt_token_ids_are_checked_against_the_vocabulary() {
    assert_eq!(token_ids(&[0, 999], 1000), Ok(vec![0, 999]));
    assert_eq!(
        token_ids(&[3, -1], 1000).unwrap_err().to_string(),
        "`prompt[1]` must be a token id in [0, 1000), given -1"
    );
}
