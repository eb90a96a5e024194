//! Everything the services export about themselves, by concern:
//!
//! - [`metrics`]: Prometheus `/metrics` on the admin port, and the call
//!   sites that record them;
//! - [`logs`]: JSON lines on stdout, each with its `trace_id`;
//! - [`traces`]: OpenTelemetry spans over OTLP, the trace context over HTTP
//!   and gRPC;
//! - [`messaging`]: the trace context over NATS, producer and consumer spans;
//! - [`profiling`]: pprof-style CPU, heap and runtime profiles on the admin
//!   port.
//!
//! The services only call what is re-exported here. The names (metric
//! families, span names, kinds and attributes, log fields, service names)
//! are those of chapter 05: the dashboards, alerts and the log pipeline in
//! `config/` join on them, and the tests compare them with chapter 05's.

mod logs;
mod messaging;
mod metrics;
mod profiling;
mod traces;

use orders::Topology;

pub use logs::{DEFAULT_FILTER, grpc_server_span, init_logs, log_http};
pub use messaging::{TraceRelation, message_headers, mq_process};
pub use metrics::{
    GrpcServerLayer, MessageHandling, db_query, grpc_client, metrics_router, mq_publish,
    order_accepted, order_completed, order_created, track_http,
};
pub use profiling::profiling_router;
pub use traces::{InjectContext, TracedChannel, trace_response};

// ANCHOR: shutdown
/// Sends the spans still queued and writes out the logs still buffered:
/// the last thing a service does. Without it the spans of the last few
/// seconds are lost, those of the requests drained after a SIGTERM among
/// them.
pub async fn shutdown() {
    traces::shutdown_traces().await;
    logs::flush_logs();
}
// ANCHOR_END: shutdown

/// Lines for the banner of `all`: where to look at each pillar.
pub fn banner_hints(topology: &Topology) -> Vec<String> {
    let mut hints = metrics::banner_hints(topology);
    hints.extend(logs::banner_hints());
    hints.extend(traces::banner_hints(topology));
    hints.extend(messaging::banner_hints());
    hints.extend(profiling::banner_hints(topology));
    hints
}
