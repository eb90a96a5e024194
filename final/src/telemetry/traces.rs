//! Traces: spans go to a collector (Tempo, Jaeger, the OpenTelemetry
//! Collector) over OTLP/gRPC, and the trace context crosses every gRPC call:
//! the client injects it into the call's metadata, the server extracts it
//! and continues the caller's trace. NATS carries it too (see
//! [`super::messaging`]), so an order is one trace, from the gateway's
//! `POST /orders` to the gateway's `PushResult`.
//!
//! Spans are named and described by OpenTelemetry's semantic conventions:
//! `POST /orders` (server), `orders.v1.OrderService/CreateOrder` (client,
//! then server), `INSERT orders` (client). tracing-opentelemetry reads two
//! fields of a `tracing` span as instructions: `otel.name` (the span's name)
//! and `otel.kind`. The attributes are set on the OpenTelemetry span with
//! `set_attribute`, not as fields of the `tracing` span, which would be
//! written on every log line inside it too.
//!
//! Telemetry must never hurt the service. Spans wait in a bounded queue and
//! a background thread sends them in batches: when the collector is slow or
//! gone, spans are dropped, requests are not slowed and memory does not grow.
//! A collector that is down costs one log line, not one per batch. On the
//! way out, [`shutdown_traces`] sends what is still queued.
//!
//! The SDK and the exporter read the standard variables themselves (they
//! are listed in `--help`): `OTEL_EXPORTER_OTLP_ENDPOINT` (default
//! `http://localhost:4317`), `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, `OTEL_BSP_*` (the
//! batching), `OTEL_RESOURCE_ATTRIBUTES`. Only `OTEL_SERVICE_NAME` needs a
//! line, because each service has a name of its own when it is unset.

use std::fmt::Display;
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{self, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::Injector;
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::{KeyValue, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use orders::Topology;
use orders::pb::{gateway_callback_server, order_service_server};
use orders::topology::Service;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::{Instrument, Metadata, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::logs::HeaderExtractor;
use super::metrics::{UNMATCHED, code_name, split_grpc_path};

/// This process's tracer provider, kept to send its last spans at exit.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The tracer provider of `service`: its spans go in batches over OTLP/gRPC
/// to the collector at `OTEL_EXPORTER_OTLP_ENDPOINT`. Called inside the
/// Tokio runtime: the exporter's gRPC channel runs on it.
pub(super) fn tracer_provider(service: Service) -> anyhow::Result<SdkTracerProvider> {
    // Where to and how long to wait: the OTEL_EXPORTER_OTLP_* variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let provider = SdkTracerProvider::builder()
        // A background thread sends the spans every 5 s, or as soon as 512
        // are waiting, from a queue of at most 2048: a span ended while the
        // queue is full is dropped, never waited for (OTEL_BSP_*).
        .with_batch_exporter(ReportFailures::new(exporter))
        .with_resource(resource(service))
        // ANCHOR: sampler
        // No sampler here: the SDK reads OTEL_TRACES_SAMPLER and
        // OTEL_TRACES_SAMPLER_ARG. The default, `parentbased_always_on`,
        // keeps every new trace and follows the caller's choice for the
        // others; `parentbased_traceidratio` with 0.1 keeps one new trace
        // in ten, and still every trace a caller chose to keep.
        .build();
    // ANCHOR_END: sampler
    let _ = PROVIDER.set(provider.clone());
    Ok(provider)
}

/// Who sends the spans. `service.name` is the word the log lines have as
/// `service` and Prometheus as `job`: the key that joins the three in
/// Grafana. `OTEL_SERVICE_NAME` wins when it is set, as in every OpenTelemetry
/// SDK; the logs and metrics keep their word, so leave it unset.
fn resource(service: Service) -> Resource {
    // Reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none_or(|name| name.is_empty()) {
        resource = resource.with_service_name(service.name());
    }
    resource
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            // One per process: tells apart two copies of a service, or a
            // service before and after a restart.
            KeyValue::new("service.instance.id", uuid::Uuid::new_v4().to_string()),
        ])
        .build()
}

