//! gateway: the public HTTP API ([`http`]), and the gRPC server task
//! reports results to ([`callback`]).
//!
//! Ready when its listeners are bound, which they are before the admin
//! port answers at all, and until a shutdown begins. Whether logic answers
//! is not part of it: a gateway whose logic is down answers 503 quickly and
//! says why, and taking every gateway out of a load balancer because logic
//! is down would only turn those answers into refused connections.

mod callback;
mod http;

use std::sync::Arc;
use std::time::Duration;

use orders::pb::gateway_callback_server::GatewayCallbackServer;
use orders::pb::order_service_client::OrderServiceClient;
use orders::topology::Service;
use tonic::transport::Endpoint;

use crate::config::Config;
use crate::server::{self, Admin};
use crate::shutdown::Shutdown;
use crate::telemetry;

pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let topology = &config.topology;
    let logic_timeout = config.logic_timeout();
    let api_listener = server::bind("HTTP API", topology.gateway_http).await?;
    let callback_listener = server::bind("gRPC callback", topology.gateway_grpc).await?;
    let admin_listener = server::bind("admin", topology.gateway_admin).await?;

    // Lazy: the gateway starts (and answers 503) even while logic is down.
    let channel = Endpoint::from_shared(topology.logic_url())?
        .connect_timeout(logic_timeout.min(Duration::from_millis(500)))
        .connect_lazy();
    let results = callback::Results::default();
    let state = http::AppState {
        logic: OrderServiceClient::with_interceptor(channel, telemetry::InjectContext),
        logic_timeout,
        results: results.clone(),
        api_token: Arc::from(config.api_token.as_str()),
    };

    // ANCHOR: readiness
    let admin = orders::admin::router({
        let shutdown = shutdown.clone();
        move || {
            let shutting_down = shutdown.has_begun();
            async move {
                if shutting_down {
                    return Err("shutting down".to_owned());
                }
                Ok(())
            }
        }
    })
    // ANCHOR_END: readiness
    .merge(telemetry::metrics_router(Service::Gateway))
    .merge(telemetry::profiling_router());
    let admin = Admin::spawn(admin_listener, admin);

    let callback = tonic::transport::Server::builder()
        .trace_fn(telemetry::grpc_server_span)
        .layer(telemetry::GrpcServerLayer)
        .add_service(GatewayCallbackServer::new(callback::CallbackServer {
            results,
        }))
        .serve_with_incoming_shutdown(
            server::grpc_incoming(callback_listener),
            shutdown.stopping(),
        );

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
                server::serve_http(api_listener, http::router(state), &shutdown),
                async { callback.await.map_err(anyhow::Error::from) },
            )
        })
        .await;
    admin.stop().await;
    match served {
        Ok(result) => result.map(|_| ()),
        Err(_abandoned) => Ok(()),
    }
}
