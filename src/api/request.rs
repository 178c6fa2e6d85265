//! Wire requests: a JSON body -> `validate::RawRequest`, checking types and shapes only
//! (ranges are `validate`'s job). Fields not honoured are a 400 naming them (fields.rs);
//! `null` reads as absent; a known field of the wrong type is rejected with its name and the
//! value given: "`temperature` must be a number, given \"hot\"".
//!
//! Chat: `messages` (system | developer | user | assistant; content a string or an array of
//! `{"type":"text","text":...}` parts), `logprobs` bool + `top_logprobs` int,
//! `max_completion_tokens` (wins over `max_tokens`). Completions: `prompt` (a string, or an
//! array of one string / token ids / one array of token ids), `logprobs` int.
//! Both: `reasoning_effort`, `thinking_token_budget`, `min_thinking_tokens` and the `ttc`
//! object (whose unknown fields are rejected, since a misspelt stop rule must not be ignored).

use serde_json::{Map, Value};

use super::fields;
use super::read::{as_int, known_fields, shown, wrong, Fields};
use crate::budget::{RawAuto, RawBudget, RawCertaindex, RawGate, RawMinAgreement, RawTtc};
use crate::model::template::ChatMessage;
use crate::validate::{PromptInput, RawRequest, ValidateError};

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

fn object(body: &[u8]) -> Result<Map<String, Value>, ValidateError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ValidateError::invalid("body", format!("the request body is not valid JSON: {e}"))
    })?;
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ValidateError::invalid(
            "body",
            format!(
                "the request body must be a JSON object, given {}",
                shown(&other)
            ),
        )),
    }
}

/// `logit_bias`: an object of token id (a decimal string) -> bias.
fn logit_bias(f: &Fields<'_>) -> Result<Vec<(String, f32)>, ValidateError> {
    let Some(v) = f.get("logit_bias") else {
        return Ok(Vec::new());
    };
    let o = v
        .as_object()
        .ok_or_else(|| wrong("logit_bias", "an object of token id -> bias", v))?;
    o.iter()
        .map(|(k, b)| {
            b.as_f64()
                .map(|b| (k.clone(), b as f32))
                .ok_or_else(|| wrong(&format!("logit_bias.{k}"), "a number", b))
        })
        .collect()
}

/// Fields both endpoints share (all but the prompt, `logprobs` and `max_completion_tokens`).
fn common(f: &Fields<'_>, prompt: PromptInput) -> Result<RawRequest, ValidateError> {
    let mut r = RawRequest::new(prompt);
    r.model = f.string("model")?.map(str::to_string);
    r.n = f.int("n")?;
    r.max_tokens = f.int("max_tokens")?.map(|v| ("max_tokens", v));
    r.temperature = f.number("temperature")?;
    r.top_p = f.number("top_p")?;
    r.top_k = f.int("top_k")?;
    r.min_p = f.number("min_p")?;
    r.presence_penalty = f.number("presence_penalty")?;
    r.frequency_penalty = f.number("frequency_penalty")?;
    r.repetition_penalty = f.number("repetition_penalty")?;
    r.seed = match f.get("seed") {
        None => None,
        // Negative seeds (allowed by OpenAI) keep their bits.
        Some(v) => Some(
            v.as_u64()
                .or_else(|| v.as_i64().map(|i| i as u64))
                .ok_or_else(|| wrong("seed", "an integer", v))?,
        ),
    };
    r.stop = match f.get("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| wrong(&format!("stop[{i}]"), "a string", v))
            })
            .collect::<Result<_, _>>()?,
        Some(v) => return Err(wrong("stop", "a string or an array of strings", v)),
    };
    r.stop_token_ids = match f.get("stop_token_ids") {
        None => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| as_int(&format!("stop_token_ids[{i}]"), v))
            .collect::<Result<_, _>>()?,
        Some(v) => return Err(wrong("stop_token_ids", "an array of token ids", v)),
    };
    r.ignore_eos = f.bool("ignore_eos")?.unwrap_or(false);
    r.budget = RawBudget {
        reasoning_effort: f.string("reasoning_effort")?.map(str::to_string),
        thinking_token_budget: f.int("thinking_token_budget")?,
        min_thinking_tokens: f.int("min_thinking_tokens")?,
        ttc: f.get("ttc").map(ttc).transpose()?,
    };
    r.min_tokens = f.int("min_tokens")?;
    r.constraint = super::constraint::constraint(f)?;
    r.logit_bias = logit_bias(f)?;
    // Abuse-tracking ids: logged with the request (`user`, or its successor).
    r.user = f
        .string("safety_identifier")?
        .or(f.string("user")?)
        .map(str::to_string);
    r.stream = f.bool("stream")?.unwrap_or(false);
    if let Some(opts) = f.get("stream_options") {
        let o = opts
            .as_object()
            .ok_or_else(|| wrong("stream_options", "an object", opts))?;
        if !r.stream {
            return Err(ValidateError::invalid(
                "stream_options",
                "`stream_options` is only allowed when `stream` is true",
            ));
        }
        r.include_usage = Fields(o)
            .bool("include_usage")
            .map_err(|_| {
                wrong(
                    "stream_options.include_usage",
                    "a boolean",
                    o.get("include_usage").unwrap_or(&Value::Null),
                )
            })?
            .unwrap_or(false);
    }
    Ok(r)
}

