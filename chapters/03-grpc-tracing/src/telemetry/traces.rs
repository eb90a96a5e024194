//! Traces: spans sent to a collector (Tempo, Jaeger, the OpenTelemetry
//! Collector) over OTLP/gRPC, and the trace context carried across every
//! gRPC call: the client injects it into the call's metadata, the server
//! extracts it and continues the caller's trace, so one request is one
//! trace across the services it reaches.
//!
//! Spans are named and described by OpenTelemetry's semantic conventions, so
//! that any backend reads them the same way: `POST /orders` (server),
//! `orders.v1.OrderService/CreateOrder` (client, then server), `INSERT
//! orders` (client). tracing-opentelemetry reads two fields of a `tracing`
//! span as instructions: `otel.name` (the span's name) and `otel.kind`. The
//! attributes are set on the OpenTelemetry span with `set_attribute`, under
//! the keys of `opentelemetry_semantic_conventions`, not as fields of the
//! `tracing` span, which would be written on every log line inside it too.
//!
//! Telemetry must never hurt the service. Spans wait in a bounded queue and
//! a background thread sends them in batches: when the collector is slow or
//! gone, spans are dropped, requests are not slowed and memory does not grow.
//! A collector that is down costs one log line, not one per batch.
//!
//! The SDK and the exporter read most standard variables themselves, so
//! there is no code here for them: `OTEL_EXPORTER_OTLP_ENDPOINT` (default
//! `http://localhost:4317`), `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, `OTEL_BSP_*` (the
//! batching), `OTEL_RESOURCE_ATTRIBUTES`. The Rust SDK leaves three to the
//! program, and they are read here as the specification says: the service's
//! name ([`service_name`]), `OTEL_SDK_DISABLED` and `OTEL_TRACES_EXPORTER`
//! ([`exporting`]).

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::{Key, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::resource::{EnvResourceDetector, ResourceDetector};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
};
use opentelemetry_semantic_conventions::attribute as semconv;
use orders::Topology;
use orders::topology::Service;
use tracing::{Instrument, Metadata, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::names::UNMATCHED;

mod grpc;

pub use grpc::{
    InjectContext, TracedChannel, grpc_client_span, grpc_server, grpc_server_code, grpc_span_name,
};

// ANCHOR: init
/// The tracer provider of the service named `service_name` (see
/// [`service_name`]): its spans go in batches over OTLP/gRPC to the
/// collector at `OTEL_EXPORTER_OTLP_ENDPOINT`, unless [`exporting`] says
/// no. Called inside the Tokio runtime: the exporter's gRPC channel runs on
/// it.
///
/// Errors: the exporter cannot be built (an endpoint that is not a URL).
pub fn tracer_provider(service_name: &str) -> anyhow::Result<SdkTracerProvider> {
    if !exporting() {
        // Spans still get ids, for the log lines and the next hop, and go
        // nowhere.
        return Ok(SdkTracerProvider::builder()
            .with_resource(resource(service_name))
            .build());
    }
    // ANCHOR: exporter
    // Where to and how long to wait: the OTEL_EXPORTER_OTLP_* variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    // ANCHOR_END: exporter
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batch_processor(ReportFailures::new(exporter)))
        .with_resource(resource(service_name))
        // ANCHOR: sampler
        // No sampler here: the SDK reads OTEL_TRACES_SAMPLER and
        // OTEL_TRACES_SAMPLER_ARG. The default, `parentbased_always_on`,
        // keeps every new trace and follows the caller's choice for the
        // others; `parentbased_traceidratio` with 0.1 keeps one new trace
        // in ten, and still every trace a caller chose to keep.
        // ANCHOR_END: sampler
        .build();
    Ok(provider)
}
// ANCHOR_END: init

// ANCHOR: batch
/// How many spans one export carries at most, unless
/// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` says otherwise: 128 rather than the
/// specification's 512. While a batch is sent it is held three times over
/// (the spans, their protobuf form, the encoded bytes), and the allocator
/// keeps those pages a while after: at 300 orders/s, batches of 512 cost
/// each service about 2 MiB more at its peak than batches of 128, for no
/// CPU that a run could tell apart (BENCHMARKS.md).
const EXPORT_BATCH_SIZE: usize = 128;

/// The batch span processor for `exporter`: a background thread sends the
/// spans every 5 s, or as soon as [`EXPORT_BATCH_SIZE`] are waiting, from
/// a queue of at most 2048; a span ended while the queue is full is
/// dropped, never waited for. The `OTEL_BSP_*` variables change each of
/// these.
fn batch_processor(exporter: impl SpanExporter + 'static) -> BatchSpanProcessor {
    // The SDK reads the OTEL_BSP_* variables into its defaults.
    let mut config = BatchConfigBuilder::default();
    if std::env::var_os("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").is_none() {
        config = config.with_max_export_batch_size(EXPORT_BATCH_SIZE);
    }
    BatchSpanProcessor::builder(exporter)
        .with_batch_config(config.build())
        .build()
}
// ANCHOR_END: batch

// ANCHOR: resource
/// The name of `service` in every pillar, resolved once, as the
/// specification orders it: `OTEL_SERVICE_NAME`, else `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES`, else the service's own word. It is the
/// spans' `service.name`, the log lines' `service` and, when Prometheus
/// scrapes with the same word as its `job`, the key that joins the three
/// in Grafana.
pub fn service_name(service: Service) -> String {
    let given = std::env::var("OTEL_SERVICE_NAME").ok();
    given
        .filter(|name| !name.is_empty())
        .or_else(|| {
            EnvResourceDetector::new()
                .detect()
                .get(&Key::new(semconv::SERVICE_NAME))
                .map(|name| name.to_string())
        })
        .unwrap_or_else(|| service.name().to_owned())
}

