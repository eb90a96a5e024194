//! Profiles, on the admin port only: a profile shows the program's insides,
//! and taking one costs CPU. Each service serves what Go's `net/http/pprof`
//! serves:
//!
//! - `GET /debug/pprof/profile?seconds=N`: where the CPU time went during
//!   the next N seconds, as a gzipped pprof protobuf, the format `go tool
//!   pprof`, Pyroscope and Grafana read; `&format=svg` draws it instead.
//! - `GET /debug/pprof/flamegraph?seconds=N`: the same sampling as an SVG
//!   flamegraph, for a browser.
//! - `GET /debug/pprof/heap`: the memory in use, by the stack that allocated
//!   it, sampled by jemalloc, as a gzipped pprof protobuf.
//! - `GET /debug/pprof/runtime`: the Tokio runtime's workers and tasks, the
//!   closest stable Rust comes to Go's goroutine profile (`?format=json`).
//! - `GET /debug/pprof/`: this list.
//!
//! The heap profile needs jemalloc as the global allocator with its
//! sampler on: both are set in `main.rs`, because only the binary can.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use flate2::Compression;
use flate2::write::GzEncoder;
use orders::Topology;
use orders::topology::Service;
use pprof::protos::Message as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// How long a CPU profile samples unless `seconds` says otherwise: long
/// enough for a few hundred samples of a busy process.
const DEFAULT_CPU_SECONDS: u64 = 10;
/// How long the runtime view measures how busy the workers are.
const DEFAULT_RUNTIME_SECONDS: u64 = 1;
/// The longest a profile may sample. The sampler is one per process, so a
/// long profile keeps everyone else's waiting, and a client or proxy
/// between tends to give up on a request after a minute anyway.
const MAX_SECONDS: u64 = 60;
/// Samples per second of CPU time. 99 rather than 100, so the sampling does
/// not run in lockstep with work that repeats every 10 ms.
const SAMPLES_PER_SECOND: i32 = 99;
/// Libraries in which a sample is dropped rather than taken. The sampler
/// is a signal handler that walks the stack; if the signal interrupts the
/// unwinder itself (libgcc), or libc or pthread in the middle of a lock, the
/// handler's own walk could deadlock. vdso has wrong unwind tables on some
/// systems. Dropping those few samples is the price of never hanging.
const BLOCKLIST: &[&str] = &["libc", "libgcc", "pthread", "vdso"];

/// The routes, to merge into a service's admin router, never into the
/// public one.
pub fn profiling_router() -> Router {
    Router::new()
        .route("/debug/pprof", get(index))
        .route("/debug/pprof/", get(index))
        .route("/debug/pprof/profile", get(cpu_profile))
        .route("/debug/pprof/flamegraph", get(flamegraph))
        .route("/debug/pprof/heap", get(heap_profile))
        .route("/debug/pprof/runtime", get(runtime_view))
}

/// Lines for the banner of `all`: how to look at a profile.
pub fn banner_hints(topology: &Topology) -> Vec<String> {
    let task = topology.admin(Service::Task);
    vec![
        "Profiles, on each service's admin port (index at /debug/pprof/):".to_owned(),
        format!("  go tool pprof -top http://{task}/debug/pprof/profile?seconds=10   # task's CPU"),
        format!(
            "  curl -so flame.svg http://{task}/debug/pprof/flamegraph?seconds=10  # open in a browser"
        ),
    ]
}

/// The query string of the profile routes.
#[derive(Deserialize)]
struct ProfileQuery {
    seconds: Option<String>,
    format: Option<String>,
}

/// Why a profile was not served; answered as JSON `{"error": ...}`.
#[derive(Debug)]
enum ProfilingError {
    /// A parameter is malformed or out of range: 400.
    BadRequest(String),
    /// A CPU profile is already being taken: 409.
    Busy,
    /// This build or configuration cannot give that profile: 501.
    Unavailable(String),
    /// The profiler failed: 500.
    Failed(String),
}

impl IntoResponse for ProfilingError {
    fn into_response(self) -> Response {
        let (status, error) = match self {
            Self::BadRequest(error) => (StatusCode::BAD_REQUEST, error),
            Self::Busy => (
                StatusCode::CONFLICT,
                "a CPU profile is already being taken in this process; retry when it is done"
                    .to_owned(),
            ),
            Self::Unavailable(error) => (StatusCode::NOT_IMPLEMENTED, error),
            Self::Failed(error) => (StatusCode::INTERNAL_SERVER_ERROR, error),
        };
        (status, Json(json!({ "error": error }))).into_response()
    }
}

impl From<QueryRejection> for ProfilingError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}

