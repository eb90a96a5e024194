//! Health and readiness, on each service's admin port, never on the public
//! one:
//!
//! - `/healthz`: is the process alive? 200 for as long as it runs. An
//!   orchestrator restarts a process that fails it, so it checks nothing
//!   outside the process: a restart does not bring a database back.
//! - `/readyz`: can the service do its job now? 200 when it can, else 503
//!   with `{"status":"not ready","reason":...}`. A load balancer sends no
//!   traffic to a service that is not ready, and `docker compose` waits for
//!   it before it starts the services that depend on it.
//!
//! Each service checks what its own work needs, as in the chapters: logic,
//! that the database answers, NATS is connected and the stream declared;
//! task, that NATS is connected and the consumer bound; the gateway,
//! nothing, for its listeners are bound before the admin port answers at
//! all (see [`crate::server`]). Whether logic answers is not part of the
//! gateway's readiness: logic down is down for every gateway, so every
//! gateway would leave the load balancer at once, and clients would get
//! refused connections instead of a quick 503 that says why. A dependency
//! shared by every replica does not belong in a replica's readiness.
//!
//! What production adds is the shutdown: every service is not ready from
//! the moment a shutdown begins, while it still serves and drains.

use std::future::Future;

use axum::Router;

use crate::shutdown::Shutdown;

// ANCHOR: readiness
/// `/healthz` and `/readyz` (`orders::admin::router`), where `/readyz` asks
/// `ready`, the service's own check, only until a shutdown begins: from
/// then on it answers 503, `"shutting down"`.
pub fn admin_router<F, Fut>(shutdown: &Shutdown, ready: F) -> Router
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let shutdown = shutdown.clone();
    orders::admin::router(move || {
        let check = (!shutdown.has_begun()).then(&ready);
        async move {
            match check {
                Some(check) => check.await,
                None => Err("shutting down".to_owned()),
            }
        }
    })
}
// ANCHOR_END: readiness
