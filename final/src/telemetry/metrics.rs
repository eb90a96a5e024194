//! Prometheus metrics: every family of the system, and the call sites the
//! services use to record them: a middleware on the HTTP API, a layer on
//! each gRPC server, wrappers around each gRPC call, SQLite query and
//! JetStream publish (which also run each in its span, see [`super::traces`]
//! and [`super::messaging`]), a guard around each message handled, and the
//! business events.
//!
//! Each process has one [`Registry`], served as Prometheus text by
//! `GET /metrics` on the service's admin port, never on the public one. It
//! has no prefix: a prefix would rename the standard `process_*` metrics
//! too. The service name is not a label: Prometheus adds `job` (the
//! service) and `instance` (the address) when it scrapes.
//!
//! A family is registered the first time it is used, so each service shows
//! only the families it records. Every label value comes from a short list
//! known in advance (a route template, a status code, a gRPC method), never
//! from what a client sends, so no client can grow the number of series.
//!
//! The names are the API of the dashboards and alerts in `config/`: the
//! tests check that they are the same as chapter 05's.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream;
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{self, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use orders::pb::Outcome;
use orders::queue;
use orders::topology::Service;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Counter, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use super::{messaging, traces};

// Histogram buckets, in seconds. A histogram only tells in which bucket a
// value fell, so the buckets must be dense where the values are.

/// HTTP and gRPC calls take about a millisecond on loopback and the gateway
/// gives logic 2 s, so 0.5 ms to 5 s covers both the usual and the slow.
const REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// A SQLite query or a JetStream publish takes from a few hundred
/// microseconds to a few milliseconds, so the buckets start at 0.1 ms; 1 s
/// is the publish timeout.
const STORAGE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Handling a message is a few milliseconds of work and one callback that
/// task abandons after 2 s, so 0.1 ms to 2.5 s.
const HANDLE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// An order completes within milliseconds when all is well, and only after
/// seconds of redelivery backoff when task or the gateway was down: 1 ms to 30 s.
const COMPLETION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// A message waits well under a millisecond while task keeps up, and up to
/// minutes while it is down or behind; that tail is the point: 0.1 ms to 60 s.
const QUEUE_DELAY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// Everything `/metrics` shows for this process.
static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

/// Adds a metric to [`REGISTRY`] and returns it.
fn register<M: Collector + Clone + 'static>(metric: M) -> M {
    REGISTRY
        .register(Box::new(metric.clone()))
        .expect("every metric is registered once");
    metric
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter"))
}

fn histogram(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(HistogramVec::new(opts, labels).expect("a valid histogram"))
}

