//! Chapter 01's lesson, checked from outside: each service's `/metrics`,
//! parsed as Prometheus text, has the families the dashboards expect, its
//! counts match what the system did, and no client can grow its series.

use std::fmt::Write;

use crate::contracts::faults::gateway_alone;
use crate::prometheus::Prometheus;
use crate::{Api, DEADLINE, Service, Subject, System, order_body, wait_for};
use futures::StreamExt;
use orders::pb::gateway_callback_client::GatewayCallbackClient;
use orders::pb::order_service_client::OrderServiceClient;
use orders::pb::{self, Outcome, PushResultRequest};
use prom_text_format_parser::{Metric, Scrape, Type, ValueType};
use reqwest::{Method, StatusCode, header};

/// What Prometheus is told the body is.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// Scrapes a service's `/metrics`, checks its content type and parses it.
pub(crate) async fn scrape(system: &System, service: Service) -> Scrape {
    let url = format!("http://{}/metrics", system.topology.admin(service));
    let response = reqwest::get(&url).await.expect("scraping /metrics");
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    let content_type = response.headers()[header::CONTENT_TYPE].clone();
    assert_eq!(content_type, PROMETHEUS_TEXT, "{url}");
    let text = response.text().await.expect("reading /metrics");
    Scrape::parse(&text).unwrap_or_else(|e| panic!("{url} is not Prometheus text: {e:?}"))
}

/// Like PromQL's `sum(...)` of an instant vector selector: the sum over
/// the series of `selector`'s family that have all its labels, e.g.
/// `http_requests_total{route="/orders",status="201"}`. For a histogram, the
/// sum of its `_count`s. The family must exist; a series need not.
pub(crate) fn sum(scrape: &Scrape, selector: &str) -> f64 {
    let (name, labels) = parse_selector(selector);
    let family = scrape
        .metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no family {name}"));
    let wanted = match family.kind {
        Type::Histogram | Type::Summary => ValueType::Count,
        _ => ValueType::Sample,
    };
    family
        .samples
        .iter()
        .filter(|sample| sample.value.value_type == wanted)
        .filter(|sample| {
            labels.iter().all(|(key, value)| {
                sample
                    .labels
                    .iter()
                    .any(|label| label.key == *key && label.value == *value)
            })
        })
        .map(|sample| sample.value.value.as_f64())
        .sum()
}

/// `name{key="value",...}` as the name and its label pairs.
fn parse_selector(selector: &str) -> (&str, Vec<(&str, &str)>) {
    let Some((name, mut rest)) = selector.split_once('{') else {
        return (selector, Vec::new());
    };
    let mut labels = Vec::new();
    while let Some((key, after)) = rest.split_once("=\"") {
        let (value, after) = after.split_once('"').expect("a closing quote");
        labels.push((key.trim_start_matches(','), value));
        rest = after;
    }
    (name, labels)
}

/// The lines of `expected` (`selector value`, as in `/metrics`; `#` starts a
/// comment) whose sum in `scrape` differs, each with what it is instead.
fn mismatches(scrape: &Scrape, expected: &str) -> Vec<String> {
    expected
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let (selector, value) = line.rsplit_once(' ').expect("`selector value`");
            let got = sum(scrape, selector);
            (got != value.parse::<f64>().unwrap()).then(|| format!("{line}, but is {got}"))
        })
        .collect()
}

/// How many time series the scrape holds: one per sample line.
fn series(scrape: &Scrape) -> usize {
    scrape.metrics.iter().map(|m| m.samples.len()).sum()
}

/// Each family as a learner meets it: name, type, label names, help. No
/// values, so the text is the same on every run.
fn families(scrape: &Scrape) -> String {
    let mut text = String::new();
    for family in &scrape.metrics {
        writeln!(text, "{} {} [{}]", family.name, family.kind, labels(family)).unwrap();
        writeln!(text, "    {}", family.help_desc.as_deref().unwrap_or("")).unwrap();
    }
    text
}

/// The label names of a family, sorted, without the `le` of buckets.
fn labels(family: &Metric) -> String {
    let mut names: Vec<&str> = family
        .samples
        .iter()
        .flat_map(|sample| sample.labels.iter().map(|label| label.key.as_str()))
        .filter(|name| *name != "le")
        .collect();
    names.sort_unstable();
    names.dedup();
    names.join(", ")
}

