//! Where a service's CPU time goes, from a pprof CPU profile: the share of
//! samples per function or crate, both where the CPU was (flat: the leaf
//! frame) and what it was doing it for (cumulative: anywhere on the stack,
//! each sample counted once), and per category of work (telemetry layers,
//! the order's own work, libraries). The demo prints the top functions;
//! the bench prints all three.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use pprof::protos::Message;

/// `(function or crate, flat share, cumulative share)`, most flat first.
pub type Shares = Vec<(String, f64, f64)>;

/// The crate of a demangled Rust symbol: the first path segment of the
/// type or function (`<hyper::proto::h1::Conn<..> as Future>::poll` is
/// `hyper`). A symbol with no path is native code: libc, the allocator,
/// the kernel's vDSO, SQLite.
pub fn crate_of(symbol: &str) -> String {
    let mut name = symbol.trim_start();
    loop {
        let before = name;
        for prefix in ["<", "&", "mut ", "dyn ", "impl ", "const "] {
            name = name.strip_prefix(prefix).unwrap_or(name).trim_start();
        }
        if name == before {
            break;
        }
    }
    match name.find("::") {
        Some(end)
            if !name[..end].is_empty() && !name[..end].contains(|c: char| "<>(), ".contains(c)) =>
        {
            name[..end].to_owned()
        }
        _ => "[native]".to_owned(),
    }
}

/// The telemetry a sample's CPU time is spent on, or what else, by the
/// frames on its stack. Telemetry wins when any of its frames is on the
/// stack: a log line's JSON is formatted by serde_json, but it is the log's
/// cost. Frames that only wrap the business future (`Instrumented<T>`,
/// `WithContext<T>` polling it) do not count, or every request would be
/// "telemetry".
pub const CATEGORIES: [(&str, &[&str]); 11] = [
    (
        "logs and span bookkeeping (tracing-subscriber)",
        &["tracing_subscriber", "tracing_core", "tracing_log"],
    ),
    (
        "spans: building and exporting (opentelemetry)",
        &[
            "tracing_opentelemetry",
            "opentelemetry",
            "opentelemetry_sdk",
            "opentelemetry_otlp",
            "opentelemetry_proto",
            "opentelemetry_http",
        ],
    ),
    ("metrics (prometheus)", &["prometheus"]),
    ("heap profiling (jemalloc prof)", &["[jemalloc-prof]"]),
    ("the order's work (orders::fulfilment)", &["[fulfilment]"]),
    (
        "SQLite (sqlx)",
        &[
            "sqlx",
            "sqlx_core",
            "sqlx_sqlite",
            "libsqlite3_sys",
            "[sqlite]",
        ],
    ),
    ("NATS client (async-nats)", &["async_nats"]),
    (
        "gRPC (tonic, prost, h2)",
        &["tonic", "tonic_prost", "prost", "h2"],
    ),
    (
        "HTTP (hyper, axum, tower)",
        &[
            "hyper",
            "hyper_util",
            "axum",
            "axum_core",
            "tower",
            "tower_http",
            "http",
            "httparse",
            "http_body_util",
        ],
    ),
    ("JSON (serde_json)", &["serde_json"]),
    (
        "async runtime (tokio, mio)",
        &["tokio", "mio", "tokio_util", "tokio_stream"],
    ),
];

/// The first `TELEMETRY` categories are telemetry.
pub const TELEMETRY: usize = 4;

/// What decides a frame's category: its crate, with a few native symbols
/// and one module of `orders` named apart.
fn category_key(function: &str) -> String {
    if function.starts_with("_rjem_je_prof") || function.starts_with("je_prof") {
        return "[jemalloc-prof]".to_owned();
    }
    if function.starts_with("sqlite3") {
        return "[sqlite]".to_owned();
    }
    if function.contains("orders::fulfilment::") {
        return "[fulfilment]".to_owned();
    }
    crate_of(function)
}

fn is_wrapper(function: &str) -> bool {
    function.contains("Instrumented<")
        || function.contains("WithContext<")
        || function.contains("with_default")
}

