//! Structured logs: every line a service writes to stdout is one JSON
//! object: `timestamp`, `level`, `service`, `target`, `message`, the
//! `trace_id` and `span_id` of the span it was written in, then the fields
//! of that span and of the spans around it, then the event's own fields
//! (`order_id`, `user_id`, ...), which win when a name comes twice.
//!
//! The services log with [`tracing`]. `tracing::info!(order_id = %id, "order
//! created")` is an *event*, one line. A *span* (`info_span!`,
//! `#[tracing::instrument]`) is a unit of work that events happen in: an
//! HTTP request, a gRPC call, a message handled. [`tracing_opentelemetry`]
//! gives every span an OpenTelemetry span context, and [`JsonLines`] writes
//! its ids on every line inside it: the ids tie together the lines of one
//! request, in one service or, when the context is carried along, in all.
//!
//! A line written outside every span (a library's warning about a lost
//! connection, say) has no `trace_id` and no `span_id`: there is no
//! request to tie it to.

use std::fmt;
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::StatusCode;
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use serde::Serialize;
use serde_json::Value;
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Which events are written: `RUST_LOG` when it is set, else `default`
/// (`info`, say, with quieter levels for chatty libraries).
pub fn event_filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}

// ANCHOR: access_log
/// The access line of one HTTP request, written in the request's span:
/// its status and latency (the span adds method and route). Nothing else
/// of the request is logged: not its headers (the bearer token is one),
/// not its body. A 5xx is an error of this server, logged as one.
pub fn access_line(status: StatusCode, took: Duration) {
    let latency_ms = took.as_micros() as f64 / 1000.0;
    if status.is_server_error() {
        tracing::error!(status = status.as_u16(), latency_ms, "request failed");
    } else {
        tracing::info!(status = status.as_u16(), latency_ms, "request finished");
    }
}
// ANCHOR_END: access_log

// ANCHOR: formatter
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
    service: String,
    make_writer: W,
    /// The subscriber this layer is part of, to look up the OpenTelemetry
    /// context of a span. Weak: the subscriber owns the layer.
    dispatch: OnceLock<WeakDispatch>,
}

impl<W> JsonLines<W> {
    /// Lines of the service named `service`: the word each line carries as
    /// `service`, which must be the spans' `service.name` and Prometheus's
    /// `job` too, since it is the key that joins the pillars.
    pub fn new(service: impl Into<String>, make_writer: W) -> Self {
        Self {
            service: service.into(),
            make_writer,
            dispatch: OnceLock::new(),
        }
    }

    /// The trace and span id of span `id`, from its OpenTelemetry context.
    fn trace_ids(&self, id: &Id) -> Option<(TraceId, SpanId)> {
        let dispatch = self.dispatch.get()?.upgrade()?;
        let context = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
        let span = context.span();
        let ids = span.span_context();
        ids.is_valid().then(|| (ids.trace_id(), ids.span_id()))
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

    // ANCHOR: on_event
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

        let mut timestamp = String::with_capacity(32);
        let _ = SystemTime.format_time(&mut Writer::new(&mut timestamp));
        let metadata = event.metadata();
        let mut line = Vec::with_capacity(512);
        push_entry(&mut line, "timestamp", &timestamp);
        push_entry(&mut line, "level", level_name(metadata.level()));
        push_entry(&mut line, "service", &self.service);
        push_entry(&mut line, "target", metadata.target());
        push_entry(&mut line, "message", &message);
        if let Some((trace_id, span_id)) = ids {
            // Hexadecimal, as W3C Trace Context writes them.
            push_entry(&mut line, "trace_id", &format_args!("{trace_id}"));
            push_entry(&mut line, "span_id", &format_args!("{span_id}"));
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
        line.extend_from_slice(b"}\n");
        // One write per line, so lines of concurrent requests never mix.
        let _ = self.make_writer.make_writer().write_all(&line);
    }
    // ANCHOR_END: on_event
}

/// Appends `"key":value` to the JSON object `line` being written.
/// `serde_json` escapes both straight into the line: no text is made for
/// one value and copied after, which was half the cost of a line (the
/// telemetry floor benchmark, `BENCHMARKS.md`).
fn push_entry(line: &mut Vec<u8>, key: &str, value: &(impl Serialize + ?Sized)) {
    line.push(if line.is_empty() { b'{' } else { b',' });
    // Writing into a `Vec` cannot fail, and every value here is text, a
    // number or a boolean, which JSON can always hold.
    let _ = serde_json::to_writer(&mut *line, key);
    line.push(b':');
    let _ = serde_json::to_writer(&mut *line, value);
}

/// The level as a line writes it: `trace`, `debug`, `info`, `warn`,
/// `error`.
fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
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
// ANCHOR_END: formatter

/// Lines for the banner of `all`: how to read the logs.
pub fn banner_hints() -> Vec<String> {
    let run = concat!("cargo run -p ", env!("CARGO_PKG_NAME"));
    vec![
        "Logs: one JSON object per line on stdout; RUST_LOG sets the levels (default info)."
            .to_owned(),
        "Filter them with jq (this banner is on stderr, stdout is JSON only):".to_owned(),
        format!("  {run} | jq -c 'select(.order_id != null)'"),
        format!("  {run} | jq -c 'select(.service == \"logic\")'"),
    ]
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use serde_json::Map;
    use tracing_subscriber::layer::SubscriberExt;

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
                .and_then(JsonLines::new("logic", move || writer.clone())),
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
