//! The HTTP layer: one route table (`ROUTES`, also checked against `openapi.yaml` by
//! tests/api_openapi.rs), the shared `AppState`, and the router built from the table.
//!
//! ```text
//! request -> track_http (metrics by route template + status)
//!         -> route table: handlers.rs  (ready? -> request.rs parse -> validate -> engine.submit)
//!                                       -> response.rs (JSON) | stream.rs (SSE)
//!         -> fallback: 404 / 405 in the OpenAI error envelope (error.rs)
//! ```
//!
//! Entry points: `router(state)` for tests (`tower::ServiceExt::oneshot`), `serve` for
//! `ponder serve` (server.rs).

pub mod auth;
pub mod body;
mod constraint;
pub mod error;
pub mod fields;
pub mod fold;
mod handlers;
mod read;
pub mod request;
pub mod response;
mod server;
pub mod stream;
mod tokenize;
mod track;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;

pub use server::{probe, serve, serve_on, shutdown_signal};

use crate::budget::BudgetConfig;
use crate::engine::EngineClient;
use crate::guided::TokenBytes;
use crate::metrics::Metrics;
use crate::model::LoadedModel;
use crate::validate::HttpLimits;

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Models,
    Model,
    Tokenize,
    Detokenize,
    Health,
    Ready,
    Metrics,
    Version,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub endpoint: Endpoint,
}

/// Every route of the server; the router is built from this table only.
pub const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/v1/chat/completions",
        endpoint: Endpoint::ChatCompletions,
    },
    Route {
        method: "POST",
        path: "/v1/completions",
        endpoint: Endpoint::Completions,
    },
    Route {
        method: "GET",
        path: "/v1/models",
        endpoint: Endpoint::Models,
    },
    Route {
        method: "GET",
        path: "/v1/models/{id}",
        endpoint: Endpoint::Model,
    },
    Route {
        method: "POST",
        path: "/tokenize",
        endpoint: Endpoint::Tokenize,
    },
    Route {
        method: "POST",
        path: "/detokenize",
        endpoint: Endpoint::Detokenize,
    },
    Route {
        method: "GET",
        path: "/health",
        endpoint: Endpoint::Health,
    },
    Route {
        method: "GET",
        path: "/ready",
        endpoint: Endpoint::Ready,
    },
    Route {
        method: "GET",
        path: "/metrics",
        endpoint: Endpoint::Metrics,
    },
    Route {
        method: "GET",
        path: "/version",
        endpoint: Endpoint::Version,
    },
];

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<dyn EngineClient>,
    pub model: Arc<LoadedModel>,
    /// The model id clients send and `/v1/models` lists.
    pub served_name: Arc<str>,
    pub limits: HttpLimits,
    pub metrics: Arc<Metrics>,
    /// Unix seconds at start (`created` of the model object).
    pub started: u64,
    /// Effort presets and load levels (budget sub-config).
    pub budget: Arc<BudgetConfig>,
    /// Every token's raw bytes (logprobs `bytes`).
    pub vocab: Arc<TokenBytes>,
    /// API keys, per-key rate limits and usage (no keys: every route is open).
    pub auth: Arc<auth::Auth>,
    /// Grammar compiler for constrained decoding, built on first use (a failure is logged
    /// once; constrained requests are then 400s).
    guides: Arc<std::sync::OnceLock<Option<crate::guided::GuideFactory>>>,
    /// `--tool-call-parser`: the format tool calls are read in (and forced in).
    pub tool_parser: crate::tools::ToolParser,
    ready: Arc<AtomicBool>,
}

