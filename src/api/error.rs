//! The one table from errors to HTTP status + OpenAI error envelope
//! `{"error":{"message","type","param","code"}}`.
//!
//! | error                         | status | type                   | code                    |
//! |-------------------------------|--------|------------------------|-------------------------|
//! | bad JSON / field / range      | 400    | invalid_request_error  | invalid_value           |
//! | prompt + max_tokens > context | 400    | invalid_request_error  | context_length_exceeded |
//! | unknown model                 | 404    | invalid_request_error  | model_not_found         |
//! | unknown route                 | 404    | invalid_request_error  | not_found               |
//! | wrong method                  | 405    | invalid_request_error  | method_not_allowed      |
//! | body over --max-body-bytes    | 413    | invalid_request_error  | payload_too_large       |
//! | waiting queue full            | 429    | rate_limit_error       | queue_full (+Retry-After) |
//! | not ready / engine dead       | 503    | service_unavailable    | not_ready (+Retry-After) / engine_dead |
//! | engine error, internal error  | 500    | server_error           | internal_error          |
//!
//! Internal errors are logged with the request id; the client sees only the id.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::engine::SubmitError;
use crate::validate::ValidateError;

/// Seconds a client is told to wait after a 429 or a `not_ready` 503 (starting or draining:
/// a retry, possibly on another replica, will be answered).
pub const RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    Validate(ValidateError),
    RouteNotFound {
        method: String,
        path: String,
    },
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: String,
    },
    PayloadTooLarge {
        limit: usize,
    },
    /// The body could not be read (connection error).
    BadBody(String),
    QueueFull {
        limit: usize,
    },
    NotReady,
    EngineDead,
    /// An engine `Error(msg)`: the message is safe to show.
    Engine(String),
    /// Anything else; `detail` is logged, never sent.
    Internal {
        request_id: String,
        detail: String,
    },
}

impl From<ValidateError> for ApiError {
    fn from(e: ValidateError) -> Self {
        ApiError::Validate(e)
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::QueueFull { limit } => ApiError::QueueFull { limit },
            SubmitError::EngineDead => ApiError::EngineDead,
        }
    }
}

impl ApiError {
    /// (status, type, code) — the table above.
    pub fn class(&self) -> (StatusCode, &'static str, &'static str) {
        const BAD: &str = "invalid_request_error";
        match self {
            Self::Validate(ValidateError::ContextOverflow { .. }) => {
                (StatusCode::BAD_REQUEST, BAD, "context_length_exceeded")
            }
            Self::Validate(ValidateError::ModelNotFound { .. }) => {
                (StatusCode::NOT_FOUND, BAD, "model_not_found")
            }
            Self::Validate(ValidateError::Internal(_)) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
            ),
            Self::Validate(_) | Self::BadBody(_) => (StatusCode::BAD_REQUEST, BAD, "invalid_value"),
            Self::RouteNotFound { .. } => (StatusCode::NOT_FOUND, BAD, "not_found"),
            Self::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, BAD, "method_not_allowed")
            }
            Self::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, BAD, "payload_too_large")
            }
            Self::QueueFull { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "queue_full",
            ),
            Self::NotReady => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "not_ready",
            ),
            Self::EngineDead => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "engine_dead",
            ),
            Self::Engine(_) | Self::Internal { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
            ),
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::Validate(e) => e.to_string(),
            Self::RouteNotFound { method, path } => format!("no route for {method} {path}"),
            Self::MethodNotAllowed {
                method,
                path,
                allowed,
            } => {
                format!("method {method} is not allowed on {path} (allowed: {allowed})")
            }
            Self::PayloadTooLarge { limit } => {
                format!("the request body must be at most {limit} bytes")
            }
            Self::BadBody(e) => format!("the request body could not be read: {e}"),
            Self::QueueFull { limit } => {
                format!(
                    "the server is busy: the waiting queue is full ({limit} requests); retry later"
                )
            }
            Self::NotReady => "the server is not ready yet; retry later".to_string(),
            Self::EngineDead => "the inference engine is not running".to_string(),
            Self::Engine(msg) => format!("generation failed: {msg}"),
            Self::Internal { request_id, .. } => {
                format!("internal server error (request id {request_id})")
            }
        }
    }

    pub fn param(&self) -> Option<String> {
        match self {
            Self::Validate(e) => e.param(),
            _ => None,
        }
    }

    /// The OpenAI envelope `{"error": {...}}`.
    pub fn envelope(&self) -> Value {
        let (_, kind, code) = self.class();
        json!({"error": {"message": self.message(), "type": kind, "param": self.param(), "code": code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _, _) = self.class();
        match &self {
            Self::Internal { request_id, detail } => {
                tracing::error!(request_id, detail, "internal error")
            }
            Self::Validate(ValidateError::Internal(detail)) => {
                tracing::error!(detail, "internal error")
            }
            _ => {}
        }
        let mut resp = (status, axum::Json(self.envelope())).into_response();
        let headers = resp.headers_mut();
        match &self {
            Self::QueueFull { .. } | Self::NotReady => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            Self::MethodNotAllowed { allowed, .. } => {
                if let Ok(v) = HeaderValue::from_str(allowed) {
                    headers.insert(header::ALLOW, v);
                }
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_shape() {
        let e = ApiError::Validate(ValidateError::invalid(
            "n",
            "`n` must be in [1, 16], given 0",
        ));
        assert_eq!(e.class().0, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.envelope(),
            json!({"error": {"message": "`n` must be in [1, 16], given 0", "type": "invalid_request_error",
                "param": "n", "code": "invalid_value"}})
        );
        let e = ApiError::Internal {
            request_id: "r1".into(),
            detail: "secret".into(),
        };
        assert_eq!(e.message(), "internal server error (request id r1)");
        assert_eq!(e.envelope()["error"]["param"], Value::Null);
    }
}
