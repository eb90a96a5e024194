//! Chapter 03's lesson, checked at a real OTLP receiver: the spans of one
//! order, one trace from the gateway to logic's database and, once chapter
//! 04 carries the context over NATS, on to task and back to the gateway;
//! the context in gRPC metadata both ways; the `traceresponse` header; a
//! hostile `traceparent`; a collector that is down; SIGTERM; the sampler.
//! Chapter 04's own checks are in `messaging`.

use std::time::{Duration, Instant};

use crate::contracts::logs::{
    CLIENT_SPAN, future_traceparent, invalid_traceparents, wait_for_line,
};
use crate::logs::{self, is_span_id, is_trace_id, str_field};
use crate::otlp::{ReceivedSpan, render_trace, span_id_hex, trace_id_bytes, trace_id_hex};
use crate::{
    Api, DEADLINE, OtlpReceiver, Service, Subject, System, SystemBuilder, order_body, wait_for,
};
use futures::StreamExt;
use reqwest::{Method, StatusCode};

/// A system whose services send their spans every 100 ms rather than every
/// 5 s, so that the tests wait less.
pub(crate) fn system(subject: &Subject) -> SystemBuilder {
    subject.system().env("OTEL_BSP_SCHEDULE_DELAY", "100")
}

/// The ids a W3C `traceparent` or `traceresponse` value names, checked:
/// trace id, span id, flags.
pub(crate) fn trace_context(header: &str) -> (String, String, String) {
    let parts: Vec<&str> = header.split('-').collect();
    let [version, trace_id, span_id, flags] = parts[..] else {
        panic!("{header:?} is not version-trace-span-flags")
    };
    assert_eq!(version, "00", "{header}");
    assert!(is_trace_id(trace_id), "{header}");
    assert!(is_span_id(span_id), "{header}");
    assert!(flags == "00" || flags == "01", "{header}");
    (trace_id.to_owned(), span_id.to_owned(), flags.to_owned())
}

/// The ids the response's `traceresponse` header names, if it has one.
pub(crate) fn trace_response_ids(response: &reqwest::Response) -> Option<(String, String, String)> {
    let header = response.headers().get("traceresponse")?;
    Some(trace_context(header.to_str().ok()?))
}

/// The ids the response's `traceresponse` header names: trace id, span
/// id, flags.
pub(crate) fn trace_response(response: &reqwest::Response) -> (String, String, String) {
    trace_response_ids(response).expect("a traceresponse header")
}

/// Is task's trace `task` the order's trace `order`? Fails unless it is
/// exactly when the chapter carries the context over NATS, from 04 on.
fn joined_over_nats(subject: &Subject, task: &str, order: &str) -> bool {
    let joined = task == order;
    match (joined, subject.has(4)) {
        (false, true) => {
            panic!("task's spans are in a trace of their own: NATS does not carry the context")
        }
        (true, false) => {
            panic!("task's spans are in the order's trace before chapter 04 carries it")
        }
        _ => joined,
    }
}

/// Sends `request`, checks that it is answered `status`, and returns the
/// trace its `traceresponse` names.
async fn traced(request: reqwest::RequestBuilder, status: StatusCode) -> String {
    let response = request.send().await.expect("an HTTP answer");
    assert_eq!(response.status(), status, "{}", response.url());
    trace_response(&response).0
}

/// `POST /orders` with a valid order and, if given, a `traceparent`; returns
/// the order id and what the `traceresponse` header names.
pub(crate) async fn post_order(
    api: &Api,
    traceparent: Option<&str>,
) -> (String, (String, String, String)) {
    let headers: Vec<(&str, &str)> = traceparent
        .map(|t| ("traceparent", t))
        .into_iter()
        .collect();
    post_order_with(api, &headers).await
}