/// The share of samples in each of [`CATEGORIES`], and `other` (the
/// standard library, libc, the allocator, the kernel, everything else).
pub fn categories(body: &[u8]) -> anyhow::Result<Vec<(String, f64)>> {
    let (stacks, total) = stacks(body)?;
    let mut counts = vec![0i64; CATEGORIES.len() + 1];
    for (frames, weight) in &stacks {
        let keys: Vec<(String, bool)> = frames
            .iter()
            .map(|f| (category_key(f), is_wrapper(f)))
            .collect();
        let find = |range: std::ops::Range<usize>| {
            // Leaf first: the innermost frame that names a category.
            keys.iter().find_map(|(key, wrapper)| {
                if *wrapper {
                    return None;
                }
                range
                    .clone()
                    .find(|&c| CATEGORIES[c].1.contains(&key.as_str()))
            })
        };
        let category = find(0..TELEMETRY)
            .or_else(|| find(TELEMETRY..CATEGORIES.len()))
            .unwrap_or(CATEGORIES.len());
        counts[category] += weight;
    }
    let share = |n: i64| {
        if total > 0 {
            n as f64 / total as f64
        } else {
            0.0
        }
    };
    Ok(CATEGORIES
        .iter()
        .map(|(name, _)| (*name).to_owned())
        .chain(["other: std, libc, allocator, kernel".to_owned()])
        .zip(counts)
        .map(|(name, n)| (name, share(n)))
        .collect())
}

/// A sample's function names, leaf first (inlined frames included), and
/// its weight.
type Stack = (Vec<String>, i64);

/// Every sample's stack, and the total weight.
fn stacks(body: &[u8]) -> anyhow::Result<(Vec<Stack>, i64)> {
    let mut bytes = Vec::new();
    if body.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(body).read_to_end(&mut bytes)?;
    } else {
        bytes = body.to_vec();
    }
    let profile = pprof::protos::Profile::decode(bytes.as_slice())?;
    let functions: BTreeMap<u64, &str> = profile
        .function
        .iter()
        .map(|f| {
            let name = profile
                .string_table
                .get(f.name as usize)
                .map_or("", String::as_str);
            (f.id, name)
        })
        .collect();
    let locations: BTreeMap<u64, Vec<String>> = profile
        .location
        .iter()
        .map(|l| {
            let names = l
                .line
                .iter()
                .filter_map(|line| functions.get(&line.function_id))
                .map(|name| (*name).to_owned())
                .collect();
            (l.id, names)
        })
        .collect();
    let mut total = 0;
    let stacks = profile
        .sample
        .iter()
        .map(|sample| {
            let weight = sample.value.first().copied().unwrap_or(0);
            total += weight;
            let frames = sample
                .location_id
                .iter()
                .filter_map(|id| locations.get(id))
                .flatten()
                .cloned()
                .collect();
            (frames, weight)
        })
        .collect();
    Ok((stacks, total))
}

/// The per-crate shares of a pprof CPU profile (gzipped or not). The
/// profiler's own frames (`pprof`, `backtrace`) are never the leaf.
pub fn crate_shares(body: &[u8]) -> anyhow::Result<Shares> {
    let (stacks, total) = stacks(body)?;
    let mut shares = flat_and_cumulative(&stacks, total, |frame| {
        let name = crate_of(frame);
        let profiler = ["pprof", "backtrace"].contains(&name.as_str());
        (name, !profiler)
    });
    shares.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.2.total_cmp(&a.2)));
    Ok(shares)
}

/// The `count` functions with the most CPU samples in a pprof profile
/// (gzipped or not), most flat first: what `go tool pprof -top` lists.
pub fn top_functions(body: &[u8], count: usize) -> anyhow::Result<Shares> {
    let (stacks, total) = stacks(body)?;
    let mut top = flat_and_cumulative(&stacks, total, |frame| (frame.to_owned(), true));
    top.retain(|(_, flat, _)| *flat > 0.0);
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    top.truncate(count);
    Ok(top)
}

