//! Traces across gRPC: the client span of each call, whose context an
//! interceptor injects into the call's metadata as W3C `traceparent`, and
//! the server span, which extracts it and continues the caller's trace.

use std::future::Future;

use axum::http;
use opentelemetry::global;
use opentelemetry::propagation::Injector;
use opentelemetry::trace::Status;
use opentelemetry_http::HeaderExtractor;
use opentelemetry_semantic_conventions::attribute as semconv;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::super::names::{code_name, grpc_method};

// ANCHOR: inject
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
// ANCHOR_END: inject

// ANCHOR: extract
/// The server side of a gRPC call, for the span tonic handles it in (see
/// `grpc_server_span`): continues the caller's trace, and describes the
/// call. The caller's interceptor wrote its context into the metadata,
/// which arrives as HTTP/2 headers. With none, or a malformed one, the
/// context is empty and the span starts a new trace; the call goes on
/// either way.
pub fn grpc_server(span: &Span, request: &http::Request<()>) {
    let caller = global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    // Before tonic first enters the span: once started, its parent is fixed.
    let _ = span.set_parent(caller);
    let (service, method) = grpc_method(request.uri().path());
    grpc_attributes(span, service, method);
}
// ANCHOR_END: extract

/// The name of the span of a gRPC call to `path`, on either side:
/// `orders.v1.OrderService/CreateOrder`.
pub fn grpc_span_name(path: &str) -> String {
    let (service, method) = grpc_method(path);
    format!("{service}/{method}")
}

/// `rpc.system`, `rpc.service`, `rpc.method`: the RPC conventions as
/// Tempo, Grafana and the dashboards of this book read them. The newest
/// conventions deprecate the first two (`rpc.system.name`, and the service
/// folded into `rpc.method`); a rename is a breaking change for every query
/// that reads them, so it waits until the backends read the new names.
#[allow(deprecated)]
fn grpc_attributes(span: &Span, service: &'static str, method: &'static str) {
    span.set_attribute(semconv::RPC_SYSTEM, "grpc");
    span.set_attribute(semconv::RPC_SERVICE, service);
    span.set_attribute(semconv::RPC_METHOD, method);
}

/// Records how a gRPC call ended on the span `span`; an error when `failed`.
/// `rpc.grpc.status_code` is the number (deprecated in the newest
/// conventions for a string `rpc.response.status_code`, as above).
#[allow(deprecated)]
fn grpc_code(span: &Span, code: tonic::Code, failed: bool, message: &str) {
    span.set_attribute(semconv::RPC_GRPC_STATUS_CODE, code as i64);
    if failed {
        span.set_attribute(semconv::ERROR_TYPE, code_name(code));
        span.set_status(Status::error(message.to_owned()));
    }
}

/// Records how this server answered a call, on the call's span, the current
/// one. Only the codes that mean the server failed are errors; a client's
/// mistake, such as `InvalidArgument` or `NotFound`, is not.
pub fn grpc_server_code(code: tonic::Code) {
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

// ANCHOR: grpc_client
/// The client span of a gRPC call: `grpc_client` runs every call in one. The
/// interceptor ([`InjectContext`]) sends this span's context along, so the
/// server's span is its child.
pub async fn grpc_client_span<T>(
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
// ANCHOR_END: grpc_client

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

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
