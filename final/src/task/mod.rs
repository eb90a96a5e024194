//! task: consumes `orders.created`, does the order's work, and reports the
//! result to the gateway ([`consumer`]).
//!
//! Ready when NATS is connected and the durable consumer is bound, and
//! until a shutdown begins.

mod consumer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use orders::pb::gateway_callback_client::GatewayCallbackClient;
use orders::queue;
use orders::topology::Service;
use tonic::transport::Endpoint;

use crate::config::Config;
use crate::server::{self, Admin};
use crate::shutdown::Shutdown;
use crate::telemetry;

pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let topology = &config.topology;
    let admin_listener = server::bind("admin", topology.task_admin).await?;

    // Connects in the background, and again after every disconnection.
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
    // ANCHOR: readiness
    let admin = orders::admin::router({
        let (nats, consuming, shutdown) = (nats.clone(), consuming.clone(), shutdown.clone());
        move || {
            let (nats, consuming) = (nats.clone(), consuming.clone());
            let shutting_down = shutdown.has_begun();
            async move {
                if shutting_down {
                    return Err("shutting down".to_owned());
                }
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
    // ANCHOR_END: readiness
    .merge(telemetry::metrics_router(Service::Task))
    .merge(telemetry::profiling_router());
    let admin = Admin::spawn(admin_listener, admin);

    let consumer = consumer::Consumer {
        jetstream,
        gateway,
        concurrency: config.task_concurrency.into(),
        relation: config.trace_relation,
        callback_timeout: config.callback_timeout(),
        consuming,
    };
    tracing::info_span!("startup").in_scope(|| {
        tracing::info!(
            subject = queue::ORDERS_CREATED,
            consumer = queue::CONSUMER,
            "task consuming"
        );
    });
    // ANCHOR: drain
    let _ = shutdown
        .drain(consumer.run(shutdown.stopping_token()))
        .await;
    // The acks of the last messages are written, not left in a buffer.
    if tokio::time::timeout(Duration::from_secs(1), nats.flush())
        .await
        .is_err()
    {
        tracing::info_span!("shutdown")
            .in_scope(|| tracing::warn!("NATS did not take the last acks in time"));
    }
    admin.stop().await;
    // ANCHOR_END: drain
    Ok(())
}
