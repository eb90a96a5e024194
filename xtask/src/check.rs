//! `cargo xtask check NN [--bin PATH]`: hold the learner's code to chapter
//! NN's promises.
//!
//! It builds the learner's copy (`workshop/NN-<name>/`, made by `cargo
//! xtask learn NN`), or takes the binary `--bin` names, and runs chapter
//! NN's end-to-end tests against it (`CHAPTER_BIN`): the earlier chapters'
//! promises first, then the lesson's, each test on its own, in the order the
//! book teaches them. It prints a checklist, one line per promise, and for
//! each failure the likely mistake in plain words, the book section that
//! explains it, and the first line the test said. It exits 0 only when every
//! promise holds.
//!
//! A failing snapshot is compared, and its `.snap.new` written, in
//! `workshop/.pending-snapshots/NN-<name>/` (testkit's
//! `TESTKIT_PENDING_SNAPSHOTS`): the chapters' snapshots are the reference,
//! never the learner's output.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, ensure};
use serde_json::Value;
use testkit::contracts::Promise;

use crate::learn::{Chapter, PASSED_MARKER, chapter_number};

#[derive(clap::Args)]
pub struct Args {
    /// The chapter whose promises to check: 01 to 05.
    pub chapter: String,
    /// Check this binary instead of building workshop/NN-<name>/.
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// How many promises are checked at once (each starts its own system).
    #[arg(long, default_value_t = 3)]
    pub jobs: usize,
}

/// How one promise fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Holds,
    /// The first line of what the test said when it failed.
    Broken(String),
}

pub fn run(root: &Path, args: &Args) -> anyhow::Result<bool> {
    let chapter = Chapter::find(root, chapter_number(&args.chapter)?)?;
    let started = Instant::now();
    let (binary, workshop) = match &args.bin {
        Some(binary) => (
            binary
                .canonicalize()
                .with_context(|| format!("{}", binary.display()))?,
            None,
        ),
        None => {
            let workshop = chapter.workshop(root);
            ensure!(
                workshop.join("Cargo.toml").is_file(),
                "no {} yet: start the exercise with `cargo xtask learn {:02}`",
                workshop.display(),
                chapter.number
            );
            let binary = build_workshop(root, &workshop, &chapter.workshop_package())?;
            (binary, Some(workshop))
        }
    };
    let (promises, verdicts) = check_binary(root, &chapter, &binary, args.jobs)?;
    print!("{}", checklist(&promises, &verdicts, chapter.number, true));
    let all_hold = verdicts.iter().all(|v| *v == Verdict::Holds);
    if let Some(workshop) = workshop {
        let marker = workshop.join(PASSED_MARKER);
        if all_hold {
            std::fs::write(&marker, "every promise of `cargo xtask check` held\n")?;
        } else if marker.exists() {
            std::fs::remove_file(&marker)?;
        }
    }
    println!("[check] took {:.0} s", started.elapsed().as_secs_f64());
    Ok(all_hold)
}

/// Chapter `chapter`'s promises, and how `binary` fares on each, checked
/// `jobs` at a time. Errors: the chapter's tests do not build.
pub fn check_binary(
    root: &Path,
    chapter: &Chapter,
    binary: &Path,
    jobs: usize,
) -> anyhow::Result<(Vec<Promise>, Vec<Verdict>)> {
    let tests = test_binary(root, chapter)?;
    let promises = teaching_order(testkit::contracts::promises(chapter.number), chapter.number);
    println!(
        "[check] chapter {:02}: {} promises, against {}",
        chapter.number,
        promises.len(),
        binary.display()
    );
    let pending = pending_snapshots(root, chapter);
    let verdicts = judge(&tests, binary, &pending, &promises, jobs.max(1));
    if has_pending(&pending) {
        println!(
            "[check] snapshots that differ are in {} (`.snap.new` beside the reference)",
            pending.display()
        );
    }
    Ok((promises, verdicts))
}

/// Where a check of chapter `chapter` compares its snapshots and leaves
/// those that differ: `workshop/.pending-snapshots/NN-<name>/`.
pub fn pending_snapshots(root: &Path, chapter: &Chapter) -> PathBuf {
    root.join(crate::learn::WORKSHOP)
        .join(".pending-snapshots")
        .join(&chapter.dir_name)
}

/// Whether `dir` holds a snapshot that differed (`*.snap.new`).
fn has_pending(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|entry| entry.path().extension().is_some_and(|e| e == "new"))
    })
}

