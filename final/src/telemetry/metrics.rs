//! Prometheus metrics: every family a service records, its buckets, and the
//! `/metrics` route that serves them as Prometheus text.
//!
//! Each process has one [`Registry`], owned by [`Metrics`]. It has no
//! prefix: a prefix would rename the standard `process_*` metrics too. The
//! service name is not a label here: Prometheus adds `job` (the service) and
//! `instance` (the address) when it scrapes.
//!
//! Every family is registered, but a family shows on `/metrics` only once it
//! has a series, so each service shows only the families it records. Every
//! label value comes from a short list known in advance (a route template, a
//! status code, a gRPC method), never from what a client sends: each
//! distinct label value is a new time series, and a label a client controls
//! lets it grow the series count without end.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use orders::Topology;
use orders::pb::Outcome;
use orders::queue;
use orders::topology::Service;
use prometheus::core::Collector;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

use super::names::code_name;

mod buckets;
mod process;
mod runtime;

use buckets::*;

/// The registry of one process and every family in it. Counters are
/// `IntCounterVec`s, durations `HistogramVec`s in seconds; the label names
/// of each are in [`Metrics::new`].
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    grpc_server_handled: IntCounterVec,
    grpc_server_handling: HistogramVec,
    grpc_client_handled: IntCounterVec,
    grpc_client_handling: HistogramVec,
    mq_published: IntCounterVec,
    mq_publish_duration: HistogramVec,
    mq_consumed: IntCounterVec,
    mq_handle_duration: HistogramVec,
    mq_queue_delay: HistogramVec,
    mq_redeliveries: IntCounterVec,
    mq_dead_lettered: IntCounterVec,
    db_query_duration: HistogramVec,
    orders_created: IntCounterVec,
    orders_completed: IntCounterVec,
    order_completion: HistogramVec,
    fault_setting: GaugeVec,
}

