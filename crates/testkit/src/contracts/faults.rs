//! Faults: a crashed consumer, a restarted NATS, a dead or slow logic.

use std::time::{Duration, Instant};

use crate::{DEADLINE, Service, Subject, System, order_body, wait_for};
use async_nats::jetstream::consumer::PullConsumer;
use futures::future::join_all;
use reqwest::StatusCode;

/// task crashes while it holds messages it has not acked. To make sure it
/// holds some, the gateway is down: every callback fails, so task keeps
/// retrying messages that JetStream counts as delivered and unacked. Had
/// task acked before its callback succeeded, those orders would be lost.
pub async fn orders_survive_task_crashing_with_unacked_messages(subject: &Subject) {
    let mut system = subject.start().await;
    system.kill(Service::Task).await;
    let bodies: Vec<_> = (0..30)
        .map(|i| order_body(&format!("u{i}"), "A001", 10))
        .collect();
    let ids: Vec<String> = join_all(bodies.iter().map(|b| system.api.place_order(b))).await;

    system.stop(Service::Gateway).await;
    system.restart(Service::Task).await;
    let jetstream = async_nats::jetstream::new(system.nats_client().await);
    let stream = jetstream.get_stream(orders::queue::STREAM).await.unwrap();
    let consumer: PullConsumer = stream.get_consumer(orders::queue::CONSUMER).await.unwrap();
    wait_for("task to be retrying every order", DEADLINE, || async {
        let info = consumer.get_info().await.ok()?;
        (info.delivered.consumer_sequence >= 30 && info.num_redelivered > 0).then_some(())
    })
    .await;

    system.kill(Service::Task).await;
    system.restart(Service::Gateway).await;
    system.restart(Service::Task).await;

    for id in &ids {
        let order = system.api.wait_until_handled(id).await;
        assert_eq!(order["status"], "completed", "{order}");
    }
    assert_eq!(system.stored_orders().await, 30);
}

/// Orders placed while NATS is down are stored and answered; logic then
/// crashes, losing whatever its NATS client had buffered, so only the
/// outbox in SQLite can still bring those orders to task.
pub async fn no_accepted_order_is_lost_while_nats_restarts(subject: &Subject) {
    let mut system = subject.start().await;
    let before = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&before).await;

    system.nats().stop().await.unwrap();
    let bodies: Vec<_> = (0..10)
        .map(|i| order_body(&format!("u{i}"), "A001", 1))
        .collect();
    let answers = join_all(bodies.iter().map(|b| system.api.post_order(b))).await;
    system.kill(Service::Logic).await;
    system.nats().restart().await.unwrap();
    system.restart(Service::Logic).await;

    let mut accepted = vec![before];
    for (status, body) in answers {
        match status {
            StatusCode::CREATED => accepted.push(body["order_id"].as_str().unwrap().to_owned()),
            StatusCode::SERVICE_UNAVAILABLE => {}
            other => panic!(
                "while NATS is down an order is accepted or refused with 503, got {other} {body}"
            ),
        }
    }
    let after = system.api.place_order(&order_body("1001", "A001", 1)).await;
    accepted.push(after);

    for id in &accepted {
        let order = system.api.wait_until_handled(id).await;
        assert_eq!(order["status"], "completed", "{order}");
    }
}

pub async fn gateway_answers_503_when_logic_is_down(subject: &Subject) {
    let mut system = subject
        .system()
        .arg(Service::Gateway, "--logic-timeout-ms=2000")
        .start()
        .await;
    system.stop(Service::Logic).await;

    let started = Instant::now();
    let (status, body) = system.api.post_order(&order_body("1001", "A001", 1)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["error"].is_string());
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "a refused connection is answered at once, not after the deadline"
    );
    let (status, _) = system
        .api
        .get_order("00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

/// The gateway alone, calling the logic at `logic_url` with a deadline of
/// 300 ms.
pub(crate) async fn gateway_alone(subject: &Subject, logic_url: &str) -> System {
    let system = subject.system().only(&[Service::Gateway]);
    let system = system.logic_url(logic_url);
    system
        .arg(Service::Gateway, "--logic-timeout-ms=300")
        .start()
        .await
}

pub async fn gateway_answers_504_when_logic_is_slower_than_the_deadline(subject: &Subject) {
    let system = gateway_alone(subject, &crate::stuck_logic().await).await;

    let (status, body) = system.api.post_order(&order_body("1001", "A001", 1)).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(body["error"].as_str().unwrap().contains("300 ms"), "{body}");
}
