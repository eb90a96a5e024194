//! task's consumer: binds the durable consumer, handles each message
//! ([`handle`]) and reports the result to the gateway. A message is acked
//! only after the gateway has the result; otherwise it is redelivered with
//! a growing delay, a bounded number of times. The gateway keeps the first
//! result per order, so a redelivered message never completes an order
//! twice.
//!
//! On shutdown it pulls no new message and finishes (and acks) those in
//! hand. Messages the client had fetched but not yet handed out stay
//! unacked, and JetStream delivers them again after its ack wait, to the
//! next task.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use orders::fulfilment::{Fulfilment, plan_packing};
use orders::pb::gateway_callback_client::GatewayCallbackClient;
use orders::pb::{self, Outcome};
use orders::{OrderCreated, queue};
use tokio_util::sync::CancellationToken;

use crate::telemetry;

/// The consumer loop and what it needs.
pub(super) struct Consumer {
    pub(super) jetstream: jetstream::Context,
    pub(super) gateway: GatewayCallbackClient<telemetry::TracedChannel>,
    pub(super) concurrency: usize,
    pub(super) relation: telemetry::TraceRelation,
    pub(super) callback_timeout: Duration,
    /// Set while the consumer is bound: part of readiness.
    pub(super) consuming: Arc<AtomicBool>,
}

impl Consumer {
    /// Binds the durable consumer and handles messages until `stop`; binds
    /// again whenever the message stream ends (a NATS restart, for
    /// instance). Returns once the messages in hand are handled.
    pub(super) async fn run(self, stop: CancellationToken) {
        let Self {
            jetstream,
            gateway,
            concurrency,
            relation,
            callback_timeout,
            consuming,
        } = self;
        while !stop.is_cancelled() {
            let messages = async {
                let stream = queue::ensure_stream(&jetstream).await?;
                let consumer = queue::ensure_consumer(&stream).await?;
                anyhow::Ok(consumer.messages().await?)
            };
            let messages = tokio::select! {
                messages = messages => messages,
                () = stop.cancelled() => break,
            };
            match messages {
                Ok(messages) => {
                    consuming.store(true, Ordering::Relaxed);
                    // ANCHOR: take_until
                    messages
                        // No new message once stopping; those in hand finish.
                        .take_until(stop.cancelled())
                        .for_each_concurrent(concurrency, |message| {
                            let gateway = gateway.clone();
                            async move {
                                match message {
                                    // In the delivery's consumer span.
                                    Ok(message) => {
                                        telemetry::mq_process(message, relation, |message| {
                                            handle(message, gateway, callback_timeout)
                                        })
                                        .await
                                    }
                                    Err(e) => tracing::warn!(error = %e, "receiving failed"),
                                }
                            }
                        })
                        .await;
                    // ANCHOR_END: take_until
                }
                Err(e) => tracing::warn!(error = %e, "binding the consumer failed, retrying"),
            }
            consuming.store(false, Ordering::Relaxed);
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                () = stop.cancelled() => {}
            }
        }
    }
}

/// Handles one delivery of one message, in a span of its own (`handle`), a
/// child of the delivery's consumer span, `process orders.created`.
#[tracing::instrument(skip_all, fields(order_id))]
async fn handle(
    message: jetstream::Message,
    mut gateway: GatewayCallbackClient<telemetry::TracedChannel>,
    callback_timeout: Duration,
) {
    let handling = telemetry::MessageHandling::start(&message);
    let delivery = message.info().map(|info| info.delivered).unwrap_or(1);
    let order: OrderCreated = match serde_json::from_slice(&message.payload) {
        Ok(order) => order,
        Err(e) => {
            // Redelivering a message that cannot be read would never help.
            tracing::error!(error = %e, "dropping an unreadable message");
            let _ = message.ack_with(AckKind::Term).await;
            handling.finish("term");
            return;
        }
    };
    tracing::Span::current().record("order_id", order.order_id.as_str());

    let fulfilment = tokio::task::spawn_blocking(move || {
        let fulfilment = plan_packing(&order);
        (order, fulfilment)
    })
    .await;
    let Ok((order, fulfilment)) = fulfilment else {
        let _ = message.ack_with(AckKind::Nak(None)).await;
        handling.finish("nak");
        return;
    };
    let (outcome, detail) = match fulfilment {
        Fulfilment::Packed { checksum } => {
            (Outcome::Completed, format!("packed, plan {checksum:016x}"))
        }
        Fulfilment::Rejected { reason } => (Outcome::Failed, reason),
    };
    let request = pb::PushResultRequest {
        order_id: order.order_id.clone(),
        outcome: outcome.into(),
        detail,
        delivery: delivery.try_into().unwrap_or(u32::MAX),
    };

    match tokio::time::timeout(
        callback_timeout,
        telemetry::grpc_client(
            "orders.v1.GatewayCallback",
            "PushResult",
            gateway.push_result(request),
        ),
    )
    .await
    {
        Ok(Ok(_)) => {
            if let Err(e) = message.ack().await {
                tracing::warn!(error = %e, "acking failed");
            }
            handling.finish("ack");
            tracing::info!(outcome = ?outcome, delivery, "order handled");
        }
        failed => {
            let reason = match failed {
                Ok(Err(status)) => status.to_string(),
                _ => "timed out".to_owned(),
            };
            let delay = queue::redelivery_backoff(delivery);
            tracing::warn!(
                delivery,
                error = %reason,
                redelivery_in_ms = delay.as_millis() as u64,
                "callback failed, redelivery scheduled"
            );
            let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
            handling.finish("nak");
        }
    }
}