const TTC_FIELDS: &[&str] = &[
    "strategy",
    "n",
    "min_samples",
    "extract",
    "equivalence",
    "aggregation",
    "consensus",
    "esc_window",
    "confidence_gate",
    "min_agreement",
    "total_token_budget",
    "deadline_ms",
    "certaindex",
    "scorer",
    "auto",
];

/// The `ttc` object (ponder's test-time compute request).
fn ttc(v: &Value) -> Result<RawTtc, ValidateError> {
    let o = v.as_object().ok_or_else(|| wrong("ttc", "an object", v))?;
    known_fields("ttc", o, TTC_FIELDS)?;
    let f = Fields(o);
    let named = |k: &str| format!("ttc.{k}");
    let string = |k: &str| {
        f.get(k)
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| wrong(&named(k), "a string", v))
            })
            .transpose()
    };
    let int = |k: &str| f.get(k).map(|v| as_int(&named(k), v)).transpose();
    let number = |k: &str, v: &Value| v.as_f64().ok_or_else(|| wrong(k, "a number", v));
    let confidence_gate = match f.get("confidence_gate") {
        None => None,
        Some(Value::Bool(false)) => None,
        Some(Value::Bool(true)) => Some(RawGate::default()),
        Some(Value::Object(g)) => {
            known_fields("ttc.confidence_gate", g, &["window", "percentile"])?;
            let gf = Fields(g);
            Some(RawGate {
                window: gf
                    .get("window")
                    .map(|v| as_int("ttc.confidence_gate.window", v))
                    .transpose()?,
                percentile: gf
                    .get("percentile")
                    .map(|v| number("ttc.confidence_gate.percentile", v))
                    .transpose()?,
            })
        }
        Some(v) => {
            return Err(wrong(
                "ttc.confidence_gate",
                "a boolean or an object {window, percentile}",
                v,
            ))
        }
    };
    let min_agreement = match f.get("min_agreement") {
        None => None,
        Some(Value::Object(m)) => {
            known_fields("ttc.min_agreement", m, &["after", "share"])?;
            let mf = Fields(m);
            Some(RawMinAgreement {
                after: mf
                    .get("after")
                    .map(|v| as_int("ttc.min_agreement.after", v))
                    .transpose()?,
                share: mf
                    .get("share")
                    .map(|v| number("ttc.min_agreement.share", v))
                    .transpose()?,
            })
        }
        Some(v) => return Err(wrong("ttc.min_agreement", "an object {after, share}", v)),
    };
    let certaindex = match f.get("certaindex") {
        None | Some(Value::Bool(false)) => None,
        Some(Value::Bool(true)) => Some(RawCertaindex::default()),
        Some(Value::Object(m)) => {
            known_fields("ttc.certaindex", m, &["probe_every", "agree", "max_tokens"])?;
            let mf = Fields(m);
            let int = |k: &str| {
                mf.get(k)
                    .map(|v| as_int(&format!("ttc.certaindex.{k}"), v))
                    .transpose()
            };
            Some(RawCertaindex {
                probe_every: int("probe_every")?,
                agree: int("agree")?,
                max_tokens: int("max_tokens")?,
            })
        }
        Some(v) => {
            return Err(wrong(
                "ttc.certaindex",
                "a boolean or an object {probe_every, agree, max_tokens}",
                v,
            ))
        }
    };
    let auto = match f.get("auto") {
        None => None,
        Some(Value::Object(m)) => {
            const AUTO: &[&str] = &[
                "first",
                "wave",
                "confidence",
                "hopeless_after",
                "hopeless_share",
                "max_thinking",
            ];
            known_fields("ttc.auto", m, AUTO)?;
            let mf = Fields(m);
            let int = |k: &str| {
                mf.get(k)
                    .map(|v| as_int(&format!("ttc.auto.{k}"), v))
                    .transpose()
            };
            let num = |k: &str| {
                mf.get(k)
                    .map(|v| number(&format!("ttc.auto.{k}"), v))
                    .transpose()
            };
            Some(RawAuto {
                first: int("first")?,
                wave: int("wave")?,
                confidence: num("confidence")?,
                hopeless_after: int("hopeless_after")?,
                hopeless_share: num("hopeless_share")?,
                max_thinking: int("max_thinking")?,
            })
        }
        Some(v) => return Err(wrong("ttc.auto", "an object", v)),
    };
    Ok(RawTtc {
        auto,
        certaindex,
        scorer: string("scorer")?,
        strategy: string("strategy")?,
        n: int("n")?,
        min_samples: int("min_samples")?,
        extract: string("extract")?,
        equivalence: string("equivalence")?,
        aggregation: string("aggregation")?,
        consensus: f
            .get("consensus")
            .map(|v| number("ttc.consensus", v))
            .transpose()?,
        esc_window: int("esc_window")?,
        confidence_gate,
        min_agreement,
        total_token_budget: int("total_token_budget")?,
        deadline_ms: int("deadline_ms")?,
    })
}

