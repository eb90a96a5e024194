//! The faults `final` can switch on for the book's incidents: each one,
//! switched on in a running system, moves the signal its incident page
//! names, and switched off restores the baseline; the switch itself is on
//! the admin port only, checks what it is given, and says what it did in
//! every pillar (a log line, the gauge `fault_setting`, the span attribute
//! `app.faults.active`).

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::contracts::metrics::{scrape, sum};
use crate::contracts::traces::attribute;
use crate::logs::{self, str_field};
use crate::otlp::{ReceivedSpan, trace_id_hex};
use crate::{Api, DEADLINE, Service, Subject, System, order_body, wait_for};

/// The span attribute every span carries while a fault is on.
const FAULTS_ACTIVE: &str = "app.faults.active";

/// `PUT /admin/faults/{name}` with `body` on `admin`: the status and the
/// JSON answer.
async fn put_fault(admin: SocketAddr, name: &str, body: &str) -> (StatusCode, Value) {
    let request = reqwest::Client::new()
        .put(format!("http://{admin}/admin/faults/{name}"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    Api::send(request).await
}

/// Switches `name` of `service` to `value`, which must be accepted.
async fn switch(system: &System, service: Service, name: &str, value: f64) {
    let admin = system.topology.admin(service);
    let (status, answer) = put_fault(admin, name, &json!({ "value": value }).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{name}={value}: {answer}");
}

/// The setting of each fault `service` reports in `fault_setting`.
async fn settings(system: &System, service: Service) -> Vec<(String, f64)> {
    let url = format!("http://{}/admin/faults", system.topology.admin(service));
    let answer: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    answer["faults"]
        .as_array()
        .expect("a list of faults")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_owned(),
                f["value"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Every fault is off at start and listed by the service it acts in, the
/// gauge says so; a bad switch is refused with 400 and a JSON error, and
/// changes nothing; the public API has no such route.
pub async fn faults_switch_on_the_admin_port_only_and_refuse_bad_input(subject: &Subject) {
    let system = subject.start().await;
    let own = [
        (Service::Gateway, vec!["memory_leak", "failing_callbacks"]),
        (
            Service::Logic,
            vec!["slow_writes", "error_burst", "lost_context"],
        ),
        (Service::Task, vec!["cpu_hog"]),
    ];
    for (service, names) in &own {
        let listed = settings(&system, *service).await;
        let expected: Vec<(String, f64)> = names.iter().map(|n| ((*n).to_owned(), 0.0)).collect();
        assert_eq!(listed, expected, "{service}");
        let metrics = scrape(&system, *service).await;
        for name in names {
            assert_eq!(
                sum(&metrics, &format!("fault_setting{{fault=\"{name}\"}}")),
                0.0
            );
        }
    }

    let logic = system.topology.admin(Service::Logic);
    let refused = [
        ("no_such_fault", r#"{"value": 1}"#, "no fault is named"),
        ("error_burst", r#"{"value": 1.5}"#, "from 0 to 1"),
        ("error_burst", r#"{"value": -1}"#, "from 0 to 1"),
        ("error_burst", r#"{"value": "all"}"#, "takes a number"),
        ("slow_writes", r#"{"value": 1e9}"#, "from 0 to 10000"),
        ("lost_context", r#"{"value": 0.5}"#, "from 0 to 1"),
        ("error_burst", r#"{"share": 1}"#, "expected a JSON body"),
        ("error_burst", "not json", "expected a JSON body"),
        ("error_burst", "", "expected a JSON body"),
        ("cpu_hog", r#"{"value": 1}"#, "a fault of task"),
    ];
    for (name, body, error) in refused {
        let (status, answer) = put_fault(logic, name, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name} {body}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(message.contains(error), "{name} {body}: {answer}");
    }
    let listed = settings(&system, Service::Logic).await;
    assert!(listed.iter().all(|(_, value)| *value == 0.0), "{listed:?}");

    // The public API: no route, whatever the token.
    for method in [reqwest::Method::PUT, reqwest::Method::GET] {
        let request = system
            .api
            .request(method.clone(), "/admin/faults/error_burst")
            .json(&json!({ "value": 1 }));
        let (status, _) = Api::send(request).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} on the public port");
    }
    let (status, _) = system.api.post_order(&order_body("1001", "A001", 1)).await;
    assert_eq!(status, StatusCode::CREATED, "no fault was switched on");
}

/// `error_burst` at 1: every order is refused with 503, the gauge and a
/// log line say the fault is on, and the refused call's span carries it.
/// Off: orders are created again, and new spans no longer carry it.
pub async fn an_error_burst_refuses_orders_until_switched_off(subject: &Subject) {
    let system = subject.start().await;
    switch(&system, Service::Logic, "error_burst", 1.0).await;

    let (status, body) = system.api.post_order(&order_body("1001", "A001", 1)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let logic = scrape(&system, Service::Logic).await;
    assert_eq!(sum(&logic, r#"fault_setting{fault="error_burst"}"#), 1.0);
    assert_eq!(
        sum(
            &logic,
            r#"grpc_server_handled_total{method="CreateOrder",code="Unavailable"}"#
        ),
        1.0
    );
    let switched = wait_for("logic to log the switch", DEADLINE, || async {
        logs::parse_all(&system.stdout(Service::Logic))
            .into_iter()
            .find(|l| str_field(l, "message") == Some("fault switched on"))
    })
    .await;
    assert_eq!(str_field(&switched, "fault"), Some("error_burst"));
    assert_eq!(str_field(&switched, "level"), Some("warn"));
    let refused = wait_for_span(&system, "logic", "orders.v1.OrderService/CreateOrder").await;
    assert_eq!(
        attribute(&refused, FAULTS_ACTIVE).as_deref(),
        Some("error_burst=1")
    );

    switch(&system, Service::Logic, "error_burst", 0.0).await;
    let order = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&order).await;
    let spans = system
        .wait_for_spans("the new order's INSERT", |spans| {
            spans
                .iter()
                .any(|s| s.service == "logic" && s.span.name == "INSERT orders")
        })
        .await;
    let insert = spans
        .iter()
        .find(|s| s.service == "logic" && s.span.name == "INSERT orders")
        .unwrap();
    assert_eq!(attribute(insert, FAULTS_ACTIVE), None);
}

/// `slow_writes` at 300 ms: the INSERT span of an order lasts at least
/// that, and says why; off, the next one is quick again.
pub async fn slow_writes_show_in_the_insert_span_until_switched_off(subject: &Subject) {
    let system = subject.start().await;
    switch(&system, Service::Logic, "slow_writes", 300.0).await;
    let slow = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&slow).await;
    let insert = wait_for_span(&system, "logic", "INSERT orders").await;
    assert!(
        duration(&insert) >= Duration::from_millis(300),
        "{:?}",
        duration(&insert)
    );
    assert_eq!(
        attribute(&insert, FAULTS_ACTIVE).as_deref(),
        Some("slow_writes=300")
    );

    switch(&system, Service::Logic, "slow_writes", 0.0).await;
    let quick = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&quick).await;
    let spans = system
        .wait_for_spans("both INSERTs", |spans| {
            spans
                .iter()
                .filter(|s| s.span.name == "INSERT orders")
                .count()
                == 2
        })
        .await;
    let second = spans
        .iter()
        .filter(|s| s.span.name == "INSERT orders")
        .find(|s| s.span.span_id != insert.span.span_id)
        .unwrap();
    assert!(
        duration(second) < Duration::from_millis(300),
        "{:?}",
        duration(second)
    );
    assert_eq!(attribute(second, FAULTS_ACTIVE), None);
}

/// `failing_callbacks` at 1: the gateway refuses the order's result, task
/// counts redeliveries and the order stays `created`; off, the next
/// delivery completes it.
pub async fn failing_callbacks_redeliver_until_switched_off(subject: &Subject) {
    let system = subject.start().await;
    switch(&system, Service::Gateway, "failing_callbacks", 1.0).await;
    let order = system.api.place_order(&order_body("1001", "A001", 1)).await;
    wait_for("task to count a redelivery", DEADLINE, || async {
        let task = scrape(&system, Service::Task).await;
        (sum(&task, "mq_redeliveries_total") >= 1.0).then_some(())
    })
    .await;
    let gateway = scrape(&system, Service::Gateway).await;
    let refused = r#"grpc_server_handled_total{method="PushResult",code="Unavailable"}"#;
    assert!(
        sum(&gateway, refused) >= 2.0,
        "the first delivery and a redelivery"
    );
    let (_, body) = system.api.get_order(&order).await;
    assert_eq!(body["status"], "created", "{body}");

    switch(&system, Service::Gateway, "failing_callbacks", 0.0).await;
    let done = system.api.wait_until_handled(&order).await;
    assert_eq!(done["status"], "completed", "{done}");
}

/// `lost_context` at 1: logic publishes the order without its trace
/// context, so task's handling starts a trace of its own, with no link
/// back; off, the next order is one trace again.
pub async fn a_lost_context_splits_the_trace_until_switched_off(subject: &Subject) {
    let system = subject.start().await;
    switch(&system, Service::Logic, "lost_context", 1.0).await;
    let split = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&split).await;
    switch(&system, Service::Logic, "lost_context", 0.0).await;
    let whole = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&whole).await;

    let spans = system
        .wait_for_spans("both orders' handling", |spans| {
            [&split, &whole]
                .iter()
                .all(|id| handle_span(spans, id).is_some())
        })
        .await;
    let accepted = |order_id: &str| {
        Some(accepted_trace(&system, order_id).expect("the gateway logged the order"))
    };
    let consumer_of = |order_id: &str| {
        let handle = handle_span(&spans, order_id).unwrap();
        spans
            .iter()
            .find(|s| s.span.span_id == handle.span.parent_span_id)
            .cloned()
            .expect("the handle span's parent, the consumer span")
    };

    let consumer = consumer_of(&split);
    assert_ne!(
        Some(trace_id_hex(&consumer.span.trace_id)),
        accepted(&split),
        "without context, task's trace is not the order's"
    );
    assert!(consumer.span.parent_span_id.is_empty(), "a root span");
    assert!(consumer.span.links.is_empty(), "nothing to link to");

    let consumer = consumer_of(&whole);
    assert_eq!(
        Some(trace_id_hex(&consumer.span.trace_id)),
        accepted(&whole),
        "with context, one trace"
    );
}

/// `memory_leak` at 1,024 KiB: 40 orders grow the gateway's resident
/// memory by at least 30 MiB; off, 40 more grow it by less than 10.
pub async fn a_memory_leak_grows_the_gateway_until_switched_off(subject: &Subject) {
    let system = subject.start().await;
    place_orders(&system, 10).await;
    let before = gateway_rss_mib(&system).await;
    switch(&system, Service::Gateway, "memory_leak", 1024.0).await;
    place_orders(&system, 40).await;
    let leaking = gateway_rss_mib(&system).await;
    assert!(leaking - before >= 30.0, "{before:.1} → {leaking:.1} MiB");

    switch(&system, Service::Gateway, "memory_leak", 0.0).await;
    let after = gateway_rss_mib(&system).await;
    place_orders(&system, 40).await;
    let later = gateway_rss_mib(&system).await;
    assert!(later - after < 10.0, "{after:.1} → {later:.1} MiB once off");
}

async fn place_orders(system: &System, n: usize) {
    for _ in 0..n {
        system.api.place_order(&order_body("1001", "A001", 1)).await;
    }
}

async fn gateway_rss_mib(system: &System) -> f64 {
    let gateway = scrape(system, Service::Gateway).await;
    sum(&gateway, "process_resident_memory_bytes") / (1024.0 * 1024.0)
}

/// `cpu_hog` at 1: the handling of an order takes many times longer, in
/// the span that does the packing; off, it is quick again.
pub async fn a_cpu_hog_slows_the_packing_until_switched_off(subject: &Subject) {
    let system = subject.start().await;
    let quick = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&quick).await;
    switch(&system, Service::Task, "cpu_hog", 1.0).await;
    let hogged = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&hogged).await;
    switch(&system, Service::Task, "cpu_hog", 0.0).await;
    let again = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&again).await;

    let spans = system
        .wait_for_spans("three orders' handling", |spans| {
            [&quick, &hogged, &again]
                .iter()
                .all(|id| handle_span(spans, id).is_some())
        })
        .await;
    let took = |id: &str| duration(handle_span(&spans, id).unwrap());
    let (before, during, after) = (took(&quick), took(&hogged), took(&again));
    assert!(
        during > before * 5,
        "{before:?}, then {during:?} with the hog"
    );
    assert!(after * 5 < during, "{during:?}, then {after:?} once off");
    let marked = handle_span(&spans, &hogged).unwrap();
    assert_eq!(
        attribute(marked, FAULTS_ACTIVE).as_deref(),
        Some("cpu_hog=1")
    );
}

/// Waits for a span of `service` named `name`, and returns the first.
async fn wait_for_span(system: &System, service: &str, name: &str) -> ReceivedSpan {
    let spans = system
        .wait_for_spans(&format!("{service} {name}"), |spans| {
            spans
                .iter()
                .any(|s| s.service == service && s.span.name == name)
        })
        .await;
    spans
        .into_iter()
        .find(|s| s.service == service && s.span.name == name)
        .unwrap()
}

/// How long a span lasted.
fn duration(span: &ReceivedSpan) -> Duration {
    Duration::from_nanos(
        span.span
            .end_time_unix_nano
            .saturating_sub(span.span.start_time_unix_nano),
    )
}

/// task's `handle` span of `order_id`.
fn handle_span<'a>(spans: &'a [ReceivedSpan], order_id: &str) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| {
        s.service == "task"
            && s.span.name == "handle"
            && attribute(s, "order_id").as_deref() == Some(order_id)
    })
}

/// The trace the gateway accepted `order_id` in: its log line's.
fn accepted_trace(system: &System, order_id: &str) -> Option<String> {
    logs::parse_all(&system.stdout(Service::Gateway))
        .into_iter()
        .find(|l| {
            str_field(l, "message") == Some("order accepted")
                && str_field(l, "order_id") == Some(order_id)
        })
        .and_then(|l| str_field(&l, "trace_id").map(str::to_owned))
}