// ANCHOR: families
pub async fn each_service_serves_its_metric_families(subject: &Subject) {
    let system = subject.start().await;
    let order_id = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&order_id).await;
    // task acks after the gateway has the result: wait for that too, so
    // every family has been touched before the snapshots.
    wait_for("task to count the ack", DEADLINE, || async {
        let task = scrape(&system, Service::Task).await;
        (sum(&task, r#"mq_consumed_total{status="ack"}"#) == 1.0).then_some(())
    })
    .await;

    let gateway = scrape(&system, Service::Gateway).await;
    let logic = scrape(&system, Service::Logic).await;
    let task = scrape(&system, Service::Task).await;
    // The same families since chapter 01, whose snapshots hold them; final
    // adds the gauge of its faults, `fault_setting`.
    for (name, scrape) in [("gateway", gateway), ("logic", logic), ("task", task)] {
        let snapshot = format!("e2e__metrics__{name}_families");
        subject.assert_snapshot(&snapshot, &[1, 6], &families(&scrape));
    }
}
// ANCHOR_END: families

// ANCHOR: counts
pub async fn counts_match_what_the_system_did(subject: &Subject) {
    const N: usize = 5; // as in the expected values below
    // A slow machine could make the outbox sweep republish an order whose
    // published flag is not saved yet; that is right, but not countable.
    let system = subject
        .system()
        .arg(Service::Logic, "--outbox-interval-ms=600000")
        .start()
        .await;
    let bodies: Vec<_> = (0..N)
        .map(|i| order_body(&format!("user-{i}"), "A001", 1))
        .collect();
    let mut ids = Vec::new();
    for body in &bodies {
        ids.push(system.api.place_order(body).await);
    }
    // Refused by the gateway: two without a token, one with a bad quantity.
    for _ in 0..2 {
        let (status, _) = Api::send(
            system
                .api
                .unauthenticated(Method::POST, "/orders")
                .json(&order_body("1001", "A001", 1)),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = system.api.post_order(&order_body("1001", "A001", 0)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // An unknown order: logic answers NotFound, the gateway 404.
    let (status, _) = system
        .api
        .get_order("00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    for id in &ids {
        system.api.wait_until_handled(id).await;
    }
    wait_for("task to count every ack", DEADLINE, || async {
        let task = scrape(&system, Service::Task).await;
        (sum(&task, r#"mq_consumed_total{status="ack"}"#) == N as f64).then_some(())
    })
    .await;

    // A redelivered callback, then one the gateway rejects.
    let mut callback = GatewayCallbackClient::connect(system.topology.gateway_callback_url())
        .await
        .unwrap();
    let duplicate = PushResultRequest {
        order_id: ids[0].clone(),
        outcome: Outcome::Failed.into(),
        detail: "a late duplicate".into(),
        delivery: 2,
    };
    let reply = callback.push_result(duplicate).await.unwrap().into_inner();
    assert!(!reply.recorded);
    let invalid = PushResultRequest {
        order_id: ids[0].clone(),
        ..Default::default()
    };
    let refused = callback.push_result(invalid).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    // Each line sums the series that have its labels, as PromQL's sum() would.
    let gateway = scrape(&system, Service::Gateway).await;
    let mut wrong = mismatches(
        &gateway,
        r#"
        http_requests_total{method="POST",route="/orders",status="201"} 5
        http_requests_total{method="POST",route="/orders",status="401"} 2
        http_requests_total{method="POST",route="/orders",status="422"} 1
        http_requests_total{method="GET",route="/orders/{order_id}",status="404"} 1
        http_request_duration_seconds{method="POST",route="/orders",status="201"} 5
        grpc_client_handled_total{service="orders.v1.OrderService",method="CreateOrder",code="OK"} 5
        grpc_client_handled_total{service="orders.v1.OrderService",method="GetOrder",code="NotFound"} 1
        # Every valid callback is forwarded to logic, the duplicate too.
        grpc_client_handled_total{service="orders.v1.OrderService",method="RecordResult",code="OK"} 6
        # The duplicate callback is answered, and completes nothing.
        grpc_server_handled_total{service="orders.v1.GatewayCallback",method="PushResult",code="OK"} 6
        grpc_server_handled_total{method="PushResult",code="InvalidArgument"} 1
        orders_completed_total{outcome="completed"} 5
        orders_completed_total{outcome="failed"} 0
        order_completion_seconds 5
        "#,
    );
    let logic = scrape(&system, Service::Logic).await;
    wrong.extend(mismatches(
        &logic,
        r#"
        orders_created_total 5
        grpc_server_handled_total{service="orders.v1.OrderService",method="CreateOrder",code="OK"} 5
        grpc_server_handled_total{service="orders.v1.OrderService",method="GetOrder",code="NotFound"} 1
        grpc_server_handled_total{service="orders.v1.OrderService",method="RecordResult",code="OK"} 6
        mq_published_total{subject="orders.created",status="ok"} 5
        mq_published_total{subject="orders.created",status="error"} 0
        mq_publish_duration_seconds{subject="orders.created"} 5
        db_query_duration_seconds{operation="insert"} 5
        # Five published flags, and six results recorded (the duplicate's changes nothing).
        db_query_duration_seconds{operation="update"} 11
        "#,
    ));
    let task = scrape(&system, Service::Task).await;
    wrong.extend(mismatches(
        &task,
        r#"
        mq_consumed_total{subject="orders.created",status="ack"} 5
        mq_consumed_total{subject="orders.created",status="nak"} 0
        mq_handle_duration_seconds{subject="orders.created",status="ack"} 5
        mq_queue_delay_seconds{subject="orders.created"} 5
        mq_redeliveries_total{subject="orders.created"} 0
        grpc_client_handled_total{service="orders.v1.GatewayCallback",method="PushResult",code="OK"} 5
        "#,
    ));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
// ANCHOR_END: counts

// ANCHOR: cardinality
pub async fn unknown_paths_and_methods_add_no_series(subject: &Subject) {
    let system = subject.system().only(&[Service::Gateway]).start().await;
    let http = reqwest::Client::new();
    let base = &system.api.base;
    let unknown = |i: usize| {
        let method = match i % 3 {
            0 => Method::GET,
            1 => Method::POST,
            // Any word is a valid method on the wire.
            _ => Method::from_bytes(format!("SCAN{i}").as_bytes()).unwrap(),
        };
        let path = match i % 4 {
            0 => format!("/wp-admin/{i}.php"),
            1 => format!("/orders/{i}/cancel"),
            2 => format!("/api/v{i}/orders"),
            _ => format!("/{i:x}"),
        };
        http.request(method, format!("{base}{path}")).send()
    };
    // One of each kind first: GET, POST and an unknown method.
    for i in 0..3 {
        assert_eq!(unknown(i).await.unwrap().status(), StatusCode::NOT_FOUND);
    }
    let before = series(&scrape(&system, Service::Gateway).await);

    let statuses: Vec<StatusCode> = futures::stream::iter(3..1003)
        .map(|i| async move { unknown(i).await.unwrap().status() })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == StatusCode::NOT_FOUND));

    let after = scrape(&system, Service::Gateway).await;
    assert_eq!(
        series(&after),
        before,
        "1,000 unknown requests added series"
    );
    assert_eq!(
        sum(&after, r#"http_requests_total{route="unmatched"}"#),
        1003.0
    );
    assert_eq!(sum(&after, r#"http_requests_total{method="other"}"#), 334.0);

    // The same on the gRPC port: calls to a service the gateway does not
    // serve are counted under one name.
    let mut wrong_port = OrderServiceClient::connect(system.topology.gateway_callback_url())
        .await
        .unwrap();
    let status = wrong_port
        .get_order(pb::GetOrderRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    let before = series(&scrape(&system, Service::Gateway).await);
    for _ in 0..10 {
        let _ = wrong_port
            .create_order(pb::CreateOrderRequest::default())
            .await;
    }
    let after = scrape(&system, Service::Gateway).await;
    assert_eq!(series(&after), before);
    let unknown =
        r#"grpc_server_handled_total{service="unknown",method="unknown",code="Unimplemented"}"#;
    assert_eq!(sum(&after, unknown), 11.0);
}
// ANCHOR_END: cardinality

// ANCHOR: client_codes
pub async fn a_call_to_a_logic_that_is_down_counts_as_unavailable(subject: &Subject) {
    // A port bound by a socket that never listens: connecting is refused,
    // and no other test can start a server on it meanwhile.
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = format!("http://{}", closed.local_addr().unwrap());
    let system = gateway_alone(subject, &closed).await;
    let (status, _) = system.api.post_order(&order_body("1001", "A001", 1)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    let gateway = scrape(&system, Service::Gateway).await;
    let unavailable = r#"grpc_client_handled_total{method="CreateOrder",code="Unavailable"}"#;
    assert_eq!(sum(&gateway, unavailable), 1.0);
    assert_eq!(sum(&gateway, r#"http_requests_total{status="503"}"#), 1.0);
}

pub async fn a_call_past_the_deadline_counts_as_deadline_exceeded(subject: &Subject) {
    let system = gateway_alone(subject, &crate::stuck_logic().await).await;
    let (status, _) = system.api.post_order(&order_body("1001", "A001", 1)).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);

    let gateway = scrape(&system, Service::Gateway).await;
    let timed_out = r#"grpc_client_handled_total{method="CreateOrder",code="DeadlineExceeded"}"#;
    assert_eq!(sum(&gateway, timed_out), 1.0);
    assert_eq!(sum(&gateway, r#"http_requests_total{status="504"}"#), 1.0);
}
// ANCHOR_END: client_codes

// ANCHOR: first_error
pub async fn prometheus_counts_every_error_in_the_slo_ratio(subject: &Subject) {
    let Some(prometheus) = crate::prometheus::binary("the SLO's error ratio in Prometheus") else {
        return;
    };
    let mut system = subject.start().await;
    let targets: Vec<_> = Service::ALL
        .iter()
        .map(|&service| (service.name(), system.topology.admin(service)))
        .collect();
    let rules = crate::stack::repo_root()
        .join(crate::stack::RULES_DIR)
        .join("recording.rules.yml");
    let prometheus = Prometheus::start(&prometheus, &targets, &[rules])
        .await
        .expect("starting prometheus");
    // Prometheus's first sample of each service is taken before any
    // request: what the service shows when it starts.
    prometheus.wait_until_scraped(targets.len()).await;

    const OK: usize = 5;
    const FAILED: usize = 3;
    for i in 0..OK {
        system
            .api
            .place_order(&order_body(&format!("user-{i}"), "A001", 1))
            .await;
    }
    // Logic down: each order is answered 503 at once, the three usually
    // between two scrapes, so a 503 series that did not exist before would
    // first be seen at 3.
    system.stop(Service::Logic).await;
    for _ in 0..FAILED {
        let (status, _) = system.api.post_order(&order_body("1001", "A001", 1)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    // What the availability alerts read: the recording rule's share of 5xx
    // among POST /orders over the last hour. Prometheus computes it from
    // `rate()` over each series, which extrapolates every series of one
    // target by the same factor, so the ratio is exactly 3 of 8 once every
    // series counted from 0; and so is the dashboards' error ratio of the
    // gateway's calls to logic. A series that appears with its first
    // increment loses that increment: the ratio then stays below (or reads 0).
    let expected = FAILED as f64 / (OK + FAILED) as f64;
    let queries = [
        "slo:post_orders_errors:ratio_rate1h",
        r#"sum(rate(grpc_client_handled_total{job="gateway",method="CreateOrder",code!="OK"}[1h]))
           / sum(rate(grpc_client_handled_total{job="gateway",method="CreateOrder"}[1h]))"#,
    ];
    let give_up = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut read = Vec::new();
        for query in queries {
            read.push(prometheus.value(query).await);
        }
        let exact = |value: &Option<f64>| value.is_some_and(|v| (v - expected).abs() < 1e-9);
        if read.iter().all(exact) {
            break;
        }
        if tokio::time::Instant::now() > give_up {
            let by_status = prometheus
                .query(r#"increase(http_requests_total{job="gateway",route="/orders"}[1h])"#)
                .await
                .unwrap();
            panic!(
                "{FAILED} of {} POST /orders failed, so each ratio should read {expected}; \
                 after {DEADLINE:?} Prometheus read {read:?} for {queries:#?}\n\
                 increase() of each series of POST /orders: {by_status:?}",
                OK + FAILED
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
// ANCHOR_END: first_error

/// A message whose every delivery failed: task counts the dead letter
/// once, as a settled delivery too, and every redelivery before it.
pub async fn a_dead_lettered_message_is_counted(subject: &Subject) {
    let (system, _) = crate::contracts::faults::an_order_out_of_deliveries(subject).await;
    // The message reaches the dead letters before task counts it.
    wait_for("task to count the dead letter", DEADLINE, || async {
        let task = scrape(&system, Service::Task).await;
        (sum(&task, r#"mq_consumed_total{status="dead_letter"}"#) >= 1.0).then_some(())
    })
    .await;
    let task = scrape(&system, Service::Task).await;
    let retries = (orders::queue::MAX_DELIVER - 1) as f64;
    let expected = [
        ("mq_dead_lettered_total{subject=\"orders.created\"}", 1.0),
        ("mq_consumed_total{status=\"dead_letter\"}", 1.0),
        ("mq_consumed_total{status=\"nak\"}", retries),
        ("mq_redeliveries_total", retries),
    ];
    for (selector, count) in expected {
        assert_eq!(sum(&task, selector), count, "{selector}");
    }
}

/// A 504 (logic waited past the deadline and stored nothing), then its
/// retry with the same key, twice: logic counts one order created, the
/// gateway one completed.
pub async fn counters_agree_after_a_504_and_its_retry(subject: &Subject) {
    use crate::contracts::faults::{KEY, a_504_then_a_retry_with_its_key, post_with_key};
    let (system, order_id, _) = a_504_then_a_retry_with_its_key(subject).await;
    let (status, _) = post_with_key(&system.api, &order_body("1001", "A001", 1), KEY).await;
    assert_eq!(status, StatusCode::CREATED, "a second retry");
    system.api.wait_until_handled(&order_id).await;
    let logic = scrape(&system, Service::Logic).await;
    assert_eq!(sum(&logic, "orders_created_total"), 1.0);
    let gateway = scrape(&system, Service::Gateway).await;
    assert_eq!(sum(&gateway, "orders_completed_total"), 1.0);
}