impl Metrics {
    /// Registers every family, `process_*` (CPU to the microsecond, memory,
    /// file descriptors, threads) and `tokio_*`
    /// (the runtime; call this inside it). And it starts at 0 the series of
    /// `service` that are known in advance, see [`Metrics::start_at_zero`].
    ///
    /// Errors: a name registered twice, which is a bug of this file.
    pub fn new(service: Service) -> prometheus::Result<Self> {
        let registry = Registry::new();
        // ANCHOR: families
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels)?,
            )
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            register(&registry, HistogramVec::new(opts, labels)?)
        };
        let http = ["method", "route", "status"];
        let grpc = ["service", "method", "code"];
        let metrics = Self {
            http_requests: counter(
                "http_requests_total",
                "HTTP requests answered, by method, route template and status code.",
                &http,
            )?,
            http_duration: histogram(
                "http_request_duration_seconds",
                "Time from an HTTP request to its response headers.",
                &http,
                REQUEST_BUCKETS,
            )?,
            grpc_server_handled: counter(
                "grpc_server_handled_total",
                "gRPC calls this service answered, by service, method and status code.",
                &grpc,
            )?,
            grpc_server_handling: histogram(
                "grpc_server_handling_seconds",
                "Time this service took to answer a gRPC call.",
                &grpc,
                REQUEST_BUCKETS,
            )?,
            grpc_client_handled: counter(
                "grpc_client_handled_total",
                "gRPC calls this service made, by service, method and status code.",
                &grpc,
            )?,
            grpc_client_handling: histogram(
                "grpc_client_handling_seconds",
                "Time from making a gRPC call to its answer, or to giving up on it.",
                &grpc,
                REQUEST_BUCKETS,
            )?,
            mq_published: counter(
                "mq_published_total",
                "Messages published to JetStream, by subject and status (ok: stored by the stream).",
                &["subject", "status"],
            )?,
            mq_publish_duration: histogram(
                "mq_publish_duration_seconds",
                "Time from publishing a message to JetStream's acknowledgement.",
                &["subject"],
                STORAGE_BUCKETS,
            )?,
            mq_consumed: counter(
                "mq_consumed_total",
                "Deliveries handled, by subject and how they were settled (ack, nak, term, dead_letter).",
                &["subject", "status"],
            )?,
            mq_handle_duration: histogram(
                "mq_handle_duration_seconds",
                "Time from receiving a delivery to settling it.",
                &["subject", "status"],
                HANDLE_BUCKETS,
            )?,
            mq_queue_delay: histogram(
                "mq_queue_delay_seconds",
                "Time from JetStream storing a message to the start of its handling.",
                &["subject"],
                QUEUE_DELAY_BUCKETS,
            )?,
            mq_redeliveries: counter(
                "mq_redeliveries_total",
                "Deliveries of messages that had been delivered before without an ack.",
                &["subject"],
            )?,
            mq_dead_lettered: counter(
                "mq_dead_lettered_total",
                "Messages whose last delivery failed, moved to the dead-letter stream.",
                &["subject"],
            )?,
            db_query_duration: histogram(
                "db_query_duration_seconds",
                "Time of one SQLite query, by operation.",
                &["operation"],
                STORAGE_BUCKETS,
            )?,
            orders_created: counter(
                "orders_created_total",
                "Orders stored in the database.",
                &[],
            )?,
            orders_completed: counter(
                "orders_completed_total",
                "Orders whose first result arrived, by outcome (completed, failed).",
                &["outcome"],
            )?,
            order_completion: histogram(
                "order_completion_seconds",
                "Time from logic storing an order to its first result reaching a gateway.",
                &[],
                COMPLETION_BUCKETS,
            )?,
            fault_setting: register(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "fault_setting",
                        "The setting of each fault of this service, 0 when off (final's incidents).",
                    ),
                    &["fault"],
                )?,
            )?,
            registry,
        };
        // ANCHOR_END: families
        metrics
            .registry
            .register(Box::new(process::ProcessCollector::for_self()))?;
        metrics
            .registry
            .register(Box::new(runtime::RuntimeCollector::new()))?;
        metrics.start_at_zero(service);
        Ok(metrics)
    }

    // ANCHOR: start_at_zero
    /// The series of `service` that exist from the start, at 0: every one
    /// whose label values are known in advance, and above all every one that
    /// the recording rules, alerts and dashboards in `config/` read.
    /// `rate()` and `increase()` see an increment only between two samples,
    /// so a series that first appears with its first increment loses it: 3
    /// orders of 82 answered 503 (3.7%, over the 1.5% of the slow-burn
    /// alert) read as 0 in `slo:post_orders_errors:ratio_rate1h`, and the
    /// alert stays silent. A dashboard would also say "no data" rather than 0.
    ///
    /// What reads which series:
    /// - the availability SLI (`slo:post_orders_errors:*`, alerts
    ///   `OrdersAvailabilityBurn*`): `http_requests_total` of `POST /orders`,
    ///   every status, its 5xx over all of them;
    /// - the latency SLI (`slo:post_orders_slow:*`, `OrdersLatencyBurn*`):
    ///   `http_request_duration_seconds` of `POST /orders`, not 4xx;
    /// - `OrdersNotCompleting`: `orders_created_total` and
    ///   `orders_completed_total`; `QueueDelayGrowing`: `mq_queue_delay_seconds`;
    ///   `OrdersDeadLettered`: `mq_dead_lettered_total`;
    /// - the dashboards: each route by status, each gRPC method by code (its
    ///   errors, `code!="OK"`, over all), each JetStream and SQLite family.
    ///
    /// So each status a route answers ([`HTTP_ANSWERS`]) and each code a gRPC
    /// call ends with ([`GRPC_ANSWERS`]) starts at 0, in the counter and in
    /// the histogram of its family alike.
    fn start_at_zero(&self, service: Service) {
        let subject = queue::ORDERS_CREATED;
        let http = |method: &str, route: &str, status: &str| {
            let labels = [method, route, status];
            self.http_requests.with_label_values(&labels).inc_by(0);
            self.http_duration.with_label_values(&labels);
        };
        let grpc_server = |service: &str, method: &str, code: &str| {
            let labels = [service, method, code];
            self.grpc_server_handled
                .with_label_values(&labels)
                .inc_by(0);
            self.grpc_server_handling.with_label_values(&labels);
        };
        let grpc_client = |service: &str, method: &str, code: &str| {
            let labels = [service, method, code];
            self.grpc_client_handled
                .with_label_values(&labels)
                .inc_by(0);
            self.grpc_client_handling.with_label_values(&labels);
        };
        // The services each process serves, and those it calls.
        let (serves, calls) = match service {
            Service::Gateway => (GATEWAY_CALLBACK, ORDER_SERVICE),
            Service::Logic => (ORDER_SERVICE, ""),
            Service::Task => ("", GATEWAY_CALLBACK),
        };
        for &(grpc_service, method, codes) in GRPC_ANSWERS {
            for &code in codes {
                if grpc_service == serves {
                    grpc_server(grpc_service, method, code);
                }
                if grpc_service == calls {
                    grpc_client(grpc_service, method, code);
                }
            }
            // A caller also ends a call itself: past its deadline, or when
            // it cannot connect.
            if grpc_service == calls {
                for code in [tonic::Code::DeadlineExceeded, tonic::Code::Unavailable] {
                    grpc_client(grpc_service, method, code_name(code));
                }
            }
        }
        match service {
            Service::Gateway => {
                for &(method, route, statuses) in HTTP_ANSWERS {
                    for &status in statuses {
                        http(method, route, status);
                    }
                }
                for outcome in ["completed", "failed"] {
                    self.orders_completed
                        .with_label_values(&[outcome])
                        .inc_by(0);
                }
                self.order_completion.with_label_values::<&str>(&[]);
            }
            Service::Logic => {
                self.orders_created.with_label_values::<&str>(&[]).inc_by(0);
                for status in ["ok", "error"] {
                    self.mq_published
                        .with_label_values(&[subject, status])
                        .inc_by(0);
                }
                self.mq_publish_duration.with_label_values(&[subject]);
                for operation in ["insert", "select", "update"] {
                    self.db_query_duration.with_label_values(&[operation]);
                }
            }
            Service::Task => {
                for status in ["ack", "nak", "term", "dead_letter"] {
                    self.mq_consumed
                        .with_label_values(&[subject, status])
                        .inc_by(0);
                    self.mq_handle_duration
                        .with_label_values(&[subject, status]);
                }
                self.mq_redeliveries.with_label_values(&[subject]).inc_by(0);
                self.mq_dead_lettered
                    .with_label_values(&[subject])
                    .inc_by(0);
                self.mq_queue_delay.with_label_values(&[subject]);
            }
        }
    }
    // ANCHOR_END: start_at_zero

    /// Every family, as Prometheus text format 0.0.4.
    ///
    /// Errors: a family the encoder rejects, which is a bug of this file.
    pub fn encode(&self) -> prometheus::Result<String> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }

    /// One HTTP request answered: `method` and `route` come from
    /// [`super::names`], never from the raw request.
    pub fn http_request(&self, method: &str, route: &str, status: StatusCode, took: Duration) {
        let labels = [method, route, status.as_str()];
        self.http_requests.with_label_values(&labels).inc();
        self.http_duration
            .with_label_values(&labels)
            .observe(took.as_secs_f64());
    }

    /// A fault of this service was set to `value` (0: off).
    pub fn fault_set(&self, fault: &str, value: f64) {
        self.fault_setting.with_label_values(&[fault]).set(value);
    }

    /// One gRPC call this server answered with `code`.
    pub fn grpc_server_call(&self, service: &str, method: &str, code: tonic::Code, took: Duration) {
        let labels = [service, method, code_name(code)];
        self.grpc_server_handled.with_label_values(&labels).inc();
        self.grpc_server_handling
            .with_label_values(&labels)
            .observe(took.as_secs_f64());
    }

    // ANCHOR: grpc_client
    /// Starts timing one gRPC call this service makes; the call is recorded
    /// when the returned guard is dropped.
    pub fn grpc_client_call(&self, service: &'static str, method: &'static str) -> ClientCall<'_> {
        ClientCall {
            metrics: self,
            service,
            method,
            started: Instant::now(),
            code: tonic::Code::DeadlineExceeded,
        }
    }
    // ANCHOR_END: grpc_client

    /// One publish to JetStream, up to the stream's ack or a failure.
    pub fn mq_published(&self, subject: &str, stored: bool, took: Duration) {
        let status = if stored { "ok" } else { "error" };
        self.mq_published
            .with_label_values(&[subject, status])
            .inc();
        self.mq_publish_duration
            .with_label_values(&[subject])
            .observe(took.as_secs_f64());
    }

    // ANCHOR: messaging
    /// A delivery of `message` begins: how long the message waited in the
    /// stream, and whether it was delivered before.
    pub fn mq_delivered(&self, message: &jetstream::Message) {
        // The consumer's filter makes `orders.created` the only subject; a
        // subject carrying an id would need mapping to a bounded label.
        let subject = message.subject.as_str();
        if let Ok(info) = message.info() {
            // The server's clock against ours: on one host they agree; across
            // hosts a skew shows here, and a negative wait counts as 0.
            let waited = SystemTime::now()
                .duration_since(SystemTime::from(info.published))
                .unwrap_or_default();
            self.mq_queue_delay
                .with_label_values(&[subject])
                .observe(waited.as_secs_f64());
            if info.delivered > 1 {
                self.mq_redeliveries.with_label_values(&[subject]).inc();
            }
        }
    }

    /// A delivery was settled `status` (`ack`, `nak`, `term`, or
    /// `dead_letter`: its last delivery failed and it was moved to the
    /// dead-letter stream, which also counts in `mq_dead_lettered_total`),
    /// `took` after it was received.
    pub fn mq_settled(&self, subject: &str, status: &str, took: Duration) {
        let labels = [subject, status];
        self.mq_consumed.with_label_values(&labels).inc();
        self.mq_handle_duration
            .with_label_values(&labels)
            .observe(took.as_secs_f64());
        if status == "dead_letter" {
            self.mq_dead_lettered.with_label_values(&[subject]).inc();
        }
    }
    // ANCHOR_END: messaging

    /// One SQLite query; `operation` is its verb: `insert`, `select`, `update`.
    pub fn db_query(&self, operation: &str, took: Duration) {
        self.db_query_duration
            .with_label_values(&[operation])
            .observe(took.as_secs_f64());
    }

    // ANCHOR: business
    /// logic stored an order.
    pub fn order_created(&self) {
        self.orders_created.with_label_values::<&str>(&[]).inc();
    }

    /// The first result of an order arrived at the gateway; logic stored the
    /// order at `created_at_unix_ms` (its clock: the time comes with the
    /// stored order, so the gateway keeps nothing per order, and any gateway
    /// can receive the result). Called only for the first result, so a
    /// redelivered callback does not count an order twice.
    pub fn order_completed(&self, outcome: Outcome, created_at_unix_ms: i64) {
        let outcome = match outcome {
            Outcome::Failed => "failed",
            _ => "completed",
        };
        self.orders_completed.with_label_values(&[outcome]).inc();
        // Clocks of two hosts can disagree: never a negative duration.
        let took_ms = (orders::domain::unix_millis() - created_at_unix_ms).max(0);
        self.order_completion
            .with_label_values::<&str>(&[])
            .observe(took_ms as f64 / 1000.0);
    }
    // ANCHOR_END: business
}

