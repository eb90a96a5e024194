//! task: consumes `orders.created`, does the order's work, and reports the
//! result to the gateway, which stores it with the order in logic. A
//! message is acked only after the gateway confirmed; otherwise it is
//! redelivered with a growing delay, a bounded number of times. logic keeps
//! the first result per order, so a redelivered message never completes an
//! order twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use orders::fulfilment::{Fulfilment, plan_packing};
use orders::pb::gateway_callback_client::GatewayCallbackClient;
use orders::pb::{self, Outcome};
use orders::topology::Service;
use orders::{OrderCreated, dead_letters, queue};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use crate::config::Config;
use crate::faults::Faults;
use crate::health;
use crate::server::{self, Admin};
use crate::shutdown::{self, Shutdown};
use crate::telemetry::{self, MessageHandling, Telemetry};

pub async fn run(config: Config, telemetry: Telemetry, shutdown: Shutdown) -> anyhow::Result<()> {
    let topology = &config.topology;
    let admin_listener = server::bind("admin", topology.task_admin).await?;

    let nats = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(topology.nats_url())
        .await?;
    let jetstream = jetstream::new(nats.clone());
    let channel = Endpoint::from_shared(topology.gateway_callback_url())?
        .connect_timeout(Duration::from_millis(500))
        .connect_lazy();
    let gateway = GatewayCallbackClient::with_interceptor(channel, telemetry::InjectContext);
    let faults = Faults::new(Service::Task, &config.faults.0, telemetry.clone());

    let consuming = Arc::new(AtomicBool::new(false));
    let admin = health::admin_router(&shutdown, {
        let consuming = consuming.clone();
        move || {
            let (nats, consuming) = (nats.clone(), consuming.clone());
            async move {
                if nats.connection_state() != async_nats::connection::State::Connected {
                    return Err("not connected to NATS".to_owned());
                }
                if !consuming.load(Ordering::Relaxed) {
                    return Err("consumer not bound yet".to_owned());
                }
                Ok(())
            }
        }
    })
    .merge(telemetry.admin_routes())
    .merge(faults.admin_routes());
    let admin = Admin::spawn(admin_listener, admin);

    tracing::info_span!("startup").in_scope(|| {
        tracing::info!(
            subject = queue::ORDERS_CREATED,
            consumer = queue::CONSUMER,
            "task consuming"
        );
    });
    // ANCHOR: drain
    // The messages in hand are handled and acked, within the deadline; then
    // the acks still buffered are written out.
    let nats = jetstream.client();
    let _abandoned = shutdown
        .drain(consume(
            telemetry,
            jetstream,
            gateway,
            faults,
            &config,
            consuming,
            shutdown.stopping_token(),
        ))
        .await;
    shutdown::flush_nats(&nats).await;
    admin.stop().await;
    Ok(())
    // ANCHOR_END: drain
}

/// Binds the durable consumer and handles messages until shutdown; binds
/// again whenever the message stream ends (a NATS restart, for instance).
async fn consume(
    telemetry: Telemetry,
    jetstream: jetstream::Context,
    gateway: GatewayCallbackClient<telemetry::TracedChannel>,
    faults: Faults,
    config: &Config,
    consuming: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let concurrency = usize::from(config.task_concurrency);
    let (relation, callback_timeout) = (config.trace_relation, config.callback_timeout());
    while !shutdown.is_cancelled() {
        let messages = async {
            let stream = queue::ensure_stream(&jetstream).await?;
            let consumer = queue::ensure_consumer(&stream).await?;
            anyhow::Ok(consumer.messages().await?)
        };
        match messages.await {
            Ok(messages) => {
                consuming.store(true, Ordering::Relaxed);
                messages
                    .take_until(shutdown.cancelled())
                    .for_each_concurrent(concurrency, |message| {
                        let (telemetry, gateway) = (telemetry.clone(), gateway.clone());
                        let faults = faults.clone();
                        async move {
                            match message {
                                Ok(message) => {
                                    telemetry
                                        .mq_process(message, relation, |message, handling| {
                                            handle(
                                                message,
                                                handling,
                                                telemetry.clone(),
                                                gateway,
                                                callback_timeout,
                                                faults,
                                            )
                                        })
                                        .await
                                }
                                Err(e) => tracing::warn!(error = %e, "receiving failed"),
                            }
                        }
                    })
                    .await;
            }
            Err(e) => tracing::warn!(error = %e, "binding the consumer failed, retrying"),
        }
        consuming.store(false, Ordering::Relaxed);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

// ANCHOR: handle
/// Handles one delivery of one message, in a span of its own: since chapter
/// 04 a child of the delivery's consumer span, `process orders.created`.
#[tracing::instrument(skip_all, fields(order_id))]
async fn handle(
    message: jetstream::Message,
    handling: MessageHandling,
    telemetry: Telemetry,
    mut gateway: GatewayCallbackClient<telemetry::TracedChannel>,
    callback_timeout: Duration,
    faults: Faults,
) {
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

    // Once, or many times over for a product the fault `cpu_hog` chose.
    let rounds = faults.packing_rounds(&order.product_id);
    let fulfilment = tokio::task::spawn_blocking(move || {
        let mut fulfilment = plan_packing(&order);
        for _ in 1..rounds {
            fulfilment = plan_packing(std::hint::black_box(&order));
        }
        (order, fulfilment)
    })
    .await;
    let Ok((order, fulfilment)) = fulfilment else {
        settle_failure(message, handling, delivery, "packing panicked").await;
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
        telemetry.grpc_client(
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
            settle_failure(message, handling, delivery, &reason).await;
        }
    }
}
// ANCHOR_END: handle

// ANCHOR: settle_failure
/// Settles a delivery that failed: redelivered after a growing delay, or,
/// when JetStream will not deliver it again, moved to the dead letters
/// (an error: from here on only a person can help).
async fn settle_failure(
    message: jetstream::Message,
    handling: MessageHandling,
    delivery: i64,
    reason: &str,
) {
    if dead_letters::is_last_delivery(delivery) {
        match dead_letters::move_to_dead_letters(&message, reason).await {
            Ok(()) => tracing::error!(
                delivery,
                error = %reason,
                "last delivery failed, order moved to the dead letters"
            ),
            Err(e) => tracing::error!(
                delivery,
                error = %reason,
                dead_letter_error = %e,
                "last delivery failed, and the dead letters could not take it: order lost"
            ),
        }
        handling.finish("dead_letter");
        return;
    }
    let delay = queue::redelivery_backoff(delivery);
    tracing::warn!(
        delivery,
        error = %reason,
        redelivery_in_ms = delay.as_millis() as u64,
        "delivery failed, redelivery scheduled"
    );
    let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
    handling.finish("nak");
}
// ANCHOR_END: settle_failure
