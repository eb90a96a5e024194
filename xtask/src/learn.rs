//! `cargo xtask learn NN`: start chapter NN's exercise.
//!
//! It copies the code the chapter starts from into `workshop/NN-<name>/`
//! (git-ignored): chapter NN-1's sources, or the learner's own previous
//! workshop once `cargo xtask check` passed it. The copy is a package of its
//! own, `workshop-NN`, that builds outside the workspace but into the
//! workspace's `target/` with the same dependency versions and profiles, so
//! after the first build it costs seconds. Then it prints what to do: the
//! book page, and the promises `cargo xtask check NN` will hold the copy to,
//! in the order the page teaches them.
//!
//! It never overwrites a workshop that exists, unless told to with
//! `--force`: that copy is the learner's work.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use toml_edit::{DocumentMut, Item, Table, value};

/// The folder of the learners' copies, at the workspace root.
pub const WORKSHOP: &str = "workshop";

/// The file `cargo xtask check` leaves in a workshop whose every promise
/// held; `learn` then starts the next chapter from that workshop.
pub const PASSED_MARKER: &str = ".check-passed";

#[derive(clap::Args)]
pub struct Args {
    /// The chapter to practise: 01 to 05.
    pub chapter: String,
    /// Replace an existing workshop of this chapter (your edits are lost).
    #[arg(long)]
    pub force: bool,
}

/// A chapter of the book, as its folder names it.
#[derive(Debug, Clone)]
pub struct Chapter {
    /// `3` for `03-grpc-tracing`.
    pub number: u8,
    /// `03-grpc-tracing`.
    pub dir_name: String,
    /// `chapters/03-grpc-tracing`.
    pub dir: PathBuf,
}

impl Chapter {
    /// Chapter `number` of the workspace at `root`. Errors: no such chapter.
    pub fn find(root: &Path, number: u8) -> anyhow::Result<Self> {
        let prefix = format!("{number:02}-");
        for entry in std::fs::read_dir(root.join("chapters"))? {
            let dir = entry?.path();
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && dir.join("Cargo.toml").is_file() {
                return Ok(Self {
                    number,
                    dir_name: name,
                    dir,
                });
            }
        }
        bail!(
            "there is no chapter {number:02} in {}",
            root.join("chapters").display()
        )
    }

    /// The chapter's package name, e.g. `ch03-grpc-tracing`.
    pub fn package(&self) -> anyhow::Result<String> {
        let manifest: DocumentMut =
            std::fs::read_to_string(self.dir.join("Cargo.toml"))?.parse()?;
        manifest["package"]["name"]
            .as_str()
            .map(str::to_owned)
            .context("the chapter's manifest has no package name")
    }

    /// Where the learner's copy of this chapter lives.
    pub fn workshop(&self, root: &Path) -> PathBuf {
        root.join(WORKSHOP).join(&self.dir_name)
    }

    /// The package name of the learner's copy: `workshop-03`.
    pub fn workshop_package(&self) -> String {
        format!("workshop-{:02}", self.number)
    }
}

/// `"03"` or `"3"` as a chapter that has an exercise (01 to 05).
pub fn chapter_number(text: &str) -> anyhow::Result<u8> {
    match text.trim().parse::<u8>() {
        Ok(number @ 1..=5) => Ok(number),
        _ => bail!("a chapter with an exercise is 01 to 05, not {text:?}"),
    }
}

pub fn run(root: &Path, args: &Args) -> anyhow::Result<()> {
    let chapter = Chapter::find(root, chapter_number(&args.chapter)?)?;
    // `workshop/` is in the workspace's .gitignore: your copies are yours.
    start(root, &root.join(WORKSHOP), &chapter, args.force)?;
    print!("{}", instructions(&chapter)?);
    Ok(())
}