/// The `count` places that allocated the most of what a heap profile
/// (jemalloc's, gzipped or not) says is in use, most first: each sample's
/// bytes go to its first frame outside the allocator, the profiler and the
/// standard library's allocating helpers (`Vec`, `Box`), so the list names
/// the code that asked for the memory, which `go tool pprof -top` leaves
/// to the reader (its flat column is all allocator).
pub fn top_allocation_sites(body: &[u8], count: usize) -> anyhow::Result<Shares> {
    let (stacks, total) = stacks(body)?;
    let mut top = flat_and_cumulative(&stacks, total, |frame| {
        (frame.to_owned(), !is_allocation_machinery(frame))
    });
    top.retain(|(_, flat, _)| *flat > 0.0);
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    top.truncate(count);
    Ok(top)
}

/// Is `frame` the allocator's, the profiler's, or a standard library
/// helper that allocates for its caller?
fn is_allocation_machinery(frame: &str) -> bool {
    // jemalloc's and libc's own symbols, the Rust allocator shims, and
    // frames the symbolizer could not name (`[orders-final]`).
    let native = [
        "prof_", "je_", "_rjem_", "imalloc", "malloc", "calloc", "realloc", "__rust", "[",
    ];
    if native.iter().any(|prefix| frame.starts_with(prefix)) {
        return true;
    }
    let helpers = [
        "alloc::",
        "core::",
        "std::",
        "tikv_jemalloc",
        "jemalloc_pprof",
    ];
    helpers.iter().any(|path| frame.contains(path))
}

