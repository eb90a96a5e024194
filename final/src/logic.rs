//! logic: the gRPC order service. Stores each order in SQLite, then
//! publishes it to JetStream; a background sweep republishes any order whose
//! publish failed (the outbox), so a stored order always reaches task. The
//! result of an order, forwarded by the gateway, is stored with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use orders::pb;
use orders::pb::order_service_server::{OrderService, OrderServiceServer};
use orders::queue::ORDERS_CREATED;
use orders::store::{Inserted, NewRow, Store, Unpublished};
use orders::topology::Service;
use orders::{NewOrder, Order};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::config::Config;
use crate::faults::Faults;
use crate::health;
use crate::server::{self, Admin};
use crate::shutdown::Shutdown;
use crate::telemetry::{self, Telemetry};

pub async fn run(config: Config, telemetry: Telemetry, shutdown: Shutdown) -> anyhow::Result<()> {
    let topology = &config.topology;
    let grpc_listener = server::bind("gRPC", topology.logic_grpc).await?;
    let admin_listener = server::bind("admin", topology.logic_admin).await?;

    let database = topology.database();
    let store = Store::open(&database)
        .await
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", database.display()))?;
    let nats = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(topology.nats_url())
        .await?;
    let faults = Faults::new(Service::Logic, &config.faults.0, telemetry.clone());
    let jetstream = jetstream::ContextBuilder::new()
        .timeout(config.publish_timeout())
        .build(nats.clone());

    let stream_ready = Arc::new(AtomicBool::new(false));
    tokio::spawn(declare_stream(
        jetstream.clone(),
        stream_ready.clone(),
        shutdown.stopping_token(),
    ));
    // Stops with the shutdown, or when the gRPC server fails.
    let sweep_stop = shutdown.stopping_token().child_token();
    let sweep = tokio::spawn(sweep_outbox(
        telemetry.clone(),
        store.clone(),
        jetstream.clone(),
        config.outbox_interval(),
        sweep_stop.clone(),
    ));
    tokio::spawn(record_dead_letters(
        telemetry.clone(),
        store.clone(),
        jetstream.clone(),
        shutdown.stopping_token(),
    ));

    let admin = health::admin_router(&shutdown, {
        let store = store.clone();
        move || {
            let (store, nats, stream_ready) = (store.clone(), nats.clone(), stream_ready.clone());
            async move {
                store.ping().await.map_err(|e| format!("database: {e}"))?;
                if nats.connection_state() != async_nats::connection::State::Connected {
                    return Err("not connected to NATS".to_owned());
                }
                if !stream_ready.load(Ordering::Relaxed) {
                    return Err("JetStream stream not declared yet".to_owned());
                }
                Ok(())
            }
        }
    })
    .merge(telemetry.admin_routes())
    .merge(faults.admin_routes());
    let admin = Admin::spawn(admin_listener, admin);
    let grpc = tonic::transport::Server::builder()
        .trace_fn(telemetry::grpc_server_span)
        .layer(telemetry.grpc_server_layer())
        .add_service(OrderServiceServer::new(OrderApi {
            store,
            jetstream,
            telemetry,
            faults,
        }))
        .serve_with_incoming_shutdown(server::grpc_incoming(grpc_listener), shutdown.stopping());

    tracing::info_span!("startup").in_scope(|| {
        tracing::info!(
            grpc = %topology.logic_grpc,
            database = %database.display(),
            "logic listening"
        );
    });
    // ANCHOR: drain
    let served = shutdown
        .drain(async {
            // The calls in flight are answered, then the sweep in flight ends.
            let served = grpc.await.map_err(anyhow::Error::from);
            sweep_stop.cancel();
            let _ = sweep.await;
            served
        })
        .await;
    admin.stop().await;
    // Abandoned (the deadline passed): what was left is not an error.
    served.unwrap_or(Ok(()))
    // ANCHOR_END: drain
}

