//! API keys, per-key rate limits and usage counts, and CORS.
//!
//! ```text
//! request -> CORS (tower-http; only with --allowed-origins: preflights answered here)
//!         -> protected path? (/v1/*, /tokenize, /detokenize; /metrics with --protect-metrics)
//!              no key configured            -> pass
//!              Authorization: Bearer <key>  -> compared with every key in constant time
//!                 no match                  -> 401 invalid_api_key (+ WWW-Authenticate)
//!                 match k -> usage[k] += 1 -> bucket[k] empty? -> 429 rate_limit_exceeded
//!                                                               (+ Retry-After, seconds)
//!         -> route
//! ```
//!
//! Per-key state (token buckets, usage counters) lives in `DashMap`s keyed by the key's
//! position in the configured list (1-based, the label `/metrics` shows): keys themselves are
//! never logged or exported. The comparison touches every configured key whatever matches, and
//! `subtle`'s `ct_eq` does not stop at the first differing byte (a key's length can still show).

use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use serde_json::json;
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::AppState;

pub use crate::config::{AuthConfig, Rate};

/// A token bucket: `tokens` left at `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Keys and per-key state.
#[derive(Debug, Default)]
pub struct Auth {
    cfg: AuthConfig,
    buckets: DashMap<usize, Bucket>,
    usage: DashMap<usize, u64>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Denied {
    Missing,
    WrongKey,
    /// Seconds until the key's bucket holds a request again.
    RateLimited {
        retry_after: u64,
        rate: Rate,
    },
}

impl Auth {
    pub fn new(cfg: AuthConfig) -> Self {
        Auth {
            cfg,
            buckets: DashMap::new(),
            usage: DashMap::new(),
        }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.cfg
    }

    /// Paths that need a key (when keys are configured).
    pub fn protects(&self, path: &str) -> bool {
        !self.cfg.keys.is_empty()
            && (path.starts_with("/v1/")
                || path == "/tokenize"
                || path == "/detokenize"
                || (path == "/metrics" && self.cfg.protect_metrics))
    }

    /// The 1-based position of the key `token` equals; every key is compared.
    fn find(&self, token: &[u8]) -> Option<usize> {
        let mut found = 0usize;
        for (i, k) in self.cfg.keys.iter().enumerate() {
            let eq = k.as_bytes().ct_eq(token);
            // Branch-free select: found = i + 1 where equal.
            let mask = (eq.unwrap_u8() as usize).wrapping_neg();
            found |= (i + 1) & mask;
        }
        (found != 0).then_some(found)
    }

    /// Checks an `Authorization` header value and takes one request from the key's bucket.
    pub fn admit(&self, authorization: Option<&[u8]>, now: Instant) -> Result<usize, Denied> {
        let token = authorization
            .and_then(|h| {
                let (scheme, rest) = h.split_at(h.len().min(7));
                scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
            })
            .map(<[u8]>::trim_ascii)
            .ok_or(Denied::Missing)?;
        let key = self.find(token).ok_or(Denied::WrongKey)?;
        *self.usage.entry(key).or_insert(0) += 1;
        if let Some(rate) = self.cfg.rate {
            let cap = f64::from(rate.count);
            let per_token = rate.per.as_secs_f64() / cap;
            let mut b = self.buckets.entry(key).or_insert(Bucket {
                tokens: cap,
                at: now,
            });
            let refill = now.saturating_duration_since(b.at).as_secs_f64() / per_token;
            b.tokens = (b.tokens + refill).min(cap);
            b.at = now;
            if b.tokens < 1.0 {
                let wait = (1.0 - b.tokens) * per_token;
                return Err(Denied::RateLimited {
                    retry_after: wait.ceil().max(1.0) as u64,
                    rate,
                });
            }
            b.tokens -= 1.0;
        }
        Ok(key)
    }

