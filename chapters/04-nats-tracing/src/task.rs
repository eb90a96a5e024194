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
use orders::{OrderCreated, dead_letters, queue};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use crate::telemetry::{self, MessageHandling, Telemetry};

/// How long task waits for the gateway's answer to a callback.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    topology: orders::Topology,
    /// How many messages are handled at the same time.
    #[arg(long, env = "TASK_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    // ANCHOR: trace_relation
    /// How the span of each message relates to the trace that published it:
    /// `parent`, one trace per order; `link`, a new trace per message.
    #[arg(long, env = "TRACE_RELATION", value_enum, default_value_t)]
    trace_relation: telemetry::TraceRelation,
    // ANCHOR_END: trace_relation
}

pub async fn run(args: Args, telemetry: Telemetry) -> anyhow::Result<()> {
    let shutdown = orders::shutdown::on_signal();
    let topology = args.topology;

    let nats = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(topology.nats_url())
        .await?;
    let jetstream = jetstream::new(nats.clone());
    let channel = Endpoint::from_shared(topology.gateway_callback_url())?
        .connect_timeout(Duration::from_millis(500))
        .connect_lazy();
    let gateway = GatewayCallbackClient::with_interceptor(channel, telemetry::InjectContext);

    let consuming = Arc::new(AtomicBool::new(false));
    let admin = orders::admin::router({
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
    .merge(telemetry.admin_routes());

    tracing::info_span!("startup").in_scope(|| {
        tracing::info!(
            subject = queue::ORDERS_CREATED,
            consumer = queue::CONSUMER,
            "task consuming"
        );
    });
    tokio::try_join!(
        async {
            consume(
                telemetry,
                jetstream,
                gateway,
                args.concurrency,
                args.trace_relation,
                consuming,
                shutdown.clone(),
            )
            .await;
            Ok(())
        },
        orders::http::serve(topology.task_admin, admin, shutdown.clone()),
    )?;
    Ok(())
}

/// Binds the durable consumer and handles messages until shutdown; binds
/// again whenever the message stream ends (a NATS restart, for instance).
async fn consume(
    telemetry: Telemetry,
    jetstream: jetstream::Context,
    gateway: GatewayCallbackClient<telemetry::TracedChannel>,
    concurrency: usize,
    relation: telemetry::TraceRelation,
    consuming: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
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
                        async move {
                            match message {
                                Ok(message) => {
                                    telemetry
                                        .mq_process(message, relation, |message, handling| {
                                            handle(message, handling, telemetry.clone(), gateway)
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

    let fulfilment = tokio::task::spawn_blocking(move || {
        let fulfilment = plan_packing(&order);
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
        CALLBACK_TIMEOUT,
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
