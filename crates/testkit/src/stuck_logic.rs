//! A logic that accepts every call and never answers in time: how the
//! tests reach the gateway's deadline without needing a slow machine.

use std::time::Duration;

use orders::pb::order_service_server::{OrderService, OrderServiceServer};
use orders::pb::{self};
use tokio_stream::wrappers::TcpListenerStream;

struct StuckLogic;

#[tonic::async_trait]
impl OrderService for StuckLogic {
    async fn create_order(
        &self,
        _: tonic::Request<pb::CreateOrderRequest>,
    ) -> Result<tonic::Response<pb::CreateOrderResponse>, tonic::Status> {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Err(tonic::Status::internal("unreachable in the test"))
    }

    async fn get_order(
        &self,
        _: tonic::Request<pb::GetOrderRequest>,
    ) -> Result<tonic::Response<pb::Order>, tonic::Status> {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Err(tonic::Status::internal("unreachable in the test"))
    }

    async fn record_result(
        &self,
        _: tonic::Request<pb::RecordResultRequest>,
    ) -> Result<tonic::Response<pb::RecordResultResponse>, tonic::Status> {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Err(tonic::Status::internal("unreachable in the test"))
    }
}

/// Starts a stuck logic on a free loopback port and returns its URL, for
/// the gateway's `--logic-url`. It serves until the test's runtime ends.
pub async fn stuck_logic() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("a bound port"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(OrderServiceServer::new(StuckLogic))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    url
}
