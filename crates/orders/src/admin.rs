//! The admin HTTP server every service runs on its own port, apart from the
//! public API: `/healthz` and `/readyz` here, and in later chapters
//! `/metrics` and `/debug/pprof/*`, which must never be public.

use std::future::Future;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;

/// `/healthz` answers while the process runs; `/readyz` answers 200 only
/// when `ready` says the service can do its job, and 503 with the reason
/// otherwise. The launcher and the tests wait on `/readyz`.
pub fn router<F, Fut>(ready: F) -> Router
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route(
            "/readyz",
            get(move || async move {
                match ready().await {
                    Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))).into_response(),
                    Err(reason) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        Json(json!({ "status": "not ready", "reason": reason })),
                    )
                        .into_response(),
                }
            }),
        )
}

/// Asks a service's admin port whether it is ready: `GET /readyz` answers
/// 200 within a second. What the launcher, the tests and the demo wait on.
pub async fn is_ready(client: &reqwest::Client, admin: std::net::SocketAddr) -> bool {
    client
        .get(format!("http://{admin}/readyz"))
        .timeout(std::time::Duration::from_secs(1))
        .send()
        .await
        .is_ok_and(|response| response.status() == StatusCode::OK)
}
