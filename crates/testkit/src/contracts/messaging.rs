//! Chapter 04's lesson, checked at a real OTLP receiver and on the wire:
//! logic's `publish orders.created` (producer) puts its context into the
//! message's headers; task's `process orders.created` (consumer) continues
//! from it, as its child and linked to it by default, or as the root of a
//! new trace only linked to it with `--trace-relation link`. A redelivery
//! is a span of its own; a message with a malformed `traceparent` is
//! handled all the same.

use std::collections::BTreeSet;

use crate::contracts::logs::{CLIENT_SPAN, invalid_traceparents, wait_for_line};
use crate::contracts::traces::{
    CREATE_ORDER, PUSH_RESULT, RECORD_RESULT, attribute, one_order_traced, post_order, sent,
    system, trace_context,
};
use crate::logs::{self, str_field};
use crate::otlp::{ReceivedSpan, render_trace, span_id_hex, trace_id_bytes, trace_id_hex};
use crate::{DEADLINE, Service, Subject, wait_for};
use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use futures::StreamExt;

const PUBLISH: &str = "publish orders.created";
const PROCESS: &str = "process orders.created";
const DELIVERY_COUNT: &str = "messaging.nats.message.delivery_count";

/// What the snapshots show of each span.
const ATTRIBUTES: &[&str] = &[
    "http.response.status_code",
    "rpc.grpc.status_code",
    "messaging.system",
    "messaging.destination.name",
    "messaging.operation.type",
    "messaging.operation.name",
    "messaging.message.id",
    "messaging.consumer.group.name",
    DELIVERY_COUNT,
    "error.type",
    "order_id",
];

/// logic's producer span of the message of `order_id`, in any trace.
fn producer<'a>(spans: &'a [ReceivedSpan], order_id: &str) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| {
        s.service == "logic"
            && s.span.name == PUBLISH
            && attribute(s, "messaging.message.id").as_deref() == Some(order_id)
    })
}

/// task's consumer spans of the message of `order_id`, one per delivery,
/// in the order they started.
fn deliveries<'a>(spans: &'a [ReceivedSpan], order_id: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| {
            s.service == "task"
                && s.span.name == PROCESS
                && attribute(s, "messaging.message.id").as_deref() == Some(order_id)
        })
        .collect()
}

/// The children of `parent` in `spans`.
fn children<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| {
            s.span.trace_id == parent.span.trace_id && s.span.parent_span_id == parent.span.span_id
        })
        .collect()
}

fn is_error(span: &ReceivedSpan) -> bool {
    span.span.status.as_ref().is_some_and(|s| s.code == 2)
}

/// The consumer span links to the producer span: same trace id, same span id.
fn assert_links_to(consumer: &ReceivedSpan, producer: &ReceivedSpan) {
    let [link] = &consumer.span.links[..] else {
        panic!("one link: {:?}", consumer.span.links)
    };
    assert_eq!(link.trace_id, producer.span.trace_id, "the link's trace id");
    assert_eq!(link.span_id, producer.span.span_id, "the link's span id");
}

/// By default one order is one trace, one tree: from the gateway's
/// `POST /orders` through logic's publish to task's delivery, its handling
/// and its callback to the gateway. The consumer span is the child of the
/// producer span and links to it as well.
pub async fn by_default_one_order_is_one_trace_across_nats(subject: &Subject) {
    let (_system, order_id, (trace, _, _), spans) =
        one_order_traced(system(subject), |spans, _, trace| {
            sent(spans, "gateway", "POST /orders", trace)
                && sent(spans, "gateway", PUSH_RESULT, trace)
                && sent(spans, "logic", RECORD_RESULT, trace)
                && sent(spans, "logic", CREATE_ORDER, trace)
                && sent(spans, "task", PROCESS, trace)
        })
        .await;

    let publish = producer(&spans, &order_id).expect("logic's publish span");
    assert_eq!(trace_id_hex(&publish.span.trace_id), trace);
    assert_eq!(publish.span.kind, 4, "producer");
    let [process] = deliveries(&spans, &order_id)[..] else {
        panic!("one delivery")
    };
    assert_eq!(process.span.kind, 5, "consumer");
    assert_eq!(process.span.trace_id, publish.span.trace_id, "one trace");
    assert_eq!(process.span.parent_span_id, publish.span.span_id, "a child");
    assert_links_to(process, publish);
    let handle = children(&spans, process);
    assert!(
        handle.iter().any(|s| s.span.name == "handle"),
        "task's handling is inside the delivery's span"
    );

    let redact = |value: &str| value.replace(&order_id, "[order-1]");
    let snapshot = render_trace(
        &spans,
        &trace_id_bytes(&trace).expect("a trace id"),
        ATTRIBUTES,
        &redact,
    );
    subject.assert_snapshot("e2e__messaging__one_order_parent", &[4], &snapshot);
}