/// `POST /v1/chat/completions` body.
pub fn parse_chat(body: &[u8]) -> Result<RawRequest, ValidateError> {
    let obj = object(body)?;
    fields::check(&obj, fields::CHAT_FIELDS, "/v1/chat/completions")?;
    let f = Fields(&obj);
    let messages = match f.get("messages") {
        None => return Err(ValidateError::invalid("messages", "`messages` is required")),
        Some(Value::Array(a)) if a.is_empty() => {
            return Err(ValidateError::invalid(
                "messages",
                "`messages` must hold at least one message",
            ))
        }
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, m)| message(i, m))
            .collect::<Result<Vec<_>, _>>()?,
        Some(v) => return Err(wrong("messages", "an array of messages", v)),
    };
    let (messages, json): (Vec<ChatMessage>, Vec<Value>) = messages.into_iter().unzip();
    let mut r = common(&f, PromptInput::Chat(messages))?;
    r.tools = crate::tools::parse(&obj)?;
    r.chat_json = json;
    if let Some(v) = f.int("max_completion_tokens")? {
        r.max_tokens = Some(("max_completion_tokens", v));
    }
    r.logprobs = f.bool("logprobs")?.unwrap_or(false);
    r.top_logprobs = f.int("top_logprobs")?.map(|v| ("top_logprobs", v));
    if f.bool("store")? == Some(true) {
        return Err(ValidateError::invalid(
            "store",
            "`store` must be false: this server does not store completions",
        ));
    }
    if let Some(v) = f.get("modalities") {
        if v != &serde_json::json!(["text"]) {
            return Err(wrong(
                "modalities",
                "[\"text\"] (this server generates text only)",
                v,
            ));
        }
    }
    match f.string("service_tier")? {
        None | Some("auto" | "default") => {}
        Some(t) => {
            return Err(ValidateError::invalid(
                "service_tier",
                format!(
                "`service_tier` must be auto or default (this server has one tier), given \"{t}\""
            ),
            ))
        }
    }
    Ok(r)
}