/// `POST /orders` with a valid order and `headers` (a name twice sends the
/// header twice); returns the order id and what the `traceresponse` header
/// names.
pub(crate) async fn post_order_with(
    api: &Api,
    headers: &[(&str, &str)],
) -> (String, (String, String, String)) {
    let mut request = api
        .request(Method::POST, "/orders")
        .json(&order_body("1001", "A001", 2));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("sending POST /orders");
    assert_eq!(response.status(), StatusCode::CREATED);
    let ids = trace_response(&response);
    let body: serde_json::Value = response.json().await.unwrap();
    (body["order_id"].as_str().unwrap().to_owned(), ids)
}

/// Starts `system`, places one order and waits until it is handled and
/// `done(spans, order id, trace)` holds for the spans received: the system,
/// the order id, what `traceresponse` named, and the spans.
pub(crate) async fn one_order_traced(
    system: SystemBuilder,
    done: impl Fn(&[ReceivedSpan], &str, &str) -> bool,
) -> (System, String, (String, String, String), Vec<ReceivedSpan>) {
    let system = system.start().await;
    let (order_id, ids) = post_order(&system.api, None).await;
    system.api.wait_until_handled(&order_id).await;
    let spans = system
        .wait_for_spans("the spans of the order", |spans| {
            done(spans, &order_id, &ids.0)
        })
        .await;
    (system, order_id, ids, spans)
}

pub(crate) const CREATE_ORDER: &str = "orders.v1.OrderService/CreateOrder";
pub(crate) const PUSH_RESULT: &str = "orders.v1.GatewayCallback/PushResult";
/// The gateway's call that stores a result with the order, served by logic;
/// logic exports its span on its own schedule, so a contract that shows
/// the callback waits for it too.
pub(crate) const RECORD_RESULT: &str = "orders.v1.OrderService/RecordResult";

/// Has `service` sent its span `name` of trace `trace`? A service sends its
/// spans in the order they end, so once the span that ends last arrived,
/// the others have too.
pub(crate) fn sent(spans: &[ReceivedSpan], service: &str, name: &str, trace: &str) -> bool {
    spans.iter().any(|s| {
        s.service == service && s.span.name == name && trace_id_hex(&s.span.trace_id) == trace
    })
}

/// The span of `service` named `name`, in trace `trace`.
pub(crate) fn find<'a>(
    spans: &'a [ReceivedSpan],
    service: &str,
    name: &str,
    trace: &str,
) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| {
            s.service == service && s.span.name == name && trace_id_hex(&s.span.trace_id) == trace
        })
        .unwrap_or_else(|| panic!("no span {service} {name} in trace {trace}"))
}

/// A span attribute as text.
pub(crate) fn attribute(span: &ReceivedSpan, key: &str) -> Option<String> {
    crate::otlp::attribute(&span.span, key)
}

/// The trace task's handling of `order_id` started.
fn task_trace(spans: &[ReceivedSpan], order_id: &str) -> Option<String> {
    spans
        .iter()
        .find(|s| {
            s.service == "task"
                && s.span.name == "handle"
                && attribute(s, "order_id").as_deref() == Some(order_id)
        })
        .map(|s| trace_id_hex(&s.span.trace_id))
}

/// What the snapshots show of each span.
const ATTRIBUTES: &[&str] = &[
    "http.request.method",
    "http.route",
    "http.response.status_code",
    "rpc.system",
    "rpc.service",
    "rpc.method",
    "rpc.grpc.status_code",
    "db.system.name",
    "db.operation.name",
    "db.collection.name",
    "error.type",
    "order_id",
];

