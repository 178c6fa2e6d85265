//! `POST /tokenize` and `POST /detokenize` in vLLM's shapes, and `GET /v1/models/{id}`.
//!
//! ```text
//! /tokenize   {"prompt": "text", "add_special_tokens": true}
//!          or {"messages": [...], "add_generation_prompt": true}   (the chat template applied)
//!             [+ "return_token_strs": true]
//!          -> {"count", "max_model_len", "tokens": [ids], "token_strs": [..] | null}
//! /detokenize {"tokens": [ids]} -> {"prompt": "text"}
//! ```
//!
//! Unknown fields are 400s, as on the inference endpoints; `model`, when given, must be the
//! served name (404 otherwise).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::AppState;
use crate::validate::ValidateError;

fn bad(param: &str, message: String) -> ApiError {
    ApiError::Validate(ValidateError::invalid(param, message))
}

/// The body as a JSON object with only `known` fields; checks `model`.
fn object(
    s: &AppState,
    body: Result<Bytes, BytesRejection>,
    route: &str,
    known: &[&str],
) -> Result<Map<String, Value>, ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
            limit: s.limits.max_body_bytes,
        },
        _ => ApiError::BadBody(e.body_text()),
    })?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| bad("body", format!("the request body is not valid JSON: {e}")))?;
    let Value::Object(o) = v else {
        return Err(bad("body", "the request body must be a JSON object".into()));
    };
    if let Some(k) = o.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(bad(
            k,
            format!(
                "`{k}` is not a field of POST {route}; supported: {}",
                known.join(", ")
            ),
        ));
    }
    match o.get("model") {
        None | Some(Value::Null) => {}
        Some(Value::String(m)) if **m == *s.served_name => {}
        Some(Value::String(m)) => {
            return Err(ApiError::Validate(ValidateError::ModelNotFound {
                given: m.clone(),
                served: s.served_name.to_string(),
            }))
        }
        Some(v) => return Err(bad("model", format!("`model` must be a string, given {v}"))),
    }
    Ok(o)
}

fn flag(o: &Map<String, Value>, k: &str, default: bool) -> Result<bool, ApiError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(bad(k, format!("`{k}` must be a boolean, given {v}"))),
    }
}

pub async fn tokenize(State(s): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    const KNOWN: &[&str] = &[
        "model",
        "prompt",
        "messages",
        "add_special_tokens",
        "add_generation_prompt",
        "return_token_strs",
    ];
    let run = || -> Result<Value, ApiError> {
        let o = object(&s, body, "/tokenize", KNOWN)?;
        let t = &s.model.tokenizer;
        let ids = match (o.get("prompt"), o.get("messages")) {
            (Some(Value::String(p)), None) => {
                let special = flag(&o, "add_special_tokens", true)?;
                t.encode(p, special && t.add_bos)
            }
            (None, Some(m @ Value::Array(_))) => {
                let body = json!({"messages": m}).to_string();
                let raw = super::request::parse_chat(body.as_bytes())?;
                let crate::validate::PromptInput::Chat(msgs) = raw.prompt else {
                    unreachable!("parse_chat returns chat prompts")
                };
                let gen = flag(&o, "add_generation_prompt", true)?;
                let text = s.model.template.render(&msgs, gen).map_err(|e| {
                    bad(
                        "messages",
                        format!("the model's chat template rejected `messages`: {e}"),
                    )
                })?;
                t.encode(&text, t.add_bos)
            }
            (Some(_), Some(_)) => {
                return Err(bad(
                    "prompt",
                    "give either `prompt` or `messages`, not both".into(),
                ))
            }
            (Some(v), None) => {
                return Err(bad(
                    "prompt",
                    format!("`prompt` must be a string, given {v}"),
                ))
            }
            (None, Some(v)) => {
                return Err(bad(
                    "messages",
                    format!("`messages` must be an array, given {v}"),
                ))
            }
            (None, None) => return Err(bad("prompt", "`prompt` or `messages` is required".into())),
        }
        .map_err(|e| ApiError::Internal {
            request_id: "tokenize".into(),
            detail: format!("tokenizing failed: {e}"),
        })?;
        let strs = flag(&o, "return_token_strs", false)?.then(|| {
            ids.iter()
                .map(|&i| t.decode(&[i], false))
                .collect::<Vec<_>>()
        });
        Ok(
            json!({"count": ids.len(), "max_model_len": s.model.model.cfg.max_position,
            "tokens": ids, "token_strs": strs}),
        )
    };
    match run() {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn detokenize(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let run = || -> Result<Value, ApiError> {
        let o = object(&s, body, "/detokenize", &["model", "tokens"])?;
        let vocab = s.model.model.cfg.vocab_size;
        let ids = match o.get("tokens") {
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_u64()
                        .filter(|&t| (t as usize) < vocab)
                        .map(|t| t as u32)
                        .ok_or_else(|| {
                            bad(
                                "tokens",
                                format!(
                                    "`tokens[{i}]` must be a token id in [0, {vocab}), given {v}"
                                ),
                            )
                        })
                })
                .collect::<Result<Vec<u32>, _>>()?,
            None | Some(Value::Null) => return Err(bad("tokens", "`tokens` is required".into())),
            Some(v) => {
                return Err(bad(
                    "tokens",
                    format!("`tokens` must be an array of token ids, given {v}"),
                ))
            }
        };
        Ok(json!({"prompt": s.model.tokenizer.decode(&ids, false)}))
    };
    match run() {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /v1/models/{id}`: the served model, or 404 `model_not_found`.
pub async fn model(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    if id != *s.served_name {
        return ApiError::Validate(ValidateError::ModelNotFound {
            given: id,
            served: s.served_name.to_string(),
        })
        .into_response();
    }
    Json(super::handlers::model_object(&s)).into_response()
}
