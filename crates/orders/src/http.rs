//! Serving an axum router until shutdown.

use std::net::SocketAddr;

use axum::Router;
use tokio_util::sync::CancellationToken;

/// Serves `router` on `addr` until `shutdown` fires, then lets in-flight
/// requests finish.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}
