//! The happy path, and the guarantees of the order flow.

use crate::{Api, Service, Subject, order_body};
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

// ANCHOR: any_gateway
/// Two gateways and two tasks share one logic and one NATS. Each task calls
/// back its own gateway; with one task stopped at a time, every callback of
/// a phase lands on the gateway the order was *not* placed on. Either
/// gateway, and a restarted one, must still answer with the result: it is
/// stored with the order in logic, not in a gateway's memory.
pub async fn any_gateway_answers_for_any_order(subject: &Subject) {
    let mut system = subject.start().await;
    let gateway_b = system
        .start_another(
            Service::Gateway,
            system.topology_for_another(Service::Gateway),
        )
        .await;
    let mut task_b = system.topology_for_another(Service::Task);
    task_b.gateway_callback_url = Some(gateway_b.topology.gateway_callback_url());
    let task_b = system.start_another(Service::Task, task_b).await;
    let (a, b) = (&system.api.clone(), &gateway_b.api);

    // Only task B consumes: orders placed on A complete through B.
    system.stop(Service::Task).await;
    let via_a = place(a, "a", 5).await;
    assert_same_on_both(a, b, &via_a).await;

    // Only task A consumes: orders placed on B complete through A.
    system.restart(Service::Task).await;
    task_b.stop().await;
    let via_b = place(b, "b", 5).await;
    assert_same_on_both(b, a, &via_b).await;

    // A restarted gateway has forgotten nothing.
    system.stop(Service::Gateway).await;
    system.restart(Service::Gateway).await;
    for id in via_a.iter().chain(&via_b) {
        let (status, order) = system.api.get_order(id).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{order}");
        assert_eq!(order["status"], "completed", "after a restart: {order}");
    }
}

async fn place(api: &Api, user: &str, n: i64) -> Vec<String> {
    let bodies: Vec<_> = (0..n).map(|i| order_body(user, "A001", 1 + i)).collect();
    join_all(bodies.iter().map(|body| api.place_order(body))).await
}

/// Waits until `first` shows each order handled, then checks `second`
/// shows it the same.
async fn assert_same_on_both(first: &Api, second: &Api, ids: &[String]) {
    for id in ids {
        let order = first.wait_until_handled(id).await;
        assert_eq!(order["status"], "completed", "{order}");
        let (status, elsewhere) = second.get_order(id).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{elsewhere}");
        assert_eq!(
            elsewhere, order,
            "the other gateway must answer the same for {id}"
        );
    }
}
// ANCHOR_END: any_gateway