static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "http_requests_total",
        "HTTP requests answered, by method, route template and status code.",
        &["method", "route", "status"],
    )
});
static HTTP_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "http_request_duration_seconds",
        "Time from an HTTP request to its response headers.",
        &["method", "route", "status"],
        REQUEST_BUCKETS,
    )
});
static GRPC_SERVER_HANDLED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "grpc_server_handled_total",
        "gRPC calls this service answered, by service, method and status code.",
        &["service", "method", "code"],
    )
});
static GRPC_SERVER_HANDLING: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "grpc_server_handling_seconds",
        "Time this service took to answer a gRPC call.",
        &["service", "method", "code"],
        REQUEST_BUCKETS,
    )
});
static GRPC_CLIENT_HANDLED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "grpc_client_handled_total",
        "gRPC calls this service made, by service, method and status code.",
        &["service", "method", "code"],
    )
});
static GRPC_CLIENT_HANDLING: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "grpc_client_handling_seconds",
        "Time from making a gRPC call to its answer, or to giving up on it.",
        &["service", "method", "code"],
        REQUEST_BUCKETS,
    )
});
static MQ_PUBLISHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mq_published_total",
        "Messages published to JetStream, by subject and status (ok: stored by the stream).",
        &["subject", "status"],
    )
});
static MQ_PUBLISH_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "mq_publish_duration_seconds",
        "Time from publishing a message to JetStream's acknowledgement.",
        &["subject"],
        STORAGE_BUCKETS,
    )
});
static MQ_CONSUMED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mq_consumed_total",
        "Deliveries handled, by subject and how they were settled (ack, nak, term).",
        &["subject", "status"],
    )
});
static MQ_HANDLE_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "mq_handle_duration_seconds",
        "Time from receiving a delivery to settling it.",
        &["subject", "status"],
        HANDLE_BUCKETS,
    )
});
static MQ_QUEUE_DELAY: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "mq_queue_delay_seconds",
        "Time from JetStream storing a message to the start of its handling.",
        &["subject"],
        QUEUE_DELAY_BUCKETS,
    )
});
static MQ_REDELIVERIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "mq_redeliveries_total",
        "Deliveries of messages that had been delivered before without an ack.",
        &["subject"],
    )
});
static DB_QUERY_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "db_query_duration_seconds",
        "Time of one SQLite query, by operation.",
        &["operation"],
        STORAGE_BUCKETS,
    )
});
static ORDERS_CREATED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new("orders_created_total", "Orders stored in the database.")
            .expect("a valid counter"),
    )
});
static ORDERS_COMPLETED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "orders_completed_total",
        "Orders whose first result arrived, by outcome (completed, failed).",
        &["outcome"],
    )
});
static ORDER_COMPLETION: LazyLock<Histogram> = LazyLock::new(|| {
    let opts = HistogramOpts::new(
        "order_completion_seconds",
        "Time from the gateway receiving an order to the order's first result.",
    )
    .buckets(COMPLETION_BUCKETS.to_vec());
    register(Histogram::with_opts(opts).expect("a valid histogram"))
});

/// The `/metrics` route, to merge into the admin router of `service`.
///
/// Also registers what every process has: `process_*` (CPU, memory, file
/// descriptors, threads; the crate counts CPU time in whole seconds) and
/// `tokio_*` (the runtime). And it starts at 0 the series of `service`
/// whose label values are all known in advance: a dashboard then shows 0
/// rather than "no data", and `rate()` sees the first increment. Series of
/// statuses and codes appear when they first occur.
pub fn metrics_router(service: Service) -> Router {
    // The crate reads these from `/proc`, so they exist on Linux only.
    #[cfg(target_os = "linux")]
    REGISTRY
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("the process collector is registered once");
    REGISTRY
        .register(Box::new(RuntimeCollector::new()))
        .expect("the runtime collector is registered once");
    let subject = queue::ORDERS_CREATED;
    match service {
        Service::Gateway => {
            for outcome in ["completed", "failed"] {
                ORDERS_COMPLETED.with_label_values(&[outcome]).inc_by(0);
            }
            LazyLock::force(&ORDER_COMPLETION);
        }
        Service::Logic => {
            LazyLock::force(&ORDERS_CREATED);
            for status in ["ok", "error"] {
                MQ_PUBLISHED.with_label_values(&[subject, status]).inc_by(0);
            }
        }
        Service::Task => {
            for status in ["ack", "nak", "term"] {
                MQ_CONSUMED.with_label_values(&[subject, status]).inc_by(0);
            }
            MQ_REDELIVERIES.with_label_values(&[subject]).inc_by(0);
        }
    }
    Router::new().route("/metrics", get(serve_metrics))
}

