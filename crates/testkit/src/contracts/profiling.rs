//! Chapter 05's lesson, checked from outside: each service's admin port
//! serves a CPU profile that pprof tools read and that names the code that
//! burnt the CPU, the same as a flamegraph, a heap profile, and a view of
//! the runtime; one CPU profile at a time, bounded parameters, and the
//! service goes on working while it is profiled.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::{Api, Service, Subject, System, order_body};
use futures::future::join_all;
use pprof::protos::{Message, Profile};
use reqwest::{StatusCode, header};
use serde_json::Value;

/// The names the task's CPU-bound work goes by in a profile.
const PACKING: [&str; 2] = ["plan_packing", "mix"];

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// `GET path` on a service's admin port.
async fn get(system: &System, service: Service, path: &str) -> reqwest::Response {
    let url = format!("http://{}{path}", system.topology.admin(service));
    client()
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// Places orders, one after the other, until dropped: a steady load, so a
/// profile has work to see. Bounded, in case a test never drops it.
struct Load {
    stop: Arc<AtomicBool>,
    placed: tokio::task::JoinHandle<usize>,
}

impl Load {
    fn start(api: &Api) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let placed = tokio::spawn({
            let (api, stop) = (api.clone(), stop.clone());
            async move {
                let mut placed = 0;
                while !stop.load(Ordering::Relaxed) && placed < 5_000 {
                    api.place_order(&order_body("load", "A001", 10)).await;
                    placed += 1;
                }
                placed
            }
        });
        Self { stop, placed }
    }

    /// Stops placing orders; how many were placed.
    async fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.placed.await.expect("the load loop")
    }
}

/// A pprof body, gunzipped when gzipped (as Go serves it), decoded.
fn decode(body: &[u8]) -> Profile {
    let mut bytes = Vec::new();
    if body.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut bytes)
            .expect("gunzipping the profile");
    } else {
        bytes = body.to_vec();
    }
    Profile::decode(bytes.as_slice()).expect("a pprof Profile")
}

/// The names of the functions in a profile.
fn function_names(profile: &Profile) -> Vec<&str> {
    profile
        .function
        .iter()
        .map(|function| profile.string_table[function.name as usize].as_str())
        .collect()
}

/// `(type, unit)` of each value of a sample.
fn sample_types(profile: &Profile) -> Vec<(&str, &str)> {
    profile
        .sample_type
        .iter()
        .map(|t| {
            (
                profile.string_table[t.ty as usize].as_str(),
                profile.string_table[t.unit as usize].as_str(),
            )
        })
        .collect()
}

/// Is `name` the task's packing work, however qualified?
fn is_packing(name: &str) -> bool {
    PACKING
        .iter()
        .any(|packing| name == *packing || name.ends_with(&format!("::{packing}")))
}

/// Takes a CPU profile of `service` and checks it is served as Go serves one.
async fn cpu_profile(system: &System, service: Service, seconds: u32) -> Profile {
    let response = get(
        system,
        service,
        &format!("/debug/pprof/profile?seconds={seconds}"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/octet-stream"
    );
    let body = response.bytes().await.expect("reading the profile");
    assert!(body.starts_with(&[0x1f, 0x8b]), "gzipped, as Go serves it");
    decode(&body)
}

async fn assert_json_error(response: reqwest::Response, status: StatusCode) -> String {
    let url = response.url().to_string();
    assert_eq!(response.status(), status, "{url}");
    let body: Value = response.json().await.expect("a JSON error");
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{url}: no error in {body}"))
        .to_owned()
}

pub async fn a_cpu_profile_under_load_names_the_packing_work(subject: &Subject) {
    let system = subject.start().await;
    let load = Load::start(&system.api);

    let profile = cpu_profile(&system, Service::Task, 2).await;
    assert!(load.stop().await > 0, "orders were placed while sampling");

    assert_eq!(
        sample_types(&profile),
        [("samples", "count"), ("cpu", "nanoseconds")]
    );
    assert!(!profile.sample.is_empty(), "the profile has samples");
    let names = function_names(&profile);
    assert!(
        names.iter().any(|name| is_packing(name)),
        "{PACKING:?} in the profile's functions: {names:?}"
    );
    assert!(
        !names.iter().any(|name| name.starts_with("backtrace::")),
        "the sampler's own frames are removed"
    );
}

pub async fn a_flamegraph_is_svg_naming_the_packing_work(subject: &Subject) {
    let system = subject.start().await;
    let load = Load::start(&system.api);

    for path in [
        "/debug/pprof/flamegraph?seconds=2",
        "/debug/pprof/profile?seconds=2&format=svg",
    ] {
        let response = get(&system, Service::Task, path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "image/svg+xml");
        let svg = response.text().await.expect("reading the flamegraph");
        // inferno's SVG starts with a DOCTYPE, which roxmltree refuses unless told.
        let options = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        };
        let document = roxmltree::Document::parse_with_options(&svg, options)
            .unwrap_or_else(|e| panic!("{path} is not well-formed XML: {e}"));
        assert_eq!(document.root_element().tag_name().name(), "svg", "{path}");
        // Each box has a <title> tooltip: "name (N samples, P%)".
        let titles: Vec<&str> = document
            .descendants()
            .filter(|node| node.has_tag_name("title"))
            .filter_map(|node| node.text())
            .collect();
        assert!(
            titles
                .iter()
                .any(|title| PACKING.iter().any(|packing| title.contains(packing))),
            "{path}: a box for {PACKING:?} among {} boxes",
            titles.len()
        );
    }
    load.stop().await;
}

