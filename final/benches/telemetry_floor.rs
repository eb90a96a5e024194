//! The floor of final's telemetry: what one order's spans, log lines and
//! metric updates cost in CPU time when nothing else happens.
//!
//! The system itself spends its time on the network, SQLite and NATS, so a
//! load test cannot say which part of its CPU is telemetry. This benchmark
//! makes one order's telemetry in-process, with final's own code: the
//! facade's wrappers (`track_http`, `grpc_client`, `grpc_server_span` and
//! `grpc_server_layer`, `db_query`, `mq_publish`, `mq_process`), the
//! subscriber of `Telemetry::subscriber` (the OpenTelemetry layer and the
//! JSON lines, with their filters) and the batch span processor of
//! `telemetry::batch_provider`. The work they wrap is an answer that is
//! ready at once. What changes: spans go to an exporter that only counts
//! them, lines to a writer that only counts them, and the context crosses from one service to
//! the next in headers held in memory rather than sent.
//!
//! Three ways, each one order (13 spans and 5 lines, as in chapter 04's
//! snapshots of one order, which [`check`] compares; 15 metric updates):
//! - `off`: the same requests through the same axum routing and tower
//!   services, without any telemetry;
//! - `metrics`: the wrappers, with no `tracing` subscriber: metrics are
//!   counted, spans and lines are not made;
//! - `all pillars`: the wrappers and the subscriber, as final runs.
//!
//! And one of each: a span, a log line, a histogram observation.
//!
//! Time is the process's CPU time (user + system, all threads, from
//! `getrusage`), not wall time: the batch processor works on a thread of
//! its own, and its work is part of the cost. `cargo bench -p final`.

use std::convert::Infallible;
use std::future::ready;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap as NatsHeaders;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{self, HeaderMap, StatusCode};
use axum::middleware;
use axum::routing::post;
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use orders::pb::Outcome;
use orders::topology::Service;
use orders_final::telemetry::{self, InjectContext, Telemetry, TraceRelation};
use tonic::service::Interceptor as _;
use tower::{Layer as _, ServiceExt as _};
use tracing::{Dispatch, Instrument as _};

/// The order every replay places.
const ORDER_ID: &str = "0193a1f2-7b7c-7cc3-98c4-2f1e9d3b5a61";

/// A JetStream ack subject of a first delivery: what `message.info()`
/// parses for the consumer span's delivery count.
const ACK_SUBJECT: &str = "$JS.ACK.ORDERS.task.1.1.1.1764590000000000000.0";

// ---------------------------------------------------------------------
// Where the telemetry goes

/// A span exporter that counts the spans it is given and drops them: the
/// batch processor's work is measured, not a network's. While `names` is
/// `Some`, it keeps their names too, for [`check`].
#[derive(Debug, Clone, Default)]
struct CountSpans {
    count: Arc<AtomicUsize>,
    names: Arc<Mutex<Option<Vec<String>>>>,
}

impl SpanExporter for CountSpans {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.count.fetch_add(batch.len(), Ordering::Relaxed);
        if let Some(names) = self.names.lock().unwrap().as_mut() {
            names.extend(batch.iter().map(|span| span.name.to_string()));
        }
        Ok(())
    }
}

/// A writer that counts the lines written to it and drops them.
#[derive(Debug, Clone, Default)]
struct CountLines(Arc<AtomicUsize>);

impl std::io::Write for CountLines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let lines = bytes.iter().filter(|b| **b == b'\n').count();
        self.0.fetch_add(lines, Ordering::Relaxed);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One service of the replay: its telemetry, and the subscriber its spans
/// and lines are made in.
struct Node {
    service: Service,
    telemetry: Telemetry,
    provider: SdkTracerProvider,
    subscriber: Dispatch,
    spans: CountSpans,
    lines: CountLines,
}

impl Node {
    fn new(service: Service) -> Node {
        let spans = CountSpans::default();
        let lines = CountLines::default();
        let provider = telemetry::batch_provider(&service.to_string(), spans.clone());
        let telemetry = Telemetry::new(service, provider.clone()).expect("metrics register once");
        let writer = lines.clone();
        let subscriber = telemetry.subscriber(service.to_string(), move || writer.clone());
        Node {
            service,
            telemetry,
            provider,
            subscriber: Dispatch::new(subscriber),
            spans,
            lines,
        }
    }
}

// ---------------------------------------------------------------------
// One order

/// How much telemetry a replay makes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pillars {
    Off,
    Metrics,
    All,
}

/// The three services of one order and a runtime to run them on (one
/// thread: every span is made on it).
struct Replay {
    runtime: tokio::runtime::Runtime,
    gateway: Node,
    logic: Node,
    task: Node,
    api: Router,
    api_off: Router,
    jetstream: async_nats::jetstream::Context,
}

