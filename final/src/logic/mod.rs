//! logic: the gRPC order service ([`grpc`]). Stores each order in SQLite,
//! then publishes it to JetStream; a background sweep republishes any order
//! whose publish failed ([`outbox`]), so a stored order always reaches task.
//!
//! Ready when the database answers, NATS is connected and the stream is
//! declared, and until a shutdown begins.

mod grpc;
mod outbox;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::jetstream;
use orders::pb::order_service_server::OrderServiceServer;
use orders::store::Store;
use orders::topology::Service;

use crate::config::Config;
use crate::server::{self, Admin};
use crate::shutdown::Shutdown;
use crate::telemetry;

pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let topology = &config.topology;
    let grpc_listener = server::bind("gRPC", topology.logic_grpc).await?;
    let admin_listener = server::bind("admin", topology.logic_admin).await?;

    let database = topology.database();
    let store = Store::open(&database)
        .await
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", database.display()))?;
    // Connects in the background, and again after every disconnection.
    let nats = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(topology.nats_url())
        .await?;
    // The publish timeout is shorter than the gateway's deadline: when NATS
    // is down the order is still stored and answered, and the outbox
    // publishes it later.
    let jetstream = jetstream::ContextBuilder::new()
        .timeout(config.publish_timeout())
        .build(nats.clone());

    let stream_ready = Arc::new(AtomicBool::new(false));
    tokio::spawn(outbox::declare_stream(
        jetstream.clone(),
        stream_ready.clone(),
        shutdown.stopping_token(),
    ));
    // Stops with the shutdown, or when the gRPC server fails.
    let sweep_stop = shutdown.stopping_token().child_token();
    let sweep = tokio::spawn(outbox::sweep_outbox(
        store.clone(),
        jetstream.clone(),
        config.outbox_interval(),
        sweep_stop.clone(),
    ));

    // ANCHOR: readiness
    let admin = orders::admin::router({
        let (store, shutdown) = (store.clone(), shutdown.clone());
        move || {
            let (store, nats, stream_ready) = (store.clone(), nats.clone(), stream_ready.clone());
            let shutting_down = shutdown.has_begun();
            async move {
                if shutting_down {
                    return Err("shutting down".to_owned());
                }
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
    // ANCHOR_END: readiness
    .merge(telemetry::metrics_router(Service::Logic))
    .merge(telemetry::profiling_router());
    let admin = Admin::spawn(admin_listener, admin);

    let grpc = tonic::transport::Server::builder()
        .trace_fn(telemetry::grpc_server_span)
        .layer(telemetry::GrpcServerLayer)
        .add_service(OrderServiceServer::new(grpc::OrderApi { store, jetstream }))
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
            // The calls in flight are answered, the sweep in flight ends.
            let served = grpc.await.map_err(anyhow::Error::from);
            sweep_stop.cancel();
            let _ = sweep.await;
            served
        })
        .await;
    admin.stop().await;
    served.unwrap_or(Ok(()))
    // ANCHOR_END: drain
}
