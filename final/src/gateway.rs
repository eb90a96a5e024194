//! gateway: the public HTTP API, and the gRPC server `task` reports to.
//!
//! `POST /orders` checks the bearer token and the body, then asks logic to
//! create the order over gRPC. `GET /orders/{id}` reads the order, and its
//! result, from logic. task's callback is forwarded to logic, which stores
//! the result with the order: the gateway keeps no state of its own, so any
//! number of gateways serve any order, and a restart forgets nothing.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use orders::deadline;
use orders::pb::gateway_callback_server::{GatewayCallback, GatewayCallbackServer};
use orders::pb::order_service_client::OrderServiceClient;
use orders::pb::{self, Outcome};
use orders::topology::Service;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tonic::transport::Endpoint;

use crate::config::Config;
use crate::faults::Faults;
use crate::server::{self, Admin};
use crate::shutdown::Shutdown;
use crate::telemetry::{self, Telemetry};
use crate::{health, secret};

/// Largest request body accepted; an order is a few dozen bytes.
const MAX_BODY_BYTES: usize = 16 * 1024;

pub async fn run(config: Config, telemetry: Telemetry, shutdown: Shutdown) -> anyhow::Result<()> {
    let topology = &config.topology;
    let logic_timeout = config.logic_timeout();
    let api_listener = server::bind("HTTP API", topology.gateway_http).await?;
    let callback_listener = server::bind("gRPC callback", topology.gateway_grpc).await?;
    let admin_listener = server::bind("admin", topology.gateway_admin).await?;

    // Lazy: the gateway starts (and answers 503) even while logic is down.
    let channel = Endpoint::from_shared(topology.logic_url())?
        .connect_timeout(logic_timeout.min(Duration::from_millis(500)))
        .connect_lazy();
    let faults = Faults::new(Service::Gateway, &config.faults.0, telemetry.clone());
    let state = AppState {
        logic: OrderServiceClient::with_interceptor(channel, telemetry::InjectContext),
        logic_timeout,
        api_token: Arc::from(config.api_token),
        telemetry: telemetry.clone(),
        faults: faults.clone(),
    };

    let callback = tonic::transport::Server::builder()
        .trace_fn(telemetry::grpc_server_span)
        .layer(telemetry.grpc_server_layer())
        .add_service(GatewayCallbackServer::new(CallbackServer(state.clone())))
        .serve_with_incoming_shutdown(
            server::grpc_incoming(callback_listener),
            shutdown.stopping(),
        );
    let admin = health::admin_router(&shutdown, || async { Ok(()) })
        .merge(telemetry.admin_routes())
        .merge(faults.admin_routes());
    let admin = Admin::spawn(admin_listener, admin);

    tracing::info_span!("startup").in_scope(|| {
        tracing::info!(
            http = %topology.gateway_http,
            grpc_callback = %topology.gateway_grpc,
            "gateway listening"
        );
    });
    let served = shutdown
        .drain(async {
            tokio::try_join!(
                async {
                    server::serve_http(api_listener, api_router(state), &shutdown).await;
                    Ok(())
                },
                async { callback.await.map_err(anyhow::Error::from) },
            )
        })
        .await;
    admin.stop().await;
    match served {
        Ok(result) => result.map(|_| ()),
        // The deadline passed: what was left is abandoned, not an error.
        Err(_abandoned) => Ok(()),
    }
}

#[derive(Clone)]
struct AppState {
    logic: OrderServiceClient<telemetry::TracedChannel>,
    logic_timeout: Duration,
    api_token: Arc<str>,
    telemetry: Telemetry,
    /// Off unless switched on: `memory_leak`, `failing_callbacks`.
    faults: Faults,
}

// ANCHOR: router
/// The public API. Authentication wraps only the matched routes, so an
/// unknown path is a 404 whatever the token.
fn api_router(state: AppState) -> Router {
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
        .layer(middleware::from_fn_with_state(
            state.telemetry.clone(),
            telemetry::track_http,
        ))
        .with_state(state)
}
// ANCHOR_END: router

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
        Some(token) if secret::same_secret(token, &state.api_token) => next.run(request).await,
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "invalid bearer token").into_response(),
        None => ApiError::new(StatusCode::UNAUTHORIZED, "missing bearer token").into_response(),
    }
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