/// The statuses each route of the gateway's API answers, for
/// [`Metrics::start_at_zero`]: a success; a refusal (bad JSON 400, no token
/// 401, too large 413, not JSON 415, bad fields 422; no such order 404);
/// or logic failing: unreachable 503, too slow 504, anything else 502.
const HTTP_ANSWERS: &[(&str, &str, &[&str])] = &[
    (
        "POST",
        "/orders",
        &[
            "201", "400", "401", "413", "415", "422", "502", "503", "504",
        ],
    ),
    (
        "GET",
        "/orders/{order_id}",
        &["200", "401", "404", "502", "503", "504"],
    ),
];

const ORDER_SERVICE: &str = "orders.v1.OrderService";
const GATEWAY_CALLBACK: &str = "orders.v1.GatewayCallback";

/// The codes each gRPC method answers, for [`Metrics::start_at_zero`]: OK,
/// a refusal, or a store that failed (`Unavailable`).
const GRPC_ANSWERS: &[(&str, &str, &[&str])] = &[
    (
        ORDER_SERVICE,
        "CreateOrder",
        &["OK", "InvalidArgument", "Unavailable"],
    ),
    (
        ORDER_SERVICE,
        "GetOrder",
        &["OK", "NotFound", "Unavailable"],
    ),
    (GATEWAY_CALLBACK, "PushResult", &["OK", "InvalidArgument"]),
];

fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> prometheus::Result<M> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

// ANCHOR: client_call
/// Records a client call when dropped: after its answer, or when the caller
/// stopped waiting for one. The callers wait with `tokio::time::timeout`,
/// which drops the call at the deadline, so a call dropped before its answer
/// is counted as `DeadlineExceeded` (rarely, it was an HTTP client of the
/// gateway that hung up first).
pub struct ClientCall<'a> {
    metrics: &'a Metrics,
    service: &'static str,
    method: &'static str,
    started: Instant,
    code: tonic::Code,
}

impl ClientCall<'_> {
    /// The call was answered with `code`.
    pub fn answered(&mut self, code: tonic::Code) {
        self.code = code;
    }
}

impl Drop for ClientCall<'_> {
    fn drop(&mut self) {
        let labels = [self.service, self.method, code_name(self.code)];
        let metrics = self.metrics;
        metrics.grpc_client_handled.with_label_values(&labels).inc();
        metrics
            .grpc_client_handling
            .with_label_values(&labels)
            .observe(self.started.elapsed().as_secs_f64());
    }
}
// ANCHOR_END: client_call

// ANCHOR: metrics_router
/// The `/metrics` route, to merge into the admin router: never on the
/// public port.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .with_state(metrics)
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
// ANCHOR_END: metrics_router

/// Lines for the banner of `all`: where to look at each service's metrics.
pub fn banner_hints(topology: &Topology) -> Vec<String> {
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
