//! Logs: every line a service writes to stdout is one JSON object:
//! `timestamp`, `level`, `service`, `target`, `message`, the `trace_id` and
//! `span_id` of the span it was written in, then the fields of that span
//! and of the spans around it, then the event's own fields (`order_id`,
//! `user_id`, ...), which win when a name comes twice.
//!
//! The services log with [`tracing`]. Every span has an OpenTelemetry span
//! context ([`tracing_opentelemetry`]), so every line written inside a span
//! carries its trace id, and the spans go to a collector (see
//! [`super::traces`]): a trace id leads from a line to its trace, and back.
//! The context crosses HTTP, gRPC and NATS, so the lines of every service
//! for one order share one trace id.
//!
//! A line written outside every span (a library's warning about a lost
//! connection, say) has no `trace_id` and no `span_id`: there is no
//! request to tie it to.

use std::fmt;
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{self, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::global;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use orders::topology::Service;
use serde_json::Value;
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Instrument, Level, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use super::metrics::{UNMATCHED, method_label};
use super::traces;

/// What is logged when `RUST_LOG` is not set: `info` and up, but only
/// warnings from the libraries that would otherwise describe every
/// connection and frame, and only errors from the OTLP exporter, which
/// warns about every batch it fails to send (the service says it once: see
/// `traces::ReportFailures`).
pub const DEFAULT_FILTER: &str = "info,h2=warn,hyper=warn,tonic=warn,tower=warn,async_nats=warn,sqlx=warn,opentelemetry-otlp=error";

/// Makes `service` write its `tracing` events to stdout as JSON lines,
/// filtered by `filter` (`--log-filter`, `RUST_LOG`), each with the trace
/// and span ids of the span it was written in. A filter that does not parse
/// is replaced by [`DEFAULT_FILTER`], and said so once the logs work.
pub fn init_logs(service: Service, filter: &str) -> anyhow::Result<()> {
    // W3C Trace Context: how a trace id travels in a `traceparent` header.
    global::set_text_map_propagator(TraceContextPropagator::new());
    // Spans are sent to a collector, see `traces`.
    let provider: SdkTracerProvider = traces::tracer_provider(service)?;
    let tracer = provider.tracer(env!("CARGO_PKG_NAME"));

    // The filter chooses which events are written. Spans of level INFO and
    // up exist whatever it says, so that a warning still has the trace id
    // of its request when RUST_LOG=warn.
    let (events, rejected) = match EnvFilter::try_new(filter) {
        Ok(events) => (events, None),
        Err(e) => (EnvFilter::new(DEFAULT_FILTER), Some(e)),
    };
    let spans = filter_fn(|metadata| metadata.is_span() && *metadata.level() <= Level::INFO);
    let subscriber = tracing_subscriber::registry().with(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .and_then(JsonLines::new(service, std::io::stdout))
            // And never a span of the libraries spans are sent with.
            .with_filter(
                events
                    .or(spans)
                    .and(filter_fn(traces::not_a_transport_span)),
            ),
    );
    tracing::subscriber::set_global_default(subscriber)?;
    if let Some(e) = rejected {
        tracing::info_span!("startup").in_scope(|| {
            tracing::warn!(filter, error = %e, default = DEFAULT_FILTER, "invalid log filter, using the default");
        });
    }
    Ok(())
}

/// Writes out what stdout still buffers; called last on the way out.
pub fn flush_logs() {
    let _ = std::io::stdout().flush();
}

/// axum middleware for the public API: each request is handled in a span of
/// its own, and ends with one access line: method, route, status, latency.
/// Nothing else of the request is logged: not its headers (the bearer token
/// is one), not its body.
pub async fn log_http(request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let span = tracing::info_span!(
        "http request",
        method,
        route,
        otel.name = traces::http_span_name(method, &route),
        otel.kind = "server",
    );
    traces::http_request(&span, method, &route);

    // Continue the client's trace when it sent a valid `traceparent`. With
    // none, or a malformed one, the context is empty and the span starts a
    // new trace; the request goes on either way.
    let client = global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    // Before the span is first entered: once started, its parent is fixed.
    let _ = span.set_parent(client);

    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    traces::http_response(&span, response.status());
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_micros() as f64 / 1000.0;
    span.in_scope(|| {
        if response.status().is_server_error() {
            tracing::error!(status, latency_ms, "request failed");
        } else {
            tracing::info!(status, latency_ms, "request finished");
        }
    });
    response
}

/// Lets the propagator read the headers of an HTTP request.
pub(super) struct HeaderExtractor<'a>(pub(super) &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// The span each gRPC call is handled in:
/// `Server::builder().trace_fn(telemetry::grpc_server_span)`. It continues
/// the caller's trace (`traces::grpc_server`).
pub fn grpc_server_span(request: &http::Request<()>) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc request",
        rpc = request.uri().path().trim_start_matches('/'),
        otel.name = traces::grpc_span_name(request.uri().path()),
        otel.kind = "server",
    );
    traces::grpc_server(&span, request);
    span
}

