//! Graceful shutdown: one coordinator per process.
//!
//! On the first SIGTERM or Ctrl-C a shutdown *begins*: `/readyz` answers
//! 503 from then on, so a load balancer or an orchestrator stops sending.
//! After the delay (`--shutdown-delay-ms`, 0 by default) the service *stops
//! accepting*: its servers close their listeners and finish the requests in
//! flight, task stops pulling messages and finishes (and acks) the ones it
//! holds, logic stops its outbox sweep. That draining may take at most the
//! timeout (`--shutdown-timeout-ms`); a second signal ends it at once.
//! Then task writes out its last acks ([`flush_nats`]), the admin port
//! closes, and the service sends its last spans and exits.
//!
//! ```text
//! signal -> begun (readyz 503) -> delay -> stopping (listeners closed,
//!           in-flight work drained, at most the timeout) -> flush -> exit 0
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The shutdown of one process. Cheap to clone; every clone sees the same
/// shutdown.
#[derive(Clone, Debug)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// A shutdown was asked for: readiness fails from now on.
    begun: CancellationToken,
    /// The delay is over: stop accepting, drain.
    stopping: CancellationToken,
    /// Stop draining: the timeout passed, or a second signal came.
    forced: CancellationToken,
    delay: Duration,
    timeout: Duration,
}

/// The draining did not finish in time; the work left was abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abandoned;

impl Shutdown {
    /// A shutdown that begins when [`Shutdown::begin`] is called.
    pub fn new(delay: Duration, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                begun: CancellationToken::new(),
                stopping: CancellationToken::new(),
                forced: CancellationToken::new(),
                delay,
                timeout,
            }),
        }
    }

    /// A shutdown that begins on the first SIGTERM or SIGINT (Ctrl-C); the
    /// second one forces it. The handlers are installed before this
    /// returns, so a signal that comes while the service is still starting
    /// is not lost (nor does it kill the process outright).
    pub fn on_signals(delay: Duration, timeout: Duration) -> std::io::Result<Self> {
        let shutdown = Self::new(delay, timeout);
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let listener = shutdown.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            in_span(|| tracing::info!(signal = name, "shutting down"));
            listener.begin();
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            in_span(|| tracing::warn!(signal = name, "second signal: not waiting any longer"));
            listener.force();
        });
        Ok(shutdown)
    }

    // ANCHOR: begin
    /// Begins the shutdown (again: no effect): readiness fails now, and
    /// the servers stop accepting after the delay.
    pub fn begin(&self) {
        if self.inner.begun.is_cancelled() {
            return;
        }
        self.inner.begun.cancel();
        let inner = self.inner.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(inner.delay) => {}
                () = inner.forced.cancelled() => {}
            }
            inner.stopping.cancel();
        });
    }
    // ANCHOR_END: begin

    /// Stops the draining now.
    pub fn force(&self) {
        self.begin();
        self.inner.forced.cancel();
        self.inner.stopping.cancel();
    }

    /// Has a shutdown begun? Then the service is no longer ready.
    pub fn has_begun(&self) -> bool {
        self.inner.begun.is_cancelled()
    }

    /// Resolves when the servers should stop accepting, for
    /// `with_graceful_shutdown` and `serve_with_incoming_shutdown`.
    pub fn stopping(&self) -> WaitForCancellationFutureOwned {
        self.inner.stopping.clone().cancelled_owned()
    }

    /// The token of [`Shutdown::stopping`], for a loop that checks it.
    pub fn stopping_token(&self) -> CancellationToken {
        self.inner.stopping.clone()
    }

    // ANCHOR: drain
    /// Runs `work` (a service's servers and loops, which end by themselves
    /// once [`Shutdown::stopping`] fires and their in-flight work is done)
    /// to its end; once the shutdown is stopping, for at most the timeout,
    /// after which `work` is dropped and [`Abandoned`] returned.
    pub async fn drain<F: Future>(&self, work: F) -> Result<F::Output, Abandoned> {
        let mut work = std::pin::pin!(work);
        tokio::select! {
            output = &mut work => return Ok(output),
            () = self.inner.stopping.cancelled() => {}
        }
        tokio::select! {
            output = &mut work => Ok(output),
            () = tokio::time::sleep(self.inner.timeout) => {
                in_span(|| tracing::warn!(
                    timeout_ms = self.inner.timeout.as_millis() as u64,
                    "in-flight work not drained in time, abandoned"
                ));
                self.inner.forced.cancel();
                Err(Abandoned)
            }
            () = self.inner.forced.cancelled() => Err(Abandoned),
        }
    }
    // ANCHOR_END: drain
}

/// Writes out what the NATS client still buffers, on the way out, once the
/// draining is over: task's acks of its last messages, which would be lost
/// with the process otherwise (JetStream would deliver those messages
/// again). A NATS that does not take them within a second is given up on.
pub async fn flush_nats(client: &async_nats::Client) {
    if tokio::time::timeout(Duration::from_secs(1), client.flush())
        .await
        .is_err()
    {
        in_span(|| tracing::warn!("NATS did not take the last acks in time"));
    }
}

/// Runs `log` in a span of its own, so that the line has a trace id as
/// every line does.
fn in_span(log: impl FnOnce()) {
    tracing::info_span!("shutdown").in_scope(log);
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn begun_then_stopping_after_the_delay() {
        let shutdown = Shutdown::new(Duration::from_secs(2), LONG);
        assert!(!shutdown.has_begun());
        shutdown.begin();
        assert!(shutdown.has_begun());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !shutdown.stopping_token().is_cancelled(),
            "still in the delay"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(shutdown.stopping_token().is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_ends_in_time_is_drained() {
        let shutdown = Shutdown::new(Duration::ZERO, Duration::from_secs(10));
        let stopping = shutdown.stopping();
        let work = async move {
            stopping.await;
            tokio::time::sleep(Duration::from_secs(5)).await; // in-flight work
            "drained"
        };
        shutdown.begin();
        assert_eq!(shutdown.drain(work).await, Ok("drained"));
    }

    #[tokio::test(start_paused = true)]
    async fn work_past_the_timeout_is_abandoned() {
        let shutdown = Shutdown::new(Duration::ZERO, Duration::from_secs(10));
        let work = std::future::pending::<()>();
        shutdown.begin();
        let started = tokio::time::Instant::now();
        assert_eq!(shutdown.drain(work).await, Err(Abandoned));
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn force_ends_the_delay_and_the_draining() {
        let shutdown = Shutdown::new(LONG, LONG);
        shutdown.begin();
        let forcer = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            forcer.force();
        });
        assert_eq!(
            shutdown.drain(std::future::pending::<()>()).await,
            Err(Abandoned)
        );
        assert!(shutdown.stopping_token().is_cancelled());
    }

    #[tokio::test]
    async fn work_that_ends_before_any_shutdown_is_returned() {
        let shutdown = Shutdown::new(Duration::ZERO, LONG);
        assert_eq!(shutdown.drain(async { 7 }).await, Ok(7));
        assert!(!shutdown.has_begun());
    }
}