// ANCHOR: shutdown_traces
/// Sends the spans still waiting in the queue; called on the way out of the
/// process. Without it the spans of the last few seconds are lost, those of
/// the requests answered just before a SIGTERM among them. `shutdown` blocks
/// until they are sent, or for 5 s at most, and sending them needs the
/// runtime's threads, so it runs on a thread of its own.
pub async fn shutdown_traces() {
    let Some(provider) = PROVIDER.get().cloned() else {
        return; // `all`, which makes no spans
    };
    match tokio::task::spawn_blocking(move || provider.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "sending the last spans failed"),
        Err(e) => tracing::warn!(error = %e, "sending the last spans failed"),
    }
}
// ANCHOR_END: shutdown_traces

/// The OTLP exporter, reporting a collector that is down once rather than
/// once per batch. The SDK logs every failed batch at ERROR: a line every
/// few seconds from every service for as long as the collector is away.
/// This logs the changes instead: a warning when sending starts to fail, a
/// line when it works again, with the number of spans lost in between; and
/// it tells the SDK every batch went well, so that the SDK does not log it
/// again. The exporter's own warnings are left out by the log filter.
#[derive(Debug)]
struct ReportFailures<E> {
    inner: E,
    failing: AtomicBool,
    lost: AtomicUsize,
}

impl<E> ReportFailures<E> {
    fn new(inner: E) -> Self {
        Self {
            inner,
            failing: AtomicBool::new(false),
            lost: AtomicUsize::new(0),
        }
    }
}

impl<E: SpanExporter> SpanExporter for ReportFailures<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        match self.inner.export(batch).await {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    let lost_spans = self.lost.swap(0, Ordering::Relaxed);
                    tracing::info!(lost_spans, "sending spans works again");
                }
            }
            Err(e) => {
                self.lost.fetch_add(spans, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        endpoint = %otlp_endpoint(),
                        error = %e,
                        "sending spans failed; they are dropped until the collector answers"
                    );
                }
            }
        }
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Where spans go, as the exporter finds it.
fn otlp_endpoint() -> String {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .find_map(|name| std::env::var(name).ok().filter(|url| !url.is_empty()))
    .unwrap_or_else(|| "http://localhost:4317".to_owned())
}

/// The libraries the OTLP exporter sends with. `RUST_LOG` may turn on their
/// debug and trace lines, never their spans: the exporter's own HTTP/2
/// traffic would be traced, and every batch sent would make spans to send.
const TRANSPORT: [&str; 4] = ["h2", "hyper", "tonic", "tower"];

/// For the log filter: false for a span of [`TRANSPORT`].
pub(super) fn not_a_transport_span(metadata: &Metadata<'_>) -> bool {
    let transport = TRANSPORT
        .iter()
        .any(|lib| metadata.target().starts_with(lib));
    !(metadata.is_span() && transport)
}

/// The name of the span of an HTTP request: `POST /orders`, the method and
/// the route template; the method alone for a path no route matched, and
/// `HTTP` for a method outside the known ones. Never the raw path: names
/// group spans, and each order id would make a name of its own.
pub(super) fn http_span_name(method: &str, route: &str) -> String {
    match (method, route) {
        ("other", _) => "HTTP".to_owned(),
        (method, UNMATCHED) => method.to_owned(),
        (method, route) => format!("{method} {route}"),
    }
}

/// The attributes of the span of an HTTP request, as the request arrives.
pub(super) fn http_request(span: &Span, method: &str, route: &str) {
    let method = if method == "other" { "_OTHER" } else { method };
    span.set_attribute("http.request.method", method.to_owned());
    if route != UNMATCHED {
        span.set_attribute("http.route", route.to_owned());
    }
}

/// The attributes of the span of an HTTP request, once it is answered. A
/// 5xx is an error of this server; a 4xx is the client's, and is not.
pub(super) fn http_response(span: &Span, status: StatusCode) {
    span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.set_attribute("error.type", status.as_str().to_owned());
        span.set_status(Status::error(""));
    }
}

/// axum middleware, inside the request's span: answers with a
/// `traceresponse` header (W3C Trace Context Level 2) that names the trace
/// and the span of the request, `00-<trace id>-<span id>-<flags>`, so that
/// the client can look the request up in Tempo. Flags `01`: the trace was
/// kept; `00`: the sampler dropped it.
pub async fn trace_response(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let context = Span::current().context();
    let span = context.span();
    let ids = span.span_context();
    if ids.is_valid() {
        let value = format!(
            "00-{}-{}-{:02x}",
            ids.trace_id(),
            ids.span_id(),
            ids.trace_flags().to_u8()
        );
        if let Ok(value) = HeaderValue::try_from(value) {
            response.headers_mut().insert("traceresponse", value);
        }
    }
    response
}

