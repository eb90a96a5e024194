//! The trace context across NATS: logic writes the W3C `traceparent` (and
//! `tracestate`) of its publish into the message's headers, and task reads
//! it back and continues from it. One order is then one trace, from
//! `POST /orders` to the gateway's `PushResult`.
//!
//! Two spans describe a message, named and described by OpenTelemetry's
//! messaging conventions, `{operation} {destination}`:
//!
//! - `publish orders.created` (kind producer), logic's publish, up to
//!   JetStream's ack (`messaging.operation.type` is `send`; the name keeps
//!   `publish`, the word the dashboards use).
//! - `process orders.created` (kind consumer), one per delivery, its number
//!   in `messaging.nats.message.delivery_count` (named after Azure Service
//!   Bus's `messaging.servicebus.message.delivery_count`; the conventions
//!   have none for NATS). A delivery that is not acked has the status error.
//!
//! How the consumer span relates to the producer's is [`TraceRelation`]:
//! by default its child and linked to it (one trace per order, and an edge
//! from logic to task in Tempo's service graph); with `--trace-relation
//! link` (`TRACE_RELATION=link`) each delivery starts a new trace that only
//! links to the producer, as a consumer of batches or of fan-out does. The
//! sampler then decides afresh for each new trace.

use std::fmt::Display;
use std::future::Future;
use std::str::FromStr;

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue, NATS_MESSAGE_ID};
use async_nats::jetstream;
use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{Status, TraceContextExt};
use orders::queue;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// How task's span of a delivery relates to the span that published the
/// message: `--trace-relation` or `TRACE_RELATION`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceRelation {
    /// The producer span is the parent, and linked: one trace per order.
    #[default]
    Parent,
    /// A new trace per delivery, linked to the producer span only.
    Link,
}

/// The producer span of one publish to JetStream, `publish orders.created`:
/// [`super::mq_publish`](super::metrics::mq_publish) runs every publish in one. The message's headers
/// carry this span's context ([`message_headers`]), so the consumer's span
/// continues from here.
pub(super) async fn producer_span<T, E: Display>(
    subject: &str,
    publish: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let span = tracing::info_span!(
        "mq publish",
        otel.name = format!("publish {subject}"),
        otel.kind = "producer",
    );
    span.set_attribute("messaging.system", "nats");
    span.set_attribute("messaging.destination.name", subject.to_owned());
    span.set_attribute("messaging.operation.type", "send");
    span.set_attribute("messaging.operation.name", "publish");
    let result = publish.instrument(span.clone()).await;
    if let Err(e) = &result {
        span.set_attribute("error.type", std::any::type_name::<E>());
        span.set_status(Status::error(e.to_string()));
    }
    result
}

/// The headers of the message `message_id`, published in the current span,
/// the producer span of [`super::mq_publish`](super::metrics::mq_publish): that span's context, as
/// `traceparent` (and `tracestate`). Records the id on the span too.
pub fn message_headers(message_id: &str) -> HeaderMap {
    let span = Span::current();
    span.set_attribute("messaging.message.id", message_id.to_owned());
    let context = span.context();
    let mut headers = HeaderMap::new();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(&mut headers));
    });
    headers
}

/// Lets the propagator write into a NATS message's headers.
struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (HeaderName::from_str(key), HeaderValue::from_str(&value)) {
            self.0.insert(key, value);
        }
    }
}

/// Lets the propagator read a NATS message's headers. NATS header names are
/// case-sensitive, unlike HTTP's; a Go service that writes through
/// `http.Header` sends `Traceparent`, so names are compared without case.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| AsRef::<str>::as_ref(*name).eq_ignore_ascii_case(key))
            .and_then(|(_, values)| values.first())
            .map(HeaderValue::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// The context the message was published in, as its headers carry it. With
/// none, or a malformed one, the context is empty: the delivery starts a
/// new trace, and is handled all the same.
fn producer_context(message: &jetstream::Message) -> opentelemetry::Context {
    let Some(headers) = &message.headers else {
        return opentelemetry::Context::new();
    };
    global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)))
}

/// Runs `handle` on one delivery of `message`, in the delivery's consumer
/// span, `process orders.created`:
/// `telemetry::mq_process(message, relation, |message| handle(message, gateway))`.
pub async fn mq_process<F: Future<Output = ()>>(
    message: jetstream::Message,
    relation: TraceRelation,
    handle: impl FnOnce(jetstream::Message) -> F,
) {
    let span = consumer_span(&message, relation);
    // In the span, in case `handle` makes its span when called rather than
    // when first polled.
    let handling = span.in_scope(|| handle(message));
    DELIVERY
        .scope(span.clone(), handling.instrument(span))
        .await;
}

