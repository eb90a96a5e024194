//! Faults: a crashed consumer, a restarted NATS, a dead or slow logic.

use std::time::{Duration, Instant};

use crate::{Api, DEADLINE, Service, Subject, System, order_body, wait_for};
use async_nats::jetstream::consumer::PullConsumer;
use futures::future::join_all;
use orders::dead_letters;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::Connection;

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

/// Places one order and makes every delivery of it fail: task is away
/// while it is placed, the gateway (task's callback) while task is back.
/// Returns once the message is in the dead-letter stream, about 21 s later
/// (ten deliveries, with backoff), the gateway still down.
pub(crate) async fn an_order_out_of_deliveries(subject: &Subject) -> (System, String) {
    let mut system = subject.start().await;
    system.stop(Service::Task).await;
    let order_id = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.stop(Service::Gateway).await;
    system.restart(Service::Task).await;
    let jetstream = async_nats::jetstream::new(system.nats_client().await);
    wait_for(
        "the message to reach the dead letters",
        DEADLINE * 2,
        || async {
            let mut stream = jetstream.get_stream(dead_letters::STREAM).await.ok()?;
            (stream.info().await.ok()?.state.messages == 1).then_some(())
        },
    )
    .await;
    (system, order_id)
}

/// With the gateway's callback refused on every delivery JetStream makes,
/// the order is not lost in silence: on the last delivery task moves the
/// message to the dead-letter stream, and logic marks the order
/// `dead_lettered`. Once the gateway is back, `reprocess-dead-letters`
/// completes the order; run again, it finds nothing: the order completes
/// once.
pub async fn an_order_out_of_deliveries_is_dead_lettered_then_reprocessed_once(subject: &Subject) {
    let (mut system, order_id) = an_order_out_of_deliveries(subject).await;
    system.restart(Service::Gateway).await;
    system.api.wait_for_status(&order_id, "dead_lettered").await;

    let first = system.run_command("reprocess-dead-letters").await;
    assert!(first.contains("reprocessed 1 dead letters"), "{first}");
    system.api.wait_for_status(&order_id, "completed").await;
    let again = system.run_command("reprocess-dead-letters").await;
    assert!(again.contains("reprocessed 0 dead letters"), "{again}");
    assert_eq!(system.stored_orders().await, 1);
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

/// The key every request of the idempotency contracts sends.
pub(crate) const KEY: &str = "2f1c8e5a-retry-me";

/// `POST /orders` of `body` with the header `Idempotency-Key: key`.
pub(crate) async fn post_with_key(api: &Api, body: &Value, key: &str) -> (StatusCode, Value) {
    let request = api
        .request(Method::POST, "/orders")
        .header("Idempotency-Key", key)
        .json(body);
    Api::send(request).await
}

/// A client told 504 retries with the same key after logic waited for
/// SQLite's write lock past the gateway's deadline; returns the system, the
/// id the retry got, and when the lock was let go (Unix ms).
pub(crate) async fn a_504_then_a_retry_with_its_key(subject: &Subject) -> (System, String, i64) {
    let system = subject
        .system()
        .arg(Service::Gateway, "--logic-timeout-ms=600")
        .start()
        .await;
    let body = order_body("1001", "A001", 1);
    // Another writer (a long transaction, a backup) holds the write lock.
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(system.database());
    let mut writer = sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("opening the orders database");
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut writer)
        .await
        .expect("taking the write lock");
    let (status, reply) = post_with_key(&system.api, &body, KEY).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{reply}");
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut writer)
        .await
        .unwrap();
    let released = orders::domain::unix_millis();

    let (status, reply) = post_with_key(&system.api, &body, KEY).await;
    assert_eq!(status, StatusCode::CREATED, "the retry: {reply}");
    let order_id = reply["order_id"].as_str().unwrap().to_owned();
    (system, order_id, released)
}

/// A client that was told 504 can retry safely with an `Idempotency-Key`:
/// logic committed nothing past the gateway's deadline (the order the
/// retry gets was created after the lock was let go), the same key gets
/// the same order again, the key cannot name another order (422), a
/// malformed key is refused (400), and one order is stored and completed.
pub async fn a_retry_after_a_504_with_its_idempotency_key_gets_one_order(subject: &Subject) {
    let (system, order_id, released) = a_504_then_a_retry_with_its_key(subject).await;
    let (status, again) = post_with_key(&system.api, &order_body("1001", "A001", 1), KEY).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(
        again["order_id"],
        order_id.as_str(),
        "the same key, the same order"
    );
    let (status, other) = post_with_key(&system.api, &order_body("1001", "A001", 2), KEY).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "another order: {other}"
    );
    for bad in ["", "   ", "k\u{200b}", &"k".repeat(65)] {
        let (status, reply) = post_with_key(&system.api, &order_body("1001", "A001", 1), bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "key {bad:?}: {reply}");
        assert!(reply["error"].is_string(), "{reply}");
    }

    let order = system.api.wait_until_handled(&order_id).await;
    assert_eq!(order["status"], "completed", "{order}");
    let created = order["created_at_unix_ms"].as_i64().unwrap();
    assert!(
        created >= released,
        "the order was created at {created}, before the lock was let go at {released}: \
         logic stored the first attempt after the gateway had answered 504"
    );
    assert_eq!(system.stored_orders().await, 1);
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
