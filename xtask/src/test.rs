//! `cargo xtask test`: the project's one test command, the same for a
//! developer and for CI.
//!
//! It runs every step even after one fails, so a single run shows all that
//! is wrong, and ends with a summary whose last line is the verdict. A step
//! whose tool could not be provisioned is reported as COULD NOT RUN, never
//! as passed: a check that did not run has not checked anything.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use crate::provision;

#[derive(clap::Args)]
pub struct Args {
    /// Skip `cargo fmt` and `cargo clippy`.
    #[arg(long)]
    skip_lint: bool,
    /// Skip building the book.
    #[arg(long)]
    skip_book: bool,
}

/// How one step ended; the strings say why.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Passed,
    Failed(String),
    CouldNotRun(String),
}

/// One finished step, for the summary.
#[derive(Debug)]
struct Step {
    name: &'static str,
    outcome: Outcome,
    seconds: f64,
}

pub fn run(root: &Path, args: &Args) -> ExitCode {
    // Provision first, so installers' output comes before the checks'.
    let nats_server = provisioned("nats-server", provision::nats_server());
    let mdbook = (!args.skip_book).then(|| provisioned("mdbook", provision::mdbook()));
    let promtool = provisioned("promtool", provision::promtool());
    let chromium = (!args.skip_book).then(|| provisioned("chromium", provision::chromium()));

    let mut steps = Vec::new();
    if args.skip_lint {
        println!("[xtask] --skip-lint: not running fmt and clippy");
    } else {
        steps.push(step("fmt", || {
            run_streamed(cargo(root, &["fmt", "--all", "--check"]))
        }));
        steps.push(step("clippy", || {
            let args = [
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ];
            run_streamed(cargo(root, &args))
        }));
    }
    steps.push(step("tests", || tests(root, &nats_server)));
    steps.push(step("stack", || {
        stack(root, promtool.as_ref().ok().cloned())
    }));
    match (&mdbook, &chromium) {
        (Some(mdbook), Some(chromium)) => {
            let built = step("book", || book(root, mdbook));
            let passed = built.outcome == Outcome::Passed;
            steps.push(built);
            steps.push(step("browser", || {
                if passed {
                    look_at_the_book(root, chromium)
                } else {
                    Outcome::CouldNotRun("the book did not build".to_owned())
                }
            }));
        }
        _ => println!("[xtask] --skip-book: not building the book"),
    }

    print!("{}", summary(&steps));
    if steps.iter().all(|step| step.outcome == Outcome::Passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A tool's path, or why there is none (printed in full now; the summary
/// repeats its first line).
fn provisioned(tool: &str, found: anyhow::Result<PathBuf>) -> Result<PathBuf, String> {
    found.map_err(|e| {
        let reason = format!("{tool}: {e:#}");
        println!("[xtask] provisioning failed: {reason}");
        reason
    })
}

/// Runs one step under a header, times it and says at once if it failed.
fn step(name: &'static str, run: impl FnOnce() -> Outcome) -> Step {
    println!("\n[xtask] ==> {name}");
    let started = Instant::now();
    let outcome = run();
    match &outcome {
        Outcome::Passed => {}
        Outcome::Failed(why) => println!("[xtask] {name} FAILED: {why}"),
        Outcome::CouldNotRun(why) => println!("[xtask] {name} could not run: {why}"),
    }
    Step {
        name,
        outcome,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// The tests, with nextest when it is installed (faster, clearer output);
/// every target, so the benchmarks run once each as tests (criterion's
/// test mode), their own checks included.
/// `--no-fail-fast` so one failure does not hide the others.
fn tests(root: &Path, nats_server: &Result<PathBuf, String>) -> Outcome {
    let nats_server = match nats_server {
        Ok(path) => path,
        Err(reason) => return Outcome::CouldNotRun(reason.clone()),
    };
    let nextest = cargo(root, &["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    let args: &[&str] = if nextest {
        &[
            "nextest",
            "run",
            "--workspace",
            "--all-targets",
            "--no-fail-fast",
        ]
    } else {
        &["test", "--workspace", "--all-targets", "--no-fail-fast"]
    };
    let mut command = cargo(root, args);
    command.env("NATS_SERVER_BIN", nats_server);
    run_streamed(command)
}

/// The full stack's Prometheus configuration, its rule files and the
/// rules' unit tests, checked by Prometheus's own `promtool` (the rest of
/// the stack's checks are Rust tests, in `testkit::stack`). All three run
/// even when one fails.
fn stack(root: &Path, promtool: Option<PathBuf>) -> Outcome {
    let Some(promtool) = promtool else {
        return Outcome::CouldNotRun(
            "promtool not found on PATH; it comes with Debian's package `prometheus` \
             (apt-get install prometheus), or with a Prometheus release"
                .to_owned(),
        );
    };
    let listed = testkit::stack::rule_files(root)
        .and_then(|rules| Ok((rules, testkit::stack::rule_test_files(root)?)));
    let (rules, tests) = match listed {
        Ok((rules, tests)) if !rules.is_empty() && !tests.is_empty() => (rules, tests),
        Ok(_) => {
            return Outcome::Failed(format!(
                "no rule files (*.rules.yml) or no rule tests in {}",
                testkit::stack::RULES_DIR
            ));
        }
        Err(e) => return Outcome::Failed(format!("{e:#}")),
    };
    // Paths relative to the root, as a reader would type them.
    let relative = |paths: &[PathBuf]| -> Vec<PathBuf> {
        paths
            .iter()
            .map(|path| path.strip_prefix(root).unwrap_or(path).to_owned())
            .collect()
    };
    let checks: [(&str, Vec<PathBuf>); 3] = [
        (
            "check config",
            vec![PathBuf::from(testkit::stack::PROMETHEUS_CONFIG)],
        ),
        ("check rules", relative(&rules)),
        ("test rules", relative(&tests)),
    ];
    let mut failed = Vec::new();
    for (what, files) in checks {
        let mut command = Command::new(&promtool);
        command.args(what.split(' ')).args(&files).current_dir(root);
        match run_streamed(command) {
            Outcome::Passed => {}
            Outcome::Failed(why) | Outcome::CouldNotRun(why) => {
                failed.push(format!("promtool {what}: {why}"));
            }
        }
    }
    if failed.is_empty() {
        Outcome::Passed
    } else {
        Outcome::Failed(failed.join("; "))
    }
}

/// Builds the book. mdbook reports a missing `{{#include}}` target as an
/// `ERROR` line yet exits 0, so its output is read as well as its status.
fn book(root: &Path, mdbook: &Result<PathBuf, String>) -> Outcome {
    let mdbook = match mdbook {
        Ok(path) => path,
        Err(reason) => return Outcome::CouldNotRun(reason.clone()),
    };
    if !root.join("book.toml").is_file() {
        return Outcome::Failed(format!("no book.toml in {}", root.display()));
    }
    let mut command = Command::new(mdbook);
    command.arg("build").current_dir(root);
    println!("[xtask] $ {}", show(&command));
    let output = match command.output() {
        Ok(output) => output,
        Err(e) => return Outcome::CouldNotRun(format!("running {}: {e}", mdbook.display())),
    };
    let text = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    print!("{text}");

    let errors = error_lines(&text);
    if !errors.is_empty() {
        println!("[xtask] mdbook logged errors:");
        for line in &errors {
            println!("  {line}");
        }
    }
    if !output.status.success() {
        Outcome::Failed(format!("mdbook build: {}", output.status))
    } else if !errors.is_empty() {
        Outcome::Failed(format!("mdbook logged {} ERROR line(s)", errors.len()))
    } else {
        Outcome::Passed
    }
}

/// The built book in headless Chromium at 1280 px: no code block wider
/// than its column, no broken image (see `browser.rs`).
fn look_at_the_book(root: &Path, chromium: &Result<PathBuf, String>) -> Outcome {
    let chromium = match chromium {
        Ok(path) => path,
        Err(reason) => return Outcome::CouldNotRun(reason.clone()),
    };
    match crate::browser::check(chromium, &root.join("target/book")) {
        Ok(problems) if problems.is_empty() => Outcome::Passed,
        Ok(problems) => {
            for problem in &problems {
                println!("[xtask] {problem}");
            }
            Outcome::Failed(format!("{} layout problem(s) in the book", problems.len()))
        }
        Err(e) => Outcome::CouldNotRun(format!("{e:#}")),
    }
}

/// The lines of mdbook's log that report an error.
fn error_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|line| line.contains("ERROR")).collect()
}

/// `cargo <args>` at the workspace root.
fn cargo(root: &Path, args: &[&str]) -> Command {
    let mut command = crate::cargo(root);
    command.args(args);
    command
}

/// Runs a command with its output going straight to ours, so CI logs show
/// it as it happens.
fn run_streamed(mut command: Command) -> Outcome {
    println!("[xtask] $ {}", show(&command));
    match command.status() {
        Ok(status) if status.success() => Outcome::Passed,
        Ok(status) => Outcome::Failed(status.to_string()),
        Err(e) => Outcome::CouldNotRun(format!("{}: {e}", show(&command))),
    }
}

/// A command line as a reader would type it: `cargo fmt --all`, not the
/// toolchain's full path to cargo.
fn show(command: &Command) -> String {
    let program = Path::new(command.get_program());
    let name = program.file_name().unwrap_or(program.as_os_str());
    std::iter::once(name)
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The table of steps, a line naming any step that could not run, and the
/// closing `xtask: N passed, M failed` line (steps that could not run count
/// as failed).
fn summary(steps: &[Step]) -> String {
    let results: Vec<String> = steps
        .iter()
        .map(|step| match &step.outcome {
            Outcome::Passed => "passed".to_owned(),
            Outcome::Failed(why) => format!("FAILED ({})", first_line(why)),
            Outcome::CouldNotRun(why) => format!("COULD NOT RUN ({})", first_line(why)),
        })
        .collect();
    let name_width = steps.iter().map(|s| s.name.len()).max().unwrap_or(0).max(4);
    let result_width = results.iter().map(String::len).max().unwrap_or(0).max(6);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<name_width$}  {:<result_width$}  seconds",
        "step", "result"
    );
    for (step, result) in steps.iter().zip(&results) {
        let _ = writeln!(
            out,
            "{:<name_width$}  {result:<result_width$}  {:>7.1}",
            step.name, step.seconds
        );
    }

    let not_run: Vec<&str> = steps
        .iter()
        .filter(|step| matches!(step.outcome, Outcome::CouldNotRun(_)))
        .map(|step| step.name)
        .collect();
    if !not_run.is_empty() {
        let _ = writeln!(
            out,
            "Not everything was checked: {} could not run (counted as failed below).",
            not_run.join(", ")
        );
    }
    let passed = steps
        .iter()
        .filter(|step| step.outcome == Outcome::Passed)
        .count();
    let _ = writeln!(
        out,
        "xtask: {passed} passed, {} failed",
        steps.len() - passed
    );
    out
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &'static str, outcome: Outcome) -> Step {
        Step {
            name,
            outcome,
            seconds: 1.5,
        }
    }

    #[test]
    fn finds_the_error_lines_mdbook_exits_zero_on() {
        let log = " INFO Book building has started\n\
                   ERROR Error updating \"{{#include missing.rs}}\", Could not read file\n\
                   WARN Caused By: No such file or directory (os error 2)\n\
                   INFO HTML book written to `target/book`\n";
        assert_eq!(
            error_lines(log),
            ["ERROR Error updating \"{{#include missing.rs}}\", Could not read file"]
        );
        assert!(error_lines(" INFO Running the html backend\n").is_empty());
    }

    #[test]
    fn summary_ends_with_the_verdict() {
        let steps = [
            step("fmt", Outcome::Passed),
            step("tests", Outcome::Failed("exit status: 100".into())),
        ];
        let summary = summary(&steps);
        assert_eq!(summary.lines().last(), Some("xtask: 1 passed, 1 failed"));
        assert!(summary.contains("FAILED (exit status: 100)"));
        assert!(!summary.contains("could not run"));
    }

    #[test]
    fn steps_that_could_not_run_are_named_and_count_as_failed() {
        let steps = [
            step("fmt", Outcome::Passed),
            step(
                "tests",
                Outcome::CouldNotRun("nats-server: no nats-server found.\n  1. ...".into()),
            ),
        ];
        let summary = summary(&steps);
        assert!(summary.contains("COULD NOT RUN (nats-server: no nats-server found.)"));
        assert!(summary.contains("tests could not run"));
        assert_eq!(summary.lines().last(), Some("xtask: 1 passed, 1 failed"));
    }

    #[test]
    fn the_stack_step_says_when_promtool_is_missing() {
        let root = crate::workspace_root();
        let outcome = stack(&root, None);
        assert!(
            matches!(&outcome, Outcome::CouldNotRun(why) if why.contains("prometheus")),
            "{outcome:?}"
        );
    }

    #[test]
    fn the_stack_step_runs_every_check_and_reports_each_failure() {
        let root = crate::workspace_root();
        let Outcome::Failed(why) = stack(&root, Some("false".into())) else {
            panic!("a promtool that always fails passed");
        };
        for check in ["check config", "check rules", "test rules"] {
            assert!(why.contains(check), "{why}");
        }
    }

    #[test]
    fn summary_columns_line_up() {
        let steps = [
            step("fmt", Outcome::Passed),
            step("clippy", Outcome::Failed("exit status: 101".into())),
        ];
        let summary = summary(&steps);
        let table: Vec<&str> = summary.lines().filter(|l| l.ends_with("1.5")).collect();
        assert_eq!(table.len(), 2);
        assert_eq!(table[0].len(), table[1].len());
    }
}
