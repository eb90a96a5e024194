//! The build a contract judges: a chapter's binary, or a learner's copy of
//! it, and where the chapter keeps its snapshots.

use std::path::{Path, PathBuf};

use crate::system::{CHAPTER_BIN_ENV, System, SystemBuilder};

/// The chapter number of `final`: chapter 05 plus production.
pub const FINAL: u8 = 6;

/// What the contracts run against. A chapter's e2e tests build it from
/// their own crate; `$CHAPTER_BIN` swaps the binary, so the same tests
/// check any build of the chapter, whatever its package is called.
#[derive(Debug, Clone)]
pub struct Subject {
    /// The binary under test.
    pub binary: PathBuf,
    /// The chapter's `tests/e2e/snapshots` directory.
    pub snapshots: PathBuf,
    /// The chapter's directory name, such as `03-grpc-tracing`, or `final`.
    pub name: &'static str,
}

impl Subject {
    /// The chapter whose crate is at `manifest_dir`, its binary
    /// `default_binary` unless `$CHAPTER_BIN` names another: in a chapter's
    /// tests, `Subject::new(env!("CARGO_BIN_EXE_<bin>"), env!("CARGO_MANIFEST_DIR"))`.
    pub fn new(default_binary: &str, manifest_dir: &'static str) -> Self {
        let binary = std::env::var_os(CHAPTER_BIN_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| default_binary.into());
        let name = manifest_dir.trim_end_matches('/').rsplit('/').next();
        Self {
            binary,
            snapshots: Path::new(manifest_dir).join("tests/e2e/snapshots"),
            name: name.expect("a crate directory"),
        }
    }

    /// The chapter's number: 0 to 5, and [`FINAL`] for `final`.
    pub fn chapter(&self) -> u8 {
        self.name
            .get(..2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(FINAL)
    }

    /// Is this the chapter that introduced `lesson`, or a later one?
    pub fn has(&self, lesson: u8) -> bool {
        self.chapter() >= lesson
    }

    /// A system of this binary, to configure before it starts.
    pub fn system(&self) -> SystemBuilder {
        System::builder(&self.binary)
    }

    /// A system of this binary, started with its defaults.
    pub async fn start(&self) -> System {
        System::start(&self.binary).await
    }

    /// Asserts that `text` is the snapshot `name` (the file's stem) as the
    /// book shows it for this chapter. A snapshot is stored once, in the
    /// chapter where it last changed: `changed_in` lists the chapters in
    /// which it did, and the latest of them up to this one holds it. A
    /// failing snapshot writes `.snap.new` beside it, unless the variable
    /// [`PENDING_SNAPSHOTS`] names another directory: then the reference is
    /// copied there and compared there, so a learner's pending snapshot
    /// (what `cargo xtask check` keeps under `workshop/`) never lands in a
    /// chapter's folder, where `cargo insta accept` would overwrite the
    /// reference.
    pub fn assert_snapshot(&self, name: &str, changed_in: &[u8], text: &str) {
        let chapter = changed_in
            .iter()
            .copied()
            .filter(|c| *c <= self.chapter())
            .max()
            .unwrap_or_else(|| panic!("{name} has no snapshot up to {}", self.name));
        let dir = if chapter == self.chapter() {
            self.snapshots.clone()
        } else {
            chapter_dir(chapter).join("tests/e2e/snapshots")
        };
        let dir = match std::env::var_os(PENDING_SNAPSHOTS) {
            Some(pending) => copy_reference(&dir, Path::new(&pending), name),
            None => dir,
        };
        insta::with_settings!({
            snapshot_path => dir,
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(name, text);
        });
    }
}

/// The environment variable that names where a failing snapshot's
/// `.snap.new` goes instead of the chapter's own folder.
pub const PENDING_SNAPSHOTS: &str = "TESTKIT_PENDING_SNAPSHOTS";

/// Copies the reference snapshot `name` from `reference` into `pending`
/// (made if missing, the copy replaced each time); returns `pending`.
/// Panics when the directory cannot be made or the file not copied.
fn copy_reference(reference: &Path, pending: &Path, name: &str) -> PathBuf {
    let file = format!("{name}.snap");
    std::fs::create_dir_all(pending)
        .unwrap_or_else(|e| panic!("making {}: {e}", pending.display()));
    let stale = pending.join(format!("{file}.new"));
    if stale.exists() {
        std::fs::remove_file(&stale).unwrap_or_else(|e| panic!("{}: {e}", stale.display()));
    }
    if reference.join(&file).exists() {
        std::fs::copy(reference.join(&file), pending.join(&file))
            .unwrap_or_else(|e| panic!("copying {file} to {}: {e}", pending.display()));
    }
    pending.to_path_buf()
}

/// The directory of chapter `number` in this repository: `chapters/NN-*`.
pub fn chapter_dir(number: u8) -> PathBuf {
    let chapters = crate::stack::repo_root().join("chapters");
    let prefix = format!("{number:02}-");
    std::fs::read_dir(&chapters)
        .expect("reading chapters/")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .unwrap_or_else(|| panic!("no chapter {prefix}* in {}", chapters.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chapter_is_read_from_the_crate_directory() {
        let subject = Subject::new("/bin/true", "/repo/chapters/03-grpc-tracing");
        assert_eq!(subject.name, "03-grpc-tracing");
        assert_eq!(subject.chapter(), 3);
        assert!(subject.has(2) && subject.has(3) && !subject.has(4));
        let last = Subject::new("/bin/true", "/repo/final/");
        assert_eq!((last.name, last.chapter()), ("final", FINAL));
        assert_eq!(
            chapter_dir(1).file_name().unwrap().to_string_lossy(),
            "01-metrics"
        );
    }
}
