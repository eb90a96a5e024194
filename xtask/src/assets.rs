//! `cargo xtask book-assets`: every picture of the book, generated into
//! `book/assets/` (the SVG files are committed). One command makes them
//! all, the ones that need a running system too: it builds and runs
//! chapters 03 and 04 (debug) and 05 (release) itself, each on free ports
//! with its own nats-server, as `cargo xtask demo` does. `--only` makes a
//! part of them.
//!
//! - `architecture-*.svg`: the system, once per chapter with that
//!   chapter's layer marked, drawn from code ([`architecture`]); a test
//!   fails when a committed one differs from what the code draws now.
//! - `waterfall-*.svg`: one order's traces, from a real run of chapter 03
//!   and of chapter 04 in both trace relations, drawn from the spans the
//!   services exported ([`waterfall`], [`live::one_order`]).
//! - `flamegraph-05-task.svg`: task's CPU as chapter 05's release build
//!   draws it on `/debug/pprof/flamegraph`, under an open-model load
//!   ([`live::task_flamegraph`]).
//! - `bench-latency.svg`: the latency against offered rate of the last
//!   `cargo xtask bench`, drawn again from its JSON result
//!   ([`crate::bench::chart_from_result`]); without a result it is left as
//!   it is, since a bench takes minutes.
//!
//! Tests ([`checks`]) hold the book to its pictures: every image a page
//! shows exists, is SVG and has alt text; every file here is on a page; the
//! architecture pictures are what the code draws now.

mod architecture;
#[cfg(test)]
mod checks;
mod draw;
mod live;
mod waterfall;

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Where the pictures go, inside the book's sources.
pub const ASSETS_DIR: &str = "book/assets";

/// Which pictures to make.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The architecture diagram of each chapter (no run needed).
    Architecture,
    /// One order's traces in chapters 03 and 04 (runs both, debug builds).
    Waterfalls,
    /// Chapter 05's flame graph of task under load (a release build).
    Flamegraph,
    /// The bench's latency plot, from bench/results/bench-latest.json.
    Bench,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Make only these pictures (repeat the flag for several); all when
    /// absent.
    #[arg(long, value_enum)]
    only: Vec<Kind>,
}

impl Args {
    fn wants(&self, kind: Kind) -> bool {
        self.only.is_empty() || self.only.contains(&kind)
    }
}