/// Makes the learner's copy of `chapter` in `workshops` (the workspace's
/// `workshop/`, or another folder in a test), unless one is there and
/// `force` is not set; says which.
pub fn start(root: &Path, workshops: &Path, chapter: &Chapter, force: bool) -> anyhow::Result<()> {
    let before = Chapter::find(root, chapter.number - 1)?;
    let target = workshops.join(&chapter.dir_name);
    if target.exists() && !force {
        println!(
            "[learn] {} exists: it is your work, so it stays as it is.\n\
             [learn] To start over from scratch: cargo xtask learn {:02} --force",
            target.display(),
            chapter.number
        );
    } else {
        let own = workshops.join(&before.dir_name);
        let from = if own.join(PASSED_MARKER).is_file() {
            own
        } else {
            before.dir.clone()
        };
        create(root, &from, &target, &chapter.workshop_package())?;
        println!(
            "[learn] wrote {} from {}",
            target.display(),
            from.strip_prefix(root).unwrap_or(&from).display()
        );
    }
    Ok(())
}

/// What to read and what to make true, in the order the page teaches it.
fn instructions(chapter: &Chapter) -> anyhow::Result<String> {
    let mut text = format!(
        "\nChapter {:02}: read book/{}.md (mdbook serve, then http://localhost:3000/{}.html),\n\
         change the code in workshop/{}/src, and check it as you go:\n\n  cargo xtask check {:02}\n\n\
         The promises this chapter adds, in the order the page teaches them:\n",
        chapter.number, chapter.dir_name, chapter.dir_name, chapter.dir_name, chapter.number
    );
    for promise in testkit::contracts::promises(chapter.number)
        .iter()
        .filter(|promise| promise.lesson == chapter.number)
    {
        text.push_str(&format!("  - {}\n", promise.claim));
    }
    text.push_str("The earlier chapters' promises must keep holding too.\n");
    Ok(text)
}

/// Copies the crate at `from` (its `src/` and manifest) to `to`, as the
/// package `name`, able to build on its own into the workspace's target
/// directory.
pub fn create(root: &Path, from: &Path, to: &Path, name: &str) -> anyhow::Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to).with_context(|| format!("removing {}", to.display()))?;
    }
    for file in crate::files_under(&from.join("src"))? {
        let copy = to.join(file.strip_prefix(from)?);
        std::fs::create_dir_all(copy.parent().unwrap())?;
        std::fs::copy(&file, &copy)?;
    }
    let manifest = standalone_manifest(root, from, name)?;
    std::fs::write(to.join("Cargo.toml"), manifest)?;
    // The workspace's lock file: the same versions, so the same builds to reuse.
    std::fs::copy(root.join("Cargo.lock"), to.join("Cargo.lock"))?;
    // The workspace's target directory, where the dependencies are built.
    std::fs::create_dir_all(to.join(".cargo"))?;
    let target_dir = crate::target_dir(root).display().to_string();
    std::fs::write(
        to.join(".cargo/config.toml"),
        format!(
            "# Build into the workspace's target/, where the dependencies are built.\n\
             [build]\ntarget-dir = {target_dir:?}\n"
        ),
    )?;
    Ok(())
}

