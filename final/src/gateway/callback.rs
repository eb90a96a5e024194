//! The gateway's gRPC server for task: `PushResult`, the result of an
//! order. Results are kept in memory, the first per order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use orders::pb::gateway_callback_server::GatewayCallback;
use orders::pb::{self, Outcome};

use crate::telemetry;

/// Results reported by task, by order id. In memory: a restarted gateway
/// shows older orders as `created` again.
#[derive(Clone, Default)]
pub(super) struct Results(Arc<Mutex<HashMap<String, OrderResult>>>);

#[derive(Clone)]
pub(super) struct OrderResult {
    pub(super) outcome: Outcome,
    pub(super) detail: String,
}

impl Results {
    /// Keeps the first result for an order; a redelivered callback changes
    /// nothing and reports `false`.
    pub(super) fn record(&self, order_id: String, result: OrderResult) -> bool {
        let mut results = self.0.lock().unwrap();
        match results.entry(order_id) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(result);
                true
            }
        }
    }

    pub(super) fn get(&self, order_id: &str) -> Option<OrderResult> {
        self.0.lock().unwrap().get(order_id).cloned()
    }
}

/// `orders.v1.GatewayCallback`.
pub(super) struct CallbackServer {
    pub(super) results: Results,
}

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
        let recorded = self.results.record(
            request.order_id.clone(),
            OrderResult {
                outcome,
                detail: request.detail,
            },
        );
        if recorded {
            telemetry::order_completed(&request.order_id, outcome);
        }
        tracing::info!(
            order_id = %request.order_id,
            outcome = ?outcome,
            delivery = request.delivery,
            recorded,
            "result received"
        );
        Ok(tonic::Response::new(pb::PushResultResponse { recorded }))
    }
}
