//! Chapter 02's lesson, checked from outside: every line a service writes
//! to stdout is one JSON object with a trace id; one order's lines, in four
//! traces, then two once chapter 03 carries the context over gRPC, one once
//! chapter 04 carries it over NATS; a client's `traceparent`; hostile
//! input; no secret in any output; `RUST_LOG`.

use crate::logs::{self, LogLine, Redactor, is_span_id, is_trace_id, span_of, str_field};
use crate::system::TEST_API_TOKEN;
use crate::{Api, DEADLINE, Service, Subject, System, order_body, wait_for};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Every line `service` wrote to stdout so far; fails unless each is one
/// JSON object.
fn lines(system: &System, service: Service) -> Vec<LogLine> {
    logs::parse_all(&system.stdout(service))
}

/// Is `line` the line with `message` about order `order_id`?
fn is(line: &LogLine, message: &str, order_id: &str) -> bool {
    str_field(line, "message") == Some(message) && str_field(line, "order_id") == Some(order_id)
}

/// Waits until `service` wrote the line with `message` about `order_id`,
/// and returns it.
pub(crate) async fn wait_for_line(
    system: &System,
    service: Service,
    message: &str,
    order_id: &str,
) -> LogLine {
    wait_for(
        &format!("{service} to log {message:?} for order {order_id}"),
        DEADLINE,
        || async {
            lines(system, service)
                .into_iter()
                .find(|line| is(line, message, order_id))
        },
    )
    .await
}

/// The trace id of a line, which must have one.
fn trace_id(line: &LogLine) -> &str {
    str_field(line, "trace_id").unwrap_or_else(|| panic!("no trace_id in {line:?}"))
}

/// Checks what every line must have; returns what is wrong with it.
fn problems(service: Service, line: &LogLine) -> Vec<String> {
    let mut problems = Vec::new();
    let timestamp = str_field(line, "timestamp").unwrap_or_default();
    // RFC 3339 in UTC, as `2026-11-05T09:30:00.123456Z`.
    let rfc3339 = timestamp.len() >= 20
        && timestamp.as_bytes()[10] == b'T'
        && timestamp.ends_with('Z')
        && timestamp[..4].bytes().all(|b| b.is_ascii_digit());
    if !rfc3339 {
        problems.push(format!("timestamp {timestamp:?}"));
    }
    let level = str_field(line, "level").unwrap_or_default();
    if !["trace", "debug", "info", "warn", "error"].contains(&level) {
        problems.push(format!("level {level:?}"));
    }
    if str_field(line, "service") != Some(service.name()) {
        problems.push(format!("service {:?}", line.get("service")));
    }
    if str_field(line, "target").is_none_or(str::is_empty) {
        problems.push("no target".to_owned());
    }
    if str_field(line, "message").is_none() {
        problems.push("no message".to_owned());
    }
    if !str_field(line, "trace_id").is_some_and(is_trace_id) {
        problems.push(format!("trace_id {:?}", line.get("trace_id")));
    }
    if !str_field(line, "span_id").is_some_and(is_span_id) {
        problems.push(format!("span_id {:?}", line.get("span_id")));
    }
    problems
}