/// One message: its plain form and its OpenAI-shaped JSON for templates that render tool
/// calls (`tool_calls` arguments parsed into objects, as templates print them).
fn message(i: usize, m: &Value) -> Result<(ChatMessage, Value), ValidateError> {
    let p = format!("messages[{i}]");
    let o = m
        .as_object()
        .ok_or_else(|| wrong(&p, "an object with `role` and `content`", m))?;
    let f = Fields(o);
    let role = match f.get("role") {
        None => {
            return Err(ValidateError::invalid(
                format!("{p}.role"),
                format!("`{p}.role` is required"),
            ))
        }
        Some(Value::String(r)) if ROLES.contains(&r.as_str()) => r.as_str(),
        Some(v) => {
            return Err(wrong(
                &format!("{p}.role"),
                "one of system, developer, user, assistant, tool",
                v,
            ))
        }
    };
    let calls = match f.get("tool_calls") {
        Some(v) if role == "assistant" => Some(tool_calls(&p, v)?),
        Some(_) => {
            return Err(ValidateError::invalid(
                format!("{p}.tool_calls"),
                format!("`{p}.tool_calls` is only allowed on assistant messages"),
            ))
        }
        None => None,
    };
    let call_id = f.string("tool_call_id").map_err(|_| {
        wrong(
            &format!("{p}.tool_call_id"),
            "a string",
            o.get("tool_call_id").unwrap_or(&Value::Null),
        )
    })?;
    if role == "tool" && call_id.is_none() {
        return Err(ValidateError::invalid(
            format!("{p}.tool_call_id"),
            format!("`{p}.tool_call_id` is required on tool messages"),
        ));
    }
    let content = match f.get("content") {
        None if role == "assistant" => String::new(),
        None => {
            return Err(ValidateError::invalid(
                format!("{p}.content"),
                format!("`{p}.content` is required"),
            ))
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                texts.push(text_part(&format!("{p}.content[{j}]"), part)?);
            }
            texts.join("\n")
        }
        Some(v) => {
            return Err(wrong(
                &format!("{p}.content"),
                "a string or an array of text parts",
                v,
            ))
        }
    };
    // Templates written for OpenAI's roles know `system`; `developer` is its newer name.
    let role = if role == "developer" { "system" } else { role };
    let mut json = serde_json::json!({"role": role, "content": content});
    if role == "assistant" && content.is_empty() && calls.is_some() {
        json["content"] = Value::Null;
    }
    if let Some(c) = calls {
        json["tool_calls"] = c;
    }
    if let Some(id) = call_id {
        json["tool_call_id"] = Value::String(id.to_string());
    }
    if let Some(Value::String(n)) = f.get("name") {
        json["name"] = Value::String(n.clone());
    }
    Ok((ChatMessage::new(role, &content), json))
}

/// An assistant message's `tool_calls`, with each `function.arguments` string parsed.
fn tool_calls(p: &str, v: &Value) -> Result<Value, ValidateError> {
    let a = v
        .as_array()
        .ok_or_else(|| wrong(&format!("{p}.tool_calls"), "an array", v))?;
    let mut out = Vec::with_capacity(a.len());
    for (j, c) in a.iter().enumerate() {
        let q = format!("{p}.tool_calls[{j}]");
        let f = c
            .get("function")
            .filter(|f| f.get("name").is_some_and(Value::is_string))
            .ok_or_else(|| wrong(&q, "an object {id, type, function: {name, arguments}}", c))?;
        let args = match f.get("arguments") {
            Some(Value::String(s)) => serde_json::from_str(s).map_err(|e| {
                ValidateError::invalid(
                    format!("{q}.function.arguments"),
                    format!("`{q}.function.arguments` must be a JSON object in a string: {e}"),
                )
            })?,
            Some(v @ Value::Object(_)) => v.clone(),
            _ => serde_json::json!({}),
        };
        out.push(
            serde_json::json!({"id": c.get("id").cloned().unwrap_or(Value::Null),
            "type": "function", "function": {"name": f["name"], "arguments": args}}),
        );
    }
    Ok(Value::Array(out))
}

