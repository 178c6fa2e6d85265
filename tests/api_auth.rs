//! Router tests for API keys (401 in the OpenAI envelope, open health routes, protected
//! metrics), the per-key rate limit (429 + Retry-After) and CORS.

mod api_support;

use api_support::*;
use axum::body::Body;
use axum::http::Request;
use ponder::api::auth::AuthConfig;
use serde_json::json;

fn secured(cfg: AuthConfig) -> ponder::api::AppState {
    app(FakeEngine::new(Behavior::Script)).with_auth(AuthConfig {
        keys: vec!["sk-a".into(), "sk-b".into()],
        ..cfg
    })
}

fn with(req: Request<Body>, name: &str, value: &str) -> Request<Body> {
    let (mut parts, body) = req.into_parts();
    parts.headers.insert(
        axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
        value.parse().unwrap(),
    );
    Request::from_parts(parts, body)
}

const BODY: &str = r#"{"messages":[{"role":"user","content":"Hi"}]}"#;

#[tokio::test]
async fn keys_guard_v1_and_tokenize_but_not_health() {
    let state = secured(AuthConfig::default());
    let resp = send(&state, post("/v1/chat/completions", BODY)).await;
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let v: serde_json::Value = serde_json::from_str(&body_text(resp).await).unwrap();
    assert_eq!(
        v,
        envelope(
            "missing API key: send it as `Authorization: Bearer <key>`",
            "invalid_request_error",
            None,
            "invalid_api_key"
        )
    );
    let wrong = with(
        post("/v1/chat/completions", BODY),
        "authorization",
        "Bearer sk-c",
    );
    assert_eq!(
        call(&state, wrong).await,
        (
            401,
            envelope(
                "incorrect API key provided",
                "invalid_request_error",
                None,
                "invalid_api_key"
            )
        )
    );
    let right = with(
        post("/v1/chat/completions", BODY),
        "authorization",
        "Bearer sk-b",
    );
    assert_eq!(call(&state, right).await.0, 200);
    assert_eq!(call(&state, get("/v1/models")).await.0, 401);
    assert_eq!(
        call(&state, post("/tokenize", r#"{"prompt":"x"}"#)).await.0,
        401
    );
    assert_eq!(call(&state, get("/health")).await.0, 200);
    assert_eq!(call(&state, get("/ready")).await.0, 200);
    assert_eq!(send(&state, get("/metrics")).await.status().as_u16(), 200);
    assert_eq!(state.auth.usage(), vec![(2, 1)]);

    let state = secured(AuthConfig {
        protect_metrics: true,
        ..AuthConfig::default()
    });
    assert_eq!(send(&state, get("/metrics")).await.status().as_u16(), 401);
    let ok = with(get("/metrics"), "authorization", "Bearer sk-a");
    assert_eq!(send(&state, ok).await.status().as_u16(), 200);
}

#[tokio::test]
async fn rate_limit_per_key_is_429_with_retry_after() {
    let state = secured(AuthConfig {
        rate: Some("2/m".parse().unwrap()),
        ..AuthConfig::default()
    });
    let req = |key: &str| with(get("/v1/models"), "authorization", &format!("Bearer {key}"));
    assert_eq!(call(&state, req("sk-a")).await.0, 200);
    assert_eq!(call(&state, req("sk-a")).await.0, 200);
    let resp = send(&state, req("sk-a")).await;
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "30");
    let v: serde_json::Value = serde_json::from_str(&body_text(resp).await).unwrap();
    assert_eq!(
        v,
        json!({"error": {"message": "rate limit reached for this API key: 2 requests per 60 s; retry in 30 s",
            "type": "rate_limit_error", "param": null, "code": "rate_limit_exceeded"}})
    );
    // Another key is not limited by the first one's use.
    assert_eq!(call(&state, req("sk-b")).await.0, 200);
}

#[tokio::test]
async fn cors_only_for_allowed_origins() {
    let preflight = |origin: &str| {
        Request::builder()
            .method("OPTIONS")
            .uri("/v1/chat/completions")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .body(Body::empty())
            .unwrap()
    };
    // Default: no CORS, so a preflight is a 405 (and browsers refuse the call).
    let state = app(FakeEngine::new(Behavior::Script));
    let resp = send(&state, preflight("https://app.example")).await;
    assert_eq!(resp.status().as_u16(), 405);
    assert!(resp.headers().get("access-control-allow-origin").is_none());

    let state = secured(AuthConfig {
        allowed_origins: vec!["https://app.example".into()],
        ..AuthConfig::default()
    });
    let resp = send(&state, preflight("https://app.example")).await;
    assert_eq!(resp.status().as_u16(), 200);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-methods"], "GET,POST");
    assert_eq!(
        h["access-control-allow-headers"],
        "authorization,content-type,x-request-id"
    );
    let resp = send(&state, preflight("https://evil.example")).await;
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    // A real call from the allowed origin gets the header (and still needs its key).
    let r = with(
        with(get("/v1/models"), "origin", "https://app.example"),
        "authorization",
        "Bearer sk-a",
    );
    let resp = send(&state, r).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example"
    );
}
