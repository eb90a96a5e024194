//! `cargo xtask book-assets`: every picture of the book, generated into
//! `book/assets/` (the SVG files are committed).
//!
//! - `architecture-*.svg`: the system, once per chapter with that
//!   chapter's layer marked, drawn from code ([`architecture`]); a test
//!   fails when a committed one differs from what the code draws now.

mod architecture;
mod draw;

use std::path::{Path, PathBuf};

/// Where the pictures go, inside the book's sources.
pub const ASSETS_DIR: &str = "book/assets";

/// Which pictures to make.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The architecture diagram of each chapter (no run needed).
    Architecture,
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
    let dir = root.join(ASSETS_DIR);
    std::fs::create_dir_all(&dir)?;
    if args.wants(Kind::Architecture) {
        for (name, svg) in architecture::all() {
            write(root, &dir.join(name), &svg)?;
        }
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