/// `seconds` as a duration: `default` when absent, else a whole number from
/// 1 to [`MAX_SECONDS`]. Anything else is refused rather than replaced by a
/// default, so a typo never starts a profile of another length.
fn seconds(raw: Option<&str>, default: u64) -> Result<Duration, ProfilingError> {
    let Some(raw) = raw else {
        return Ok(Duration::from_secs(default));
    };
    match raw.parse::<u64>() {
        Ok(seconds @ 1..=MAX_SECONDS) => Ok(Duration::from_secs(seconds)),
        Ok(seconds) => Err(ProfilingError::BadRequest(format!(
            "seconds must be from 1 to {MAX_SECONDS}, not {seconds}"
        ))),
        Err(_) => Err(ProfilingError::BadRequest(format!(
            "seconds must be a whole number from 1 to {MAX_SECONDS}, not {raw:?}"
        ))),
    }
}

/// What a CPU profile is rendered as.
#[derive(Clone, Copy)]
enum CpuFormat {
    /// Gzipped pprof protobuf, for tools.
    Pprof,
    /// An SVG flamegraph, for people.
    Svg,
}

/// Held while this process takes a CPU profile. The sampler is process-wide
/// (one timer, one signal handler), so a second profile cannot run beside
/// the first. A second request gets 409 at once: `try_lock`, never `lock`,
/// since a request queued behind a minute-long profile would time out and
/// then sample another minute than the one it asked about.
static CPU_PROFILE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `GET /debug/pprof/profile?seconds=N[&format=svg]`.
async fn cpu_profile(
    query: Result<Query<ProfileQuery>, QueryRejection>,
) -> Result<Response, ProfilingError> {
    let Query(query) = query?;
    let duration = seconds(query.seconds.as_deref(), DEFAULT_CPU_SECONDS)?;
    let format = match query.format.as_deref() {
        None | Some("pprof" | "proto") => CpuFormat::Pprof,
        Some("svg" | "flamegraph") => CpuFormat::Svg,
        Some(other) => {
            return Err(ProfilingError::BadRequest(format!(
                "format must be pprof or svg, not {other:?}"
            )));
        }
    };
    let body = profile_cpu(duration, format).await?;
    Ok(match format {
        CpuFormat::Pprof => pprof_response(body, "profile"),
        CpuFormat::Svg => svg_response(body),
    })
}

/// Samples the whole process's CPU for `duration` and renders what it saw.
///
/// The sampler is a timer that sends the process SIGPROF 99 times per
/// second of CPU time it uses, in whichever thread is running; the signal
/// handler records that thread's stack. Between the start and the report
/// this function only awaits a timer, so the runtime goes on serving
/// requests and handling orders: that is what gets sampled.
async fn profile_cpu(duration: Duration, format: CpuFormat) -> Result<Vec<u8>, ProfilingError> {
    let one_at_a_time = CPU_PROFILE.try_lock().map_err(|_| ProfilingError::Busy)?;
    // Starting reads the list of loaded libraries (for the blocklist), and
    // the first start in a process loads the binary's symbols, which takes
    // a while in a debug build: blocking work, for a blocking thread.
    let sampling = tokio::task::spawn_blocking(|| {
        pprof::ProfilerGuardBuilder::default()
            .frequency(SAMPLES_PER_SECOND)
            .blocklist(BLOCKLIST)
            .build()
    })
    .await
    .map_err(|e| ProfilingError::Failed(format!("starting the CPU profiler: {e}")))?
    .map_err(|e| match e {
        // Someone in this process started pprof without this route.
        pprof::Error::Running => ProfilingError::Busy,
        e => ProfilingError::Failed(format!("starting the CPU profiler: {e}")),
    })?;
    // Sleep without blocking a worker; on SIGTERM stop early with what was
    // sampled so far, so a profile never holds up a shutdown.
    tokio::select! {
        () = tokio::time::sleep(duration) => {}
        () = orders::shutdown::terminated() => {}
    }
    // Turning addresses into function names reads the binary's symbol
    // table: blocking work, for a blocking thread. The sampler and the lock
    // go with it, so even when the client hangs up now, the next profile
    // waits until this one is really over.
    tokio::task::spawn_blocking(move || {
        let report = sampling
            .report()
            .frames_post_processor(without_sampler_frames)
            .build();
        drop(sampling);
        drop(one_at_a_time);
        let report = report.map_err(|e| ProfilingError::Failed(format!("reporting: {e}")))?;
        match format {
            CpuFormat::Pprof => encode_pprof(&report),
            CpuFormat::Svg => draw_flamegraph(&report, duration),
        }
    })
    .await
    .map_err(|e| ProfilingError::Failed(format!("rendering the profile: {e}")))?
}