pub async fn a_heap_profile_decodes_with_space_in_use(subject: &Subject) {
    let system = subject.start().await;
    let order_id = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&order_id).await;

    for service in Service::ALL {
        let response = get(&system, service, "/debug/pprof/heap").await;
        assert_eq!(response.status(), StatusCode::OK, "{service}");
        let body = response.bytes().await.expect("reading the heap profile");
        // jemalloc_pprof gzips it, as Go does.
        assert!(body.starts_with(&[0x1f, 0x8b]), "{service}: gzipped");
        let profile = decode(&body);
        assert_eq!(
            sample_types(&profile),
            [("inuse_space", "bytes")],
            "{service}"
        );
        assert!(
            profile
                .sample
                .iter()
                .all(|s| s.value.iter().all(|v| *v >= 0)),
            "{service}: bytes in use are never negative"
        );
    }
}

pub async fn a_second_cpu_profile_at_the_same_time_gets_409(subject: &Subject) {
    let system = subject.start().await;

    // Both sent at once, each sampling 2 s: they overlap, so one must wait
    // its turn, and is told so at once. The gateway, another process with a
    // profiler of its own, is not busy.
    let [first, second, gateway] = join_all(
        [Service::Task, Service::Task, Service::Gateway]
            .map(|service| get(&system, service, "/debug/pprof/profile?seconds=2")),
    )
    .await
    .try_into()
    .expect("three responses");
    assert_eq!(gateway.status(), StatusCode::OK);
    let mut statuses = [first.status(), second.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    let refused = if first.status() == StatusCode::CONFLICT {
        first
    } else {
        second
    };
    let error = assert_json_error(refused, StatusCode::CONFLICT).await;
    assert!(error.contains("already"), "{error}");
}

pub async fn bad_or_out_of_range_parameters_get_400(subject: &Subject) {
    let system = subject.start().await;

    for query in [
        "/debug/pprof/profile?seconds=0",
        "/debug/pprof/profile?seconds=1000",
        "/debug/pprof/profile?seconds=abc",
        "/debug/pprof/profile?seconds=-1",
        "/debug/pprof/profile?seconds=",
        "/debug/pprof/profile?seconds=1&format=xml",
        "/debug/pprof/flamegraph?seconds=61",
        "/debug/pprof/runtime?seconds=0",
        "/debug/pprof/runtime?format=yaml",
    ] {
        let error = assert_json_error(
            get(&system, Service::Task, query).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(!error.is_empty(), "{query}");
    }
    // A refused request held nothing: a profile still starts.
    cpu_profile(&system, Service::Task, 1).await;
}

pub async fn orders_keep_completing_while_a_profile_runs(subject: &Subject) {
    let system = subject.start().await;

    let profile = tokio::spawn({
        let url = format!(
            "http://{}/debug/pprof/profile?seconds=2",
            system.topology.admin(Service::Task)
        );
        async move { client().get(url).send().await }
    });
    // Orders, one after the other, for as long as the profile runs.
    let mut ids = Vec::new();
    while !profile.is_finished() && ids.len() < 5_000 {
        let body = order_body(&format!("user-{}", ids.len()), "A001", 10);
        ids.push(system.api.place_order(&body).await);
    }
    for id in &ids {
        let order = system.api.wait_until_handled(id).await;
        assert_eq!(order["status"], "completed", "{order}");
    }

    let response = profile
        .await
        .expect("the profile request")
        .expect("a profile");
    assert_eq!(response.status(), StatusCode::OK);
    // The profile saw orders being packed: they were handled while it
    // sampled.
    let profile = decode(&response.bytes().await.expect("reading the profile"));
    let names = function_names(&profile);
    assert!(
        names.iter().any(|name| is_packing(name)),
        "{PACKING:?} in {names:?}"
    );
}

pub async fn the_runtime_view_and_the_index_describe_the_process(subject: &Subject) {
    let system = subject.start().await;

    let response = get(&system, Service::Logic, "/debug/pprof/runtime?format=json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let view: Value = response.json().await.expect("JSON");
    let workers = view["workers"].as_u64().expect("workers");
    assert!(workers >= 1, "{view}");
    assert!(view["alive_tasks"].as_u64().is_some(), "{view}");
    assert!(view["global_queue_depth"].as_u64().is_some(), "{view}");
    let per_worker = view["per_worker"].as_array().expect("per_worker");
    assert_eq!(per_worker.len() as u64, workers, "{view}");
    for worker in per_worker {
        let busy = worker["busy_ratio"].as_f64().expect("busy_ratio");
        assert!((0.0..=1.0).contains(&busy), "{worker}");
        assert!(worker["parks_total"].as_u64().is_some(), "{worker}");
    }

    let text = get(&system, Service::Logic, "/debug/pprof/runtime?seconds=1")
        .await
        .text()
        .await
        .expect("text");
    for line in ["workers", "alive tasks", "global queue depth", "busy"] {
        assert!(text.contains(line), "{line:?} in\n{text}");
    }

    for service in Service::ALL {
        let index = get(&system, service, "/debug/pprof/").await;
        assert_eq!(index.status(), StatusCode::OK);
        let index = index.text().await.expect("the index");
        for endpoint in ["profile", "flamegraph", "heap", "runtime"] {
            assert!(
                index.contains(&format!("/debug/pprof/{endpoint}")),
                "{service}: {endpoint} in\n{index}"
            );
        }
    }
}

pub async fn profiles_are_never_on_the_public_port(subject: &Subject) {
    let system = subject.start().await;
    for path in [
        "/debug/pprof/",
        "/debug/pprof/heap",
        "/debug/pprof/profile?seconds=1",
    ] {
        let response = system
            .api
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("a response");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

/// The crates whose allocations are the profiler's own: the CPU sampler,
/// the heap profile's reader, and the symbolizer both use.
const PROFILER_CRATES: [&str; 8] = [
    "pprof",
    "pprof_util",
    "jemalloc_pprof",
    "backtrace",
    "gimli",
    "addr2line",
    "object",
    "findshlibs",
];

/// How much ten profiles may add to a service's resident memory.
const TEN_PROFILES_BOUND: f64 = 10.0 * 1024.0 * 1024.0;

/// How many bytes of a heap profile may be below the profiler's crates:
/// four of jemalloc's sampling intervals (512 KiB, `lg_prof_sample:19`).
/// A small allocation that lasts counts as a whole interval when it happens
/// to be sampled, so one lasting allocation of the profiler's (a static it
/// makes at first use) can weigh 512 KiB in a profile of a few MiB; a share
/// of the total would fail on that by chance. What this guards against is
/// tens of MiB: the symbolizer's parsed debug information (70 MiB in a debug
/// build) or pprof's table of stacks (about 20 MiB), sampled.
const PROFILER_ALLOWANCE: i64 = 2 * 1024 * 1024;

/// A service's heap profile, decoded.
async fn heap_profile(system: &System, service: Service) -> Profile {
    let response = get(system, service, "/debug/pprof/heap").await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{service}'s heap profile"
    );
    decode(&response.bytes().await.expect("reading the heap profile"))
}

/// A service's resident memory now, in bytes, as its `/metrics` says
/// (`process_resident_memory_bytes`, read from the kernel at each scrape).
async fn resident_bytes(system: &System, service: Service) -> f64 {
    let text = get(system, service, "/metrics")
        .await
        .text()
        .await
        .expect("reading /metrics");
    let samples = crate::exposition::samples(&text).expect("the Prometheus text format");
    samples
        .iter()
        .find(|sample| sample.name == "process_resident_memory_bytes")
        .unwrap_or_else(|| panic!("{service}: no process_resident_memory_bytes on /metrics"))
        .value
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / 1024.0 / 1024.0)
}

/// Is `function` (demangled, maybe `<Type as Trait>::method`) code of one
/// of the profiler's crates?
fn is_profilers(function: &str) -> bool {
    let path = function.trim_start_matches(['<', '&']);
    PROFILER_CRATES.iter().any(|krate| {
        path.strip_prefix(krate)
            .is_some_and(|rest| rest.starts_with("::"))
    })
}

/// The function names on a sample's stack, innermost first.
fn stack<'p>(profile: &'p Profile, sample: &pprof::protos::Sample) -> Vec<&'p str> {
    sample
        .location_id
        .iter()
        .filter_map(|id| profile.location.iter().find(|location| location.id == *id))
        .flat_map(|location| &location.line)
        .filter_map(|line| {
            profile
                .function
                .iter()
                .find(|function| function.id == line.function_id)
        })
        .map(|function| profile.string_table[function.name as usize].as_str())
        .collect()
}

pub async fn ten_profiles_leave_the_memory_where_it_was(subject: &Subject) {
    let system = subject.start().await;
    let service = Service::Task;
    let order_id = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&order_id).await;

    // Heap profiles keep nothing: not even the first one.
    let started = resident_bytes(&system, service).await;
    for _ in 0..5 {
        heap_profile(&system, service).await;
    }
    settles_within(&system, service, started, "five heap profiles").await;

    // The first CPU profile sets up what every later one reuses (pprof's
    // table of stacks), a cost paid once per process; after it, CPU and
    // heap profiles keep nothing either.
    cpu_profile(&system, service, 1).await;
    let before = resident_bytes(&system, service).await;
    for _ in 0..5 {
        heap_profile(&system, service).await;
        cpu_profile(&system, service, 1).await;
    }
    settles_within(
        &system,
        service,
        before,
        "ten heap and CPU profiles after the first CPU profile",
    )
    .await;
}