/// With `--trace-relation link` each delivery starts a trace of its own
/// that only links to the publish: the order is two traces.
pub async fn with_trace_relation_link_each_message_is_a_trace_that_links(subject: &Subject) {
    let task = system(subject).arg(Service::Task, "--trace-relation=link");
    let (_system, order_id, (trace, _, _), spans) =
        one_order_traced(task, |spans, order_id, trace| {
            let callback = |process: &&ReceivedSpan| {
                let trace = trace_id_hex(&process.span.trace_id);
                sent(spans, "gateway", PUSH_RESULT, &trace)
                    && sent(spans, "logic", RECORD_RESULT, &trace)
            };
            sent(spans, "gateway", "POST /orders", trace)
                && sent(spans, "logic", CREATE_ORDER, trace)
                && deliveries(spans, order_id).first().is_some_and(callback)
        })
        .await;
    let process = deliveries(&spans, &order_id)[0];
    assert_ne!(
        trace_id_hex(&process.span.trace_id),
        trace,
        "a trace of its own"
    );
    assert!(process.span.parent_span_id.is_empty(), "a root span");

    let redact = |value: &str| value.replace(&order_id, "[order-1]");
    let render = |trace_id: &[u8]| render_trace(&spans, trace_id, ATTRIBUTES, &redact);
    let snapshot = format!(
        "POST /orders, the trace the gateway named in traceresponse:\n{}\n\
         task's delivery of the message, a trace that links to the publish:\n{}",
        render(&trace_id_bytes(&trace).expect("a trace id")),
        render(&process.span.trace_id),
    );
    subject.assert_snapshot("e2e__messaging__one_order_link", &[4], &snapshot);
}

/// `TRACE_RELATION=link`: the consumer span's link names the producer
/// span's trace id and span id, byte for byte; task's log line for the
/// order is in the consumer's trace.
pub async fn a_link_points_at_the_producer_span(subject: &Subject) {
    let link = system(subject).env("TRACE_RELATION", "link");
    let (system, order_id, _, spans) = one_order_traced(link, |spans, order_id, trace| {
        sent(spans, "logic", CREATE_ORDER, trace) && !deliveries(spans, order_id).is_empty()
    })
    .await;
    let publish = producer(&spans, &order_id).expect("logic's publish span");
    let process = deliveries(&spans, &order_id)[0];
    assert_ne!(process.span.trace_id, publish.span.trace_id);
    assert!(process.span.parent_span_id.is_empty(), "a root span");
    assert_links_to(process, publish);

    let handled = wait_for_line(&system, Service::Task, "order handled", &order_id).await;
    assert_eq!(
        str_field(&handled, "trace_id"),
        Some(trace_id_hex(&process.span.trace_id).as_str())
    );
}

/// By default, every line any service wrote about the order carries the
/// trace id the gateway named in its `traceresponse`.
pub async fn every_line_about_an_order_carries_one_trace_id(subject: &Subject) {
    let system = system(subject).start().await;
    let (order_id, (trace, _, _)) = post_order(&system.api, None).await;
    // Waiting on the lines, not on `GET /orders/{id}`: a request of its own.
    let about_the_order = || {
        Service::ALL.into_iter().flat_map(|service| {
            logs::parse_all(&system.stdout(service))
                .into_iter()
                .filter(|line| str_field(line, "order_id") == Some(&order_id))
                .map(move |line| (service, line))
        })
    };
    wait_for("task's and the gateway's lines", DEADLINE, || async {
        let messages: BTreeSet<String> = about_the_order()
            .filter_map(|(_, line)| str_field(&line, "message").map(str::to_owned))
            .collect();
        (messages.contains("order handled") && messages.contains("result received")).then_some(())
    })
    .await;

    let lines: Vec<_> = about_the_order().collect();
    let services: BTreeSet<Service> = lines.iter().map(|(service, _)| *service).collect();
    assert_eq!(services.len(), 3, "lines of every service: {lines:?}");
    for (service, line) in &lines {
        assert_eq!(
            str_field(line, "trace_id"),
            Some(trace.as_str()),
            "{service}: {line:?}"
        );
    }
}

