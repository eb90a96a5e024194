//! The happy path, and the guarantees of the order flow.

use crate::{Subject, order_body};
use futures::future::join_all;
use orders::pb::PushResultRequest;
use orders::pb::gateway_callback_client::GatewayCallbackClient;

pub async fn an_order_is_created_then_completed(subject: &Subject) {
    let system = subject.start().await;
    let order_id = system.api.place_order(&order_body("1001", "A001", 2)).await;

    let order = system.api.wait_until_handled(&order_id).await;
    assert_eq!(order["status"], "completed", "{order}");
    assert_eq!(order["user_id"], "1001");
    assert_eq!(order["product_id"], "A001");
    assert_eq!(order["quantity"], 2);
    assert!(
        order["detail"].as_str().unwrap().starts_with("packed"),
        "{order}"
    );
}

pub async fn an_order_for_a_sold_out_product_fails(subject: &Subject) {
    let system = subject.start().await;
    let order_id = system
        .api
        .place_order(&order_body("1001", "sold-out-lamp", 1))
        .await;

    let order = system.api.wait_until_handled(&order_id).await;
    assert_eq!(order["status"], "failed", "{order}");
    assert!(
        order["detail"].as_str().unwrap().contains("sold out"),
        "{order}"
    );
}

pub async fn fifty_concurrent_orders_each_complete_once(subject: &Subject) {
    let system = subject.start().await;
    let bodies: Vec<_> = (0..50)
        .map(|i| order_body(&format!("user-{i}"), "A001", 1 + i % 5))
        .collect();
    let ids: Vec<String> = join_all(bodies.iter().map(|body| system.api.place_order(body))).await;

    let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 50, "every order gets its own id");
    for id in &ids {
        let order = system.api.wait_until_handled(id).await;
        assert_eq!(order["status"], "completed", "{order}");
    }
    assert_eq!(system.stored_orders().await, 50);

    // Exactly one message per order: the outbox never published twice, or
    // JetStream dropped the copy by message id.
    let jetstream = async_nats::jetstream::new(system.nats_client().await);
    let mut stream = jetstream.get_stream(orders::queue::STREAM).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 50);
}

pub async fn a_repeated_callback_changes_nothing(subject: &Subject) {
    let system = subject.start().await;
    let order_id = system.api.place_order(&order_body("1001", "A001", 1)).await;
    let first = system.api.wait_until_handled(&order_id).await;
    assert_eq!(first["status"], "completed");

    // task redelivering the same order, this time with another outcome.
    let mut gateway = GatewayCallbackClient::connect(system.topology.gateway_callback_url())
        .await
        .unwrap();
    let reply = gateway
        .push_result(PushResultRequest {
            order_id: order_id.clone(),
            outcome: orders::pb::Outcome::Failed.into(),
            detail: "a late duplicate".into(),
            delivery: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.recorded, "a duplicate result must not be recorded");

    let (_, after) = system.api.get_order(&order_id).await;
    assert_eq!(after, first, "the first result stands");
}