async fn serve_metrics() -> Response {
    match TextEncoder::new().encode_to_string(&REGISTRY.gather()) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The Tokio runtime's own numbers. A [`Collector`] computes its values when
/// the registry is gathered, so these are read from the runtime at each
/// scrape rather than kept up to date. Only stable runtime metrics: the
/// others need `--cfg tokio_unstable`.
struct RuntimeCollector {
    runtime: tokio::runtime::Handle,
    workers: IntGauge,
    alive_tasks: IntGauge,
    global_queue_depth: IntGauge,
    busy_seconds: Counter,
    /// Scrapes may overlap; one at a time brings the counter up to date.
    scrape: Mutex<()>,
}

impl RuntimeCollector {
    fn new() -> Self {
        let gauge = |name, help| IntGauge::new(name, help).expect("a valid gauge");
        Self {
            runtime: tokio::runtime::Handle::current(),
            workers: gauge("tokio_workers", "Worker threads of the Tokio runtime."),
            alive_tasks: gauge("tokio_alive_tasks", "Tasks spawned and not yet finished."),
            global_queue_depth: gauge(
                "tokio_global_queue_depth",
                "Tasks waiting in the runtime's global queue for a worker.",
            ),
            busy_seconds: Counter::new(
                "tokio_busy_seconds_total",
                "Time the workers spent running tasks, summed over workers.",
            )
            .expect("a valid counter"),
            scrape: Mutex::new(()),
        }
    }
}

impl Collector for RuntimeCollector {
    fn desc(&self) -> Vec<&Desc> {
        [
            self.workers.desc(),
            self.alive_tasks.desc(),
            self.global_queue_depth.desc(),
            self.busy_seconds.desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one_at_a_time = self.scrape.lock().unwrap();
        let runtime = self.runtime.metrics();
        let workers = runtime.num_workers();
        self.workers.set(workers as i64);
        self.alive_tasks.set(runtime.num_alive_tasks() as i64);
        self.global_queue_depth
            .set(runtime.global_queue_depth() as i64);
        let busy: Duration = (0..workers)
            .map(|worker| runtime.worker_total_busy_duration(worker))
            .sum();
        // A Prometheus counter only goes up: add what is new since the last scrape.
        let new = busy.as_secs_f64() - self.busy_seconds.get();
        self.busy_seconds.inc_by(new.max(0.0));
        [
            self.workers.collect(),
            self.alive_tasks.collect(),
            self.global_queue_depth.collect(),
            self.busy_seconds.collect(),
        ]
        .concat()
    }
}

/// The `route` of requests that matched no route: one value for every
/// unknown path, so a scan of random URLs adds no series.
pub(super) const UNMATCHED: &str = "unmatched";

/// axum middleware: counts and times every request of the router it wraps.
/// Added with `Router::layer`, it runs outside the routes and sees every
/// answer: the token check's 401s, the extractors' 413s and 422s, the
/// fallback's 404s.
pub async fn track_http(request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    // The template, `/orders/{order_id}`: the raw path would make one series
    // per order.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    let labels = [method, &route, status.as_str()];
    HTTP_REQUESTS.with_label_values(&labels).inc();
    HTTP_DURATION
        .with_label_values(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The methods of RFC 9110 (and PATCH) by name; any other `other`: a client
/// may send any word as its method.
pub(super) fn method_label(method: &Method) -> &'static str {
    static KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("other", Method::as_str)
}

/// tower layer for a tonic server, `Server::builder().layer(GrpcServerLayer)`:
/// counts and times every call the server answers.
#[derive(Clone, Copy)]
pub struct GrpcServerLayer;

impl<S> tower::Layer<S> for GrpcServerLayer {
    type Service = GrpcServerMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerMetrics { inner }
    }
}

/// The service [`GrpcServerLayer`] wraps around a tonic server's routes.
#[derive(Clone)]
pub struct GrpcServerMetrics<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcServerMetrics<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // A gRPC call is an HTTP/2 POST to `/{service}/{method}`.
        let path = request.uri().path().to_owned();
        let started = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            let code = match &answer {
                Ok(response) => grpc_code(response),
                Err(_) => tonic::Code::Unknown,
            };
            // tonic answers a path it has no route for with `Unimplemented`
            // (no handler here returns it): count all such calls under one
            // name, as the HTTP fallback does.
            let (service, method) = match code {
                tonic::Code::Unimplemented => ("unknown", "unknown"),
                _ => split_grpc_path(&path),
            };
            // On the call's span too.
            traces::grpc_server_code(code);
            record_grpc(
                &GRPC_SERVER_HANDLED,
                &GRPC_SERVER_HANDLING,
                [service, method, code_name(code)],
                started,
            );
            answer
        })
    }
}

/// The status of a unary call as a tonic server answers it: an error is in
/// the response headers (a "trailers-only" response); a success has none
/// there and sends `grpc-status: 0` in the trailers after the message. (A
/// streaming call could still fail in its trailers; this system has none.)
fn grpc_code<B>(response: &http::Response<B>) -> tonic::Code {
    match response.headers().get("grpc-status") {
        Some(code) => tonic::Code::from_bytes(code.as_bytes()),
        None if response.status() == StatusCode::OK => tonic::Code::Ok,
        None => tonic::Code::Unknown,
    }
}