/// Flat and cumulative shares per key, unsorted. `key` maps a frame to its
/// key and whether that frame may be the leaf: flat goes to the first
/// frame of a stack that may, cumulative once to every key on the stack.
fn flat_and_cumulative(
    stacks: &[Stack],
    total: i64,
    key: impl Fn(&str) -> (String, bool),
) -> Shares {
    let mut flat: BTreeMap<String, i64> = BTreeMap::new();
    let mut cumulative: BTreeMap<String, i64> = BTreeMap::new();
    for (frames, weight) in stacks {
        let keys: Vec<(String, bool)> = frames.iter().map(|f| key(f)).collect();
        if let Some((leaf, _)) = keys.iter().find(|(_, may_be_leaf)| *may_be_leaf) {
            *flat.entry(leaf.clone()).or_default() += weight;
        }
        let seen: BTreeSet<&String> = keys.iter().map(|(k, _)| k).collect();
        for name in seen {
            *cumulative.entry(name.clone()).or_default() += weight;
        }
    }
    let share = |n: i64| {
        if total > 0 {
            n as f64 / total as f64
        } else {
            0.0
        }
    };
    cumulative
        .iter()
        .map(|(name, n)| {
            (
                name.clone(),
                share(flat.get(name).copied().unwrap_or(0)),
                share(*n),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_is_charged_to_the_code_that_asked_for_it() {
        for machinery in [
            "prof_backtrace_impl",
            "_rjem_je_malloc_default",
            "__rust_alloc",
            "alloc::raw_vec::RawVec<T,A>::allocate_in",
            "<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
            "core::ops::function::FnOnce::call_once",
            "__rustc::__rust_alloc",
            "malloc",
            "[orders-final]",
        ] {
            assert!(is_allocation_machinery(machinery), "{machinery}");
        }
        for site in [
            "orders_final::faults::Faults::leak",
            "leak",
            "<hyper::proto::h1::conn::Conn<I,B,T>>::poll_read",
            "tokio::runtime::task::raw::poll",
        ] {
            assert!(!is_allocation_machinery(site), "{site}");
        }
    }

    #[test]
    fn crates_come_from_the_leading_path() {
        assert_eq!(crate_of("tokio::runtime::park::Inner::park"), "tokio");
        assert_eq!(
            crate_of("<hyper::proto::h1::conn::Conn<I,B,T> as core::future::Future>::poll"),
            "hyper"
        );
        assert_eq!(
            crate_of("<&mut serde_json::de::Deserializer<R>>::parse"),
            "serde_json"
        );
        assert_eq!(crate_of("core::ptr::drop_in_place<tonic::Status>"), "core");
        assert_eq!(crate_of("__memmove_avx_unaligned_erms"), "[native]");
        assert_eq!(crate_of("sqlite3VdbeExec"), "[native]");
        assert_eq!(crate_of("<[T] as core::fmt::Debug>::fmt"), "[native]");
    }

    fn profile(names: &[&str], samples: &[(&[u64], i64)]) -> Vec<u8> {
        use pprof::protos::{Function, Line, Location, Profile, Sample};
        let mut string_table = vec![String::new()];
        string_table.extend(names.iter().map(|n| (*n).to_owned()));
        let ids = 1..=names.len() as u64;
        Profile {
            string_table,
            function: ids
                .clone()
                .map(|id| Function {
                    id,
                    name: id as i64,
                    ..Default::default()
                })
                .collect(),
            location: ids
                .map(|id| Location {
                    id,
                    line: vec![Line {
                        function_id: id,
                        line: 0,
                    }],
                    ..Default::default()
                })
                .collect(),
            sample: samples
                .iter()
                .map(|(stack, weight)| Sample {
                    location_id: stack.to_vec(),
                    value: vec![*weight],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn shares_count_each_crate_once_per_sample() {
        let body = profile(
            &[
                "orders::fulfilment::mix",
                "orders::fulfilment::plan_packing",
                "tokio::runtime::task::poll",
                "memcpy",
            ],
            // mix <- plan_packing <- tokio: orders twice on the stack.
            &[(&[1, 2, 3], 3), (&[4, 3], 1)],
        );
        assert_eq!(
            crate_shares(&body).unwrap(),
            vec![
                ("orders".to_owned(), 0.75, 0.75),
                ("[native]".to_owned(), 0.25, 0.25),
                ("tokio".to_owned(), 0.0, 1.0),
            ]
        );
    }

    #[test]
    fn top_functions_count_flat_at_the_leaf_and_cumulative_anywhere() {
        let body = profile(&["mix", "plan_packing"], &[(&[1, 2], 3), (&[2], 1)]);
        assert_eq!(
            top_functions(&body, 10).unwrap(),
            vec![
                ("mix".to_owned(), 0.75, 0.75),
                ("plan_packing".to_owned(), 0.25, 1.0)
            ]
        );
        assert_eq!(top_functions(&body, 1).unwrap().len(), 1);
    }

    #[test]
    fn telemetry_wins_but_wrappers_do_not_count() {
        let body = profile(
            &[
                "serde_json::ser::format_escaped_str", // 1
                "<tracing_subscriber::fmt::Layer<S,N,E,W> as Layer<S>>::on_event", // 2
                "tokio::runtime::task::poll",          // 3
                "<tracing::instrument::Instrumented<T> as core::future::Future>::poll", // 4
                "sqlite3VdbeExec",                     // 5
                "orders::fulfilment::mix",             // 6
                "prometheus::histogram::Histogram::observe", // 7
                "malloc",                              // 8
            ],
            &[
                // A log line's JSON: logs.
                (&[1, 2, 3], 4),
                // SQLite under an instrumented future: SQLite.
                (&[5, 4, 3], 3),
                // The order's work.
                (&[6, 3], 2),
                // A histogram's malloc: metrics.
                (&[8, 7, 3], 1),
            ],
        );
        let shares: BTreeMap<String, f64> = categories(&body).unwrap().into_iter().collect();
        assert_eq!(shares[CATEGORIES[0].0], 0.4);
        assert_eq!(shares["SQLite (sqlx)"], 0.3);
        assert_eq!(shares["the order's work (orders::fulfilment)"], 0.2);
        assert_eq!(shares["metrics (prometheus)"], 0.1);
        let total: f64 = shares.values().sum();
        assert!((total - 1.0).abs() < 1e-9);
    }
}