/// A plain NATS subscriber sees what logic put on the wire: a W3C
/// `traceparent` header, `00-<trace id>-<span id>-<flags>`, naming the
/// order's trace and logic's publish span.
pub async fn the_message_carries_a_traceparent_on_the_wire(subject: &Subject) {
    let system = system(subject).start().await;
    let client = system.nats_client().await;
    let mut wire = client.subscribe("orders.created").await.unwrap();
    // The server knows of the subscription once a round trip is done.
    client.flush().await.unwrap();
    let (order_id, (trace, _, _)) = post_order(&system.api, None).await;

    let message = tokio::time::timeout(DEADLINE, async {
        loop {
            let message = wire.next().await.expect("the subscription is open");
            let body: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
            if body["order_id"] == order_id.as_str() {
                return message;
            }
        }
    })
    .await
    .expect("the message on the wire");
    let headers = message.headers.unwrap_or_else(HeaderMap::new);
    let traceparent = headers
        .get("traceparent")
        .expect("a traceparent header")
        .as_str()
        .to_owned();
    let (trace_id, span_id, flags) = trace_context(&traceparent);
    assert_eq!(flags, "01", "sampled: {traceparent}");
    assert_eq!(trace_id, trace, "the order's trace");
    assert_eq!(
        headers.get("Nats-Msg-Id").map(|id| id.as_str()),
        Some(order_id.as_str()),
        "the order id stays the message id"
    );

    let spans = system
        .wait_for_spans("logic's publish span", |spans| {
            producer(spans, &order_id).is_some()
        })
        .await;
    let publish = producer(&spans, &order_id).unwrap();
    assert_eq!(
        span_id_hex(&publish.span.span_id),
        span_id,
        "the publish span"
    );
}

/// A delivery that fails is redelivered, and each delivery is a span of its
/// own in the order's trace, numbered: the gateway is down for the first,
/// so task's callback fails and the message is not acked; once the gateway
/// is back, a later delivery is handled.
pub async fn each_delivery_is_a_span_of_its_own(subject: &Subject) {
    let mut system = system(subject).start().await;
    // task is away while the order is placed, the gateway when task is back.
    system.stop(Service::Task).await;
    let (order_id, (trace, _, _)) = post_order(&system.api, None).await;
    system.stop(Service::Gateway).await;
    system.restart(Service::Task).await;
    let failed = "delivery failed, redelivery scheduled";
    wait_for_line(&system, Service::Task, failed, &order_id).await;
    system.restart(Service::Gateway).await;
    system.api.wait_until_handled(&order_id).await;

    let spans = system
        .wait_for_spans("a failed delivery, then a handled one", |spans| {
            let deliveries = deliveries(spans, &order_id);
            deliveries.len() >= 2
                && deliveries.iter().any(|s| !is_error(s))
                && sent(spans, "gateway", PUSH_RESULT, &trace)
                && sent(spans, "logic", RECORD_RESULT, &trace)
        })
        .await;
    let publish = producer(&spans, &order_id).expect("logic's publish span");
    let deliveries = deliveries(&spans, &order_id);
    let counts: Vec<String> = deliveries
        .iter()
        .map(|s| attribute(s, DELIVERY_COUNT).unwrap_or_default())
        .collect();
    let expected: Vec<String> = (1..=deliveries.len()).map(|n| n.to_string()).collect();
    assert_eq!(counts, expected, "numbered in order");
    let (handled, failed) = deliveries.split_last().unwrap();
    for delivery in deliveries.iter() {
        assert_eq!(
            trace_id_hex(&delivery.span.trace_id),
            trace,
            "the order's trace"
        );
        assert_eq!(delivery.span.parent_span_id, publish.span.span_id);
        assert_links_to(delivery, publish);
    }
    for delivery in failed {
        assert!(is_error(delivery), "a failed delivery is an error");
        assert_eq!(attribute(delivery, "error.type").as_deref(), Some("nak"));
    }
    assert!(!is_error(handled), "the last delivery was handled");
}

