//! Typed reads of a request body's JSON fields, each failure a 400 naming the field and the
//! value given ("`temperature` must be a number, given \"hot\""); `null` reads as absent.
//! Shared by the request and output-constraint readers.

use serde_json::{Map, Value};

use crate::validate::ValidateError;

/// The JSON value, shortened for an error message.
pub(super) fn shown(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 64 {
        format!("{}...", s.chars().take(61).collect::<String>())
    } else {
        s
    }
}

pub(super) fn wrong(param: &str, expected: &str, v: &Value) -> ValidateError {
    ValidateError::invalid(
        param,
        format!("`{param}` must be {expected}, given {}", shown(v)),
    )
}

/// Typed reads of a JSON object's fields.
pub(super) struct Fields<'a>(pub(super) &'a Map<String, Value>);

impl<'a> Fields<'a> {
    /// The field, `None` when absent or `null`.
    pub(super) fn get(&self, k: &str) -> Option<&'a Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }

    pub(super) fn number(&self, k: &str) -> Result<Option<f32>, ValidateError> {
        self.get(k)
            .map(|v| {
                v.as_f64()
                    .map(|x| x as f32)
                    .ok_or_else(|| wrong(k, "a number", v))
            })
            .transpose()
    }

    pub(super) fn int(&self, k: &str) -> Result<Option<i64>, ValidateError> {
        self.get(k).map(|v| as_int(k, v)).transpose()
    }

    pub(super) fn bool(&self, k: &str) -> Result<Option<bool>, ValidateError> {
        self.get(k)
            .map(|v| v.as_bool().ok_or_else(|| wrong(k, "a boolean", v)))
            .transpose()
    }

    pub(super) fn string(&self, k: &str) -> Result<Option<&'a str>, ValidateError> {
        self.get(k)
            .map(|v| v.as_str().ok_or_else(|| wrong(k, "a string", v)))
            .transpose()
    }
}

pub(super) fn as_int(param: &str, v: &Value) -> Result<i64, ValidateError> {
    match v.as_i64() {
        Some(i) => Ok(i),
        // Beyond i64: keep it out of range rather than calling it a non-integer.
        None if v.as_u64().is_some() => Ok(i64::MAX),
        // JSON Schema counts 510.0 as an integer; accept integral floats in range.
        None => match v.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(f as i64),
            _ => Err(wrong(param, "an integer", v)),
        },
    }
}

/// Rejects fields of our own objects that we do not know (a typo must not be ignored).
pub(super) fn known_fields(
    param: &str,
    o: &Map<String, Value>,
    known: &[&str],
) -> Result<(), ValidateError> {
    match o.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(ValidateError::invalid(
            format!("{param}.{k}"),
            format!(
                "`{param}.{k}` is not a known field; allowed: {}",
                known.join(", ")
            ),
        )),
    }
}
