//! The accept loop: a cap on open connections, a deadline for request
//! headers, and a graceful end (finish what is in flight, then close).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::ConnectionArgs;

/// How long open connections get to finish once the server stops.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

/// Serves `app` on every accepted connection while fewer than
/// `max_connections` are open, `overflow` on the others, until `stop` turns
/// true; then lets open connections finish (up to [`CLOSE_DEADLINE`]).
pub async fn accept(
    listener: TcpListener,
    app: Router,
    overflow: Router,
    limits: ConnectionArgs,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            // `map`: the guard `wait_for` returns must not live across an await.
            _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => break,
        };
        // Streamed tokens are small writes: with Nagle's algorithm one waits
        // for the client's delayed ACK of the previous (up to 40 ms on Linux),
        // which shows as a late first token whenever prefill is quick.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let slot = slots.clone().try_acquire_owned().ok();
        let router = if slot.is_some() { &app } else { &overflow };
        let service = router
            .clone()
            .layer(Extension(ConnectInfo::<SocketAddr>(peer)));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(CLOSE_DEADLINE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {CLOSE_DEADLINE:?}; closing them");
    }
}