/// Removes the sampler's own frames from the top of a stack. pprof drops
/// its signal handler's frame, but in a build where the stack walk is not
/// inlined into it (a debug build) the walk's own frames stay on top of
/// every stack and take all the "flat" time.
fn without_sampler_frames(frames: &mut pprof::Frames) {
    let sampler = |name: String| {
        ["backtrace::", "pprof::", "<pprof::"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
    };
    let own = frames
        .frames
        .iter()
        .take_while(|frame| frame.iter().any(|symbol| sampler(symbol.name())))
        .count();
    frames.frames.drain(..own);
}

/// The profile as Go serves it: the pprof `Profile` protobuf, gzipped.
/// pprof's protobuf types come from its own prost (0.12, not this
/// workspace's 0.14), so the encoding goes through its re-exported
/// `pprof::protos::Message`.
fn encode_pprof(report: &pprof::Report) -> Result<Vec<u8>, ProfilingError> {
    let profile = report
        .pprof()
        .map_err(|e| ProfilingError::Failed(format!("converting to pprof: {e}")))?;
    gzip(&profile.encode_to_vec())
}

/// `GET /debug/pprof/flamegraph?seconds=N`: the CPU profile drawn. Each box
/// is a function; its width is its share of the samples, the functions it
/// called stacked above it. The widest boxes at the top are where the time
/// went.
async fn flamegraph(
    query: Result<Query<ProfileQuery>, QueryRejection>,
) -> Result<Response, ProfilingError> {
    let Query(query) = query?;
    let duration = seconds(query.seconds.as_deref(), DEFAULT_CPU_SECONDS)?;
    Ok(svg_response(profile_cpu(duration, CpuFormat::Svg).await?))
}

fn draw_flamegraph(report: &pprof::Report, duration: Duration) -> Result<Vec<u8>, ProfilingError> {
    let title = format!("CPU of {} over {} s", process_name(), duration.as_secs());
    if report.data.is_empty() {
        // No frames, no flamegraph: say so in an image, not an empty body.
        let svg = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="800" height="60"><text x="10" y="35" font-family="monospace">{title}: no samples, the process used no CPU</text></svg>"#
        );
        return Ok(svg.into_bytes());
    }
    let mut options = pprof::flamegraph::Options::default();
    options.title = title;
    options.count_name = "samples".to_owned();
    let mut svg = Vec::new();
    report
        .flamegraph_with_options(&mut svg, &mut options)
        .map_err(|e| ProfilingError::Failed(format!("drawing the flamegraph: {e}")))?;
    Ok(svg)
}

/// `GET /debug/pprof/heap`: the memory in use now, by the stack that
/// allocated it (`inuse_space`, in bytes). jemalloc sampled about one
/// allocation per 512 KiB and scales each sample up, so small totals are
/// estimates; a leak shows as a stack whose bytes grow from one profile to
/// the next (`go tool pprof -diff_base old new`).
async fn heap_profile() -> Result<Response, ProfilingError> {
    let Some(control) = jemalloc_pprof::PROF_CTL.as_ref() else {
        return Err(ProfilingError::Unavailable(
            "jemalloc's heap profiling is off: malloc_conf needs prof:true".to_owned(),
        ));
    };
    let control = control.clone();
    // jemalloc writes the profile to a file, which is read back, parsed and
    // symbolised: blocking work.
    let profile = tokio::task::spawn_blocking(move || control.blocking_lock().dump_pprof())
        .await
        .map_err(|e| ProfilingError::Failed(format!("dumping the heap: {e}")))?
        .map_err(|e| ProfilingError::Failed(format!("dumping the heap: {e}")))?;
    // `dump_pprof` returns the protobuf already gzipped, as Go serves it.
    Ok(pprof_response(profile, "heap"))
}

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
async fn runtime_view(
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

/// `GET /debug/pprof/`: what is here, and how to use it.
async fn index(headers: HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("localhost");
    let mut page = format!(
        "/debug/pprof/ of {}: profiles of this process, as Go's net/http/pprof serves them.\n\n",
        process_name()
    );
    for (path, what) in [
        (
            "/debug/pprof/profile?seconds=10",
            "CPU profile, gzipped pprof protobuf (&format=svg: a flamegraph)",
        ),
        (
            "/debug/pprof/flamegraph?seconds=10",
            "the same sampling as an SVG flamegraph",
        ),
        (
            "/debug/pprof/heap",
            "memory in use by allocating stack, from jemalloc, gzipped pprof protobuf",
        ),
        (
            "/debug/pprof/runtime?seconds=1",
            "Tokio runtime: workers, tasks, queue, busy share (&format=json)",
        ),
    ] {
        writeln!(page, "  {path:<38} {what}").unwrap();
    }
    writeln!(
        page,
        "\nseconds: 1 to {MAX_SECONDS}; one CPU profile at a time (409 while one runs).\n\n\
         go tool pprof -top http://{host}/debug/pprof/profile?seconds=10\n\
         go tool pprof -http=: http://{host}/debug/pprof/heap"
    )
    .unwrap();
    page
}

/// The service this process runs, as its subcommand says (`task`, ...).
fn process_name() -> String {
    std::env::args()
        .nth(1)
        .filter(|arg| !arg.starts_with('-'))
        .unwrap_or_else(|| "this process".to_owned())
}

/// A pprof protobuf as Go's handlers send it: a download named `name`.
fn pprof_response(body: Vec<u8>, name: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        ],
        body,
    )
        .into_response()
}

fn svg_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml")], body).into_response()
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>, ProfilingError> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(bytes)
        .and_then(|()| gz.finish())
        .map_err(|e| ProfilingError::Failed(format!("compressing: {e}")))
}