/// The consumer span of one delivery: the child of the producer span and
/// linked to it, or with [`TraceRelation::Link`] the root of a new trace,
/// linked to it.
fn consumer_span(message: &jetstream::Message, relation: TraceRelation) -> Span {
    // `parent: None`: not a child of whatever span the consumer loop is in.
    let span = tracing::info_span!(
        parent: None,
        "mq process",
        otel.name = format!("process {}", message.subject),
        otel.kind = "consumer",
    );
    let producer = producer_context(message);
    let producer_span = producer.span().span_context().clone();
    match relation {
        // Before the span is first entered: once started, its parent is fixed.
        TraceRelation::Parent => {
            let _ = span.set_parent(producer);
        }
        // Made with `parent: None`: the root of a new trace.
        TraceRelation::Link => {}
    }
    // Either way a link to the producer span; with nothing valid to link
    // to (no `traceparent`, or a malformed one), no link.
    span.add_link(producer_span);

    span.set_attribute("messaging.system", "nats");
    span.set_attribute("messaging.destination.name", message.subject.to_string());
    span.set_attribute("messaging.operation.type", "process");
    span.set_attribute("messaging.operation.name", "process");
    span.set_attribute("messaging.consumer.group.name", queue::CONSUMER);
    if let Some(id) = message
        .headers
        .as_ref()
        .and_then(|h| h.get(NATS_MESSAGE_ID))
    {
        span.set_attribute("messaging.message.id", id.as_str().to_owned());
    }
    if let Ok(info) = message.info() {
        span.set_attribute("messaging.nats.message.delivery_count", info.delivered);
    }
    span
}

tokio::task_local! {
    /// The consumer span of the delivery being handled, set by
    /// [`mq_process`] for [`settled`]: the handling itself runs in a span
    /// of its own, inside this one.
    static DELIVERY: Span;
}

/// Records on the delivery's consumer span how it was settled: `ack` is
/// success; `nak` (to be redelivered) and `term` (never to be) are errors.
/// Called from [`super::MessageHandling::finish`](super::metrics::MessageHandling::finish), inside [`mq_process`].
pub(super) fn settled(status: &'static str) {
    let _ = DELIVERY.try_with(|span| {
        let description = match status {
            "ack" => return,
            "nak" => "not handled, to be delivered again",
            _ => "not handled, never to be delivered again",
        };
        span.set_attribute("error.type", status);
        span.set_status(Status::error(description));
    });
}

/// Lines for the banner of `all`: how task's spans relate to logic's.
pub(super) fn banner_hints() -> Vec<String> {
    let run = concat!("cargo run -p ", env!("CARGO_PKG_NAME"));
    vec![
        "NATS carries the trace context: task's span of each message is a child of logic's publish, one trace per order."
            .to_owned(),
        "A new trace per message, only linked to the publish (task --trace-relation link):".to_owned(),
        format!("  TRACE_RELATION=link {run}"),
    ]
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    fn context_of(headers: &HeaderMap) -> opentelemetry::Context {
        global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)))
    }

    /// What logic writes into a message's headers, task reads back.
    #[test]
    fn the_headers_carry_the_producer_span_context() {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let tracer = SdkTracerProvider::builder().build().tracer("test");
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
        tracing::subscriber::with_default(subscriber, || {
            let producer = tracing::info_span!("producer");
            let headers = producer.in_scope(|| message_headers("order-1"));
            let traceparent = headers.get("traceparent").expect("a traceparent").as_str();
            let sent = producer.context().span().span_context().clone();
            assert_eq!(
                traceparent,
                format!("00-{}-{}-01", sent.trace_id(), sent.span_id())
            );
            let received = context_of(&headers).span().span_context().clone();
            assert_eq!(received.trace_id(), sent.trace_id());
            assert_eq!(received.span_id(), sent.span_id());
            assert!(received.is_remote());

            // Another library's spelling of the name.
            let mut go = HeaderMap::new();
            go.insert("Traceparent", traceparent);
            assert_eq!(
                context_of(&go).span().span_context().trace_id(),
                sent.trace_id()
            );

            let mut garbage = HeaderMap::new();
            garbage.insert("traceparent", "00-garbage");
            assert!(!context_of(&garbage).span().span_context().is_valid());
            assert!(!context_of(&HeaderMap::new()).has_active_span());
        });
    }
}