// ANCHOR: create_order
async fn create_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<CreateOrderBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let order = orders::NewOrder::validate(&body.user_id, &body.product_id, body.quantity)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    // A retry with the same key gets the same order (logic keeps the keys).
    let idempotency_key = orders::http::idempotency_key(&headers)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;

    let request = pb::CreateOrderRequest {
        user_id: order.user_id,
        product_id: order.product_id,
        quantity: order.quantity,
        idempotency_key,
    };
    let mut logic = state.logic.clone();
    let created = call_logic(
        state.logic_timeout,
        state.telemetry.grpc_client(
            "orders.v1.OrderService",
            "CreateOrder",
            logic.create_order(deadline::request(request, state.logic_timeout)),
        ),
    )
    .await?;
    tracing::info!(order_id = %created.order_id, "order accepted");
    state.faults.leak();

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
// ANCHOR_END: create_order

/// An order as `GET /orders/{id}` shows it.
#[derive(Serialize)]
struct OrderView {
    order_id: String,
    user_id: String,
    product_id: String,
    quantity: u32,
    created_at_unix_ms: i64,
    /// `created` until task's callback arrives, then `completed` or `failed`;
    /// `dead_lettered` if task gave up on it.
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
        state.telemetry.grpc_client(
            "orders.v1.OrderService",
            "GetOrder",
            logic.get_order(deadline::request(request, state.logic_timeout)),
        ),
    )
    .await?;
    let status = order.outcome().status();
    Ok(Json(OrderView {
        order_id: order.order_id,
        user_id: order.user_id,
        product_id: order.product_id,
        quantity: order.quantity,
        created_at_unix_ms: order.created_at_unix_ms,
        status,
        detail: order.detail,
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

// ANCHOR: push_result
/// The callback shares the API's state: the client for logic.
struct CallbackServer(AppState);

#[tonic::async_trait]
impl GatewayCallback for CallbackServer {
    async fn push_result(
        &self,
        request: tonic::Request<pb::PushResultRequest>,
    ) -> Result<tonic::Response<pb::PushResultResponse>, tonic::Status> {
        let request = request.into_inner();
        orders::domain::validate_id("order_id", &request.order_id)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let outcome = match request.outcome() {
            Outcome::Unspecified => {
                return Err(tonic::Status::invalid_argument("outcome must be set"));
            }
            outcome => outcome,
        };
        if self.0.faults.callback_fails(&request.order_id) {
            tracing::warn!(order_id = %request.order_id, "result refused: fault failing_callbacks");
            return Err(tonic::Status::unavailable(
                "result refused (fault failing_callbacks)",
            ));
        }
        // Stored with the order, in logic; logic keeps the first result.
        let result = pb::RecordResultRequest {
            order_id: request.order_id.clone(),
            outcome: outcome.into(),
            detail: request.detail,
        };
        let mut logic = self.0.logic.clone();
        let reply = forward_to_logic(
            self.0.logic_timeout,
            self.0.telemetry.grpc_client(
                "orders.v1.OrderService",
                "RecordResult",
                logic.record_result(deadline::request(result, self.0.logic_timeout)),
            ),
        )
        .await?;
        if reply.recorded {
            self.0
                .telemetry
                .order_completed(outcome, reply.created_at_unix_ms);
        }
        tracing::info!(
            order_id = %request.order_id,
            outcome = ?outcome,
            delivery = request.delivery,
            recorded = reply.recorded,
            "result received"
        );
        Ok(tonic::Response::new(pb::PushResultResponse {
            recorded: reply.recorded,
        }))
    }
}
// ANCHOR_END: push_result

/// Calls logic for the callback, giving up after `deadline`: task then
/// retries, and the message is delivered again.
async fn forward_to_logic<T>(
    deadline: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(deadline, call).await {
        Ok(answer) => answer.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "logic did not answer within {} ms",
            deadline.as_millis()
        ))),
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