/// Promises of an earlier lesson whose expectation each later lesson
/// raises: one order's log lines are in one trace fewer once gRPC, then
/// NATS, carries the context; the client's trace reaches logic from 03 on;
/// the span tree grows the NATS spans in 04; the gRPC crossing is one trace
/// with task's too in 04. At the start of a chapter they fail for the
/// lesson not yet done, so the checklist shows them with that lesson.
const RAISED_BY_EACH_LESSON: [&str; 4] = [
    "logs::one_order_in_the_logs_of_each_service",
    "logs::the_gateway_continues_a_trace_from_a_valid_traceparent",
    "traces::one_order_as_its_spans_show_it",
    "traces::the_trace_context_crosses_grpc_both_ways",
];

/// The group a promise is shown in when checking chapter `chapter`: its
/// lesson; the chapter's own lesson for an earlier promise the lesson
/// raises; last ([`u8::MAX`]) for the two that sum up every lesson at once,
/// the launcher's banner and the progress report.
fn group(promise: &Promise, chapter: u8) -> u8 {
    let test = promise.test;
    if test.starts_with("launcher::") || test.starts_with("progress::") {
        u8::MAX
    } else if promise.lesson < chapter && RAISED_BY_EACH_LESSON.contains(&test) {
        chapter
    } else {
        promise.lesson
    }
}

/// The promises in the order a learner meets them: the registry's (each
/// lesson's, from the simplest), grouped by [`group`]. At the start of a
/// chapter the first line that fails is then the lesson's first promise,
/// where its page starts.
pub fn teaching_order(mut promises: Vec<Promise>, chapter: u8) -> Vec<Promise> {
    // In the lesson's group, its own promises before the earlier ones it raises.
    promises.sort_by_key(|promise| (group(promise, chapter), promise.lesson < chapter));
    promises
}

/// Builds the copy in `workshop`, the package `package`; its binary.
pub fn build_workshop(root: &Path, workshop: &Path, package: &str) -> anyhow::Result<PathBuf> {
    println!("[check] building {}", workshop.display());
    // In the workshop, so cargo reads its .cargo/config.toml (the target dir).
    let status = crate::cargo(root)
        .current_dir(workshop)
        .args(["build", "--quiet"])
        .status()
        .context("running cargo build")?;
    ensure!(
        status.success(),
        "your code does not build: fix the errors above first"
    );
    let binary = crate::target_dir(root).join("debug").join(package);
    ensure!(
        binary.is_file(),
        "built, but found no binary at {}",
        binary.display()
    );
    Ok(binary)
}

/// Builds chapter NN's end-to-end test binary; its path.
fn test_binary(root: &Path, chapter: &Chapter) -> anyhow::Result<PathBuf> {
    let package = chapter.package()?;
    let output = crate::cargo(root)
        .args(["test", "--package", &package, "--test", "e2e", "--no-run"])
        .args(["--message-format", "json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    ensure!(output.status.success(), "building {package}'s tests failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| message["target"]["name"] == "e2e")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .context("cargo built no e2e test binary")
}

/// Runs each promise's test against `binary`, `jobs` at a time; the
/// verdicts in the promises' order.
fn judge(
    tests: &Path,
    binary: &Path,
    pending: &Path,
    promises: &[Promise],
    jobs: usize,
) -> Vec<Verdict> {
    let verdicts: Vec<Mutex<Option<Verdict>>> = promises.iter().map(|_| Mutex::new(None)).collect();
    let next = Mutex::new(0usize);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let index = {
                        let mut next = next.lock().unwrap();
                        let index = *next;
                        *next += 1;
                        index
                    };
                    let Some(promise) = promises.get(index) else {
                        return;
                    };
                    let verdict = run_one(tests, binary, pending, promise.test);
                    *verdicts[index].lock().unwrap() = Some(verdict);
                }
            });
        }
    });
    verdicts
        .into_iter()
        .map(|v| v.into_inner().unwrap().expect("every promise judged"))
        .collect()
}

