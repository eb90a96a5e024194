//! The runtime view: what the Tokio runtime's workers and tasks are doing.

use std::time::{Duration, Instant};

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::response::{IntoResponse, Json, Response};
use serde::Serialize;

use super::{DEFAULT_RUNTIME_SECONDS, ProfileQuery, ProfilingError, process_name, seconds};

// ANCHOR: runtime_view
/// `GET /debug/pprof/runtime?seconds=N[&format=json]`: what the Tokio
/// runtime is doing. Go's goroutine profile shows every goroutine's stack;
/// Tokio can show each task's stack too (`Handle::dump`, or tokio-console),
/// but only in builds with `--cfg tokio_unstable`. What stable Tokio does
/// count: its worker threads, the tasks alive, the tasks waiting in the
/// global queue, and per worker the time spent busy and the times it parked
/// (slept for lack of work). Busy time only means something over a window,
/// so this measures for `seconds` (1 unless said) and reports the share.
///
/// The future `#[tokio::main]` runs is not on a worker but on the main
/// thread, so what it does itself (here: the consume loop and the accept
/// loops) is in none of these numbers; the tasks it spawns are.
pub(super) async fn runtime_view(
    query: Result<Query<ProfileQuery>, QueryRejection>,
) -> Result<Response, ProfilingError> {
    let Query(query) = query?;
    let window = seconds(query.seconds.as_deref(), DEFAULT_RUNTIME_SECONDS)?;
    let json = match query.format.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            return Err(ProfilingError::BadRequest(format!(
                "format must be text or json, not {other:?}"
            )));
        }
    };
    let metrics = tokio::runtime::Handle::current().metrics();
    let busy = |worker| metrics.worker_total_busy_duration(worker);
    let workers = metrics.num_workers();
    let started = Instant::now();
    let busy_before: Vec<Duration> = (0..workers).map(busy).collect();
    tokio::time::sleep(window).await;
    let elapsed = started.elapsed();
    let view = RuntimeView {
        window_seconds: elapsed.as_secs_f64(),
        workers,
        alive_tasks: metrics.num_alive_tasks(),
        global_queue_depth: metrics.global_queue_depth(),
        per_worker: busy_before
            .into_iter()
            .enumerate()
            .map(|(worker, before)| {
                let total = busy(worker);
                WorkerView {
                    worker,
                    // Read a little after `elapsed`: keep the share at most 1.
                    busy_ratio: ((total - before).as_secs_f64() / elapsed.as_secs_f64()).min(1.0),
                    busy_seconds_total: total.as_secs_f64(),
                    parks_total: metrics.worker_park_count(worker),
                    // The count goes up on each park and each unpark.
                    parked: metrics.worker_park_unpark_count(worker) % 2 == 1,
                }
            })
            .collect(),
    };
    Ok(if json {
        Json(view).into_response()
    } else {
        view.to_string().into_response()
    })
}

/// The runtime at the end of a window.
#[derive(Serialize)]
struct RuntimeView {
    window_seconds: f64,
    workers: usize,
    /// Tasks spawned and not finished: a number that only grows is a leak
    /// of tasks, Rust's form of a goroutine leak.
    alive_tasks: usize,
    /// Tasks ready to run that no worker has picked up: above 0 for long,
    /// the workers cannot keep up (or one is blocked by a blocking call).
    global_queue_depth: usize,
    per_worker: Vec<WorkerView>,
}

#[derive(Serialize)]
struct WorkerView {
    worker: usize,
    /// Share of the window this worker spent running tasks.
    busy_ratio: f64,
    busy_seconds_total: f64,
    parks_total: u64,
    /// Asleep for lack of work at the end of the window. The worker
    /// answering this request is awake.
    parked: bool,
}

impl std::fmt::Display for RuntimeView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "Tokio runtime of {}, over {:.2} s",
            process_name(),
            self.window_seconds
        )?;
        writeln!(f, "workers             {}", self.workers)?;
        writeln!(f, "alive tasks         {}", self.alive_tasks)?;
        writeln!(f, "global queue depth  {}", self.global_queue_depth)?;
        writeln!(f)?;
        writeln!(f, "worker   busy  busy total   parks  now")?;
        for w in &self.per_worker {
            writeln!(
                f,
                "{:>6} {:>5.1}% {:>10.3}s {:>7}  {}",
                w.worker,
                w.busy_ratio * 100.0,
                w.busy_seconds_total,
                w.parks_total,
                if w.parked { "parked" } else { "running" }
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "Each task's stack, as Go's goroutine profile shows, needs a build with \
             --cfg tokio_unstable (Handle::dump, tokio-console)."
        )
    }
}
// ANCHOR_END: runtime_view
