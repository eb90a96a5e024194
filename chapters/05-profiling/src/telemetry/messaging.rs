//! Messaging traces: the trace context crosses NATS. A NATS message has
//! headers, as an HTTP request or a gRPC call has: the publisher writes the
//! W3C `traceparent` (and `tracestate`) of its publish into them, and the
//! consumer reads it back and continues from it, so the work a message
//! causes joins the trace of the request that published it.
//!
//! Two spans describe a message, named and described by OpenTelemetry's
//! messaging conventions, `{operation} {destination}`:
//!
//! - `publish orders.created` (kind producer), logic's publish, up to
//!   JetStream's ack. Newer versions of the conventions name it
//!   `send orders.created` (`messaging.operation.type` is `send` already);
//!   this system keeps `publish`, the name its design and dashboards use.
//! - `process orders.created` (kind consumer), one per delivery: a message
//!   that task fails to handle is delivered again, and each delivery gets a
//!   span of its own, its number in `messaging.nats.message.delivery_count`.
//!   The conventions have no such attribute for NATS; this one is named
//!   after Azure Service Bus's `messaging.servicebus.message.delivery_count`.
//!   A delivery that is not acked has the status error.
//!
//! How the consumer span relates to the producer's is a choice,
//! [`TraceRelation`]. The conventions say a consumer span SHOULD link to the
//! context the message was created in, and MAY be its child. By default it
//! is both: the child of the producer span, so that one order is one
//! waterfall and Tempo's service graph, which pairs a consumer span with
//! its producer parent, draws an edge from logic to task; and linked to it.
//! With `--trace-relation link` (`TRACE_RELATION=link`) each delivery
//! starts a new trace that only links to the producer, as a consumer does
//! when one batch holds messages of many traces, or when one message fans
//! out to many consumers whose work would swamp the publisher's trace. The
//! order is then two traces, a click apart in Tempo; the service graph has
//! no edge between logic and task; and the sampler decides afresh for each
//! new trace, where a child follows its parent's decision.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::str::FromStr;

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue, NATS_MESSAGE_ID};
use async_nats::jetstream;
use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry_semantic_conventions::attribute as semconv;
use orders::queue;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

// ANCHOR: relation
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
// ANCHOR_END: relation

/// Which delivery of the message a consumer span handles, 1 for the first.
/// The conventions have no such attribute for NATS; the name follows Azure
/// Service Bus's `messaging.servicebus.message.delivery_count`.
const DELIVERY_COUNT: &str = "messaging.nats.message.delivery_count";

// ANCHOR: producer
/// The producer span of one publish to JetStream, `publish orders.created`:
/// the facade's `mq_publish` runs every publish in one. The message's headers
/// carry this span's context ([`message_headers`]), so the consumer's span
/// continues from here.
pub async fn producer_span<T, E: Display>(
    subject: &str,
    publish: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let span = tracing::info_span!(
        "mq publish",
        otel.name = format!("publish {subject}"),
        otel.kind = "producer",
    );
    span.set_attribute(semconv::MESSAGING_SYSTEM, "nats");
    span.set_attribute(semconv::MESSAGING_DESTINATION_NAME, subject.to_owned());
    span.set_attribute(semconv::MESSAGING_OPERATION_TYPE, "send");
    span.set_attribute(semconv::MESSAGING_OPERATION_NAME, "publish");
    let result = publish.instrument(span.clone()).await;
    if let Err(e) = &result {
        span.set_attribute(semconv::ERROR_TYPE, std::any::type_name::<E>());
        span.set_status(Status::error(e.to_string()));
    }
    result
}
// ANCHOR_END: producer

