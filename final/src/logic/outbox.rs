//! Publishing orders to JetStream, and the outbox: a background sweep that
//! publishes again every stored order whose publish was never acknowledged,
//! so that no stored order is lost to a NATS outage.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use orders::Order;
use orders::queue::ORDERS_CREATED;
use orders::store::Store;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::telemetry;

/// Publishes an order on `orders.created` and waits for JetStream's ack.
/// The order id is the message id, so JetStream drops a republished copy.
pub(super) async fn publish(jetstream: &jetstream::Context, order: &Order) -> anyhow::Result<()> {
    let payload = serde_json::to_vec(order)?;
    let message = PublishMessage::build()
        .payload(payload.into())
        // The trace context, in the headers (before the id: `headers`
        // replaces every header set so far).
        .headers(telemetry::message_headers(&order.order_id))
        .message_id(&order.order_id);
    jetstream
        .send_publish(ORDERS_CREATED, message)
        .await?
        .await?;
    Ok(())
}

/// Declares the stream, retrying until NATS answers.
#[tracing::instrument(skip_all)]
pub(super) async fn declare_stream(
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

/// Publishes orders that were stored but never acknowledged by JetStream.
/// Only orders older than one interval are swept, so an order whose first
/// publish is still in flight is not sent twice for nothing.
pub(super) async fn sweep_outbox(
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
        let pending = match telemetry::db_query("select", store.unpublished(cutoff, 100)).await {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(error = %e, "reading the outbox failed");
                continue;
            }
        };
        for order in pending {
            // Stopping: what is left is still in the outbox, for the next
            // process; the publish in flight finishes first.
            if shutdown.is_cancelled() {
                return;
            }
            // A span per republished order; an idle sweep makes none.
            let span = tracing::info_span!("outbox republish", order_id = %order.order_id);
            if telemetry::mq_publish(ORDERS_CREATED, publish(&jetstream, &order))
                .instrument(span.clone())
                .await
                .is_err()
            {
                break; // NATS is still down; try again next tick.
            }
            span.in_scope(|| tracing::info!("order republished from the outbox"));
            if let Err(e) =
                telemetry::db_query("update", store.mark_published(&order.order_id)).await
            {
                span.in_scope(|| tracing::warn!(error = %e, "order republished, flag not saved"));
            }
        }
    }
}