impl Replay {
    fn new() -> Replay {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let _inside = runtime.enter();
        let (gateway, logic, task) = (
            Node::new(Service::Gateway),
            Node::new(Service::Logic),
            Node::new(Service::Task),
        );
        let api = Router::new()
            .route("/orders", post(create_order))
            .layer(middleware::from_fn_with_state(
                gateway.telemetry.clone(),
                telemetry::track_http,
            ))
            .with_state(gateway.telemetry.clone());
        let api_off = Router::new().route("/orders", post(create_order_off));
        // A client that never connects: a jetstream message needs one to
        // be acked with, and the replay never acks.
        let client = runtime.block_on(async {
            async_nats::ConnectOptions::new()
                .retry_on_initial_connect()
                .connect("127.0.0.1:1")
                .await
                .expect("a client that connects later")
        });
        Replay {
            gateway,
            logic,
            task,
            api,
            api_off,
            jetstream: async_nats::jetstream::new(client),
            runtime,
        }
    }

    /// Runs `step` as `node`'s process would: in its subscriber, or in
    /// none when only metrics are counted.
    fn on<T>(&self, node: &Node, pillars: Pillars, step: impl Future<Output = T>) -> T {
        let none = Dispatch::none();
        let subscriber = match pillars {
            Pillars::All => &node.subscriber,
            Pillars::Metrics | Pillars::Off => &none,
        };
        tracing::dispatcher::with_default(subscriber, || self.runtime.block_on(step))
    }

    /// One order, service by service, each hop's context carried in the
    /// headers the previous one wrote.
    fn order(&self, pillars: Pillars) {
        let (gateway, logic, task) = (&self.gateway, &self.logic, &self.task);
        let metadata = self.on(gateway, pillars, self.post_order(pillars));
        let message = self.on(logic, pillars, create_order_call(logic, pillars, metadata));
        let metadata = self.on(task, pillars, self.deliver(message, pillars));
        let metadata = self.on(
            gateway,
            pillars,
            push_result_call(gateway, pillars, metadata),
        );
        self.on(logic, pillars, record_result_call(logic, pillars, metadata));
    }

    /// gateway: `POST /orders` through the API's router; answers the
    /// metadata of its call to logic.
    async fn post_order(&self, pillars: Pillars) -> HeaderMap {
        let router = match pillars {
            Pillars::Off => self.api_off.clone(),
            Pillars::Metrics | Pillars::All => self.api.clone(),
        };
        let request = http::Request::post("/orders")
            .header("content-type", "application/json")
            .body(Body::from(
                r#"{"user_id":"1001","product_id":"A001","quantity":2}"#,
            ))
            .expect("a request");
        let response = router.oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::CREATED);
        response.headers().clone()
    }

    /// task: one delivery of the message logic published, with its
    /// callback to the gateway; answers the callback's metadata.
    async fn deliver(&self, headers: NatsHeaders, pillars: Pillars) -> HeaderMap {
        let message = async_nats::jetstream::Message {
            message: async_nats::Message {
                subject: "orders.created".into(),
                reply: Some(ACK_SUBJECT.into()),
                payload: ORDER_ID.into(),
                headers: Some(headers),
                status: None,
                description: None,
                length: ORDER_ID.len(),
            },
            context: self.jetstream.clone(),
        };
        if pillars == Pillars::Off {
            return HeaderMap::new();
        }
        let telemetry = &self.task.telemetry;
        let callback = Arc::new(std::sync::Mutex::new(HeaderMap::new()));
        let handle = |_message, handling: telemetry::MessageHandling| {
            let callback = callback.clone();
            async move {
                let call =
                    telemetry.grpc_client("orders.v1.GatewayCallback", "PushResult", grpc_call());
                let metadata = call.await.expect("ready").into_inner();
                tracing::info!(outcome = ?Outcome::Completed, delivery = 1, "order handled");
                handling.finish("ack");
                *callback.lock().unwrap() = metadata;
            }
            .instrument(tracing::info_span!("handle", order_id = ORDER_ID))
        };
        telemetry
            .mq_process(message, TraceRelation::Parent, handle)
            .await;
        callback.lock().unwrap().clone()
    }
}

/// A gRPC call whose answer is ready at once: the metadata the interceptor
/// wrote, which the next service reads its context from.
async fn grpc_call() -> Result<tonic::Response<HeaderMap>, tonic::Status> {
    let request = InjectContext.call(tonic::Request::new(()))?;
    Ok(tonic::Response::new(
        request.metadata().clone().into_headers(),
    ))
}