/// A message whose `traceparent` is not one (another publisher's, a
/// hostile one) starts a fresh trace, without a link, and is handled.
pub async fn a_malformed_traceparent_in_a_message_starts_a_fresh_trace(subject: &Subject) {
    let system = system(subject).start().await;
    let jetstream = async_nats::jetstream::new(system.nats_client().await);
    let mut cases = invalid_traceparents();
    // NATS header names are compared without case: this is the header twice.
    let valid = format!(
        "00-{}-{CLIENT_SPAN}-01",
        crate::contracts::logs::CLIENT_TRACE
    );
    cases.push(("Traceparent beside traceparent", vec![valid.clone(), valid]));
    let mut order_ids = Vec::new();
    for (i, (case, values)) in cases.iter().enumerate() {
        let order_id = format!("foreign-{i:04}");
        let order = serde_json::json!({
            "order_id": order_id,
            "user_id": "1001",
            "product_id": "A001",
            "quantity": 1,
            "created_at_unix_ms": 0,
        });
        // Stored, as logic would have: task's result is stored with it.
        let store = orders::store::Store::open(&system.database())
            .await
            .unwrap();
        let stored: orders::Order = serde_json::from_value(order.clone()).unwrap();
        store
            .insert(&stored, Default::default(), None)
            .await
            .unwrap();
        let mut headers = HeaderMap::new();
        for (j, value) in values.iter().enumerate() {
            let name = if j > 0 && case.starts_with("Traceparent") {
                "Traceparent"
            } else {
                "traceparent"
            };
            headers.append(name, value.as_str());
        }
        let message = PublishMessage::build()
            .payload(serde_json::to_vec(&order).unwrap().into())
            .headers(headers)
            .message_id(&order_id);
        jetstream
            .send_publish("orders.created", message)
            .await
            .unwrap()
            .await
            .unwrap();
        order_ids.push((*case, order_id));
    }

    let spans = system
        .wait_for_spans("the delivery of every message", |spans| {
            order_ids
                .iter()
                .all(|(_, order_id)| !deliveries(spans, order_id).is_empty())
        })
        .await;
    for (case, order_id) in &order_ids {
        let process = deliveries(&spans, order_id)[0];
        assert!(
            process.span.parent_span_id.is_empty(),
            "{case}: a root span"
        );
        assert!(process.span.links.is_empty(), "{case}: nothing to link to");
        assert!(!is_error(process), "{case}: handled");
    }
}

/// An order whose publish failed (NATS was down) is published later by
/// logic's outbox, long after the call that created it ended; its trace
/// context was stored with it, so the republish, and task's handling, are
/// still in the trace of the `POST /orders` that placed it.
pub async fn an_order_republished_by_the_outbox_continues_its_trace(subject: &Subject) {
    let mut system = system(subject).start().await;
    system.nats().stop().await.unwrap();
    let (order_id, (trace, _, _)) = post_order(&system.api, None).await;
    system.nats().restart().await.unwrap();
    let order = system.api.wait_until_handled(&order_id).await;
    assert_eq!(order["status"], "completed", "{order}");

    let spans = system
        .wait_for_spans("the republish and its delivery", |spans| {
            let published = spans.iter().any(|s| {
                s.service == "logic"
                    && s.span.name == PUBLISH
                    && !is_error(s)
                    && attribute(s, "messaging.message.id").as_deref() == Some(order_id.as_str())
            });
            published && !deliveries(spans, &order_id).is_empty()
        })
        .await;
    let publishes: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| {
            s.service == "logic"
                && s.span.name == PUBLISH
                && attribute(s, "messaging.message.id").as_deref() == Some(order_id.as_str())
        })
        .collect();
    assert!(
        publishes.iter().any(|s| is_error(s)) && publishes.iter().any(|s| !is_error(s)),
        "a failed publish, then the outbox's: {publishes:#?}"
    );
    for publish in &publishes {
        assert_eq!(
            trace_id_hex(&publish.span.trace_id),
            trace,
            "every publish of the order is in its trace"
        );
    }
    let republish = spans
        .iter()
        .find(|s| s.service == "logic" && s.span.name == "outbox republish")
        .expect("logic's outbox republish span");
    assert_eq!(
        trace_id_hex(&republish.span.trace_id),
        trace,
        "the outbox continues the trace"
    );
    for delivery in deliveries(&spans, &order_id) {
        assert_eq!(
            trace_id_hex(&delivery.span.trace_id),
            trace,
            "task's delivery too"
        );
    }
}