/// One order, as the spans the services sent show it: the trace of the
/// `POST`, from the gateway through logic to its database; task's handling
/// and its callback to the gateway, a trace of its own in chapter 03, in
/// the order's since chapter 04 carries the context over NATS. Then the
/// `GET` of an order that does not exist: an error for the gateway's call,
/// not for logic, which answered as it should; and a `POST` while logic is
/// down: an error for the gateway's call and for its request.
pub async fn one_order_as_its_spans_show_it(subject: &Subject) {
    let mut system = system(subject).start().await;
    let (order_id, (post_trace, _, flags)) = post_order(&system.api, None).await;
    assert_eq!(flags, "01", "sampled: every trace is kept by default");
    system.api.wait_until_handled(&order_id).await;
    let missing = "/orders/00000000-0000-0000-0000-000000000000";
    let get = system.api.request(Method::GET, missing);
    let get_trace = traced(get, StatusCode::NOT_FOUND).await;

    let spans = system
        .wait_for_spans("the spans of the order and of the GET", |spans| {
            sent(spans, "gateway", "POST /orders", &post_trace)
                && sent(spans, "logic", CREATE_ORDER, &post_trace)
                && task_trace(spans, &order_id).is_some_and(|task| {
                    sent(spans, "gateway", PUSH_RESULT, &task)
                        && sent(spans, "logic", RECORD_RESULT, &task)
                })
                && sent(spans, "gateway", "GET /orders/{order_id}", &get_trace)
                && sent(
                    spans,
                    "logic",
                    "orders.v1.OrderService/GetOrder",
                    &get_trace,
                )
        })
        .await;
    let task = task_trace(&spans, &order_id).unwrap();
    let one_trace = joined_over_nats(subject, &task, &post_trace);

    system.stop(Service::Logic).await;
    let post = system.api.request(Method::POST, "/orders");
    let post = post.json(&order_body("1001", "A001", 2));
    let down_trace = traced(post, StatusCode::SERVICE_UNAVAILABLE).await;
    let spans = system
        .wait_for_spans("the spans of the POST while logic is down", |spans| {
            sent(spans, "gateway", "POST /orders", &down_trace)
        })
        .await;

    let redact = |value: &str| value.replace(&order_id, "[order-1]");
    let render = |trace: &str| {
        let bytes = trace_id_bytes(trace).unwrap_or_else(|| panic!("{trace} is no trace id"));
        render_trace(&spans, &bytes, ATTRIBUTES, &redact)
    };
    let mut snapshot = format!(
        "POST /orders, the trace the gateway named in traceresponse:\n{}\n",
        render(&post_trace)
    );
    if !one_trace {
        snapshot += "task's handling of the order, a trace of its own:\n";
        snapshot += &format!("{}\n", render(&task));
    }
    snapshot += &format!(
        "GET /orders/{{order_id}} of an order that does not exist:\n{}\n\
         POST /orders while logic is down:\n{}",
        render(&get_trace),
        render(&down_trace),
    );
    subject.assert_snapshot("e2e__traces__one_order", &[3, 4], &snapshot);
}

/// gateway -> logic and task -> gateway: the server's span is the child of
/// the client's, in the client's trace, and the log lines of both sides
/// carry that trace id: task's in chapter 03, the order's since 04.
pub async fn the_trace_context_crosses_grpc_both_ways(subject: &Subject) {
    let (system, order_id, (trace, span, _), spans) =
        one_order_traced(system(subject), |spans, order_id, trace| {
            sent(spans, "gateway", "POST /orders", trace)
                && sent(spans, "logic", CREATE_ORDER, trace)
                && task_trace(spans, order_id).is_some_and(|task| {
                    sent(spans, "gateway", PUSH_RESULT, &task)
                        && sent(spans, "logic", RECORD_RESULT, &task)
                })
        })
        .await;

    // The traceresponse names the gateway's span of the request.
    let post = find(&spans, "gateway", "POST /orders", &trace);
    assert_eq!(span_id_hex(&post.span.span_id), span);
    assert!(post.span.parent_span_id.is_empty(), "a new trace");

    // gateway -> logic.
    let method = CREATE_ORDER;
    let client = find(&spans, "gateway", method, &trace);
    let server = find(&spans, "logic", method, &trace);
    assert_eq!(client.span.kind, 3, "client");
    assert_eq!(server.span.kind, 2, "server");
    assert_eq!(client.span.parent_span_id, post.span.span_id);
    assert_eq!(server.span.parent_span_id, client.span.span_id);

    // task -> gateway: a trace of task's, or since 04 the order's, which
    // NATS carried to task; the gateway continues it.
    let task = task_trace(&spans, &order_id).unwrap();
    joined_over_nats(subject, &task, &trace);
    let method = PUSH_RESULT;
    let client = find(&spans, "task", method, &task);
    let server = find(&spans, "gateway", method, &task);
    assert_eq!(server.span.parent_span_id, client.span.span_id);

    // The log lines for the order carry the same trace ids.
    for (service, message, expected) in [
        (Service::Gateway, "order accepted", &trace),
        (Service::Logic, "order created", &trace),
        (Service::Task, "order handled", &task),
        (Service::Gateway, "result received", &task),
    ] {
        let line = wait_for_line(&system, service, message, &order_id).await;
        assert_eq!(
            str_field(&line, "trace_id"),
            Some(expected.as_str()),
            "{service}: {message}"
        );
    }
}