/// gateway's handler of `POST /orders`: the call to logic, then the line.
async fn create_order(
    State(telemetry): State<Telemetry>,
    axum::Json(_order): axum::Json<serde_json::Value>,
) -> (StatusCode, HeaderMap) {
    let answer = telemetry
        .grpc_client("orders.v1.OrderService", "CreateOrder", grpc_call())
        .await;
    tracing::info!(order_id = ORDER_ID, "order accepted");
    (StatusCode::CREATED, answer.expect("ready").into_inner())
}

/// The same handler, with no telemetry.
async fn create_order_off(
    axum::Json(_order): axum::Json<serde_json::Value>,
) -> (StatusCode, HeaderMap) {
    (StatusCode::CREATED, HeaderMap::new())
}

/// A gRPC server's handling of `path`, called with `metadata`: in the call's
/// span, through the counting layer, as tonic runs it with final's
/// `trace_fn` and `layer`. `handle` is the method.
async fn serve_grpc<T: Send + 'static>(
    node: &Node,
    pillars: Pillars,
    path: &str,
    metadata: HeaderMap,
    handle: impl Future<Output = T> + Send + 'static,
) -> T {
    let mut request = http::Request::post(path).body(()).expect("a request");
    *request.headers_mut() = metadata;
    // Called once: `oneshot`.
    let mut handle = Some(handle);
    let method = tower::service_fn(move |_: http::Request<()>| {
        let handle = handle.take().expect("called once");
        async move {
            let mut response = http::Response::new(handle.await);
            response
                .headers_mut()
                .insert("grpc-status", http::HeaderValue::from_static("0"));
            Ok::<_, Infallible>(response)
        }
    });
    let response = if pillars == Pillars::Off {
        method.oneshot(request).await
    } else {
        let span = telemetry::grpc_server_span(&request);
        node.telemetry
            .grpc_server_layer()
            .layer(method)
            .oneshot(request)
            .instrument(span)
            .await
    };
    response.expect("infallible").into_body()
}

/// A SQLite query that is done at once.
fn query() -> impl Future<Output = Result<(), Infallible>> {
    ready(Ok(()))
}

/// logic's `CreateOrder`: insert, publish, mark published; answers the
/// message's headers.
async fn create_order_call(logic: &Node, pillars: Pillars, metadata: HeaderMap) -> NatsHeaders {
    let telemetry = logic.telemetry.clone();
    let method = async move {
        if pillars == Pillars::Off {
            return NatsHeaders::new();
        }
        telemetry.db_query("insert", query()).await.expect("ready");
        telemetry.order_created();
        tracing::info!(
            order_id = ORDER_ID,
            product_id = "A001",
            quantity = 2,
            "order created"
        );
        let publish = async { Ok::<_, Infallible>(telemetry::message_headers(ORDER_ID)) };
        let headers = telemetry.mq_publish("orders.created", publish).await;
        telemetry.db_query("update", query()).await.expect("ready");
        headers.expect("ready")
    };
    let path = "/orders.v1.OrderService/CreateOrder";
    serve_grpc(logic, pillars, path, metadata, method).await
}

/// gateway's `PushResult`: the result forwarded to logic, then counted.
async fn push_result_call(gateway: &Node, pillars: Pillars, metadata: HeaderMap) -> HeaderMap {
    let telemetry = gateway.telemetry.clone();
    let method = async move {
        if pillars == Pillars::Off {
            return HeaderMap::new();
        }
        let call = telemetry.grpc_client("orders.v1.OrderService", "RecordResult", grpc_call());
        let metadata = call.await.expect("ready").into_inner();
        telemetry.order_completed(Outcome::Completed, now_unix_ms());
        tracing::info!(
            order_id = ORDER_ID,
            outcome = ?Outcome::Completed,
            delivery = 1,
            recorded = true,
            "result received"
        );
        metadata
    };
    let path = "/orders.v1.GatewayCallback/PushResult";
    serve_grpc(gateway, pillars, path, metadata, method).await
}

/// logic's `RecordResult`: one update.
async fn record_result_call(logic: &Node, pillars: Pillars, metadata: HeaderMap) {
    let telemetry = logic.telemetry.clone();
    let method = async move {
        if pillars != Pillars::Off {
            telemetry.db_query("update", query()).await.expect("ready");
        }
    };
    let path = "/orders.v1.OrderService/RecordResult";
    serve_grpc(logic, pillars, path, metadata, method).await
}

fn now_unix_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    since.as_millis() as i64
}

// ---------------------------------------------------------------------
// CPU time as criterion's measurement

/// The CPU time of the whole process, user and system, every thread:
/// `getrusage(RUSAGE_SELF)`, to the microsecond.
struct ProcessCpu;

fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage of this process");
    let micros =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    micros(usage.user_time()) + micros(usage.system_time())
}

