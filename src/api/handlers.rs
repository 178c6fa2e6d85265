//! Route handlers. The two inference handlers share `generate`:
//! ready? -> body -> parse (request.rs) -> validate -> engine.submit -> JSON or SSE.
//! Every failure is an `ApiError`, rendered by error.rs.

use std::time::Instant;
use tracing::Instrument;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error::ApiError;
use super::response::{collect, Kind, Meta};
use super::stream::{sse_response, SseRequest};
use super::track::Tracker;
use super::{request, unix_now, AppState, RequestId, ROUTES};
use crate::budget::LoadSnapshot;
use crate::validate::{validate, BudgetEnv, ModelView, ValidateError};

pub async fn chat_completions(
    State(s): State<AppState>,
    rid: Option<Extension<RequestId>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(s, Kind::Chat, rid.map(|r| r.0), body).await
}

pub async fn completions(
    State(s): State<AppState>,
    rid: Option<Extension<RequestId>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(s, Kind::Completion, rid.map(|r| r.0), body).await
}

/// The id of a response body: the endpoint's prefix and a random UUID (32 hex digits).
pub fn response_id(kind: Kind) -> String {
    format!("{}{}", kind.id_prefix(), uuid::Uuid::new_v4().simple())
}

/// `incoming`: the client's `X-Request-Id` (logged as the request id and echoed by the
/// middleware); without one, the response id is the request id.
async fn generate(
    s: AppState,
    kind: Kind,
    incoming: Option<RequestId>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let id = response_id(kind);
    let request_id = incoming.map_or_else(|| id.clone(), |r| r.0);
    let started = Instant::now();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        route = kind.id_prefix(),
        user = tracing::field::Empty
    );
    let mut resp = match run(s, kind, body, id.clone()).instrument(span).await {
        Ok(r) => r,
        Err(e) => {
            if e.class().0.is_server_error() {
                tracing::warn!(%request_id, message = %e.message(), "request failed");
            }
            e.into_response()
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    // Streams are logged when the response starts; their tokens follow in the body.
    tracing::info!(
        %request_id,
        status = resp.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    resp
}

async fn run(
    s: AppState,
    kind: Kind,
    body: Result<Bytes, BytesRejection>,
    id: String,
) -> Result<Response, ApiError> {
    let arrival = Instant::now();
    if !s.is_ready() {
        return Err(ApiError::NotReady);
    }
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
            limit: s.limits.max_body_bytes,
        },
        _ => ApiError::BadBody(e.body_text()),
    })?;
    // Parsing a body of up to --max-body-bytes and tokenizing its prompt are CPU work
    // (seconds for megabytes): they run on the blocking pool so the async workers keep
    // answering /health, /metrics and streams meanwhile.
    let st = s.clone();
    let rid = id.clone();
    let valid = tokio::task::spawn_blocking(move || check_request(&st, kind, &body, rid))
        .await
        .map_err(|e| ApiError::Internal {
            request_id: id.clone(),
            detail: format!("the validation task failed: {e}"),
        })??;
    if let Some(user) = &valid.user {
        tracing::Span::current().record("user", user.as_str());
    }
    let m = &s.model;
    let gen = valid.generate_request();
    // Aggregated requests buffer up to `ttc.n` samples; plain ones have `n` choices.
    let samples = gen.n;
    let events = s.engine.submit(gen)?;
    let tracker = Tracker::new(s.metrics.clone(), arrival);
    let meta = Meta {
        kind,
        id,
        created: unix_now(),
        model: s.served_name.to_string(),
        logprobs: valid.params.logprobs,
        reasoning: m.reasoning.is_some(),
        aggregated: valid.aggregated(),
        grant: valid.budget.grant.as_ref().map(|g| {
            let mut v = g.to_json();
            v["strategy"] = json!("single");
            v
        }),
        vocab: s.vocab.clone(),
        echo: valid.echo.clone(),
        tool_parser: valid.tool_parser,
        keep: valid.best_of.map(|_| valid.n),
    };
    let prompt_tokens = valid.prompt_token_ids.len();
    if valid.stream {
        return Ok(sse_response(SseRequest {
            events,
            meta,
            model: s.model.clone(),
            n: samples,
            prompt_tokens,
            include_usage: valid.include_usage,
            tracker,
        }));
    }
    let mut tracker = tracker;
    let body = collect(
        events,
        &meta,
        &m.tokenizer,
        samples,
        prompt_tokens,
        &mut tracker,
    )
    .await?;
    Ok(Json(body).into_response())
}

/// Body -> `ValidRequest` (wire parse, template, tokenizer, ranges, budget plan).
fn check_request(
    s: &AppState,
    kind: Kind,
    body: &[u8],
    id: String,
) -> Result<crate::validate::ValidRequest, ApiError> {
    let raw = match kind {
        Kind::Chat => request::parse_chat(body)?,
        Kind::Completion => request::parse_completion(body)?,
    };
    let m = &s.model;
    let view = ModelView {
        tokenizer: &m.tokenizer,
        template: &m.template,
        served_name: &s.served_name,
        context_length: m.model.cfg.max_position,
        vocab_size: m.model.cfg.vocab_size,
        reasoning: m.reasoning.as_ref(),
        guides: s.guides(),
        tool_parser: s.tool_parser,
    };
    let stats = s.engine.stats();
    let env = BudgetEnv {
        config: &s.budget,
        load: LoadSnapshot {
            num_waiting: stats.num_waiting,
            kv_usage: stats.kv_cache_usage,
        },
    };
    validate(raw, &view, &s.limits, &env).map_err(|e| match e {
        ValidateError::Internal(detail) => ApiError::Internal {
            request_id: id,
            detail,
        },
        e => ApiError::Validate(e),
    })
}

/// The served model as an OpenAI model object.
pub fn model_object(s: &AppState) -> serde_json::Value {
    json!({"id": &*s.served_name, "object": "model", "created": s.started, "owned_by": "ponder",
        "max_model_len": s.model.model.cfg.max_position})
}

pub async fn models(State(s): State<AppState>) -> Response {
    Json(json!({"object": "list", "data": [model_object(&s)]})).into_response()
}

pub async fn health(State(s): State<AppState>) -> Response {
    if s.engine.is_alive() {
        Json(json!({"status": "ok"})).into_response()
    } else {
        ApiError::EngineDead.into_response()
    }
}

pub async fn ready(State(s): State<AppState>) -> Response {
    if !s.engine.is_alive() {
        ApiError::EngineDead.into_response()
    } else if !s.is_ready() {
        ApiError::NotReady.into_response()
    } else {
        Json(json!({"status": "ready"})).into_response()
    }
}

pub async fn metrics(State(s): State<AppState>) -> Response {
    s.metrics.observe_key_usage(&s.auth.usage());
    match s.metrics.render(&s.engine.stats()) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            let request_id = format!("metrics-{}", uuid::Uuid::new_v4().simple());
            ApiError::Internal {
                request_id,
                detail: format!("rendering metrics failed: {e}"),
            }
            .into_response()
        }
    }
}

pub async fn version() -> Response {
    Json(json!({"name": "ponder", "version": env!("CARGO_PKG_VERSION")})).into_response()
}

pub async fn not_found(method: Method, uri: Uri) -> Response {
    ApiError::RouteNotFound {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
    .into_response()
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let path = uri.path().to_string();
    let allowed: Vec<&str> = ROUTES
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.method)
        .collect();
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path,
        allowed: allowed.join(", "),
    }
    .into_response()
}