/// The keys every line starts with; a field of the same name is written as
/// `field.<name>` rather than twice.
const LINE_KEYS: [&str; 7] = [
    "timestamp",
    "level",
    "service",
    "target",
    "message",
    "trace_id",
    "span_id",
];

/// A [`Layer`] that writes each event as one JSON object on one line.
/// `serde_json` escapes quotes, backslashes and control characters, so no
/// value, however hostile, can end a line or start another.
pub struct JsonLines<W> {
    service: Service,
    make_writer: W,
    /// The subscriber this layer is part of, to look up the OpenTelemetry
    /// context of a span. Weak: the subscriber owns the layer.
    dispatch: OnceLock<WeakDispatch>,
}

impl<W> JsonLines<W> {
    pub fn new(service: Service, make_writer: W) -> Self {
        Self {
            service,
            make_writer,
            dispatch: OnceLock::new(),
        }
    }

    /// The trace and span id of span `id`, from its OpenTelemetry context.
    fn trace_ids(&self, id: &Id) -> Option<(String, String)> {
        let dispatch = self.dispatch.get()?.upgrade()?;
        let context = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
        let span = context.span();
        let ids = span.span_context();
        ids.is_valid()
            .then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
    }
}

impl<S, W> Layer<S> for JsonLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_register_dispatch(&self, dispatch: &Dispatch) {
        let _ = self.dispatch.set(dispatch.downgrade());
    }

    /// Keeps a new span's fields, for the lines written inside it.
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attributes.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    /// A field recorded later, as `Span::current().record("order_id", ...)`.
    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut extensions = span.extensions_mut();
            if let Some(fields) = extensions.get_mut::<Fields>() {
                values.record(fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // The fields of the spans around the event, outermost first, then
        // the event's own.
        let mut fields = Fields::default();
        for span in ctx
            .event_scope(event)
            .into_iter()
            .flat_map(|scope| scope.from_root())
        {
            if let Some(span_fields) = span.extensions().get::<Fields>() {
                fields.extend(span_fields);
            }
        }
        event.record(&mut fields);
        let message = fields.remove("message").unwrap_or_else(|| Value::from(""));
        let ids = ctx
            .event_span(event)
            .and_then(|span| self.trace_ids(&span.id()));

        let mut timestamp = String::new();
        let _ = SystemTime.format_time(&mut Writer::new(&mut timestamp));
        let metadata = event.metadata();
        let mut line = String::with_capacity(256);
        push_entry(&mut line, "timestamp", &Value::from(timestamp));
        let level = metadata.level().as_str().to_ascii_lowercase();
        push_entry(&mut line, "level", &Value::from(level));
        push_entry(&mut line, "service", &Value::from(self.service.name()));
        push_entry(&mut line, "target", &Value::from(metadata.target()));
        push_entry(&mut line, "message", &message);
        if let Some((trace_id, span_id)) = ids {
            push_entry(&mut line, "trace_id", &Value::from(trace_id));
            push_entry(&mut line, "span_id", &Value::from(span_id));
        }
        for (name, value) in &fields.0 {
            // `otel.name`, `otel.kind`: what tracing-opentelemetry makes of
            // a span, not something that happened.
            if name.starts_with("otel.") {
                continue;
            }
            if LINE_KEYS.contains(name) {
                push_entry(&mut line, &format!("field.{name}"), value);
            } else {
                push_entry(&mut line, name, value);
            }
        }
        line.push_str("}\n");
        // One write per line, so lines of concurrent requests never mix.
        let _ = self.make_writer.make_writer().write_all(line.as_bytes());
    }
}

/// Appends `"key":value` to the JSON object `line` being written.
fn push_entry(line: &mut String, key: &str, value: &Value) {
    line.push(if line.is_empty() { '{' } else { ',' });
    line.push_str(&Value::from(key).to_string());
    line.push(':');
    line.push_str(&value.to_string());
}