/// A `traceparent` that is not one by W3C Trace Context starts a fresh
/// trace, and the request goes through; one of a later version is
/// continued, by the fields version 00 knows.
pub async fn a_malformed_traceparent_starts_a_fresh_trace(subject: &Subject) {
    let system = system(subject).start().await;
    let malformed = invalid_traceparents();
    let mut traces = Vec::new();
    for (case, values) in &malformed {
        let headers: Vec<(&str, &str)> =
            values.iter().map(|v| ("traceparent", v.as_str())).collect();
        let (_, (trace, _, flags)) = post_order_with(&system.api, &headers).await;
        assert!(
            !values.iter().any(|value| value.contains(&trace)),
            "{case} was taken: {:.80}",
            values.join(" ")
        );
        assert_eq!(flags, "01", "{case}");
        traces.push(trace);
    }
    let later = "0af7651916cd43dd8448eb211c80319c";
    let (_, (continued, _, _)) = post_order(&system.api, Some(&future_traceparent(later))).await;
    assert_eq!(continued, later, "a later version is continued");
    let spans = system
        .wait_for_spans("the POST of every request", |spans| {
            traces
                .iter()
                .chain([&continued])
                .all(|trace| sent(spans, "gateway", "POST /orders", trace))
        })
        .await;
    for trace in &traces {
        let post = find(&spans, "gateway", "POST /orders", trace);
        assert!(post.span.parent_span_id.is_empty(), "a root span");
    }
    let post = find(&spans, "gateway", "POST /orders", later);
    assert_eq!(span_id_hex(&post.span.parent_span_id), CLIENT_SPAN);
    traces.sort();
    traces.dedup();
    assert_eq!(traces.len(), malformed.len(), "a fresh trace each time");
}

/// A `tracestate` beyond W3C's limits (32 members, 512 characters) is
/// dropped, not forwarded: the order succeeds in the client's trace, and no
/// span carries it. One within them goes on to logic as it came.
pub async fn an_oversized_tracestate_is_dropped_and_the_order_succeeds(subject: &Subject) {
    let system = system(subject).start().await;
    let member = |i: usize| format!("{}{i:03}={}", "k".repeat(253), "v".repeat(256));
    let huge: Vec<String> = (0..31).map(member).collect();
    let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
    let cases = [
        ("31 members of 512 characters", huge.join(","), ""),
        ("33 members", many.join(","), ""),
        (
            "one member",
            "congo=t61rcWkgMzE".to_owned(),
            "congo=t61rcWkgMzE",
        ),
    ];
    for (i, (case, tracestate, kept)) in cases.iter().enumerate() {
        let client_trace = format!("{:032x}", 0x4bf9_2f35_u128 + i as u128);
        let traceparent = format!("00-{client_trace}-{CLIENT_SPAN}-01");
        let headers = [
            ("traceparent", traceparent.as_str()),
            ("tracestate", tracestate.as_str()),
        ];
        let (_, (trace, _, _)) = post_order_with(&system.api, &headers).await;
        assert_eq!(trace, client_trace, "{case}: the traceparent is continued");
        let spans = system
            .wait_for_spans("the order's spans in logic", |spans| {
                sent(spans, "logic", "INSERT orders", &trace)
            })
            .await;
        for span in spans
            .iter()
            .filter(|s| trace_id_hex(&s.span.trace_id) == trace)
        {
            assert_eq!(
                span.span.trace_state, *kept,
                "{case}: {} {}",
                span.service, span.span.name
            );
        }
    }
}

