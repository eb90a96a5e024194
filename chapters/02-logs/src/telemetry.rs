//! The telemetry facade: the one module the services call. [`init`] sets up
//! everything a service process reports and returns a [`Telemetry`] handle
//! that owns it; the handle's methods are the call sites' wrappers (an HTTP
//! middleware, a layer on each gRPC server, a wrapper around each gRPC call,
//! SQLite query, JetStream publish and message handled, and the business
//! events), and [`Telemetry::shutdown`] sends what is still buffered.
//!
//! Each pillar is a module of its own below this one, and they never import
//! each other: only this file combines them, so each can be read alone.
//! [`names`] holds the names they all use.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use async_nats::jetstream;
use axum::Router;
use axum::extract::{Request, State};
use axum::http;
use axum::middleware::Next;
use axum::response::Response;
use futures::future::BoxFuture;
use opentelemetry::global;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::trace::SdkTracerProvider;
use orders::Topology;
use orders::pb::Outcome;
use orders::topology::Service;
use tracing::{Instrument, Level};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;

mod logs;
mod metrics;
mod names;
mod propagation;

use metrics::Metrics;

// ANCHOR: init
/// What [`init`] set up for one service process. Cheap to clone: every
/// clone shares the same registry.
#[derive(Clone)]
pub struct Telemetry {
    metrics: Arc<Metrics>,
}

/// What is logged when `RUST_LOG` is not set: `info` and up, but only
/// warnings from the libraries that would otherwise describe every
/// connection and frame.
const DEFAULT_FILTER: &str =
    "info,h2=warn,hyper=warn,tonic=warn,tower=warn,async_nats=warn,sqlx=warn";

/// Sets up the telemetry of `service`. Called once per process, inside the
/// Tokio runtime (the runtime's metrics are read from it).
///
/// Errors: a metric registered twice, which is a bug; a second call (the
/// `tracing` subscriber is set once per process).
pub fn init(service: Service) -> anyhow::Result<Telemetry> {
    let metrics = Arc::new(Metrics::new(service)?);

    // ANCHOR: subscriber
    // W3C Trace Context: how a trace id travels in a `traceparent` header,
    // checked by W3C's rules before it is trusted.
    global::set_text_map_propagator(propagation::W3cTraceContext::default());
    // A tracer provider without an exporter: spans get ids, and go nowhere.
    let tracer = SdkTracerProvider::builder()
        .build()
        .tracer(env!("CARGO_PKG_NAME"));
    // `RUST_LOG` chooses which events are written. Spans of level INFO and
    // up exist whatever it says, so that a warning still has the trace id
    // of its request when RUST_LOG=warn.
    let spans = filter_fn(|metadata| metadata.is_span() && *metadata.level() <= Level::INFO);
    let subscriber = tracing_subscriber::registry().with(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // What the layer does by default and nothing here reads, each
            // a cost on every span: the source location and the thread
            // as attributes, the busy and idle time (a clock read at
            // every enter and exit), and an OpenTelemetry `Context` made
            // current at every enter (for OpenTelemetry's own
            // instrumentation, which these services do not use). Off,
            // one order's telemetry costs a quarter less (the floor
            // benchmark: 92 to 70 µs of CPU, BENCHMARKS.md).
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .and_then(logs::JsonLines::new(service.name(), std::io::stdout))
            .with_filter(logs::event_filter(DEFAULT_FILTER).or(spans)),
    );
    tracing::subscriber::set_global_default(subscriber)?;
    // ANCHOR_END: subscriber
    Ok(Telemetry { metrics })
}

impl Telemetry {
    /// The routes of the admin port: `/metrics`.
    pub fn admin_routes(&self) -> Router {
        metrics::router(self.metrics.clone())
    }

    /// Sends what is still buffered, on the way out of the process.
    /// Prometheus pulls metrics, so nothing waits to be sent.
    pub async fn shutdown(self) {}
}
// ANCHOR_END: init

// ANCHOR: http
/// axum middleware for the public API, added with
/// `middleware::from_fn_with_state(telemetry, telemetry::track_http)`:
/// counts and times every request, handles it in a span of its own, and
/// ends it with one access line. As the outermost layer it sees every
/// answer: the token check's 401s, the extractors' 413s and 422s, the
/// fallback's 404s.
pub async fn track_http(
    State(telemetry): State<Telemetry>,
    request: Request,
    next: Next,
) -> Response {
    let method = names::method_label(request.method());
    let route = names::route(&request);
    let span = tracing::info_span!("http request", method, route);

    // ANCHOR: extract
    // Continue the client's trace when it sent a valid `traceparent`. With
    // none, or a malformed one, the context is empty and the span starts a
    // new trace; the request goes on either way.
    let client = global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    // Before the span is first entered: once started, its parent is fixed.
    let _ = span.set_parent(client);
    // ANCHOR_END: extract

    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let took = started.elapsed();
    let status = response.status();
    telemetry.metrics.http_request(method, &route, status, took);
    span.in_scope(|| logs::access_line(status, took));
    response
}
// ANCHOR_END: http