fn text_part(p: &str, part: &Value) -> Result<String, ValidateError> {
    let o = part
        .as_object()
        .ok_or_else(|| wrong(p, "a content part object", part))?;
    match o.get("type") {
        Some(Value::String(t)) if t == "text" => {}
        Some(t) => {
            return Err(wrong(
                &format!("{p}.type"),
                "\"text\" (this model reads text only)",
                t,
            ))
        }
        None => {
            return Err(ValidateError::invalid(
                format!("{p}.type"),
                format!("`{p}.type` is required"),
            ))
        }
    }
    match o.get("text") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(wrong(&format!("{p}.text"), "a string", v)),
        None => Err(ValidateError::invalid(
            format!("{p}.text"),
            format!("`{p}.text` is required"),
        )),
    }
}

/// `POST /v1/completions` body.
pub fn parse_completion(body: &[u8]) -> Result<RawRequest, ValidateError> {
    let obj = object(body)?;
    fields::check(&obj, fields::COMPLETION_FIELDS, "/v1/completions")?;
    let f = Fields(&obj);
    let prompt = match f.get("prompt") {
        None => return Err(ValidateError::invalid("prompt", "`prompt` is required")),
        Some(v) => prompt(v)?,
    };
    let mut r = common(&f, prompt)?;
    if let Some(k) = f.int("logprobs")? {
        r.logprobs = true;
        r.top_logprobs = Some(("logprobs", k));
    }
    r.echo = f.bool("echo")?.unwrap_or(false);
    r.suffix = f.string("suffix")?.map(str::to_string);
    if let Some(best_of) = f.int("best_of")? {
        let n = r.n.unwrap_or(1);
        if best_of < n {
            return Err(ValidateError::invalid(
                "best_of",
                format!("`best_of` must be >= `n` ({n}), given {best_of}"),
            ));
        }
        if best_of > n && r.stream {
            return Err(ValidateError::invalid(
                "best_of",
                "`best_of` > `n` cannot be used with `stream` (candidates are ranked at the end)",
            ));
        }
        if best_of > n && r.budget.ttc.is_some() {
            return Err(ValidateError::invalid(
                "best_of",
                "`best_of` > `n` cannot be combined with `ttc` (which picks its own winner)",
            ));
        }
        r.best_of = (best_of > n).then_some(best_of);
    }
    Ok(r)
}

fn prompt(v: &Value) -> Result<PromptInput, ValidateError> {
    const SHAPE: &str = "a string, an array of token ids, or an array holding one of those";
    let ids = |a: &[Value]| -> Result<PromptInput, ValidateError> {
        let ids = a
            .iter()
            .enumerate()
            .map(|(i, t)| as_int(&format!("prompt[{i}]"), t))
            .collect::<Result<_, _>>()?;
        Ok(PromptInput::TokenIds(ids))
    };
    match v {
        Value::String(s) => Ok(PromptInput::Text(s.clone())),
        Value::Array(a) if a.is_empty() => Err(ValidateError::invalid("prompt", "`prompt` must not be empty")),
        Value::Array(a) if a[0].is_number() => ids(a),
        Value::Array(a) if a.len() > 1 && (a[0].is_string() || a[0].is_array()) => Err(ValidateError::invalid(
            "prompt",
            format!("`prompt` must hold a single prompt (batched prompts are not supported), given {}", a.len()),
        )),
        Value::Array(a) => match &a[0] {
            Value::String(s) => Ok(PromptInput::Text(s.clone())),
            Value::Array(inner) if inner.is_empty() => Err(ValidateError::invalid("prompt", "`prompt` must not be empty")),
            Value::Array(inner) => ids(inner),
            other => Err(wrong("prompt[0]", SHAPE, other)),
        },
        other => Err(wrong("prompt", SHAPE, other)),
    }
}

#[cfg(test)]
mod tests;