/// Waits (up to 10 s) until `service`'s resident memory is within
/// [`TEN_PROFILES_BOUND`] of `before`, taken before `what`. The profiler
/// gives back what it used before it answers; the wait is only for the
/// service's own memory to settle.
async fn settles_within(system: &System, service: Service, before: f64, what: &str) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut after = resident_bytes(system, service).await;
    while after > before + TEN_PROFILES_BOUND && tokio::time::Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = resident_bytes(system, service).await;
    }
    assert!(
        after <= before + TEN_PROFILES_BOUND,
        "{service}'s resident memory: {} before {what}, {} after, more than {} added",
        mib(before),
        mib(after),
        mib(TEN_PROFILES_BOUND),
    );
}

pub async fn a_heap_profile_shows_the_service_not_the_profiler(subject: &Subject) {
    let system = subject.start().await;
    // Logic, whose own heap (SQLite's page cache, the pool) is the largest
    // of the three, so that its profile usually holds the service's own
    // memory beside whatever the profiler left.
    let service = Service::Logic;
    let order_id = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&order_id).await;

    // Everything the profiler keeps or leaves behind is there by now: its
    // table of stacks, and what symbolizing a CPU and a heap profile read.
    cpu_profile(&system, service, 1).await;
    heap_profile(&system, service).await;
    let profile = heap_profile(&system, service).await;

    let mut total = 0;
    let mut profilers = 0;
    let mut theirs = Vec::new();
    for sample in &profile.sample {
        let bytes = sample.value.first().copied().unwrap_or(0);
        total += bytes;
        let stack = stack(&profile, sample);
        if let Some(function) = stack.iter().find(|function| is_profilers(function)) {
            profilers += bytes;
            theirs.push((bytes, (*function).to_owned()));
        }
    }
    // No `total > 0` here: a heap this small can hold no sample at all
    // (one in 512 KiB), and the profiler's memory, tens of MiB when it is
    // sampled, would bring its own samples.
    theirs.sort_unstable_by(|a, b| b.cmp(a));
    theirs.truncate(5);
    assert!(
        profilers <= PROFILER_ALLOWANCE,
        "{service}'s heap profile: {} of {} in use below the profiler's own code (at most {} \
         allowed), the largest {theirs:?}",
        mib(profilers as f64),
        mib(total as f64),
        mib(PROFILER_ALLOWANCE as f64),
    );
}