/// Runs the one test `name` of the test binary `tests` against `binary`,
/// its snapshots compared in `pending`.
fn run_one(tests: &Path, binary: &Path, pending: &Path, name: &str) -> Verdict {
    let output = Command::new(tests)
        .args([name, "--exact", "--test-threads", "1"])
        .env("CHAPTER_BIN", binary)
        .env(testkit::PENDING_SNAPSHOTS, pending)
        .env("INSTA_UPDATE", "new")
        .env("RUST_BACKTRACE", "0")
        .output();
    let output = match output {
        Ok(output) => output,
        Err(e) => return Verdict::Broken(format!("could not run the test: {e}")),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() {
        if stdout.contains("running 0 tests") {
            return Verdict::Broken(format!("the chapter's tests have no test named {name}"));
        }
        return Verdict::Holds;
    }
    Verdict::Broken(first_complaint(
        &String::from_utf8_lossy(&output.stderr),
        &stdout,
    ))
}

/// The line after `panicked at ...:` in a failed test's output: what the
/// assertion said.
fn first_complaint(stderr: &str, stdout: &str) -> String {
    let text = format!("{stderr}\n{stdout}");
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.contains("panicked at")
            && let Some(said) = lines.find(|l| !l.trim().is_empty())
        {
            return said.trim().chars().take(160).collect();
        }
    }
    "the test failed without a message".to_owned()
}

/// The checklist: a line per promise, and under each that broke, why and
/// where to read about it, and (with `said`) what its test said.
pub fn checklist(promises: &[Promise], verdicts: &[Verdict], chapter: u8, said: bool) -> String {
    let mut text = String::new();
    let mut lesson = None;
    for (promise, verdict) in promises.iter().zip(verdicts) {
        let group = group(promise, chapter);
        if lesson != Some(group) {
            lesson = Some(group);
            let heading = if group == u8::MAX {
                "every lesson so far, at once".to_owned()
            } else if group == chapter {
                format!("chapter {group:02}, this lesson")
            } else {
                format!("chapter {group:02}")
            };
            text.push_str(&format!("\n{heading}\n"));
        }
        match verdict {
            Verdict::Holds => text.push_str(&format!("  [x] {}\n", promise.claim)),
            Verdict::Broken(complaint) => {
                text.push_str(&format!("  [ ] {}\n", promise.claim));
                text.push_str(&format!("      likely: {}\n", promise.diagnosis));
                text.push_str(&format!("      read:   book/{}\n", promise.section));
                if said {
                    text.push_str(&format!(
                        "      test:   {} said: {complaint}\n",
                        promise.test
                    ));
                }
            }
        }
    }
    let held = verdicts.iter().filter(|v| **v == Verdict::Holds).count();
    text.push_str(&format!("\n{held} of {} promises hold.\n", verdicts.len()));
    text
}

#[cfg(test)]
mod exercises;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_complaint_is_the_line_after_the_panic() {
        let stderr = "thread 'x' panicked at crates/testkit/src/contracts/logs.rs:10:5:\n\
                      a line is not JSON: \"[all] ready\"\nnote: run with RUST_BACKTRACE=1";
        assert_eq!(
            first_complaint(stderr, ""),
            "a line is not JSON: \"[all] ready\""
        );
        assert_eq!(first_complaint("", ""), "the test failed without a message");
    }

    #[test]
    fn a_broken_promise_names_its_likely_mistake_and_where_to_read() {
        let promises = [
            Promise {
                test: "flow::an_order_is_created_then_completed",
                lesson: 0,
                claim: "an order is created, then completed",
                diagnosis: "a service does not start",
                section: "00-baseline.md#run-it",
            },
            Promise {
                test: "traces::the_trace_context_crosses_grpc_both_ways",
                lesson: 3,
                claim: "one trace crosses gRPC both ways",
                diagnosis: "no propagator installed, or the client does not inject",
                section: "03-grpc-tracing.md#inject-a-client-interceptor",
            },
        ];
        let verdicts = [
            Verdict::Holds,
            Verdict::Broken("logic's span has no parent".into()),
        ];
        let text = checklist(&promises, &verdicts, 3, true);
        assert!(
            text.contains("  [x] an order is created, then completed\n"),
            "{text}"
        );
        assert!(
            text.contains("  [ ] one trace crosses gRPC both ways\n"),
            "{text}"
        );
        assert!(text.contains("likely: no propagator installed"), "{text}");
        assert!(
            text.contains("read:   book/03-grpc-tracing.md#inject"),
            "{text}"
        );
        assert!(text.contains("chapter 03, this lesson"), "{text}");
        assert!(text.ends_with("1 of 2 promises hold.\n"), "{text}");
    }
}
