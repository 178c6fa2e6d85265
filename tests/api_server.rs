//! The server on a loopback socket: graceful shutdown lets an in-flight request finish,
//! marks the server not ready, and returns; a request that outlives `--shutdown-timeout`
//! does not keep the server up.

mod api_support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use api_support::*;
use ponder::api::serve_on;
use ponder::engine::EngineEvent;
use ponder::sample::FinishReason;
use tokio::net::{TcpListener, TcpStream};

const BODY: &str = r#"{"messages":[{"role":"user","content":"Hi"}]}"#;

/// One request over a blocking socket (tokio's io-util is not a dependency), read to EOF.
async fn request(addr: SocketAddr) -> String {
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
            BODY.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap()
}

async fn wait_for(mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let engine = FakeEngine::new(Behavior::Hold);
    let state = app(engine.clone());
    state.set_ready(false);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_on(
        listener,
        state.clone(),
        Duration::from_secs(10),
        async move {
            let _ = stopped.await;
        },
    ));
    wait_for(|| state.is_ready()).await;
    let client = tokio::spawn(request(addr));
    wait_for(|| !engine.submitted.lock().unwrap().is_empty()).await;

    stop.send(()).unwrap();
    wait_for(|| !state.is_ready()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!server.is_finished(), "waits for the in-flight request");
    assert!(!engine.cancelled(0));

    // The engine finishes the request: the client gets its answer, then the server exits.
    let tx = engine.held.lock().unwrap().pop().unwrap();
    tx.send(EngineEvent::Finished {
        sample: 0,
        reason: FinishReason::Length,
        completion_tokens: 1,
        reasoning_tokens: 0,
        early_stop: None,
    })
    .unwrap();
    drop(tx);
    let resp = client.await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(resp.contains(r#""content":"Hello""#), "{resp}");
    assert!(resp.contains(r#""finish_reason":"length""#), "{resp}");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn shutdown_timeout_bounds_the_drain() {
    let engine = FakeEngine::new(Behavior::Hold);
    let state = app(engine.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_on(
        listener,
        state.clone(),
        Duration::from_millis(200),
        async move {
            let _ = stopped.await;
        },
    ));
    let _client = tokio::spawn(request(addr));
    wait_for(|| !engine.submitted.lock().unwrap().is_empty()).await;
    let t = Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}