/// A gRPC channel whose calls carry the caller's trace context:
/// `OrderServiceClient::with_interceptor(channel, telemetry::InjectContext)`.
pub type TracedChannel = InterceptedService<Channel, InjectContext>;

/// A tonic interceptor, run as each call starts: writes the context of the
/// current span into the call's metadata, as a W3C `traceparent` (and
/// `tracestate`). The current span is the call's client span: `grpc_client`
/// runs every call inside one.
#[derive(Clone, Copy)]
pub struct InjectContext;

impl Interceptor for InjectContext {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let context = Span::current().context();
        global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut MetadataInjector(request.metadata_mut()));
        });
        Ok(request)
    }
}

/// Lets the propagator write into a call's metadata.
struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// The server side of a gRPC call, for the span tonic handles it in (see
/// `grpc_server_span`): continues the caller's trace, and describes the
/// call. The caller's interceptor wrote its context into the metadata,
/// which arrives as HTTP/2 headers. With none, or a malformed one, the
/// context is empty and the span starts a new trace; the call goes on
/// either way.
pub(super) fn grpc_server(span: &Span, request: &http::Request<()>) {
    let caller = global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    // Before tonic first enters the span: once started, its parent is fixed.
    let _ = span.set_parent(caller);
    let (service, method) = grpc_method(request.uri().path());
    grpc_attributes(span, service, method);
}

/// The methods of `orders.proto`, as (service, method).
const GRPC_METHODS: [(&str, &str); 3] = [
    (order_service_server::SERVICE_NAME, "CreateOrder"),
    (order_service_server::SERVICE_NAME, "GetOrder"),
    (gateway_callback_server::SERVICE_NAME, "PushResult"),
];

/// The method a call's path names, `(unknown, unknown)` for a path that names
/// none of ours: a client must not be able to invent span names.
fn grpc_method(path: &str) -> (&'static str, &'static str) {
    let called = split_grpc_path(path);
    GRPC_METHODS
        .into_iter()
        .find(|known| *known == called)
        .unwrap_or(("unknown", "unknown"))
}

/// The name of the span of a gRPC call to `path`, on either side:
/// `orders.v1.OrderService/CreateOrder`.
pub(super) fn grpc_span_name(path: &str) -> String {
    let (service, method) = grpc_method(path);
    format!("{service}/{method}")
}

fn grpc_attributes(span: &Span, service: &'static str, method: &'static str) {
    span.set_attribute("rpc.system", "grpc");
    span.set_attribute("rpc.service", service);
    span.set_attribute("rpc.method", method);
}

/// Records how a gRPC call ended on the span `span`; an error when `failed`.
fn grpc_code(span: &Span, code: tonic::Code, failed: bool, message: &str) {
    span.set_attribute("rpc.grpc.status_code", code as i64);
    if failed {
        span.set_attribute("error.type", code_name(code));
        span.set_status(Status::error(message.to_owned()));
    }
}

/// Records how this server answered a call, on the call's span, the current
/// one. Only the codes that mean the server failed are errors; a client's
/// mistake, such as `InvalidArgument` or `NotFound`, is not.
pub(super) fn grpc_server_code(code: tonic::Code) {
    use tonic::Code;
    let failed = matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    );
    grpc_code(&Span::current(), code, failed, "");
}

/// The client span of a gRPC call: `grpc_client` runs every call in one. The
/// interceptor ([`InjectContext`]) sends this span's context along, so the
/// server's span is its child.
pub(super) async fn grpc_client_span<T>(
    service: &'static str,
    method: &'static str,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<tonic::Response<T>, tonic::Status> {
    let span = tracing::info_span!(
        "grpc call",
        otel.name = format!("{service}/{method}"),
        otel.kind = "client",
    );
    grpc_attributes(&span, service, method);
    let mut ending = ClientSpanEnd {
        span: span.clone(),
        code: tonic::Code::DeadlineExceeded,
        message: "the caller stopped waiting".to_owned(),
    };
    let answer = call.instrument(span).await;
    match &answer {
        Ok(_) => ending.code = tonic::Code::Ok,
        Err(status) => {
            ending.code = status.code();
            ending.message = status.message().to_owned();
        }
    }
    answer
}

