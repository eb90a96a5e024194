//! Listening and serving, the same for every service.
//!
//! Every listener is bound before anything is served, so that a port in
//! use fails the start at once, and `/readyz` never answers 200 while a
//! port of the service is not listening yet.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use orders::http::{self, HEADER_READ_TIMEOUT};

use crate::shutdown::Shutdown;

/// Binds `addr`; `what` names it in the error.
pub async fn bind(what: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} port {addr}"))
}

/// Serves `router` on `listener` until the shutdown is stopping, then
/// finishes the requests in flight. A connection that sends no request for
/// [`HEADER_READ_TIMEOUT`] is closed.
pub async fn serve_http(listener: TcpListener, router: Router, shutdown: &Shutdown) {
    http::serve_listener(listener, router, shutdown.stopping(), HEADER_READ_TIMEOUT).await;
}

/// `listener` as the incoming connections of a tonic server, with
/// `TCP_NODELAY` as tonic sets it when it binds itself.
pub fn grpc_incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The admin server (`/healthz`, `/readyz`, `/metrics`, `/debug/pprof/*`).
/// It outlives the draining, so that `/readyz` answers 503 and `/metrics`
/// can be scraped while the service drains, and stops last.
pub struct Admin {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Admin {
    pub fn spawn(listener: TcpListener, router: Router) -> Self {
        let stop = CancellationToken::new();
        let stopped = stop.clone().cancelled_owned();
        let task = tokio::spawn(http::serve_listener(
            listener,
            router,
            stopped,
            HEADER_READ_TIMEOUT,
        ));
        Self { stop, task }
    }

    /// Stops it; a request still running a second later (a CPU profile,
    /// say) is cut off.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if tokio::time::timeout(Duration::from_secs(1), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}
