//! Test harness shared by every chapter's end-to-end tests.
//!
//! Everything here runs the real thing: a real `nats-server`, the chapter's
//! real binary with its three services as separate processes on free
//! loopback ports, real HTTP and gRPC between them. Each test owns its
//! system, ports and temporary directory, so tests run in parallel.

pub mod api;
pub mod contracts;
pub mod exposition;
pub mod launched;
pub mod logs;
pub mod otlp;
pub mod progress;
pub mod prometheus;
pub mod stack;
pub mod stuck_logic;
pub mod subject;
pub mod system;

use std::future::Future;
use std::time::Duration;

pub use api::{Api, order_body};
pub use launched::Launched;
pub use orders::nats_server::NatsServer;
pub use orders::topology::{Service, Topology};
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use progress::progress_report;
pub use stuck_logic::stuck_logic;
pub use subject::{FINAL, PENDING_SNAPSHOTS, Subject};
pub use system::{System, SystemBuilder};

/// How long a test waits for a condition before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `check` until it returns `Some`, or fails after `deadline` with
/// `what` in the message. The way tests wait: on a condition, never on a
/// fixed sleep.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