/// `/orders.v1.OrderService/CreateOrder` as
/// (`orders.v1.OrderService`, `CreateOrder`).
pub(super) fn split_grpc_path(path: &str) -> (&str, &str) {
    path.strip_prefix('/')
        .and_then(|path| path.split_once('/'))
        .unwrap_or(("unknown", "unknown"))
}

/// Counts and times one gRPC call this service makes, e.g.
/// `grpc_client("orders.v1.OrderService", "CreateOrder", logic.create_order(request))`.
pub async fn grpc_client<T>(
    service: &'static str,
    method: &'static str,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<tonic::Response<T>, tonic::Status> {
    // The call runs in a client span.
    let call = traces::grpc_client_span(service, method, call);
    let mut record = ClientCall {
        service,
        method,
        started: Instant::now(),
        code: tonic::Code::DeadlineExceeded,
    };
    let answer = call.await;
    record.code = match &answer {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    answer
}

/// Records a client call when dropped: after its answer, or when the caller
/// stopped waiting for one. The callers wait with `tokio::time::timeout`,
/// which drops the call at the deadline, so a call dropped before its answer
/// is counted as `DeadlineExceeded` (rarely, it was an HTTP client of the
/// gateway that hung up first).
struct ClientCall {
    service: &'static str,
    method: &'static str,
    started: Instant,
    code: tonic::Code,
}

impl Drop for ClientCall {
    fn drop(&mut self) {
        record_grpc(
            &GRPC_CLIENT_HANDLED,
            &GRPC_CLIENT_HANDLING,
            [self.service, self.method, code_name(self.code)],
            self.started,
        );
    }
}

fn record_grpc(
    handled: &IntCounterVec,
    handling: &HistogramVec,
    labels: [&str; 3],
    started: Instant,
) {
    handled.with_label_values(&labels).inc();
    handling
        .with_label_values(&labels)
        .observe(started.elapsed().as_secs_f64());
}

/// A status code as gRPC's own libraries and the usual dashboards spell it.
pub(super) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// Counts and times one publish to JetStream, up to the stream's ack.
pub async fn mq_publish<T, E: std::fmt::Display>(
    subject: &str,
    publish: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = Instant::now();
    // In a producer span, whose context the message carries.
    let result = messaging::producer_span(subject, publish).await;
    let status = if result.is_ok() { "ok" } else { "error" };
    MQ_PUBLISHED.with_label_values(&[subject, status]).inc();
    MQ_PUBLISH_DURATION
        .with_label_values(&[subject])
        .observe(started.elapsed().as_secs_f64());
    result
}

/// One delivery of a message, from [`MessageHandling::start`] to
/// [`MessageHandling::finish`].
pub struct MessageHandling {
    subject: String,
    started: Instant,
}

impl MessageHandling {
    /// Records how long the message waited in the stream, and whether it
    /// was delivered before.
    pub fn start(message: &jetstream::Message) -> Self {
        // The consumer's filter makes `orders.created` the only subject; a
        // subject carrying an id would need mapping to a bounded label.
        let subject = message.subject.to_string();
        if let Ok(info) = message.info() {
            // The server's clock against ours: on one host they agree; across
            // hosts a skew shows here, and a negative wait counts as 0.
            let waited = SystemTime::now()
                .duration_since(SystemTime::from(info.published))
                .unwrap_or_default();
            MQ_QUEUE_DELAY
                .with_label_values(&[&subject])
                .observe(waited.as_secs_f64());
            if info.delivered > 1 {
                MQ_REDELIVERIES.with_label_values(&[&subject]).inc();
            }
        }
        Self {
            subject,
            started: Instant::now(),
        }
    }

    /// Records how the delivery was settled: `ack` (done), `nak` (to be
    /// redelivered) or `term` (never to be redelivered).
    pub fn finish(self, status: &'static str) {
        // On the delivery's consumer span too.
        messaging::settled(status);
        let labels = [self.subject.as_str(), status];
        MQ_CONSUMED.with_label_values(&labels).inc();
        MQ_HANDLE_DURATION
            .with_label_values(&labels)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// Times one SQLite query; `operation` is its verb: `insert`, `select`,
/// `update`.
pub async fn db_query<T, E: std::fmt::Display>(
    operation: &'static str,
    query: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = Instant::now();
    // In a client span.
    let result = traces::db_span(operation, query).await;
    DB_QUERY_DURATION
        .with_label_values(&[operation])
        .observe(started.elapsed().as_secs_f64());
    result
}

/// logic stored an order.
pub fn order_created() {
    ORDERS_CREATED.inc();
}

/// Orders on their way, by id: when the gateway received each one, or when
/// its result arrived if that came first. task's callback can beat logic's
/// answer to the gateway, since logic publishes before it answers.
static IN_FLIGHT: LazyLock<Mutex<HashMap<String, Milestone>>> = LazyLock::new(Default::default);

/// Beyond this many orders in flight, those older than [`FORGET_AFTER`] are
/// dropped: an order whose result never comes must not hold memory forever.
const IN_FLIGHT_LIMIT: usize = 10_000;
const FORGET_AFTER: Duration = Duration::from_secs(600);

enum Milestone {
    Received(Instant),
    Completed(Instant),
}

/// The gateway accepted an order it received at `received`.
pub fn order_accepted(order_id: &str, received: Instant) {
    let mut in_flight = IN_FLIGHT.lock().unwrap();
    match in_flight.remove(order_id) {
        Some(Milestone::Completed(at)) => {
            ORDER_COMPLETION.observe(at.duration_since(received).as_secs_f64());
        }
        _ => remember(&mut in_flight, order_id, Milestone::Received(received)),
    }
}

/// The first result of an order arrived at the gateway. Called only for the
/// first, so a redelivered callback does not count an order twice.
pub fn order_completed(order_id: &str, outcome: Outcome) {
    let outcome = match outcome {
        Outcome::Failed => "failed",
        _ => "completed",
    };
    ORDERS_COMPLETED.with_label_values(&[outcome]).inc();
    let mut in_flight = IN_FLIGHT.lock().unwrap();
    match in_flight.remove(order_id) {
        Some(Milestone::Received(received)) => {
            ORDER_COMPLETION.observe(received.elapsed().as_secs_f64());
        }
        _ => remember(
            &mut in_flight,
            order_id,
            Milestone::Completed(Instant::now()),
        ),
    }
}

fn remember(in_flight: &mut HashMap<String, Milestone>, order_id: &str, milestone: Milestone) {
    if in_flight.len() >= IN_FLIGHT_LIMIT {
        in_flight.retain(|_, milestone| {
            let (Milestone::Received(at) | Milestone::Completed(at)) = milestone;
            at.elapsed() < FORGET_AFTER
        });
    }
    in_flight.insert(order_id.to_owned(), milestone);
}

/// Lines for the banner of `all`: where to look at each service's metrics.
pub(super) fn banner_hints(topology: &orders::Topology) -> Vec<String> {
    let mut hints = vec!["Metrics, on each service's admin port:".to_owned()];
    for (service, family) in [
        (Service::Gateway, "http_requests_total"),
        (Service::Logic, "orders_created_total"),
        (Service::Task, "mq_consumed_total"),
    ] {
        hints.push(format!(
            "  curl -s http://{}/metrics | grep {family:<20} # {service}",
            topology.admin(service)
        ));
    }
    hints
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_is_timed_whichever_milestone_comes_first() {
        let before = ORDER_COMPLETION.get_sample_count();
        order_accepted("accepted-first", Instant::now());
        order_completed("accepted-first", Outcome::Completed);
        // task's callback beat logic's answer to the gateway.
        order_completed("completed-first", Outcome::Failed);
        order_accepted("completed-first", Instant::now());

        assert_eq!(ORDER_COMPLETION.get_sample_count(), before + 2);
        assert!(IN_FLIGHT.lock().unwrap().is_empty(), "nothing left behind");
    }
}
