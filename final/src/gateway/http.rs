//! The public HTTP API. `POST /orders` checks the bearer token and the
//! body, then asks logic to create the order over gRPC. `GET /orders/{id}`
//! reads the order from logic and adds what the gateway learned from
//! task's callback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use orders::pb::order_service_client::OrderServiceClient;
use orders::pb::{self, Outcome};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::callback::Results;
use crate::telemetry;

/// Largest request body accepted; an order is a few dozen bytes.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// What every request handler shares.
#[derive(Clone)]
pub(super) struct AppState {
    pub(super) logic: OrderServiceClient<telemetry::TracedChannel>,
    pub(super) logic_timeout: Duration,
    pub(super) results: Results,
    pub(super) api_token: Arc<str>,
}

/// The public API. Authentication wraps only the matched routes, so an
/// unknown path is a 404 whatever the token.
pub(super) fn router(state: AppState) -> Router {
    Router::new()
        .route("/orders", post(create_order))
        .route("/orders/{order_id}", get(get_order))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_bearer_token,
        ))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Outermost, so it sees every answer, the refusals included.
        .layer(middleware::from_fn(telemetry::track_http))
        // The request's trace, for the client, in a `traceresponse` header.
        .layer(middleware::from_fn(telemetry::trace_response))
        // Around that: the request's span, and its access line.
        .layer(middleware::from_fn(telemetry::log_http))
        .with_state(state)
}

async fn require_bearer_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(token) if same_secret(token, &state.api_token) => next.run(request).await,
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "invalid bearer token").into_response(),
        None => ApiError::new(StatusCode::UNAUTHORIZED, "missing bearer token").into_response(),
    }
}

/// Compares a presented token with the expected one in a time that does
/// not depend on where they first differ, so that timing the answers does
/// not reveal the token byte by byte.
fn same_secret(presented: &str, expected: &str) -> bool {
    let (presented, expected) = (presented.as_bytes(), expected.as_bytes());
    presented.len() == expected.len()
        && presented
            .iter()
            .zip(expected)
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
}

/// The body of `POST /orders`. `quantity` is read as any integer so that an
/// out-of-range value gets the domain's message, not serde's.
#[derive(Deserialize)]
struct CreateOrderBody {
    user_id: String,
    product_id: String,
    quantity: i64,
}

#[derive(Serialize)]
struct Created {
    order_id: String,
    status: &'static str,
}

async fn create_order(
    State(state): State<AppState>,
    body: Result<Json<CreateOrderBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let Json(body) = body?;
    let order = orders::NewOrder::validate(&body.user_id, &body.product_id, body.quantity)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;

    let request = pb::CreateOrderRequest {
        user_id: order.user_id,
        product_id: order.product_id,
        quantity: order.quantity,
    };
    let mut logic = state.logic.clone();
    let created = call_logic(
        state.logic_timeout,
        telemetry::grpc_client(
            "orders.v1.OrderService",
            "CreateOrder",
            logic.create_order(request),
        ),
    )
    .await?;
    telemetry::order_accepted(&created.order_id, received);
    tracing::info!(order_id = %created.order_id, "order accepted");

    let location = format!("/orders/{}", created.order_id);
    let body = Created {
        order_id: created.order_id,
        status: "created",
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

/// An order as `GET /orders/{id}` shows it.
#[derive(Serialize)]
struct OrderView {
    order_id: String,
    user_id: String,
    product_id: String,
    quantity: u32,
    created_at_unix_ms: i64,
    /// `created` until task's callback arrives, then `completed` or `failed`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

async fn get_order(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    if orders::domain::validate_id("order_id", &order_id).is_err() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such order"));
    }
    let mut logic = state.logic.clone();
    let request = pb::GetOrderRequest {
        order_id: order_id.clone(),
    };
    let order = call_logic(
        state.logic_timeout,
        telemetry::grpc_client(
            "orders.v1.OrderService",
            "GetOrder",
            logic.get_order(request),
        ),
    )
    .await?;
    let result = state.results.get(&order_id);
    Ok(Json(OrderView {
        order_id: order.order_id,
        user_id: order.user_id,
        product_id: order.product_id,
        quantity: order.quantity,
        created_at_unix_ms: order.created_at_unix_ms,
        status: match result.as_ref().map(|r| r.outcome) {
            None => "created",
            Some(Outcome::Failed) => "failed",
            Some(_) => "completed",
        },
        detail: result.map(|r| r.detail),
    }))
}

/// Calls logic, giving up after `deadline`: a slow logic becomes a 504
/// rather than a client left waiting.
async fn call_logic<T>(
    deadline: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(ApiError::from(status)),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("logic did not answer within {} ms", deadline.as_millis()),
        )),
    }
}

/// Every error the API returns: a status and a JSON body `{"error": ...}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// Malformed JSON is 400, well-formed JSON of the wrong shape 422, a body
/// over the limit 413, a missing JSON content type 415: axum's statuses,
/// with our JSON body instead of its plain text.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

/// How a failed call to logic looks to an HTTP client.
impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        tracing::warn!(error = %status, "the call to logic failed");
        let http = match status.code() {
            Code::InvalidArgument => StatusCode::UNPROCESSABLE_ENTITY,
            Code::NotFound => return Self::new(StatusCode::NOT_FOUND, "no such order"),
            Code::Unavailable | Code::ResourceExhausted => {
                return Self::new(StatusCode::SERVICE_UNAVAILABLE, "logic is unavailable");
            }
            Code::DeadlineExceeded | Code::Cancelled => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        };
        Self::new(http, status.message())
    }
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn a_token_is_the_same_only_when_every_byte_is() {
        assert!(same_secret("demo-token", "demo-token"));
        assert!(!same_secret("demo-tokeN", "demo-token"));
        assert!(!same_secret("demo-token-", "demo-token"));
        assert!(!same_secret("", "demo-token"));
    }
}