/// The line each service writes when sending its spans starts to fail.
const SENDING_FAILED: &str = "sending spans failed; they are dropped until the collector answers";

/// The lines of `service` about sending spans.
fn lines_about_spans(system: &System, service: Service) -> Vec<String> {
    system
        .stdout(service)
        .into_iter()
        .filter(|line| {
            let line = line.to_lowercase();
            line.contains("export") || line.contains("sending spans")
        })
        .collect()
}

/// With no collector listening, 100 orders go through as fast as ever, and
/// each service says once that its spans are dropped.
pub async fn with_no_collector_orders_complete_as_fast_as_ever(subject: &Subject) {
    let nobody = orders::ports::reserve().unwrap();
    let endpoint = format!("http://127.0.0.1:{nobody}");
    let system = system(subject)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .start()
        .await;

    let api = &system.api;
    let answers: Vec<(StatusCode, Duration, String)> = futures::stream::iter(0..100)
        .map(|i| async move {
            let started = Instant::now();
            let (status, body) = api
                .post_order(&order_body(&format!("u{i}"), "A001", 1))
                .await;
            let order_id = body["order_id"].as_str().unwrap_or_default().to_owned();
            (status, started.elapsed(), order_id)
        })
        .buffer_unordered(10)
        .collect()
        .await;
    assert!(
        answers
            .iter()
            .all(|(status, _, _)| *status == StatusCode::CREATED),
        "every order is accepted"
    );
    // Were spans sent on the request's path, every POST would first wait
    // out the exporter's retries, about 0.7 s. Ten at a time on a small
    // machine, half of them take well under 0.1 s either way.
    let mut took: Vec<Duration> = answers.iter().map(|(_, took, _)| *took).collect();
    took.sort();
    let median = took[took.len() / 2];
    assert!(
        median < Duration::from_millis(700),
        "median POST {median:?}"
    );
    for (_, _, order_id) in &answers {
        let order = system.api.wait_until_handled(order_id).await;
        assert_eq!(order["status"], "completed");
    }

    for service in Service::ALL {
        let warned = wait_for(
            &format!("{service} to log the failure"),
            DEADLINE,
            || async {
                logs::parse_all(&system.stdout(service))
                    .into_iter()
                    .find(|line| str_field(line, "message") == Some(SENDING_FAILED))
            },
        )
        .await;
        assert_eq!(warned["level"], "warn");
        assert_eq!(str_field(&warned, "endpoint"), Some(endpoint.as_str()));
        let about_spans = lines_about_spans(&system, service);
        assert_eq!(about_spans.len(), 1, "{service}: {about_spans:#?}");
        let stderr = system.stderr(service);
        assert!(stderr.is_empty(), "{service} wrote to stderr: {stderr:?}");
    }
}

/// However many batches fail while the collector is away, a service writes
/// two lines: one when sending starts to fail, one when it works again, with
/// the number of spans lost in between. Here every span is a batch of its
/// own and a failed batch is given up at once, so dozens fail.
pub async fn a_collector_away_is_logged_once_and_its_return_once(subject: &Subject) {
    let port = orders::ports::reserve().unwrap();
    let system = system(subject)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )
        .env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1")
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "100")
        .start()
        .await;
    for i in 0..20 {
        system
            .api
            .place_order(&order_body(&format!("u{i}"), "A001", 1))
            .await;
    }
    let _collector = OtlpReceiver::start_on(port).await.unwrap();
    let order_id = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&order_id).await;

    let back = "sending spans works again";
    let recovered = wait_for(
        "the gateway to log the collector's return",
        DEADLINE,
        || async {
            logs::parse_all(&system.stdout(Service::Gateway))
                .into_iter()
                .find(|line| str_field(line, "message") == Some(back))
        },
    )
    .await;
    let lost = recovered["lost_spans"].as_u64().unwrap();
    assert!(lost >= 20, "one failed batch per span: {lost}");
    let about_spans = lines_about_spans(&system, Service::Gateway);
    assert_eq!(about_spans.len(), 2, "{about_spans:#?}");
    assert!(about_spans[0].contains(SENDING_FAILED), "{about_spans:#?}");
}