struct OrderApi {
    store: Store,
    jetstream: jetstream::Context,
    telemetry: Telemetry,
    /// Off unless switched on: `slow_writes`, `error_burst`, `lost_context`.
    faults: Faults,
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    // ANCHOR: create_order
    async fn create_order(
        &self,
        request: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::CreateOrderResponse>, Status> {
        // The gateway's deadline, less a margin: past it, nothing is stored.
        let deadline = orders::deadline::of(&request);
        let request = request.into_inner();
        let new = NewOrder::validate(
            &request.user_id,
            &request.product_id,
            request.quantity.into(),
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if self.faults.burst_error() {
            tracing::warn!("order refused: fault error_burst");
            return Err(Status::unavailable("order refused (fault error_burst)"));
        }
        let key = request.idempotency_key.as_deref();
        if let Some(key) = key {
            orders::domain::validate_id("idempotency_key", key)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        let order = Order::create(new);
        // The context the order is created in, stored with it: the outbox
        // republishes it in the same trace.
        let context = telemetry::current_traceparent();
        let row = NewRow {
            idempotency_key: key,
            trace_context: context.as_deref(),
        };

        let stored = self
            .telemetry
            .db_query("insert", async {
                // Waits first under the fault `slow_writes`, as a disk would.
                self.faults.slow_write().await;
                self.store.insert(&order, row, deadline).await
            })
            .await;
        match stored {
            Ok(Inserted::New) => {}
            // A retry: this order was stored, and published, the first time.
            Ok(Inserted::Earlier(earlier)) => {
                tracing::info!(
                    order_id = %earlier.order_id,
                    "order stored before under this Idempotency-Key"
                );
                return Ok(Response::new(pb::CreateOrderResponse {
                    order_id: earlier.order_id,
                }));
            }
            Err(e) => {
                tracing::error!(error = %e, "storing the order failed");
                return Err(e.into());
            }
        }
        self.telemetry.order_created();
        tracing::info!(
            order_id = %order.order_id,
            user_id = %order.user_id,
            product_id = %order.product_id,
            quantity = order.quantity,
            "order created"
        );

        // Stored is accepted: if the publish fails, the outbox sweep retries.
        match self
            .telemetry
            .mq_publish(
                ORDERS_CREATED,
                publish(&self.jetstream, &order, !self.faults.context_lost()),
            )
            .await
        {
            Ok(()) => {
                if let Err(e) = self
                    .telemetry
                    .db_query("update", self.store.mark_published(&order.order_id))
                    .await
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
    // ANCHOR_END: create_order

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let order_id = request.into_inner().order_id;
        match self
            .telemetry
            .db_query("select", self.store.get(&order_id))
            .await
        {
            Ok(Some(order)) => Ok(Response::new(order.into())),
            Ok(None) => Err(Status::not_found(format!("no order {order_id}"))),
            Err(e) => Err(Status::unavailable(format!("reading the order: {e}"))),
        }
    }

    // ANCHOR: record_result
    async fn record_result(
        &self,
        request: Request<pb::RecordResultRequest>,
    ) -> Result<Response<pb::RecordResultResponse>, Status> {
        // The gateway's deadline, less a margin: past it, nothing is stored.
        let deadline = orders::deadline::of(&request);
        let request = request.into_inner();
        let outcome = request.outcome();
        // Dead-lettered is logic's own mark, never a result to record.
        if !matches!(outcome, pb::Outcome::Completed | pb::Outcome::Failed) {
            return Err(Status::invalid_argument(
                "outcome must be completed or failed",
            ));
        }
        match self
            .telemetry
            .db_query(
                "update",
                self.store
                    .record_result(&request.order_id, outcome, &request.detail, deadline),
            )
            .await
        {
            Ok(Some(recorded)) => Ok(Response::new(recorded.into())),
            Ok(None) => Err(Status::not_found(format!("no order {}", request.order_id))),
            Err(e) => Err(e.into()),
        }
    }
    // ANCHOR_END: record_result
}

// ANCHOR: publish
/// Publishes an order on `orders.created` and waits for JetStream's ack.
/// The order id is the message id, so JetStream drops a republished copy.
/// `with_context` is false only under the fault `lost_context`.
async fn publish(
    jetstream: &jetstream::Context,
    order: &Order,
    with_context: bool,
) -> anyhow::Result<()> {
    let payload = serde_json::to_vec(order)?;
    let headers = match with_context {
        true => telemetry::message_headers(&order.order_id),
        false => async_nats::HeaderMap::new(),
    };
    let message = PublishMessage::build()
        .payload(payload.into())
        // The trace context, in the headers (before the id:
        // `headers` replaces every header set so far).
        .headers(headers)
        .message_id(&order.order_id);
    jetstream
        .send_publish(ORDERS_CREATED, message)
        .await?
        .await?;
    Ok(())
}
// ANCHOR_END: publish

/// Declares the stream, retrying until NATS answers.
#[tracing::instrument(skip_all)]
async fn declare_stream(
    jetstream: jetstream::Context,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        match orders::queue::ensure_stream(&jetstream).await {
            Ok(_) => {
                ready.store(true, Ordering::Relaxed);
                return;
            }
            Err(e) => tracing::warn!(error = %e, "declaring the stream failed, retrying"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ANCHOR: outbox
/// Publishes orders that were stored but never acknowledged by JetStream.
/// Only orders older than one interval are swept, so an order whose first
/// publish is still in flight is not sent twice for nothing.
async fn sweep_outbox(
    telemetry: Telemetry,
    store: Store,
    jetstream: jetstream::Context,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let cutoff = orders::domain::unix_millis() - interval.as_millis() as i64;
        let pending = match telemetry
            .db_query("select", store.unpublished(cutoff, 100))
            .await
        {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(error = %e, "reading the outbox failed");
                continue;
            }
        };
        for Unpublished {
            order,
            trace_context,
        } in pending
        {
            // A span per republished order, in the order's own trace; an
            // idle sweep makes none.
            let span = tracing::info_span!("outbox republish", order_id = %order.order_id);
            telemetry::continue_stored_trace(&span, trace_context.as_deref());
            if telemetry
                .mq_publish(ORDERS_CREATED, publish(&jetstream, &order, true))
                .instrument(span.clone())
                .await
                .is_err()
            {
                break; // NATS is still down; try again next tick.
            }
            span.in_scope(|| tracing::info!("order republished from the outbox"));
            if let Err(e) = telemetry
                .db_query("update", store.mark_published(&order.order_id))
                .await
            {
                span.in_scope(|| tracing::warn!(error = %e, "order republished, flag not saved"));
            }
        }
    }
}
// ANCHOR_END: outbox

/// Marks each order whose message task moved to the dead letters, so that
/// its status says task gave up on it (until it is reprocessed).
async fn record_dead_letters(
    telemetry: Telemetry,
    store: Store,
    jetstream: jetstream::Context,
    shutdown: CancellationToken,
) {
    orders::dead_letters::follow(
        jetstream,
        shutdown,
        |dead| {
            let (telemetry, store) = (telemetry.clone(), store.clone());
            async move {
                let order_id = dead.order.order_id;
                telemetry
                    .db_query("update", store.mark_dead_lettered(&order_id, &dead.reason))
                    .await?;
                Ok(())
            }
        },
        |e| {
            tracing::info_span!("dead letters").in_scope(|| {
                tracing::warn!(error = %format!("{e:#}"), "dead letters failed, retrying");
            });
        },
    )
    .await
}