/// The manifest of `from` as a package of its own: `name`, every
/// `x.workspace = true` written out from the workspace's table (path
/// dependencies made absolute), the workspace's profiles, no tests
/// (the chapter's tests check it), and an empty `[workspace]`, so cargo
/// does not look for one above it.
///
/// Errors: a manifest that cannot be read or is not what the chapters use.
fn standalone_manifest(root: &Path, from: &Path, name: &str) -> anyhow::Result<String> {
    let workspace: DocumentMut = std::fs::read_to_string(root.join("Cargo.toml"))?.parse()?;
    let mut manifest: DocumentMut = std::fs::read_to_string(from.join("Cargo.toml"))?.parse()?;
    let shared = workspace["workspace"]["dependencies"]
        .as_table()
        .context("the workspace has no [workspace.dependencies]")?;
    let package_defaults = workspace["workspace"]["package"]
        .as_table()
        .context("the workspace has no [workspace.package]")?;

    let package = manifest["package"]
        .as_table_mut()
        .context("no [package] in the chapter's manifest")?;
    package["name"] = value(name);
    package["description"] = value(format!("Your {name}: cargo xtask check checks it."));
    for key in ["edition", "rust-version", "license", "publish"] {
        if package.contains_key(key) {
            package[key] = package_defaults[key].clone();
        }
    }

    let up = root.display().to_string();
    let mut dependencies = Table::new();
    for (dep, spec) in manifest["dependencies"]
        .as_table()
        .context("no [dependencies] in the chapter's manifest")?
        .iter()
    {
        dependencies[dep] = resolve(dep, spec, shared, &up)?;
    }
    manifest["dependencies"] = Item::Table(dependencies);
    manifest.remove("dev-dependencies");
    manifest.remove("lints");
    if let Some(profile) = workspace.get("profile") {
        manifest["profile"] = profile.clone();
    }
    manifest["workspace"] = Item::Table(Table::new());
    Ok(manifest.to_string())
}

/// `dep.workspace = true` (with its own `features`, if any) as the
/// workspace declares it; a path made absolute with the workspace root `up`.
fn resolve(dep: &str, spec: &Item, shared: &Table, up: &str) -> anyhow::Result<Item> {
    let inherits = spec.get("workspace").and_then(Item::as_bool) == Some(true);
    ensure!(
        inherits,
        "{dep}: only `workspace = true` dependencies are expected"
    );
    let declared = shared
        .get(dep)
        .with_context(|| format!("{dep} is not in [workspace.dependencies]"))?;
    let mut table = match declared {
        Item::Value(toml_edit::Value::String(version)) => {
            let mut table = toml_edit::InlineTable::new();
            table.insert("version", version.value().as_str().into());
            table
        }
        Item::Value(toml_edit::Value::InlineTable(table)) => table.clone(),
        _ => bail!("{dep}: an unexpected form in [workspace.dependencies]"),
    };
    if let Some(path) = table
        .get("path")
        .and_then(|p| p.as_str())
        .map(str::to_owned)
    {
        table.insert("path", format!("{up}/{path}").into());
    }
    if let Some(features) = spec.get("features").and_then(Item::as_array) {
        let mut all: toml_edit::Array = table
            .get("features")
            .and_then(|f| f.as_array())
            .cloned()
            .unwrap_or_default();
        for feature in features {
            all.push(feature.clone());
        }
        table.insert("features", toml_edit::Value::Array(all));
    }
    Ok(Item::Value(toml_edit::Value::InlineTable(table)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workshop_manifest_stands_on_its_own() {
        let root = crate::workspace_root();
        let chapter = Chapter::find(&root, 2).unwrap();
        let text = standalone_manifest(&root, &chapter.dir, "workshop-03").unwrap();
        let manifest: DocumentMut = text.parse().unwrap();
        assert_eq!(manifest["package"]["name"].as_str(), Some("workshop-03"));
        assert_eq!(manifest["package"]["edition"].as_str(), Some("2024"));
        assert_eq!(
            manifest["dependencies"]["orders"]["path"].as_str(),
            Some(root.join("crates/orders").to_str().unwrap())
        );
        assert!(manifest["dependencies"]["tokio"]["features"].is_array());
        assert!(manifest.get("dev-dependencies").is_none());
        assert!(manifest["workspace"].is_table());
        assert!(!text.contains("workspace = true"), "{text}");
        assert_eq!(
            manifest["profile"]["dev"]["debug"].as_str(),
            Some("line-tables-only")
        );
    }

    #[test]
    fn chapter_numbers_are_the_exercises() {
        assert_eq!(chapter_number("03").unwrap(), 3);
        assert_eq!(chapter_number("5").unwrap(), 5);
        assert!(chapter_number("00").is_err());
        assert!(chapter_number("06").is_err());
        assert!(chapter_number("three").is_err());
    }
}