/// A service stopped right after a request still sends that request's spans:
/// they leave on the way out, not at the next batch, 60 s later.
pub async fn sigterm_sends_the_spans_still_queued(subject: &Subject) {
    let mut system = subject
        .system()
        .env("OTEL_BSP_SCHEDULE_DELAY", "60000")
        .start()
        .await;
    let (_, (trace, _, _)) = post_order(&system.api, None).await;
    assert!(system.terminate(Service::Logic).await.success());
    assert!(system.terminate(Service::Gateway).await.success());

    system
        .wait_for_spans("the spans of the request", |spans| {
            sent(spans, "gateway", "POST /orders", &trace)
                && sent(spans, "gateway", CREATE_ORDER, &trace)
                && sent(spans, "logic", CREATE_ORDER, &trace)
                && sent(spans, "logic", "INSERT orders", &trace)
        })
        .await;
}

/// `parentbased_traceidratio` with a ratio of 0 keeps no trace a service
/// starts, and still every trace a caller started and chose to keep (flags
/// `01`). The log lines keep their trace ids either way.
pub async fn a_sampler_of_zero_keeps_only_the_traces_callers_keep(subject: &Subject) {
    let mut system = system(subject)
        .env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
        .env("OTEL_TRACES_SAMPLER_ARG", "0")
        .start()
        .await;
    let (dropped_order, (dropped, _, flags)) = post_order(&system.api, None).await;
    assert_eq!(flags, "00", "not sampled");
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{client_trace}-00f067aa0ba902b7-01");
    let (kept_order, (kept, _, flags)) = post_order(&system.api, Some(&traceparent)).await;
    assert_eq!((kept.as_str(), flags.as_str()), (client_trace, "01"));
    system.api.wait_until_handled(&dropped_order).await;
    system.api.wait_until_handled(&kept_order).await;

    // Every service sends what it has on the way out.
    for service in Service::ALL {
        assert!(system.terminate(service).await.success());
    }
    let spans = system
        .wait_for_spans("the spans of the kept trace", |spans| {
            sent(spans, "logic", "INSERT orders", client_trace)
        })
        .await;
    let elsewhere: Vec<String> = spans
        .iter()
        .filter(|s| trace_id_hex(&s.span.trace_id) != client_trace)
        .map(|s| format!("{} {}", s.service, s.span.name))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "spans of dropped traces: {elsewhere:?}"
    );
    let post = find(&spans, "gateway", "POST /orders", client_trace);
    assert_eq!(span_id_hex(&post.span.parent_span_id), "00f067aa0ba902b7");

    let accepted = logs::parse_all(&system.stdout(Service::Gateway))
        .into_iter()
        .find(|line| {
            str_field(line, "message") == Some("order accepted")
                && str_field(line, "order_id") == Some(&dropped_order)
        })
        .expect("the gateway logged the order");
    assert_eq!(str_field(&accepted, "trace_id"), Some(dropped.as_str()));
}

/// `OTEL_SERVICE_NAME` names the service in its spans, as in every
/// OpenTelemetry SDK, and in its log lines: the field `service` is the
/// spans' `service.name`, the key that joins the pillars.
pub async fn otel_service_name_wins_in_the_spans(subject: &Subject) {
    let system = system(subject)
        .env("OTEL_SERVICE_NAME", "checkout")
        .start()
        .await;
    let (order_id, (trace, _, _)) = post_order(&system.api, None).await;
    let spans = system
        .wait_for_spans("the spans of the order", |spans| {
            sent(spans, "checkout", "INSERT orders", &trace)
        })
        .await;
    assert!(spans.iter().all(|s| s.service == "checkout"));
    for (service, message) in [
        (Service::Gateway, "order accepted"),
        (Service::Logic, "order created"),
    ] {
        let line = wait_for_line(&system, service, message, &order_id).await;
        assert_eq!(line["service"], "checkout", "{service}'s line: {line:?}");
    }
}