impl AppState {
    /// A not-yet-ready state (`/ready` and the inference routes answer 503 until `set_ready`).
    pub fn new(
        engine: Arc<dyn EngineClient>,
        model: Arc<LoadedModel>,
        served_name: Option<String>,
        limits: HttpLimits,
    ) -> anyhow::Result<Self> {
        let served_name: Arc<str> = served_name.unwrap_or_else(|| model.name.clone()).into();
        let doc: serde_json::Value = serde_json::from_str(&model.tokenizer.to_json())?;
        let vocab = Arc::new(TokenBytes::from_tokenizer_json(
            &doc,
            model.model.cfg.vocab_size,
            |id| model.tokenizer.decode(&[id], false),
        ));
        Ok(AppState {
            vocab,
            auth: Arc::new(auth::Auth::default()),
            guides: Arc::new(std::sync::OnceLock::new()),
            tool_parser: crate::tools::ToolParser::Hermes,
            engine,
            model,
            served_name,
            limits,
            metrics: Arc::new(Metrics::new()?),
            started: unix_now(),
            budget: Arc::new(BudgetConfig::default()),
            ready: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Requires API keys (and applies their rate limit and CORS origins).
    pub fn with_auth(mut self, cfg: auth::AuthConfig) -> Self {
        self.auth = Arc::new(auth::Auth::new(cfg));
        self
    }

    /// Exports vLLM's metric names too (`--metrics-compat vllm`).
    pub fn with_vllm_metrics(mut self) -> anyhow::Result<Self> {
        self.metrics = Arc::new(Metrics::new()?.with_vllm_names(&self.served_name));
        Ok(self)
    }

    /// Replaces the default budget config (presets, load levels).
    pub fn with_budget(mut self, budget: BudgetConfig) -> Self {
        self.budget = Arc::new(budget);
        self
    }

    /// The grammar compiler (built on first call).
    pub fn guides(&self) -> Option<&crate::guided::GuideFactory> {
        self.guides
            .get_or_init(|| {
                let t = &self.model.tokenizer;
                crate::guided::GuideFactory::new(&self.vocab, t.clone(), &t.eos_ids)
                    .map_err(|e| tracing::error!(error = %e, "the grammar engine cannot start"))
                    .ok()
            })
            .as_ref()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn method_router(route: &Route) -> MethodRouter<AppState> {
    let filter = match route.method {
        "POST" => MethodFilter::POST,
        _ => MethodFilter::GET,
    };
    match route.endpoint {
        Endpoint::ChatCompletions => on(filter, handlers::chat_completions),
        Endpoint::Completions => on(filter, handlers::completions),
        Endpoint::Models => on(filter, handlers::models),
        Endpoint::Model => on(filter, tokenize::model),
        Endpoint::Tokenize => on(filter, tokenize::tokenize),
        Endpoint::Detokenize => on(filter, tokenize::detokenize),
        Endpoint::Health => on(filter, handlers::health),
        Endpoint::Ready => on(filter, handlers::ready),
        Endpoint::Metrics => on(filter, handlers::metrics),
        Endpoint::Version => on(filter, handlers::version),
    }
}

/// The router: every route in `ROUTES`, JSON 404/405 fallbacks, the body limit, API keys,
/// metrics and (with allowed origins) CORS outermost, so preflights need no key.
pub fn router(state: AppState) -> Router {
    let mut r = Router::new();
    for route in ROUTES {
        // Model ids may hold slashes (`org/name`): the id segment takes the rest of the path.
        let path = route.path.replace("{id}", "{*id}");
        r = r.route(&path, method_router(route));
    }
    let cors = auth::cors(&state.auth.config().allowed_origins);
    let r = r
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), track_http))
        .with_state(state);
    match cors {
        Ok(Some(c)) => r.layer(c),
        // Origins are checked at boot (`ServeConfig::auth_config`).
        Ok(None) | Err(_) => r,
    }
}

/// A client's `X-Request-Id` (1 to 128 visible ASCII characters), for the handlers' logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Most characters of an accepted `X-Request-Id`.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Counts every response by route template (`unmatched` for unknown paths) and status; takes
/// the client's `X-Request-Id` (a malformed one is a 400) and echoes it on every response.
async fn track_http(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .replace("{*id}", "{id}");
    let method = req.method().clone();
    let t = Instant::now();
    let incoming = req.headers().get("x-request-id").cloned();
    let resp = match &incoming {
        None => next.run(req).await,
        Some(v) => {
            let ok = v.to_str().ok().filter(|id| {
                (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
                    && id.bytes().all(|b| b.is_ascii_graphic())
            });
            match ok {
                Some(id) => {
                    req.extensions_mut().insert(RequestId(id.to_string()));
                    let mut resp = next.run(req).await;
                    resp.headers_mut().insert("x-request-id", v.clone());
                    resp
                }
                None => error::ApiError::Validate(crate::validate::ValidateError::invalid(
                    "x-request-id",
                    format!(
                        "the X-Request-Id header must be 1 to {MAX_REQUEST_ID_LEN} visible ASCII characters"
                    ),
                ))
                .into_response(),
            }
        }
    };
    let status = resp.status().as_u16();
    s.metrics.record_http(&route, status);
    tracing::debug!(%method, route, status, ms = t.elapsed().as_millis() as u64, "http");
    resp
}
