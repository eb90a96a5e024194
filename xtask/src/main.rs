//! `cargo xtask`: the project's chores, written in Rust so that they run
//! wherever cargo does, with nothing else to install first.
//!
//! - `cargo xtask demo` builds the most complete chapter, starts the whole
//!   system, places a few orders and shows what happened to each.
//! - `cargo xtask test` is the project's one test command: formatting,
//!   lints, every test and the book, with a summary at the end.
//! - `cargo xtask diffs` writes each chapter's diff against the one before
//!   into the book, and the tests' snapshots as the book shows them.
//! - `cargo xtask learn NN` starts chapter NN's exercise in `workshop/`,
//!   and `cargo xtask check NN` holds it to the chapter's promises.
//! - `cargo xtask load` puts an open-model load on the gateway and reports
//!   its latency without coordinated omission.
//! - `cargo xtask bench` compares chapter 00 with the full system: CPU and
//!   memory per order, latency, and the highest rate each sustains.
//! - `cargo xtask book-assets` draws the book's pictures into
//!   `book/assets/`.
//! - `cargo xtask incident NAME` stages an incident in `final` (a fault
//!   switched on under load) and shows what each pillar says of it.
//!
//! Both install what they need (`nats-server`, `mdbook`) into the
//! git-ignored `.tools/` directory when it is not already on the machine,
//! so a fresh clone needs only a Rust toolchain and `python3 -m pip`.

mod assets;
mod bench;
mod browser;
mod check;
mod demo;
mod diffs;
mod incident;
mod launch;
mod learn;
#[cfg(test)]
mod listings;
mod load;
mod outputs;
mod profile;
mod provision;
mod show;
mod test;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Project tasks for the observability book")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the whole system, place a few orders, show how each ended.
    Demo(demo::Args),
    /// Run every check: fmt, clippy, the tests and the book.
    Test(test::Args),
    /// Write each chapter's diff against the previous one into book/diffs/,
    /// and the tests' snapshots, fitted to the page, into book/outputs/.
    Diffs,
    /// Start chapter NN's exercise: your copy in workshop/, and what to do.
    Learn(learn::Args),
    /// Check your copy of chapter NN (or --bin) against the chapter's promises.
    Check(check::Args),
    /// Put an open-model load on the gateway (the k6 script's LOAD_* profiles).
    Load(load::Args),
    /// Compare chapter 00 with the full system under the same load.
    Bench(bench::Args),
    /// Draw the book's pictures into book/assets/.
    BookAssets(assets::Args),
    /// Stage an incident in final (a fault switched on under load) and show
    /// what each pillar says of it; --list names them.
    Incident(incident::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.command {
        Command::Demo(args) => {
            let outcome = tokio::runtime::Runtime::new()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| runtime.block_on(demo::run(&root, &args)));
            match outcome {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("[demo] error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Test(args) => test::run(&root, &args),
        Command::Diffs => match diffs::write(&root).and_then(|()| outputs::write(&root)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("[diffs] error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Learn(args) => match learn::run(&root, &args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("[learn] error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Check(args) => match check::run(&root, &args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("[check] error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Load(args) => block_on("load", load::run(&root, &args)),
        Command::Bench(args) => bench::rerun_in_release(&root)
            .unwrap_or_else(|| block_on("bench", bench::run(&root, &args))),
        Command::BookAssets(args) => block_on("book-assets", assets::run(&root, &args)),
        Command::Incident(args) => block_on("incident", incident::run(&root, &args)),
    }
}

/// Runs an async command on a fresh runtime; its error is printed.
fn block_on(
    name: &str,
    command: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let outcome = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(command));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[{name}] error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the directory above this crate. Every command runs
/// there, so `cargo xtask` behaves the same from any subdirectory.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_owned()
}

/// `cargo` at the workspace root, run by the cargo that runs us (`cargo
/// run` sets `CARGO`), so nested builds use the same toolchain.
///
/// `cargo run` also hands us the variables it sets for the xtask package
/// (`CARGO_MANIFEST_DIR=.../xtask`, `CARGO_PKG_NAME=xtask`, ...). Build
/// scripts such as ring's watch some of them, so passing them on would
/// make every nested build recompile those crates, and the next plain
/// `cargo build` recompile them again.
fn cargo(root: &Path) -> std::process::Command {
    let mut command =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_run) {
            command.env_remove(name);
        }
    }
    command
}

/// The variables `cargo run` sets for the package it runs.
fn set_by_cargo_run(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_MANIFEST_")
        || matches!(
            name,
            "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
        )
}

/// Every file under `dir`, at any depth, in no particular order.
/// Errors: a directory that cannot be read.
fn files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    Ok(files)
}

/// Where cargo puts build output: `$CARGO_TARGET_DIR` (relative to the
/// workspace root, where we run cargo) or `<root>/target`.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_run_package_variables_are_dropped() {
        for name in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_PRIMARY_PACKAGE",
        ] {
            assert!(set_by_cargo_run(name), "{name}");
        }
        for name in [
            "CARGO_TARGET_DIR",
            "CARGO_HOME",
            "CARGO_TERM_COLOR",
            "CARGO",
        ] {
            assert!(!set_by_cargo_run(name), "{name}");
        }
    }
}