/// `OTEL_RESOURCE_ATTRIBUTES` is what the operator says: its
/// `service.instance.id` arrives as given, not replaced by a random one,
/// and its `service.name` names the service when `OTEL_SERVICE_NAME` does
/// not, in the spans and the lines alike.
pub async fn otel_resource_attributes_arrive_as_given(subject: &Subject) {
    let system = system(subject)
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.instance.id=pod-7,service.name=shop,deployment.environment.name=test",
        )
        .start()
        .await;
    let (order_id, (trace, _, _)) = post_order(&system.api, None).await;
    let spans = system
        .wait_for_spans("the spans of the order", |spans| {
            sent(spans, "shop", "INSERT orders", &trace)
        })
        .await;
    for span in &spans {
        let attribute = |key| span.resource_attribute(key);
        assert_eq!(span.service, "shop", "{}", span.span.name);
        assert_eq!(attribute("service.instance.id").as_deref(), Some("pod-7"));
        assert_eq!(
            attribute("deployment.environment.name").as_deref(),
            Some("test")
        );
    }
    let line = wait_for_line(&system, Service::Gateway, "order accepted", &order_id).await;
    assert_eq!(line["service"], "shop", "{line:?}");
}

/// `OTEL_SDK_DISABLED=true` and `OTEL_TRACES_EXPORTER=none` each stop every
/// span from being sent: the order completes, and after every service has
/// stopped, which sends what is queued, the receiver has nothing.
pub async fn otel_sdk_disabled_or_exporter_none_sends_no_span(subject: &Subject) {
    for (variable, value) in [
        ("OTEL_SDK_DISABLED", "true"),
        ("OTEL_TRACES_EXPORTER", "none"),
    ] {
        let mut system = system(subject).env(variable, value).start().await;
        let order_id = system.api.place_order(&order_body("1001", "A001", 1)).await;
        let order = system.api.wait_until_handled(&order_id).await;
        assert_eq!(order["status"], "completed", "{variable}={value}");
        // The lines keep their trace ids: spans exist, and go nowhere.
        let accepted = wait_for_line(&system, Service::Gateway, "order accepted", &order_id).await;
        assert!(
            str_field(&accepted, "trace_id").is_some_and(is_trace_id),
            "{variable}={value}: {accepted:?}"
        );
        for service in Service::ALL {
            assert!(system.terminate(service).await.success(), "{service}");
        }
        let spans: Vec<String> = system
            .spans()
            .iter()
            .map(|s| format!("{} {}", s.service, s.span.name))
            .collect();
        assert!(spans.is_empty(), "{variable}={value} sent {spans:?}");
    }
}

/// `RUST_LOG=trace` turns on the libraries' lines, never their spans: the
/// exporter's own HTTP/2 traffic is not traced, or every batch sent would
/// make more spans to send.
pub async fn rust_log_trace_traces_no_library(subject: &Subject) {
    let system = system(subject).env("RUST_LOG", "trace").start().await;
    let (_, (trace, _, _)) = post_order(&system.api, None).await;
    let spans = system
        .wait_for_spans("the spans of the order", |spans| {
            sent(spans, "logic", "INSERT orders", &trace)
                && sent(spans, "gateway", "POST /orders", &trace)
        })
        .await;
    let h2_lines = logs::parse_all(&system.stdout(Service::Gateway))
        .into_iter()
        .filter(|line| str_field(line, "target").is_some_and(|t| t.starts_with("h2")))
        .count();
    assert!(h2_lines > 0, "RUST_LOG=trace shows h2's lines");
    // The chapter's own crate: that of the gateway's request span.
    let post = find(&spans, "gateway", "POST /orders", &trace);
    let target = attribute(post, "target").expect("a span's target");
    let own = target.split("::").next().unwrap();
    let libraries: Vec<String> = spans
        .iter()
        .filter_map(|s| attribute(s, "target"))
        .filter(|target| target.split("::").next() != Some(own))
        .collect();
    assert!(libraries.is_empty(), "spans of libraries: {libraries:?}");
}