/// Who sends the spans: `service_name`, and what `OTEL_RESOURCE_ATTRIBUTES`
/// says (the SDK's detectors read it), over this program's defaults.
fn resource(service_name: &str) -> Resource {
    let given = EnvResourceDetector::new().detect();
    let defaults = [
        KeyValue::new(semconv::SERVICE_VERSION, env!("CARGO_PKG_VERSION")),
        // One per process: tells apart two copies of a service, or a
        // service before and after a restart.
        KeyValue::new(
            semconv::SERVICE_INSTANCE_ID,
            uuid::Uuid::new_v4().to_string(),
        ),
    ];
    Resource::builder()
        .with_attributes(
            defaults
                .into_iter()
                .filter(|kv| given.get(&kv.key).is_none()),
        )
        .with_service_name(service_name.to_owned())
        .build()
}

/// Are spans sent? Not with `OTEL_SDK_DISABLED=true` (the whole SDK off),
/// nor with `OTEL_TRACES_EXPORTER=none`; `otlp`, the default, is the one
/// exporter this program has.
pub fn exporting() -> bool {
    let var = |name| {
        std::env::var(name)
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    };
    let disabled = var("OTEL_SDK_DISABLED") == "true";
    let exporters = var("OTEL_TRACES_EXPORTER");
    let otlp = exporters.is_empty() || exporters.split(',').any(|e| e.trim() == "otlp");
    !disabled && otlp
}
// ANCHOR_END: resource

// ANCHOR: shutdown
/// Sends the spans still waiting in the queue; called on the way out of the
/// process. Without it the spans of the last few seconds are lost, those of
/// the requests answered just before a SIGTERM among them. `shutdown` blocks
/// until they are sent, or for 5 s at most, and sending them needs the
/// runtime's threads, so it runs on a thread of its own.
pub async fn shutdown(provider: SdkTracerProvider) {
    match tokio::task::spawn_blocking(move || provider.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "sending the last spans failed"),
        Err(e) => tracing::warn!(error = %e, "sending the last spans failed"),
    }
}
// ANCHOR_END: shutdown

// ANCHOR: failures
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
// ANCHOR_END: failures

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
pub fn not_a_transport_span(metadata: &Metadata<'_>) -> bool {
    let transport = TRANSPORT
        .iter()
        .any(|lib| metadata.target().starts_with(lib));
    !(metadata.is_span() && transport)
}

// ANCHOR: http
/// The name of the span of an HTTP request: `POST /orders`, the method and
/// the route template; the method alone for a path no route matched, and
/// `HTTP` for a method outside the known ones. Never the raw path: names
/// group spans, and each order id would make a name of its own.
pub fn http_span_name(method: &str, route: &str) -> String {
    match (method, route) {
        ("other", _) => "HTTP".to_owned(),
        (method, UNMATCHED) => method.to_owned(),
        (method, route) => format!("{method} {route}"),
    }
}

/// The attributes of the span of an HTTP request, as the request arrives.
pub fn http_request(span: &Span, method: &str, route: &str) {
    let method = if method == "other" { "_OTHER" } else { method };
    span.set_attribute(semconv::HTTP_REQUEST_METHOD, method.to_owned());
    if route != UNMATCHED {
        span.set_attribute(semconv::HTTP_ROUTE, route.to_owned());
    }
}

/// The attributes of the span of an HTTP request, once it is answered. A
/// 5xx is an error of this server; a 4xx is the client's, and is not.
pub fn http_response(span: &Span, status: StatusCode) {
    span.set_attribute(
        semconv::HTTP_RESPONSE_STATUS_CODE,
        i64::from(status.as_u16()),
    );
    if status.is_server_error() {
        span.set_attribute(semconv::ERROR_TYPE, status.as_str().to_owned());
        span.set_status(Status::error(""));
    }
}
// ANCHOR_END: http

// ANCHOR: traceresponse
/// Answers with a `traceresponse` header (W3C Trace Context Level 2) that
/// names the trace and the span `span` of the request,
/// `00-<trace id>-<span id>-<flags>`, so that the client can look the
/// request up in Tempo. Flags `01`: the trace was kept; `00`: the sampler
/// dropped it.
pub fn trace_response(span: &Span, response: &mut Response) {
    let context = span.context();
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
}
// ANCHOR_END: traceresponse

// ANCHOR: db
/// The client span of one SQLite query: `db_query` runs every query in one,
/// named by the operation and the table, `INSERT orders` (every query of
/// this system is on `orders`). A query outside every request makes no
/// span: the outbox sweep reads the table every second, and a trace per
/// sweep would bury the traces of the orders.
pub async fn db_span<T, E: Display>(
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
    span.set_attribute(semconv::DB_SYSTEM_NAME, "sqlite");
    span.set_attribute(semconv::DB_OPERATION_NAME, operation);
    span.set_attribute(semconv::DB_COLLECTION_NAME, "orders");
    let result = query.instrument(span.clone()).await;
    if let Err(e) = &result {
        span.set_attribute(semconv::ERROR_TYPE, std::any::type_name::<E>());
        span.set_status(Status::error(e.to_string()));
    }
    result
}
// ANCHOR_END: db

/// Lines for the banner of `all`: where the spans go, and how to find the
/// trace of a request.
pub fn banner_hints(topology: &Topology) -> Vec<String> {
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
}