    /// Requests admitted per key (1-based position), for `/metrics`.
    pub fn usage(&self) -> Vec<(usize, u64)> {
        let mut v: Vec<(usize, u64)> = self.usage.iter().map(|e| (*e.key(), *e.value())).collect();
        v.sort_unstable();
        v
    }
}

impl Denied {
    fn into_response(self) -> Response {
        let (status, message, kind, code) = match &self {
            Denied::Missing => (
                StatusCode::UNAUTHORIZED,
                "missing API key: send it as `Authorization: Bearer <key>`".to_string(),
                "invalid_request_error",
                "invalid_api_key",
            ),
            Denied::WrongKey => (
                StatusCode::UNAUTHORIZED,
                "incorrect API key provided".to_string(),
                "invalid_request_error",
                "invalid_api_key",
            ),
            Denied::RateLimited { rate, retry_after } => (
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "rate limit reached for this API key: {} requests per {} s; retry in {retry_after} s",
                    rate.count,
                    rate.per.as_secs()
                ),
                "rate_limit_error",
                "rate_limit_exceeded",
            ),
        };
        let body =
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
        let mut resp = (status, axum::Json(body)).into_response();
        match self {
            Denied::RateLimited { retry_after, .. } => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            _ => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
        }
        resp
    }
}

/// The middleware: protected paths need a configured key (see the module diagram).
pub async fn require_key(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() == Method::OPTIONS || !s.auth.protects(req.uri().path()) {
        return next.run(req).await;
    }
    let h = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match s.auth.admit(h, Instant::now()) {
        Ok(_) => next.run(req).await,
        Err(d) => {
            if d != Denied::Missing {
                tracing::info!(path = req.uri().path(), reason = ?d, "request refused");
            }
            d.into_response()
        }
    }
}

/// The CORS layer for `--allowed-origins` (`None` when no origin is allowed).
pub fn cors(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|o| {
                HeaderValue::from_str(o)
                    .map_err(|_| anyhow::anyhow!("--allowed-origins: `{o}` is not a valid origin"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        AllowOrigin::list(list)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([header::HeaderName::from_static("x-request-id")])
            .max_age(Duration::from_secs(600)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(rate: Option<Rate>) -> Auth {
        Auth::new(AuthConfig {
            keys: vec!["k-one".into(), "k-two".into()],
            rate,
            ..AuthConfig::default()
        })
    }

    #[test]
    fn bearer_keys_match_by_position() {
        let a = auth(None);
        let t = Instant::now();
        assert_eq!(a.admit(Some(b"Bearer k-two"), t), Ok(2));
        assert_eq!(a.admit(Some(b"bearer  k-one "), t), Ok(1));
        assert_eq!(a.admit(Some(b"Bearer k-on"), t), Err(Denied::WrongKey));
        assert_eq!(a.admit(Some(b"Basic k-one"), t), Err(Denied::Missing));
        assert_eq!(a.admit(None, t), Err(Denied::Missing));
        assert_eq!(a.usage(), vec![(1, 1), (2, 1)]);
        assert!(a.protects("/v1/models") && a.protects("/tokenize"));
        assert!(!a.protects("/metrics") && !a.protects("/health"));
        assert!(!Auth::default().protects("/v1/models"));
    }

    #[test]
    fn token_bucket_refills_at_the_rate() {
        let rate: Rate = "2/s".parse().unwrap();
        assert_eq!(
            rate,
            Rate {
                count: 2,
                per: Duration::from_secs(1)
            }
        );
        assert_eq!(
            "5/h".parse::<Rate>(),
            Err("invalid rate `5/h` (examples: 10/s, 600/m)".into())
        );
        let a = auth(Some("2/m".parse().unwrap()));
        let t0 = Instant::now();
        assert_eq!(a.admit(Some(b"Bearer k-one"), t0), Ok(1));
        assert_eq!(a.admit(Some(b"Bearer k-one"), t0), Ok(1));
        let limited = Denied::RateLimited {
            retry_after: 30,
            rate: "2/m".parse().unwrap(),
        };
        assert_eq!(a.admit(Some(b"Bearer k-one"), t0), Err(limited));
        // The other key has its own bucket.
        assert_eq!(a.admit(Some(b"Bearer k-two"), t0), Ok(2));
        // 30 s later one request's worth has refilled.
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(a.admit(Some(b"Bearer k-one"), t1), Ok(1));
        assert!(a.admit(Some(b"Bearer k-one"), t1).is_err());
    }
}