/// `cargo xtask book-assets`. Errors: a picture could not be made or
/// written; the pictures already written stay.
pub async fn run(root: &Path, args: &Args) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let dir = root.join(ASSETS_DIR);
    std::fs::create_dir_all(&dir)?;
    if args.wants(Kind::Architecture) {
        for (name, svg) in architecture::all() {
            write(root, &dir.join(name), &svg)?;
        }
    }
    if args.wants(Kind::Waterfalls) {
        waterfalls(root, &dir).await?;
    }
    if args.wants(Kind::Flamegraph) {
        flamegraph(root, &dir).await?;
    }
    if args.wants(Kind::Bench) {
        bench_plot(root, &dir)?;
    }
    println!(
        "[book-assets] done in {:.0} s; `git diff --stat {ASSETS_DIR}` shows what changed",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The flame graph's run: chapter 05 in release mode (profile what you
/// ship), at the bench's fixed rate, task sampled for 20 s (at 99 samples
/// per CPU-second, a few hundred samples).
const FLAMEGRAPH: live::FlameGraphRun = live::FlameGraphRun {
    rate: 300.0,
    seconds: 20,
};
const FLAMEGRAPH_FILE: &str = "flamegraph-05-task.svg";

/// Builds chapter 05 in release mode, loads it and keeps task's flame graph.
async fn flamegraph(root: &Path, dir: &Path) -> anyhow::Result<()> {
    let package = "ch05-profiling";
    let nats_server = crate::provision::nats_server()?;
    let binary = crate::launch::build(root, &[package], true)?.remove(0);
    println!(
        "[book-assets] {package} (release) at {}/s, task profiled for {} s, for {FLAMEGRAPH_FILE}",
        FLAMEGRAPH.rate, FLAMEGRAPH.seconds
    );
    let log = crate::target_dir(root)
        .join("book-assets")
        .join(format!("{package}.log"));
    let svg = live::task_flamegraph(package, &binary, &nats_server, &log, FLAMEGRAPH).await?;
    let text = String::from_utf8(svg).context("the flame graph is not UTF-8 text")?;
    anyhow::ensure!(
        text.contains("<svg") && text.contains("plan_packing"),
        "task's flame graph is not an SVG naming plan_packing"
    );
    write(root, &dir.join(FLAMEGRAPH_FILE), &text)
}

/// Where `cargo xtask bench` leaves its last result.
const BENCH_RESULT: &str = "bench/results/bench-latest.json";
const BENCH_FILE: &str = "bench-latency.svg";

/// Draws the bench's latency plot again from its last result, if there is
/// one; says so and keeps the committed plot if there is none.
fn bench_plot(root: &Path, dir: &Path) -> anyhow::Result<()> {
    let path = root.join(BENCH_RESULT);
    let Ok(text) = std::fs::read_to_string(&path) else {
        println!(
            "[book-assets] no {BENCH_RESULT}: {BENCH_FILE} is left as it is (run `cargo xtask bench` first to draw it again)"
        );
        return Ok(());
    };
    let result: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    println!(
        "[book-assets] the bench's plot from {BENCH_RESULT} ({})",
        result["command"].as_str().unwrap_or("?")
    );
    let svg = crate::bench::chart_from_result(&result)?;
    write(root, &dir.join(BENCH_FILE), &svg)
}

/// A waterfall picture made from a real run: which chapter, with which
/// variables, and what the picture says.
struct WaterfallRun {
    file: &'static str,
    package: &'static str,
    envs: &'static [(&'static str, &'static str)],
    heading: &'static str,
    says: &'static str,
}

const WATERFALLS: [WaterfallRun; 3] = [
    WaterfallRun {
        file: "waterfall-03-grpc-tracing.svg",
        package: "ch03-grpc-tracing",
        envs: &[],
        heading: "Chapter 03: one order, two traces",
        says: "The gateway's POST /orders, with logic's CreateOrder and its two SQL queries, is one trace; task's handling of the order, with its PushResult call to the gateway, is a second trace: nothing carries the context across NATS yet. Both are drawn on one time axis.",
    },
    WaterfallRun {
        file: "waterfall-04-parent.svg",
        package: "ch04-nats-tracing",
        envs: &[("TRACE_RELATION", "parent")],
        heading: "Chapter 04, TRACE_RELATION=parent: one order, one trace",
        says: "One trace from the gateway's POST /orders to task's PushResult: task's consumer span process orders.created is a child of logic's producer span publish orders.created, and also links to it.",
    },
    WaterfallRun {
        file: "waterfall-04-link.svg",
        package: "ch04-nats-tracing",
        envs: &[("TRACE_RELATION", "link")],
        heading: "Chapter 04, TRACE_RELATION=link: one order, two linked traces",
        says: "The POST /orders trace ends at logic's UPDATE orders; task's consumer span process orders.created starts a second trace, with a link to logic's publish orders.created in the first.",
    },
];

/// Runs chapters 03 and 04 (debug builds), one order each, and draws
/// each order's traces.
async fn waterfalls(root: &Path, dir: &Path) -> anyhow::Result<()> {
    let nats_server = crate::provision::nats_server()?;
    let binaries = crate::launch::build(root, &["ch03-grpc-tracing", "ch04-nats-tracing"], false)?;
    for run in &WATERFALLS {
        let binary = if run.package == "ch03-grpc-tracing" {
            &binaries[0]
        } else {
            &binaries[1]
        };
        println!(
            "[book-assets] {}{}: one order, for {}",
            run.envs
                .iter()
                .map(|(name, value)| format!("{name}={value} "))
                .collect::<String>(),
            run.package,
            run.file
        );
        let order = live::one_order(run.package, binary, &nats_server, run.envs).await?;
        println!(
            "[book-assets] order {}: {}",
            order.order_id,
            waterfall::summary(&order.spans, &order.traces)
        );
        let description = format!(
            "{} Drawn from the spans of a real run of {}{}, the third order of a fresh system.",
            run.says,
            run.package,
            run.envs
                .iter()
                .map(|(name, value)| format!(" with {name}={value}"))
                .collect::<String>()
        );
        let svg = waterfall::waterfall(&order.spans, &order.traces, run.heading, &description)?;
        write(root, &dir.join(run.file), &svg)?;
    }
    Ok(())
}

/// Writes one picture and says so.
fn write(root: &Path, path: &PathBuf, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text)?;
    let shown = path.strip_prefix(root).unwrap_or(path);
    println!(
        "[book-assets] wrote {} ({} bytes)",
        shown.display(),
        text.len()
    );
    Ok(())
}
