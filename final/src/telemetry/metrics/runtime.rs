//! The Tokio runtime's own numbers, as Prometheus metrics: worker threads,
//! tasks alive, tasks waiting in the global queue, and the time the workers
//! spent busy. A [`Collector`] computes its values when the registry is
//! gathered, so these are read from the runtime at each scrape rather than
//! kept up to date. Only stable runtime metrics: the others need
//! `--cfg tokio_unstable`.

use std::sync::Mutex;
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, IntGauge};

/// `tokio_workers`, `tokio_alive_tasks`, `tokio_global_queue_depth` (gauges)
/// and `tokio_busy_seconds_total` (a counter, seconds summed over workers),
/// for the runtime this was created on.
pub struct RuntimeCollector {
    runtime: tokio::runtime::Handle,
    workers: IntGauge,
    alive_tasks: IntGauge,
    global_queue_depth: IntGauge,
    busy_seconds: Counter,
    /// Scrapes may overlap; one at a time brings the counter up to date.
    scrape: Mutex<()>,
}

impl RuntimeCollector {
    /// Reads the runtime it is called on; call it inside that runtime.
    pub fn new() -> Self {
        let gauge = |name, help| IntGauge::new(name, help).expect("a valid gauge");
        Self {
            runtime: tokio::runtime::Handle::current(),
            workers: gauge("tokio_workers", "Worker threads of the Tokio runtime."),
            alive_tasks: gauge("tokio_alive_tasks", "Tasks spawned and not yet finished."),
            global_queue_depth: gauge(
                "tokio_global_queue_depth",
                "Tasks waiting in the runtime's global queue for a worker.",
            ),
            busy_seconds: Counter::new(
                "tokio_busy_seconds_total",
                "Time the workers spent running tasks, summed over workers.",
            )
            .expect("a valid counter"),
            scrape: Mutex::new(()),
        }
    }
}

impl Collector for RuntimeCollector {
    fn desc(&self) -> Vec<&Desc> {
        [
            self.workers.desc(),
            self.alive_tasks.desc(),
            self.global_queue_depth.desc(),
            self.busy_seconds.desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one_at_a_time = self.scrape.lock().unwrap();
        let runtime = self.runtime.metrics();
        let workers = runtime.num_workers();
        self.workers.set(workers as i64);
        self.alive_tasks.set(runtime.num_alive_tasks() as i64);
        self.global_queue_depth
            .set(runtime.global_queue_depth() as i64);
        let busy: Duration = (0..workers)
            .map(|worker| runtime.worker_total_busy_duration(worker))
            .sum();
        // A Prometheus counter only goes up: add what is new since the last scrape.
        let new = busy.as_secs_f64() - self.busy_seconds.get();
        self.busy_seconds.inc_by(new.max(0.0));
        [
            self.workers.collect(),
            self.alive_tasks.collect(),
            self.global_queue_depth.collect(),
            self.busy_seconds.collect(),
        ]
        .concat()
    }
}