pub async fn every_line_of_every_service_is_a_json_object_with_a_trace_id(subject: &Subject) {
    let system = subject.start().await;
    let order_id = system.api.place_order(&order_body("1001", "A001", 2)).await;
    system.api.wait_until_handled(&order_id).await;
    let failed = system
        .api
        .place_order(&order_body("1001", "sold-out-lamp", 1))
        .await;
    system.api.wait_until_handled(&failed).await;
    let (status, _) = system
        .api
        .get_order("00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = Api::send(system.api.unauthenticated(Method::GET, "/orders/x")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    wait_for_line(&system, Service::Task, "order handled", &failed).await;

    let mut wrong = Vec::new();
    for service in Service::ALL {
        let lines = lines(&system, service);
        assert!(!lines.is_empty(), "{service} wrote no line");
        for line in &lines {
            let problems = problems(service, line);
            if !problems.is_empty() {
                wrong.push(format!("{service}: {}: {line:?}", problems.join(", ")));
            }
        }
        let stderr = system.stderr(service);
        assert!(stderr.is_empty(), "{service} wrote to stderr: {stderr:?}");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// One order, as the four units of work that handle it log it. Without
/// propagation (02) each starts a trace of its own, `[trace-1]` to
/// `[trace-4]`; the context crosses gRPC since chapter 03, so logic's lines
/// are in the gateway's trace and the gateway's callback lines in task's;
/// and NATS since chapter 04: every line is in the gateway's trace.
pub async fn one_order_in_the_logs_of_each_service(subject: &Subject) {
    let system = subject.start().await;
    let order_id = system.api.place_order(&order_body("1001", "A001", 2)).await;
    // Waiting on the logs, not on `GET /orders/{id}`, which would log too.
    wait_for_line(&system, Service::Gateway, "result received", &order_id).await;
    wait_for_line(&system, Service::Task, "order handled", &order_id).await;

    let gateway = lines(&system, Service::Gateway);
    let logic = lines(&system, Service::Logic);
    let task = lines(&system, Service::Task);
    let sections = [
        (
            "gateway: POST /orders",
            span_of(&gateway, |line| is(line, "order accepted", &order_id)),
        ),
        (
            "logic: CreateOrder",
            logs::trace_of(&logic, |line| is(line, "order created", &order_id)),
        ),
        (
            "task: one delivery of orders.created",
            logs::trace_of(&task, |line| is(line, "order handled", &order_id)),
        ),
        (
            "gateway: PushResult, task's callback",
            span_of(&gateway, |line| is(line, "result received", &order_id)),
        ),
    ];

    let traces: std::collections::BTreeSet<&str> = sections
        .iter()
        .map(|(_, lines)| trace_id(lines[0]))
        .collect();
    let trace = |section: usize| trace_id(sections[section].1[0]);
    if subject.has(3) {
        assert_eq!(trace(0), trace(1), "gateway -> logic: one trace");
        assert_eq!(trace(2), trace(3), "task -> gateway: one trace");
    }
    let expected = match subject.chapter() {
        ..3 => 4,
        3 => 2,
        _ => 1,
    };
    assert_eq!(
        traces.len(),
        expected,
        "one order's lines are in {} traces, where {} joins them into {expected}: \
         one over gRPC from chapter 03 on, over NATS too from 04 on",
        traces.len(),
        subject.name
    );

    let own = logs::own_crate(&gateway).expect("a line about the order");
    let mut redactor = Redactor::new().with_crate(own);
    let mut snapshot = String::new();
    for (title, lines) in sections {
        snapshot += &format!("{title}\n{}", redactor.lines(lines));
    }
    subject.assert_snapshot("e2e__logs__one_order", &[2, 3, 4], &snapshot);
}

pub async fn the_gateway_continues_a_trace_from_a_valid_traceparent(subject: &Subject) {
    let system = subject.start().await;
    let (client_trace, client_span) = (CLIENT_TRACE, CLIENT_SPAN);
    let request = system
        .api
        .request(Method::POST, "/orders")
        .header("traceparent", format!("00-{client_trace}-{client_span}-01"))
        .json(&order_body("1001", "A001", 1));
    let (status, body) = Api::send(request).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let order_id = body["order_id"].as_str().unwrap();

    let accepted = wait_for_line(&system, Service::Gateway, "order accepted", order_id).await;
    assert_eq!(trace_id(&accepted), client_trace);
    assert_ne!(
        str_field(&accepted, "span_id"),
        Some(client_span),
        "the request's span is a child of the client's"
    );
    let access = wait_for(
        "the access line in the client's trace",
        DEADLINE,
        || async {
            let gateway = lines(&system, Service::Gateway);
            let request = logs::trace_of(&gateway, |line| is(line, "order accepted", order_id));
            let finished =
                |line: &&&LogLine| str_field(line, "message") == Some("request finished");
            request.iter().find(finished).map(|line| (*line).clone())
        },
    )
    .await;
    assert_eq!(access["status"], 201);

    // Carried on over gRPC since chapter 03: logic continues it.
    let created = wait_for_line(&system, Service::Logic, "order created", order_id).await;
    let continued = trace_id(&created) == client_trace;
    assert_eq!(
        continued,
        subject.has(3),
        "logic's line in the client's trace"
    );
}

/// A trace id and a span id a client may send.
pub(crate) const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub(crate) const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// `traceparent` headers that W3C Trace Context does not accept, each a
/// name and the values sent (two for a header sent twice): lenient parsers
/// take most of them.
pub(crate) fn invalid_traceparents() -> Vec<(&'static str, Vec<String>)> {
    let (trace, span) = (CLIENT_TRACE, CLIENT_SPAN);
    let valid = format!("00-{trace}-{span}-01");
    let one = |value: String| vec![value];
    vec![
        ("garbage", one("not a traceparent".into())),
        ("short ids", one("00-1-2-01".into())),
        ("a signed version", one(format!("+0-{trace}-{span}-01"))),
        (
            "a signed trace id",
            one(format!("00-+{}-{span}-01", &trace[1..])),
        ),
        ("a 1-digit version", one(format!("0-{trace}-{span}-01"))),
        ("1-digit flags", one(format!("00-{trace}-{span}-1"))),
        ("a trailing dash", one(format!("{valid}-"))),
        ("uppercase hex", one(valid.to_uppercase())),
        (
            "an all-zero trace id",
            one(format!("00-{}-{span}-01", "0".repeat(32))),
        ),
        (
            "an all-zero span id",
            one(format!("00-{trace}-{}-01", "0".repeat(16))),
        ),
        (
            "a short trace id",
            one(format!("00-{}-{span}-01", &trace[2..])),
        ),
        ("version ff", one(format!("ff-{trace}-{span}-01"))),
        ("JSON", one(r#"00-"},{"level":"error"-01"#.into())),
        (
            "10 KB of flags",
            one(format!("{valid}-{}", "0".repeat(10_000))),
        ),
        (
            "a 10 KB trace id",
            one(format!("00-{}-{span}-01", "a".repeat(10_000))),
        ),
        (
            "the header twice",
            vec![valid, format!("00-{}-{span}-01", "1".repeat(32))],
        ),
    ]
}

/// A `traceparent` of a later version than 00: valid, read by its first
/// four fields.
pub(crate) fn future_traceparent(trace: &str) -> String {
    format!("01-{trace}-{CLIENT_SPAN}-01-what-a-later-version-adds")
}

pub async fn a_malformed_traceparent_starts_a_fresh_trace_and_fails_nothing(subject: &Subject) {
    let system = subject.start().await;
    let malformed = invalid_traceparents();
    let mut traces = std::collections::BTreeSet::new();
    for (case, values) in &malformed {
        let mut request = system
            .api
            .request(Method::POST, "/orders")
            .json(&order_body("1001", "A001", 1));
        for value in values {
            request = request.header("traceparent", value);
        }
        let (status, body) = Api::send(request).await;
        assert_eq!(status, StatusCode::CREATED, "{case}: {body}");
        let order_id = body["order_id"].as_str().unwrap();
        let accepted = wait_for_line(&system, Service::Gateway, "order accepted", order_id).await;
        let trace = trace_id(&accepted).to_owned();
        assert!(is_trace_id(&trace), "{case} gave {trace:?}");
        assert!(
            !values.iter().any(|value| value.contains(&trace)),
            "{case} was taken: {:.80}",
            values.join(" ")
        );
        traces.insert(trace);
    }
    assert_eq!(traces.len(), malformed.len(), "a fresh trace each time");

    // A later version is continued, by what version 00 knows of it.
    let later = "0af7651916cd43dd8448eb211c80319c";
    let request = system
        .api
        .request(Method::POST, "/orders")
        .header("traceparent", future_traceparent(later))
        .json(&order_body("1001", "A001", 1));
    let (status, body) = Api::send(request).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let order_id = body["order_id"].as_str().unwrap();
    let accepted = wait_for_line(&system, Service::Gateway, "order accepted", order_id).await;
    assert_eq!(trace_id(&accepted), later, "a later version is continued");
}

pub async fn hostile_input_cannot_break_a_line(subject: &Subject) {
    let system = subject.start().await;
    // Quotes, a backslash, a would-be JSON object and non-ASCII: valid in an
    // id, so the order is accepted and the value logged as it is.
    let user_id = r#"Ann "the" \ O'Brien}{"level":"error" ☃ 🦀"#;
    let order_id = system
        .api
        .place_order(&order_body(user_id, "A001", 1))
        .await;
    let created = wait_for_line(&system, Service::Logic, "order created", &order_id).await;
    assert_eq!(
        str_field(&created, "user_id"),
        Some(user_id),
        "round-trips exactly"
    );

    let post = |body: Vec<u8>| {
        system
            .api
            .request(Method::POST, "/orders")
            .header("content-type", "application/json")
            .body(body)
    };
    let rejected = [
        (
            "newline in user_id",
            post(
                json!({"user_id": "10\n01\r\n{\"level\":\"error\"}", "product_id": "A001", "quantity": 1})
                    .to_string()
                    .into_bytes(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "ANSI escape in product_id",
            post(
                json!({"user_id": "1001", "product_id": "\u{1b}[31mA001\u{1b}[0m", "quantity": 1})
                    .to_string()
                    .into_bytes(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "invalid UTF-8 in the body",
            post(b"{\"user_id\":\"\xff\xfe\n\",\"product_id\":\"A001\",\"quantity\":1}".to_vec()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "escapes in the path",
            system
                .api
                .request(Method::GET, "/orders/%22%0A%1B%5B31m%7B%7D"),
            StatusCode::NOT_FOUND,
        ),
        (
            "escapes in an unknown path",
            system.api.request(Method::GET, "/%0A%7B%22level%22%7D"),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (name, request, expected) in rejected {
        let (status, body) = Api::send(request).await;
        assert_eq!(status, expected, "{name}: {body}");
    }
    // A fence: once this order is handled, every request above was logged.
    let fence = system.api.place_order(&order_body("1001", "A001", 1)).await;
    wait_for_line(&system, Service::Gateway, "result received", &fence).await;
    wait_for_line(&system, Service::Task, "order handled", &fence).await;

    for service in Service::ALL {
        for line in lines(&system, service) {
            let problems = problems(service, &line);
            assert!(problems.is_empty(), "{service}: {problems:?}: {line:?}");
        }
    }
    let gateway = lines(&system, Service::Gateway);
    let routes: Vec<&str> = gateway
        .iter()
        .filter_map(|line| str_field(line, "route"))
        .collect();
    assert!(
        routes
            .iter()
            .all(|route| ["/orders", "/orders/{order_id}", "unmatched"].contains(route)),
        "a route is a template, never the raw path: {routes:?}"
    );
}

pub async fn no_output_has_the_token_or_the_authorization_header(subject: &Subject) {
    let system = subject.start().await;
    let order_id = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&order_id).await;
    let wrong_token = "wrong-token-5b2e";
    for request in [
        system
            .api
            .unauthenticated(Method::POST, "/orders")
            .bearer_auth(wrong_token)
            .json(&order_body("1", "A", 1)),
        system
            .api
            .unauthenticated(Method::GET, "/orders/x")
            .basic_auth("user", Some(TEST_API_TOKEN)),
        system
            .api
            .unauthenticated(Method::GET, "/orders/x")
            .header("authorization", TEST_API_TOKEN),
        system.api.unauthenticated(Method::GET, "/orders/x"),
    ] {
        let (status, _) = Api::send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    wait_for("the four refusals to be logged", DEADLINE, || async {
        let refused = lines(&system, Service::Gateway)
            .iter()
            .filter(|line| line.get("status") == Some(&json!(401)))
            .count();
        (refused == 4).then_some(())
    })
    .await;

    for service in Service::ALL {
        let output = [system.stdout(service), system.stderr(service)].concat();
        assert!(!output.is_empty());
        for line in output {
            assert!(!line.contains(TEST_API_TOKEN), "{service}: {line}");
            assert!(!line.contains(wrong_token), "{service}: {line}");
            assert!(
                !line.to_lowercase().contains("authorization"),
                "{service}: {line}"
            );
        }
    }
}

/// `RUST_LOG=warn` leaves out the info lines, and what is left keeps its
/// trace id: spans exist whatever the level of the lines written.
pub async fn rust_log_sets_the_level(subject: &Subject) {
    let mut system = subject.system().env("RUST_LOG", "warn").start().await;
    let order_id = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&order_id).await;
    system.stop(Service::Logic).await;
    let (status, _) = system.api.get_order(&order_id).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    for service in Service::ALL {
        for line in lines(&system, service) {
            assert_ne!(line["level"], "info", "{service}: {line:?}");
            assert!(problems(service, &line).is_empty(), "{service}: {line:?}");
        }
    }
    let failed = wait_for("the 503 to be logged", DEADLINE, || async {
        let gateway = lines(&system, Service::Gateway);
        let failed = |line: &LogLine| str_field(line, "message") == Some("request failed");
        gateway.into_iter().find(failed)
    })
    .await;
    let gateway = lines(&system, Service::Gateway);
    assert_eq!(failed["level"], "error");
    assert_eq!(failed["status"], 503);
    let cause = logs::trace_of(&gateway, |line| {
        str_field(line, "message") == Some("the call to logic failed")
    });
    assert_eq!(cause.len(), 2, "the cause and the access line: {cause:?}");
    assert_eq!(cause[0]["level"], "warn");
    assert_eq!(cause[1]["message"], "request failed");
}

/// A message whose every delivery failed: task's line for its last
/// delivery is an error, with the order's id and the trace id, saying the
/// message went to the dead letters; none of its lines for that delivery
/// promises a redelivery.
pub async fn the_last_failed_delivery_is_an_error_not_a_redelivery(subject: &Subject) {
    let (system, order_id) = crate::contracts::faults::an_order_out_of_deliveries(subject).await;
    let last = orders::queue::MAX_DELIVER;
    // The message reaches the dead letters before task writes its line
    // about it: wait for a line of the last delivery, then read them all.
    wait_for("task to log the last delivery", DEADLINE, || async {
        lines(&system, Service::Task).into_iter().find(|l| {
            str_field(l, "order_id") == Some(order_id.as_str())
                && l.get("delivery").and_then(|d| d.as_i64()) == Some(last)
        })
    })
    .await;
    let task = lines(&system, Service::Task);
    let of_the_order: Vec<&LogLine> = task
        .iter()
        .filter(|l| str_field(l, "order_id") == Some(order_id.as_str()))
        .collect();
    let failed_before = of_the_order
        .iter()
        .filter(|l| str_field(l, "message") == Some("delivery failed, redelivery scheduled"))
        .count();
    assert_eq!(failed_before as i64, last - 1, "{of_the_order:#?}");
    let given_up: Vec<&&LogLine> = of_the_order
        .iter()
        .filter(|l| l.get("delivery").and_then(|d| d.as_i64()) == Some(last))
        .collect();
    assert_eq!(
        given_up.len(),
        1,
        "one line for the last delivery: {given_up:#?}"
    );
    let line = given_up[0];
    assert_eq!(str_field(line, "level"), Some("error"), "{line:?}");
    let message = str_field(line, "message").unwrap_or_default();
    assert!(message.contains("dead letters"), "{line:?}");
    assert!(!message.contains("redelivery"), "{line:?}");
    assert!(
        is_trace_id(str_field(line, "trace_id").unwrap_or_default()),
        "{line:?}"
    );
}