// ANCHOR: inject
/// The headers of the message `message_id`, published in the current span,
/// the producer span of [`producer_span`]: that span's context, as
/// `traceparent` (and `tracestate`). Records the id on the span too.
pub fn message_headers(message_id: &str) -> HeaderMap {
    let span = Span::current();
    span.set_attribute(semconv::MESSAGING_MESSAGE_ID, message_id.to_owned());
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
// ANCHOR_END: inject

// ANCHOR: extract
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

    /// Every value of `key`, under any case: the propagator takes a context
    /// sent twice for none.
    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let values: Vec<&str> = self
            .0
            .iter()
            .filter(|(name, _)| AsRef::<str>::as_ref(*name).eq_ignore_ascii_case(key))
            .flat_map(|(_, values)| values.iter().map(HeaderValue::as_str))
            .collect();
        (!values.is_empty()).then_some(values)
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
// ANCHOR_END: extract

// ANCHOR: stored_context
/// The current span's context as a W3C `traceparent`, to store with a row
/// that is published later: the outbox publishes an order long after the
/// call that created it has ended, and the row is all that is left of it.
/// `None` outside any span.
pub fn current_traceparent() -> Option<String> {
    let context = Span::current().context();
    let mut carrier = HashMap::new();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut carrier);
    });
    carrier.remove("traceparent")
}

/// Makes `span` a child of a context stored with [`current_traceparent`],
/// before it is first entered, so that what is done later for that row
/// continues the trace it was created in. Without a stored context, or
/// with a malformed one, `span` stays the root of a trace of its own.
pub fn continue_stored_trace(span: &Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let stored = global::get_text_map_propagator(|propagator| propagator.extract(&carrier));
    if stored.span().span_context().is_valid() {
        let _ = span.set_parent(stored);
    }
}
// ANCHOR_END: stored_context

// ANCHOR: consumer
/// The consumer span of one delivery: the child of the producer span and
/// linked to it, or with [`TraceRelation::Link`] the root of a new trace,
/// linked to it.
/// The facade's `mq_process` runs each delivery's handling in it.
pub fn consumer_span(message: &jetstream::Message, relation: TraceRelation) -> Span {
    // `parent: None`: not a child of whatever span the consumer loop is in.
    let span = tracing::info_span!(
        parent: None,
        "mq process",
        otel.name = format!("process {}", message.subject),
        otel.kind = "consumer",
    );
    // ANCHOR: parent_or_link
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
    // ANCHOR_END: parent_or_link

    span.set_attribute(semconv::MESSAGING_SYSTEM, "nats");
    span.set_attribute(
        semconv::MESSAGING_DESTINATION_NAME,
        message.subject.to_string(),
    );
    span.set_attribute(semconv::MESSAGING_OPERATION_TYPE, "process");
    span.set_attribute(semconv::MESSAGING_OPERATION_NAME, "process");
    span.set_attribute(semconv::MESSAGING_CONSUMER_GROUP_NAME, queue::CONSUMER);
    // The id is the order's: recorded only when it is one by the domain's
    // rules (short, printable), since any publisher may send any header.
    if let Some(id) = message
        .headers
        .as_ref()
        .and_then(|h| h.get(NATS_MESSAGE_ID))
        .filter(|id| orders::domain::validate_id("order_id", id.as_str()).is_ok())
    {
        span.set_attribute(semconv::MESSAGING_MESSAGE_ID, id.as_str().to_owned());
    }
    if let Ok(info) = message.info() {
        span.set_attribute(DELIVERY_COUNT, info.delivered);
    }
    span
}
// ANCHOR_END: consumer

// ANCHOR: settled
/// Records on a delivery's consumer span how it was settled: `ack` is
/// success; `nak` (to be redelivered) and `term` (never to be) are errors.
pub fn settled(span: &Span, status: &'static str) {
    let description = match status {
        "ack" => return,
        "nak" => "not handled, to be delivered again",
        _ => "not handled, never to be delivered again",
    };
    span.set_attribute(semconv::ERROR_TYPE, status);
    span.set_status(Status::error(description));
}
// ANCHOR_END: settled

/// Lines for the banner of `all`: how task's spans relate to logic's.
pub fn banner_hints() -> Vec<String> {
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
