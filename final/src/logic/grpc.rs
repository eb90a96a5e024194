//! logic's gRPC service, `orders.v1.OrderService`: stores each order in
//! SQLite, then publishes it to JetStream; an order whose publish fails is
//! stored all the same, and the outbox ([`super::outbox`]) publishes it
//! later.

use async_nats::jetstream;
use orders::pb;
use orders::pb::order_service_server::OrderService;
use orders::queue::ORDERS_CREATED;
use orders::store::Store;
use orders::{NewOrder, Order};
use tonic::{Request, Response, Status};

use super::outbox::publish;
use crate::telemetry;

/// The service, on the store and the JetStream context of the process.
pub(super) struct OrderApi {
    pub(super) store: Store,
    pub(super) jetstream: jetstream::Context,
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn create_order(
        &self,
        request: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::CreateOrderResponse>, Status> {
        let request = request.into_inner();
        let new = NewOrder::validate(
            &request.user_id,
            &request.product_id,
            request.quantity.into(),
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let order = Order::create(new);

        telemetry::db_query("insert", self.store.insert(&order))
            .await
            .inspect_err(|e| tracing::error!(error = %e, "storing the order failed"))
            .map_err(|e| Status::unavailable(format!("storing the order: {e}")))?;
        telemetry::order_created();
        tracing::info!(
            order_id = %order.order_id,
            user_id = %order.user_id,
            product_id = %order.product_id,
            quantity = order.quantity,
            "order created"
        );

        // Stored is accepted: if the publish fails, the outbox sweep retries.
        match telemetry::mq_publish(ORDERS_CREATED, publish(&self.jetstream, &order)).await {
            Ok(()) => {
                if let Err(e) =
                    telemetry::db_query("update", self.store.mark_published(&order.order_id)).await
                {
                    tracing::warn!(
                        order_id = %order.order_id,
                        error = %e,
                        "order published, flag not saved"
                    );
                }
            }
            Err(e) => tracing::warn!(
                order_id = %order.order_id,
                error = %e,
                "publish failed, order left in the outbox"
            ),
        }

        Ok(Response::new(pb::CreateOrderResponse {
            order_id: order.order_id,
        }))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let order_id = request.into_inner().order_id;
        match telemetry::db_query("select", self.store.get(&order_id)).await {
            Ok(Some(order)) => Ok(Response::new(order.into())),
            Ok(None) => Err(Status::not_found(format!("no order {order_id}"))),
            Err(e) => Err(Status::unavailable(format!("reading the order: {e}"))),
        }
    }
}
