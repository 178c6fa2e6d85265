//! Running the router on a socket, with graceful shutdown:
//!
//! ```text
//! bind -> ready=true -> serve ... SIGTERM/Ctrl-C -> ready=false, stop accepting
//!      -> in-flight requests finish (up to --shutdown-timeout) -> return Ok (exit 0)
//! ```
//!
//! Also the client side of a health check (`probe`, for `ponder healthcheck`): the container
//! image has no curl, so its HEALTHCHECK asks the binary itself.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use super::{router, AppState};
use crate::config::ServeConfig;
use crate::engine::EngineClient;
use crate::model::LoadedModel;

/// `ponder serve`: validates `cfg`, binds `--host:--port`, serves until SIGTERM / Ctrl-C.
/// The engine must already be running on `model`.
pub async fn serve(
    cfg: ServeConfig,
    engine: Arc<dyn EngineClient>,
    model: Arc<LoadedModel>,
) -> anyhow::Result<()> {
    cfg.validate()?;
    let state = AppState::new(
        engine,
        model,
        cfg.served_model_name.clone(),
        cfg.http_limits(),
    )?
    .with_budget(cfg.budget_config()?)
    .with_auth(cfg.auth_config()?);
    let mut state = state;
    state.tool_parser = cfg.tool_call_parser;
    let state = match cfg.metrics_compat {
        crate::config::MetricsCompat::None => state,
        crate::config::MetricsCompat::Vllm => state.with_vllm_metrics()?,
    };
    let listener = TcpListener::bind((cfg.host.as_str(), cfg.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", cfg.host, cfg.port))?;
    serve_on(listener, state, cfg.shutdown_timeout.0, shutdown_signal()).await
}

/// Serves `state` on `listener` until `shutdown` resolves, then drains for up to `grace`.
/// Marks the state ready once serving and not ready when draining starts.
pub async fn serve_on(
    listener: TcpListener,
    state: AppState,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("listener has no local address")?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(state.clone());
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop_rx.await;
    });
    let mut server = tokio::spawn(async move { server.await });
    state.set_ready(true);
    tracing::info!(%addr, model = %state.served_name, "listening");
    tokio::select! {
        res = &mut server => {
            // The server stopped on its own: an accept error.
            return res.context("server task failed")?.context("server failed");
        }
        () = shutdown => {}
    }
    state.set_ready(false);
    let _ = stop_tx.send(());
    tracing::info!(
        grace_s = grace.as_secs_f64(),
        "shutting down: draining in-flight requests"
    );
    match tokio::time::timeout(grace, &mut server).await {
        Ok(res) => res
            .context("server task failed")?
            .context("server failed")?,
        Err(_) => {
            tracing::warn!("shutdown timeout reached; closing the remaining connections");
            server.abort();
        }
    }
    tracing::info!("server stopped");
    Ok(())
}

/// `GET path` on `host:port` (plain HTTP/1.1, `Connection: close`), every step bounded by
/// `timeout`; returns the response's status code. A wildcard listen address (`0.0.0.0`, `::`)
/// is probed on loopback.
pub fn probe(host: &str, port: u16, path: &str, timeout: Duration) -> anyhow::Result<u16> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let host = match host {
        "0.0.0.0" | "" => "127.0.0.1",
        "::" | "[::]" => "::1",
        h => h,
    };
    let addr = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}:{port}"))?
        .next()
        .with_context(|| format!("{host}:{port} resolves to no address"))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    // The status line fits in the first bytes: "HTTP/1.1 200 OK".
    let mut head = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut head[got..])? {
            0 => break,
            k => got += k,
        }
    }
    let line = String::from_utf8_lossy(&head[..got]);
    line.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("{addr}{path}: not an HTTP response: {line:?}"))
}

/// A future that resolves on SIGTERM or Ctrl-C (SIGINT). The handlers are installed when
/// this is called (not when the future is first polled), so a signal that arrives while the
/// server is starting is not lost. Call it inside the Tokio runtime.
#[cfg(unix)]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    if let Err(e) = term.as_ref().and(int.as_ref()) {
        tracing::warn!(error = %e, "cannot install the shutdown signal handlers");
    }
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(term) => tracing::info!("SIGTERM received"),
            () = wait(int) => tracing::info!("SIGINT received"),
        }
    }
}

/// A future that resolves on Ctrl-C.
#[cfg(not(unix))]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
