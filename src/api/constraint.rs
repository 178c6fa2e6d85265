//! Wire reading of the output constraints: OpenAI `response_format` (`text`, `json_object`,
//! `json_schema` with `strict`) and vLLM's `guided_json`, `guided_regex`, `guided_choice`,
//! `guided_grammar` (at most one of them) -> `guided::Constraint` plus the field it came from.
//! Types and shapes only; the grammar itself is compiled (and its errors reported) by validate.

use serde_json::Value;

use super::read::{known_fields, wrong, Fields};
use crate::guided::Constraint;
use crate::validate::ValidateError;

/// `response_format` or one of the vLLM-style `guided_*` fields (at most one of them).
pub(super) fn constraint(f: &Fields<'_>) -> Result<Option<(String, Constraint)>, ValidateError> {
    const KEYS: [&str; 5] = [
        "response_format",
        "guided_json",
        "guided_regex",
        "guided_choice",
        "guided_grammar",
    ];
    let given: Vec<&str> = KEYS.into_iter().filter(|k| f.get(k).is_some()).collect();
    if given.len() > 1 {
        return Err(ValidateError::invalid(
            given[1],
            format!("give one output constraint, given {}", given.join(" and ")),
        ));
    }
    let Some(&k) = given.first() else {
        return Ok(None);
    };
    let v = f.get(k).unwrap_or(&Value::Null);
    let c = match k {
        "response_format" => return response_format(v),
        "guided_json" => match v {
            Value::String(s) => Constraint::JsonSchema {
                schema: serde_json::from_str(s).map_err(|e| {
                    wrong(
                        k,
                        &format!("a JSON schema (the string is not JSON: {e})"),
                        v,
                    )
                })?,
                strict: false,
            },
            Value::Object(_) => Constraint::JsonSchema {
                schema: v.clone(),
                strict: false,
            },
            _ => return Err(wrong(k, "a JSON schema object", v)),
        },
        "guided_regex" => Constraint::Regex(f.string(k)?.unwrap_or_default().to_string()),
        "guided_choice" => {
            let a = v
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| wrong(k, "a non-empty array of strings", v))?;
            Constraint::Choice(
                a.iter()
                    .enumerate()
                    .map(|(i, c)| {
                        c.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| wrong(&format!("{k}[{i}]"), "a string", c))
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        _ => Constraint::Grammar(f.string(k)?.unwrap_or_default().to_string()),
    };
    Ok(Some((k.to_string(), c)))
}

/// OpenAI `response_format`: `text` (no constraint), `json_object`, `json_schema`.
fn response_format(v: &Value) -> Result<Option<(String, Constraint)>, ValidateError> {
    let o = v
        .as_object()
        .ok_or_else(|| wrong("response_format", "an object with `type`", v))?;
    let f = Fields(o);
    match f.get("type") {
        Some(Value::String(t)) if t == "text" => {
            known_fields("response_format", o, &["type"])?;
            Ok(None)
        }
        Some(Value::String(t)) if t == "json_object" => {
            known_fields("response_format", o, &["type"])?;
            Ok(Some(("response_format".into(), Constraint::JsonObject)))
        }
        Some(Value::String(t)) if t == "json_schema" => {
            known_fields("response_format", o, &["type", "json_schema"])?;
            let p = "response_format.json_schema";
            let js = f
                .get("json_schema")
                .ok_or_else(|| ValidateError::invalid(p, format!("`{p}` is required")))?;
            let jo = js
                .as_object()
                .ok_or_else(|| wrong(p, "an object {name, schema, strict}", js))?;
            known_fields(p, jo, &["name", "description", "schema", "strict"])?;
            let jf = Fields(jo);
            if let Some(name) = jf.string("name").map_err(|_| {
                wrong(
                    &format!("{p}.name"),
                    "a string",
                    jo.get("name").unwrap_or(&Value::Null),
                )
            })? {
                let ok = (1..=64).contains(&name.len())
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !ok {
                    return Err(ValidateError::invalid(
                        format!("{p}.name"),
                        format!(
                            "`{p}.name` must be 1 to 64 of a-z, A-Z, 0-9, _ and -, given {name:?}"
                        ),
                    ));
                }
            }
            let strict = jf
                .bool("strict")
                .map_err(|_| {
                    wrong(
                        &format!("{p}.strict"),
                        "a boolean",
                        jo.get("strict").unwrap_or(&Value::Null),
                    )
                })?
                .unwrap_or(false);
            let schema = jf.get("schema").cloned().unwrap_or(serde_json::json!({}));
            Ok(Some((
                format!("{p}.schema"),
                Constraint::JsonSchema { schema, strict },
            )))
        }
        Some(t) => Err(wrong(
            "response_format.type",
            "one of text, json_object, json_schema",
            t,
        )),
        None => Err(ValidateError::invalid(
            "response_format.type",
            "`response_format.type` is required",
        )),
    }
}