// ANCHOR: grpc
/// The span each gRPC call is handled in:
/// `Server::builder().trace_fn(telemetry::grpc_server_span)`.
pub fn grpc_server_span(request: &http::Request<()>) -> tracing::Span {
    tracing::info_span!(
        "grpc request",
        rpc = names::grpc_method_name(request.uri().path())
    )
}
// ANCHOR_END: grpc

// ANCHOR: grpc_server
impl Telemetry {
    /// tower layer for a tonic server,
    /// `Server::builder().layer(telemetry.grpc_server_layer())`: counts and
    /// times every call the server answers.
    pub fn grpc_server_layer(&self) -> GrpcServerLayer {
        GrpcServerLayer {
            telemetry: self.clone(),
        }
    }
}

/// See [`Telemetry::grpc_server_layer`].
#[derive(Clone)]
pub struct GrpcServerLayer {
    telemetry: Telemetry,
}

impl<S> tower::Layer<S> for GrpcServerLayer {
    type Service = GrpcServerCalls<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerCalls {
            inner,
            telemetry: self.telemetry.clone(),
        }
    }
}

/// The service [`GrpcServerLayer`] wraps around a tonic server's routes.
#[derive(Clone)]
pub struct GrpcServerCalls<S> {
    inner: S,
    telemetry: Telemetry,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcServerCalls<S>
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
        let telemetry = self.telemetry.clone();
        Box::pin(async move {
            let answer = answer.await;
            let code = match &answer {
                Ok(response) => names::grpc_code(response),
                Err(_) => tonic::Code::Unknown,
            };
            // tonic answers a path it has no route for with `Unimplemented`
            // (no handler here returns it): count all such calls under one
            // name, as the HTTP fallback does.
            let (service, method) = match code {
                tonic::Code::Unimplemented => ("unknown", "unknown"),
                _ => names::split_grpc_path(&path),
            };
            telemetry
                .metrics
                .grpc_server_call(service, method, code, started.elapsed());
            answer
        })
    }
}
// ANCHOR_END: grpc_server

impl Telemetry {
    // ANCHOR: grpc_client
    /// Counts and times one gRPC call this service makes, e.g.
    /// `telemetry.grpc_client("orders.v1.OrderService", "CreateOrder", logic.create_order(request))`.
    /// A call the caller stops waiting for counts as `DeadlineExceeded`.
    pub async fn grpc_client<T>(
        &self,
        service: &'static str,
        method: &'static str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<tonic::Response<T>, tonic::Status> {
        let mut timing = self.metrics.grpc_client_call(service, method);
        let answer = call.await;
        timing.answered(match &answer {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        });
        answer
    }
    // ANCHOR_END: grpc_client

    // ANCHOR: db
    /// Times one SQLite query; `operation` is its verb: `insert`, `select`,
    /// `update`.
    pub async fn db_query<T, E>(
        &self,
        operation: &'static str,
        query: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = query.await;
        self.metrics.db_query(operation, started.elapsed());
        result
    }
    // ANCHOR_END: db

    // ANCHOR: messaging
    /// Counts and times one publish to JetStream, up to the stream's ack.
    pub async fn mq_publish<T, E>(
        &self,
        subject: &str,
        publish: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = publish.await;
        self.metrics
            .mq_published(subject, result.is_ok(), started.elapsed());
        result
    }

    /// Runs `handle` on one delivery of `message`:
    /// `telemetry.mq_process(message, |message, handling| handle(message, handling))`.
    /// `handle` says how it settled the delivery with [`MessageHandling::finish`].
    pub async fn mq_process<F: Future<Output = ()>>(
        &self,
        message: jetstream::Message,
        handle: impl FnOnce(jetstream::Message, MessageHandling) -> F,
    ) {
        self.metrics.mq_delivered(&message);
        let handling = MessageHandling {
            telemetry: self.clone(),
            subject: message.subject.to_string(),
            received: Instant::now(),
        };
        handle(message, handling).await;
    }
}

/// One delivery of a message being handled, from [`Telemetry::mq_process`]
/// to [`MessageHandling::finish`].
pub struct MessageHandling {
    telemetry: Telemetry,
    subject: String,
    received: Instant,
}

impl MessageHandling {
    /// Records how the delivery was settled: `ack` (done), `nak` (to be
    /// redelivered), `term` (never to be redelivered) or `dead_letter`
    /// (moved to the dead-letter stream after its last delivery failed).
    pub fn finish(self, status: &'static str) {
        let took = self.received.elapsed();
        self.telemetry
            .metrics
            .mq_settled(&self.subject, status, took);
    }
}
// ANCHOR_END: messaging

// ANCHOR: business
impl Telemetry {
    /// logic stored an order.
    pub fn order_created(&self) {
        self.metrics.order_created();
    }

    /// The first result of an order, stored by logic at
    /// `created_at_unix_ms`, arrived at the gateway. Called only for the
    /// first, so a redelivered callback does not count an order twice.
    pub fn order_completed(&self, outcome: Outcome, created_at_unix_ms: i64) {
        self.metrics.order_completed(outcome, created_at_unix_ms);
    }
}
// ANCHOR_END: business

/// Lines for the banner of `all`: where to look at what each pillar shows.
pub fn banner_hints(topology: &Topology) -> Vec<String> {
    let mut hints = metrics::banner_hints(topology);
    hints.extend(logs::banner_hints());
    hints
}