/// Fields by name, in the order first seen; a later value replaces an
/// earlier one in place. Numbers and booleans stay JSON numbers and
/// booleans; anything else is written as text.
#[derive(Default)]
struct Fields(Vec<(&'static str, Value)>);

impl Fields {
    fn insert(&mut self, name: &'static str, value: Value) {
        match self.0.iter_mut().find(|(known, _)| *known == name) {
            Some((_, old)) => *old = value,
            None => self.0.push((name, value)),
        }
    }

    fn extend(&mut self, other: &Fields) {
        for (name, value) in &other.0 {
            self.insert(name, value.clone());
        }
    }

    fn remove(&mut self, name: &str) -> Option<Value> {
        let index = self.0.iter().position(|(known, _)| *known == name)?;
        Some(self.0.remove(index).1)
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field.name(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field.name(), Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field.name(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field.name(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field.name(), Value::from(value));
    }

    /// An error passed as `error = &e as &dyn Error`: its message and its
    /// causes, `outer: inner: root`, leaving out a cause whose text the
    /// message already contains.
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text = format!("{text}: {cause_text}");
            }
            source = cause.source();
        }
        self.insert(field.name(), Value::from(text));
    }

    /// Everything else, including `%value` (Display) and `?value` (Debug),
    /// and the message itself.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.insert(field.name(), Value::from(format!("{value:?}")));
    }
}

/// Lines for the banner of `all`: how to read the logs.
pub(super) fn banner_hints() -> Vec<String> {
    let run = concat!("cargo run -p ", env!("CARGO_PKG_NAME"));
    vec![
        "Logs: one JSON object per line on stdout; RUST_LOG sets the levels (default info)."
            .to_owned(),
        "Filter them with jq (-R and fromjson? skip the launcher's own [all] lines):".to_owned(),
        format!("  {run} | jq -cR 'fromjson? | select(.order_id != null)'"),
        format!("  {run} | jq -cR 'fromjson? | select(.service == \"logic\")'"),
    ]
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::Map;

    use super::*;

    /// Where the lines go in these tests instead of stdout.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines `log` writes, each parsed as one JSON object.
    fn lines_of(log: impl FnOnce()) -> Vec<Map<String, Value>> {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let tracer = SdkTracerProvider::builder().build().tracer("test");
        let subscriber = tracing_subscriber::registry().with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .and_then(JsonLines::new(Service::Logic, move || writer.clone())),
        );
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
            .collect()
    }

    #[test]
    fn a_line_has_the_ids_and_fields_of_its_spans() {
        let lines = lines_of(|| {
            let request = tracing::info_span!("request", order_id = "o-1", user_id = "u-1");
            request.in_scope(|| {
                tracing::info!("in the request");
                tracing::info_span!("step").in_scope(|| {
                    tracing::warn!(user_id = "u-2", quantity = 3, "in a step");
                });
            });
            tracing::info!("outside");
        });
        let [request, step, outside] = &lines[..] else {
            panic!("three lines: {lines:?}")
        };

        assert_eq!(step["service"], "logic");
        assert_eq!(step["level"], "warn");
        assert_eq!(step["message"], "in a step");
        assert_eq!(step["order_id"], "o-1", "a field of an outer span");
        assert_eq!(step["user_id"], "u-2", "the event's field wins");
        assert_eq!(step["quantity"], 3, "numbers stay numbers");
        let trace_id = request["trace_id"].as_str().unwrap();
        assert_eq!(trace_id.len(), 32);
        assert!(
            trace_id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(step["trace_id"], request["trace_id"], "one trace");
        assert_ne!(step["span_id"], request["span_id"], "two spans");
        assert!(outside.get("trace_id").is_none() && outside.get("span_id").is_none());
    }

    #[test]
    fn hostile_values_stay_inside_their_field() {
        let nasty = "a \"quoted\" \\ value\n{\"level\":\"error\"}\u{1b}[31m red";
        let lines = lines_of(|| {
            tracing::info!(user_id = nasty, service = "not this one", "{nasty}");
        });
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["user_id"], nasty);
        assert_eq!(lines[0]["message"], nasty);
        assert_eq!(lines[0]["service"], "logic");
        assert_eq!(lines[0]["field.service"], "not this one");
    }

    #[test]
    fn an_error_is_written_with_its_causes() {
        let root = std::io::Error::other("disk full");
        let error = anyhow::Error::new(root).context("storing the order");
        let lines = lines_of(|| {
            let error: &(dyn std::error::Error + 'static) = error.as_ref();
            tracing::error!(error, "failed");
        });
        assert_eq!(lines[0]["error"], "storing the order: disk full");
    }
}