impl Measurement for ProcessCpu {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        cpu_time()
    }
    fn end(&self, started: Duration) -> Duration {
        cpu_time().saturating_sub(started)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Nanoseconds of CPU, shown in the unit that suits them.
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical_ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = match typical_ns {
            t if t < 1e3 => (1.0, "ns cpu"),
            t if t < 1e6 => (1e-3, "µs cpu"),
            t if t < 1e9 => (1e-6, "ms cpu"),
            _ => (1e-9, "s cpu"),
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    fn scale_throughputs(&self, _: f64, _: &Throughput, values: &mut [f64]) -> &'static str {
        values.iter_mut().for_each(|v| *v = 1e9 / *v);
        "elem/cpu-s"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns cpu"
    }
}

// ---------------------------------------------------------------------
// The benchmarks

fn one_order(c: &mut Criterion<ProcessCpu>) {
    let replay = Replay::new();
    check(&replay);
    let mut group = c.benchmark_group("one order");
    for (name, pillars) in [
        ("off", Pillars::Off),
        ("metrics", Pillars::Metrics),
        ("all pillars", Pillars::All),
    ] {
        group.bench_function(name, |b| b.iter(|| replay.order(pillars)));
    }
    group.finish();
}

fn one_of_each(c: &mut Criterion<ProcessCpu>) {
    let replay = Replay::new();
    let node = &replay.logic;
    let mut group = c.benchmark_group("one of each");
    group.bench_function("span", |b| {
        b.iter(|| {
            tracing::dispatcher::with_default(&node.subscriber, || {
                tracing::info_span!(
                    "grpc call",
                    otel.name = "orders.v1.OrderService/CreateOrder"
                )
                .in_scope(|| {})
            })
        })
    });
    // What each poll of an instrumented future costs: its span entered and
    // left again. The running system does this about 80 times per order,
    // six times per span (BENCHMARKS.md, "per poll, not per span").
    group.bench_function("span entered again", |b| {
        tracing::dispatcher::with_default(&node.subscriber, || {
            let span = tracing::info_span!("grpc request");
            b.iter(|| drop(span.enter()))
        })
    });
    group.bench_function("log line", |b| {
        tracing::dispatcher::with_default(&node.subscriber, || {
            let span = tracing::info_span!("grpc request");
            let _inside = span.enter();
            b.iter(|| tracing::info!(order_id = ORDER_ID, quantity = 2, "order created"))
        })
    });
    group.bench_function("metric update", |b| {
        b.iter(|| {
            replay
                .runtime
                .block_on(node.telemetry.db_query("update", query()))
        })
    });
    group.finish();
}

/// Before measuring: one order with every pillar makes the spans and the
/// lines of chapter 04's snapshots of one order, which final's tests check
/// final against. Fails when the replay and final have drifted apart.
fn check(replay: &Replay) {
    let nodes = [&replay.gateway, &replay.logic, &replay.task];
    for node in nodes {
        *node.spans.names.lock().unwrap() = Some(Vec::new());
    }
    replay.order(Pillars::All);
    let mut spans = Vec::new();
    for node in nodes {
        node.provider.force_flush().expect("spans flushed");
        let names = node.spans.names.lock().unwrap().take().unwrap_or_default();
        spans.extend(
            names
                .into_iter()
                .map(|name| format!("{} {name}", node.service)),
        );
    }
    spans.sort();
    let snapshot = include_str!(
        "../../chapters/04-nats-tracing/tests/e2e/snapshots/e2e__messaging__one_order_parent.snap"
    );
    let mut expected: Vec<String> = snapshot
        .lines()
        .skip_while(|line| *line != "---")
        .skip(1)
        .skip_while(|line| *line != "---")
        .skip(1)
        .map(|line| {
            // `service kind name [attributes] (link ...)`
            let mut words = line.split_whitespace();
            let service = words.next().unwrap_or_default();
            let _kind = words.next();
            let name: Vec<&str> = words.take_while(|w| !w.starts_with(['[', '('])).collect();
            format!("{service} {}", name.join(" "))
        })
        .collect();
    expected.sort();
    assert_eq!(spans, expected, "the spans of one order");

    let lines: usize = nodes
        .iter()
        .map(|n| n.lines.0.load(Ordering::Relaxed))
        .sum();
    let logs = include_str!(
        "../../chapters/04-nats-tracing/tests/e2e/snapshots/e2e__logs__one_order.snap"
    );
    let expected = logs.lines().filter(|line| line.starts_with('{')).count();
    assert_eq!(lines, expected, "the log lines of one order");
}

criterion_group! {
    name = floor;
    config = Criterion::default().with_measurement(ProcessCpu);
    targets = one_order, one_of_each
}
criterion_main!(floor);