/// Records how a call ended when dropped: after its answer, or when the
/// caller stopped waiting at its deadline, as `DeadlineExceeded`.
struct ClientSpanEnd {
    span: Span,
    code: tonic::Code,
    message: String,
}

impl Drop for ClientSpanEnd {
    fn drop(&mut self) {
        let failed = self.code != tonic::Code::Ok;
        grpc_code(&self.span, self.code, failed, &self.message);
    }
}

/// The client span of one SQLite query: `db_query` runs every query in one,
/// named by the operation and the table, `INSERT orders` (every query of
/// this system is on `orders`). A query outside every request makes no
/// span: the outbox sweep reads the table every second, and a trace per
/// sweep would bury the traces of the orders.
pub(super) async fn db_span<T, E: Display>(
    operation: &'static str,
    query: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    if Span::current().is_none() {
        return query.await;
    }
    let operation = operation.to_ascii_uppercase();
    let span = tracing::info_span!(
        "db query",
        otel.name = format!("{operation} orders"),
        otel.kind = "client",
    );
    span.set_attribute("db.system.name", "sqlite");
    span.set_attribute("db.operation.name", operation);
    span.set_attribute("db.collection.name", "orders");
    let result = query.instrument(span.clone()).await;
    if let Err(e) = &result {
        span.set_attribute("error.type", std::any::type_name::<E>());
        span.set_status(Status::error(e.to_string()));
    }
    result
}

/// Lines for the banner of `all`: where the spans go, and how to find the
/// trace of a request.
pub(super) fn banner_hints(topology: &Topology) -> Vec<String> {
    let token = std::env::var("API_TOKEN").unwrap_or_else(|_| orders::DEFAULT_API_TOKEN.to_owned());
    vec![
        format!(
            "Traces: spans go over OTLP/gRPC to {} (OTEL_EXPORTER_OTLP_ENDPOINT).",
            otlp_endpoint()
        ),
        "  With no collector listening the services work the same; each logs once that its spans are dropped."
            .to_owned(),
        "The gateway names each request's trace in a traceresponse header, to paste into Tempo:"
            .to_owned(),
        format!(
            "  curl -si -X POST http://{}/orders -H 'Authorization: Bearer {token}' \\\n    -H 'Content-Type: application/json' -d '{{\"user_id\":\"1001\",\"product_id\":\"A001\",\"quantity\":2}}' | grep -i traceresponse",
            topology.gateway_http
        ),
    ]
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn span_names_never_carry_what_a_client_sent() {
        assert_eq!(http_span_name("POST", "/orders"), "POST /orders");
        assert_eq!(http_span_name("GET", UNMATCHED), "GET");
        assert_eq!(http_span_name("other", "/orders"), "HTTP");
        assert_eq!(
            grpc_span_name("/orders.v1.OrderService/CreateOrder"),
            "orders.v1.OrderService/CreateOrder"
        );
        assert_eq!(
            grpc_span_name("/orders.v1.OrderService/DropTables"),
            "unknown/unknown"
        );
    }

    /// The client's interceptor writes what the server's span reads.
    #[test]
    fn the_server_continues_the_trace_the_client_sent() {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let tracer = SdkTracerProvider::builder().build().tracer("test");
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
        tracing::subscriber::with_default(subscriber, || {
            let trace_id = |span: &Span| span.context().span().span_context().trace_id();
            let call = |metadata: MetadataMap| {
                let mut request = http::Request::new(());
                *request.uri_mut() = "/orders.v1.OrderService/CreateOrder".parse().unwrap();
                *request.headers_mut() = metadata.into_headers();
                let server = tracing::info_span!("server");
                grpc_server(&server, &request);
                server
            };

            let client = tracing::info_span!("client");
            let sent = client.in_scope(|| InjectContext.call(tonic::Request::new(())).unwrap());
            assert!(sent.metadata().get("traceparent").is_some());
            let server = call(sent.metadata().clone());
            assert_eq!(trace_id(&server), trace_id(&client));

            let mut garbage = MetadataMap::new();
            garbage.insert("traceparent", "00-garbage".parse().unwrap());
            let fresh = call(garbage);
            assert!(fresh.context().span().span_context().is_valid());
            assert_ne!(trace_id(&fresh), trace_id(&client));
        });
    }
}
