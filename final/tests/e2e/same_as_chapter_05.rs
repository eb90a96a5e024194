//! `final` shows what chapter 05 shows: the same progress report, the same
//! span trees, the same log lines, the same metric families. Each test runs
//! one check against both binaries, side by side, and compares the two
//! texts; chapter 05's own tests compare that text with its snapshots. So
//! a change to one that is not made to the other fails here.
//!
//! Chapter 05's binary is not a dependency of this package (a package with
//! only a binary cannot be one), so it is found beside `final`'s, in the
//! same target directory: `cargo test --workspace` and `cargo nextest run
//! --workspace` (what `cargo xtask test` runs) build it before any test
//! runs. With `-p final` alone, build it first: `cargo build -p
//! ch05-profiling`. `CH05_BIN` names another.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use testkit::system::CHAPTER_BIN_ENV;

use crate::{FINAL_BIN, messaging, traces};

/// The sources chapter 05's binary is built from.
const CHAPTER_05_SOURCES: &[&str] = &[
    "chapters/05-profiling/src",
    "chapters/05-profiling/Cargo.toml",
    "crates/orders/src",
    "crates/orders/proto",
    "crates/orders/build.rs",
    "crates/orders/Cargo.toml",
];

/// Chapter 05's binary: `$CH05_BIN`, else `ch05-profiling` beside `final`.
/// Fails when it is missing, or older than its sources.
fn chapter_05() -> String {
    assert!(
        std::env::var_os(CHAPTER_BIN_ENV).is_none(),
        "{CHAPTER_BIN_ENV} is set: every system would run that binary, chapter 05's \
         too, and the comparison would compare it with itself; unset it"
    );
    let binary = std::env::var_os("CH05_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(FINAL_BIN).with_file_name("ch05-profiling"));
    let build = "build it with `cargo build -p ch05-profiling` (`cargo test --workspace` and \
                 `cargo nextest run --workspace` build it on their own)";
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("no chapter 05 binary at {}: {build}", binary.display()));
    if std::env::var_os("CH05_BIN").is_none() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let newest = CHAPTER_05_SOURCES
            .iter()
            .filter_map(|source| newest_change(&root.join(source)))
            .max();
        if let Some((changed, path)) = newest {
            assert!(
                changed <= built,
                "the chapter 05 binary at {} is older than {}: {build}",
                binary.display(),
                path.display()
            );
        }
    }
    binary.into_os_string().into_string().unwrap()
}

/// The latest modification under `path`, and the file that had it.
fn newest_change(path: &Path) -> Option<(SystemTime, PathBuf)> {
    let metadata = std::fs::metadata(path).ok()?;
    if metadata.is_file() {
        return Some((metadata.modified().ok()?, path.to_owned()));
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| newest_change(&entry.path()))
        .max()
}

/// Fails unless the two texts are the same, showing how they differ.
fn assert_same(what: &str, ours: &str, chapter_05: &str) {
    if ours == chapter_05 {
        return;
    }
    let diff = similar::TextDiff::from_lines(chapter_05, ours)
        .unified_diff()
        .header("chapter 05", "final")
        .to_string();
    panic!("{what} of final differs from chapter 05's:\n{diff}");
}

/// The span tree of one order, of a `GET` that finds nothing, and of a
/// `POST` while logic is down.
#[tokio::test(flavor = "multi_thread")]
async fn the_span_trees_of_one_order_are_chapter_05s() {
    let chapter_05 = chapter_05();
    let (ours, theirs) = tokio::join!(
        traces::one_order_as_its_spans_show_it(FINAL_BIN),
        traces::one_order_as_its_spans_show_it(&chapter_05),
    );
    assert_same("the span trees", &ours, &theirs);
    assert!(ours.contains("task internal handle"), "{ours}");
}

/// One order's trace across NATS, the consumer span a child of the
/// producer span (the default).
#[tokio::test(flavor = "multi_thread")]
async fn the_trace_across_nats_is_chapter_05s() {
    let chapter_05 = chapter_05();
    let (ours, theirs) = tokio::join!(
        messaging::by_default_one_order_is_one_trace_across_nats(FINAL_BIN),
        messaging::by_default_one_order_is_one_trace_across_nats(&chapter_05),
    );
    assert_same("the trace across NATS", &ours, &theirs);
}

/// `--trace-relation link`: two traces, the second linking to the first.
#[tokio::test(flavor = "multi_thread")]
async fn the_traces_with_trace_relation_link_are_chapter_05s() {
    let chapter_05 = chapter_05();
    let (ours, theirs) = tokio::join!(
        messaging::with_trace_relation_link_each_message_is_a_trace_that_links(FINAL_BIN),
        messaging::with_trace_relation_link_each_message_is_a_trace_that_links(&chapter_05),
    );
    assert_same("the traces with --trace-relation link", &ours, &theirs);
}
