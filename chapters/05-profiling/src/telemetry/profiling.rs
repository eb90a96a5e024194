//! Profiles: metrics say *that* a service is slow or big, traces say
//! *which request*; a profile says *which code*. Each service serves what
//! Go's `net/http/pprof` serves, on its admin port only: a profile shows the
//! program's insides, and taking one costs CPU.
//!
//! - `GET /debug/pprof/profile?seconds=N`: where the CPU time went during
//!   the next N seconds, as a gzipped pprof protobuf, the format `go tool
//!   pprof`, Pyroscope and Grafana read; `&format=svg` draws it instead
//!   (in [`cpu`]).
//! - `GET /debug/pprof/flamegraph?seconds=N`: the same sampling as an SVG
//!   flamegraph, for a browser.
//! - `GET /debug/pprof/heap`: the memory in use, by the stack that allocated
//!   it, sampled by jemalloc, as a gzipped pprof protobuf.
//! - `GET /debug/pprof/runtime`: the Tokio runtime's workers and tasks, the
//!   closest stable Rust comes to Go's goroutine profile (`?format=json`, in
//!   [`runtime`]).
//! - `GET /debug/pprof/`: this list.
//!
//! Everything profiling needs is in this module, the allocator included.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use flate2::Compression;
use flate2::write::GzEncoder;
use orders::Topology;
use orders::topology::Service;
use serde::Deserialize;
use serde_json::json;

mod cpu;
mod runtime;

// ANCHOR: allocator
/// jemalloc instead of the system allocator: it can record, for a sample of
/// the allocations, the stack that made them, and that is what a heap
/// profile is. With `unprefixed_malloc_on_supported_platforms` it also
/// serves C's `malloc`, so SQLite's memory is in the profile too.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings. It reads them when it starts, before `main`, so they
/// cannot be set by code: they are a symbol, `malloc_conf`, that jemalloc
/// looks up in the binary. `prof:true` turns the sampler on (without it
/// `jemalloc_pprof::PROF_CTL` is `None`), `prof_active:true` starts it at
/// once, and `lg_prof_sample:19` records one allocation per 2^19 bytes (512
/// KiB) allocated, on average: a stack trace for every allocation would
/// make every allocation slow.
///
/// jemalloc declares it as C's `const char *malloc_conf`: one pointer to a
/// NUL-terminated string. A `&u8` to the first byte is exactly that; a
/// `&[u8]`, as often shown, is a pointer *and* a length, and works only
/// because the pointer happens to come first.
// SAFETY: `export_name` is unsafe because two items exporting one name, or
// an item of another type than the one the C side reads, are undefined
// behaviour. Nothing else in the binary defines `malloc_conf`, and this is a
// pointer to NUL-terminated bytes, which is what jemalloc reads.
#[allow(unsafe_code)]
#[unsafe(export_name = "malloc_conf")]
pub static MALLOC_CONF: &u8 = &b"prof:true,prof_active:true,lg_prof_sample:19\0"[0];
// ANCHOR_END: allocator

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

// ANCHOR: router
/// The routes, to merge into a service's admin router, never into the
/// public one.
pub fn router() -> Router {
    Router::new()
        .route("/debug/pprof", get(index))
        .route("/debug/pprof/", get(index))
        .route("/debug/pprof/profile", get(cpu::cpu_profile))
        .route("/debug/pprof/flamegraph", get(cpu::flamegraph))
        .route("/debug/pprof/heap", get(heap_profile))
        .route("/debug/pprof/runtime", get(runtime::runtime_view))
}
// ANCHOR_END: router

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

// ANCHOR: errors
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
// ANCHOR_END: errors

// ANCHOR: heap
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
    // symbolised: blocking work, and the profiler's own (see below).
    let profile =
        tokio::task::spawn_blocking(move || profilers_own(|| control.blocking_lock().dump_pprof()))
            .await
            .map_err(|e| ProfilingError::Failed(format!("dumping the heap: {e}")))?
            .map_err(|e| ProfilingError::Failed(format!("dumping the heap: {e}")))?;
    // `dump_pprof` returns the protobuf already gzipped, as Go serves it.
    Ok(pprof_response(profile, "heap"))
}
// ANCHOR_END: heap

// ANCHOR: own_cost
/// Runs `work`, the profiler's own blocking work: stopping the CPU sampler
/// and naming what it saw, or reading out the heap profile, then encoding.
/// A profiler lives in the process it measures, so left alone it shows up
/// in what it measures. Three things keep it out:
///
/// - jemalloc does not sample this thread's allocations meanwhile, so a
///   heap profile shows the service's memory and not the profiler's: the
///   CPU sampler's table of stacks and the symbolizer's copy of the
///   binary's debug information.
/// - The symbolizer's cache is dropped when the work is done. `backtrace`
///   otherwise keeps the debug information it parsed, tens of MiB in a
///   debug build, for the life of the process; the next profile parses it
///   again, which costs time (seconds in a debug build) and no memory.
/// - jemalloc gives the pages freed by then back to the kernel at once,
///   rather than keeping them for later allocations, so the resident memory
///   goes back to where it was.
///
/// What stays is the CPU sampler's table, allocated at the first CPU
/// profile and kept by pprof for the next one (its size is fixed when
/// pprof is compiled).
fn profilers_own<T>(work: impl FnOnce() -> T) -> T {
    let unsampled = HeapSampling::off_in_this_thread();
    let done = work();
    drop(unsampled);
    backtrace::clear_symbol_cache();
    give_back_free_pages();
    done
}

/// Turns jemalloc's sampling off in this thread until dropped, when it
/// comes back as it was. Threads of the blocking pool are reused, so it
/// must come back even if the work panics.
struct HeapSampling {
    was_active: Option<bool>,
}

impl HeapSampling {
    fn off_in_this_thread() -> Self {
        Self {
            was_active: thread_heap_sampling(false),
        }
    }
}

impl Drop for HeapSampling {
    fn drop(&mut self) {
        if let Some(was_active) = self.was_active {
            thread_heap_sampling(was_active);
        }
    }
}

/// Sets jemalloc's `thread.prof.active`, whether this thread's allocations
/// are sampled; returns what it was, or `None` without prof:true.
#[allow(unsafe_code)]
fn thread_heap_sampling(active: bool) -> Option<bool> {
    let (mut was, mut size, mut new) = (false, size_of::<bool>(), active);
    // SAFETY: `thread.prof.active` is a C bool that jemalloc documents as
    // readable and writable: `was` and `new` are one, `size` is its size.
    let failed = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"thread.prof.active".as_ptr(),
            (&raw mut was).cast(),
            &raw mut size,
            (&raw mut new).cast(),
            size_of::<bool>(),
        )
    };
    (failed == 0).then_some(was)
}

/// Returns the free pages of every jemalloc arena to the kernel now. By
/// default jemalloc keeps freed pages for about ten seconds, and only
/// gives them back while the process keeps allocating.
#[allow(unsafe_code)]
fn give_back_free_pages() {
    // This thread's cache of freed blocks first, then every arena (4096 is
    // MALLCTL_ARENAS_ALL).
    for command in [c"thread.tcache.flush", c"arena.4096.purge"] {
        // SAFETY: both commands take no value and return none, so every
        // pointer is null and the length 0, as jemalloc documents. A
        // failure changes nothing and is worth no more than what it frees.
        unsafe {
            tikv_jemalloc_sys::mallctl(
                command.as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            );
        }
    }
}
// ANCHOR_END: own_cost

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
