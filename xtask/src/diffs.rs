//! `cargo xtask diffs`: the lesson of each chapter, as a diff against the
//! chapter before, written into the book; and what production adds, as the
//! diff from the last chapter to `final/`.
//!
//! The book includes these files instead of describing the changes by hand,
//! and a test fails when one is stale, so what the reader sees is always
//! what the code does.

use std::path::{Path, PathBuf};

use similar::TextDiff;

/// Where the generated diffs live, inside the book's sources.
const DIFF_DIR: &str = "book/diffs";

/// One generated diff: `chapters/<before>` to `chapters/<after>`, or the
/// last chapter to `final`.
#[derive(Debug, PartialEq, Eq)]
pub struct ChapterDiff {
    /// The file in `book/diffs/`, named after the later chapter.
    pub file: PathBuf,
    pub text: String,
}

/// Writes every diff, and removes diffs of chapters that no longer exist.
pub fn write(root: &Path) -> anyhow::Result<()> {
    let dir = root.join(DIFF_DIR);
    std::fs::create_dir_all(&dir)?;
    let diffs = render(root)?;
    for stale in std::fs::read_dir(&dir)? {
        let path = stale?.path();
        if path.extension().is_some_and(|e| e == "diff") && !diffs.iter().any(|d| d.file == path) {
            std::fs::remove_file(&path)?;
        }
    }
    for diff in &diffs {
        std::fs::write(&diff.file, &diff.text)?;
        println!("[diffs] wrote {}", diff.file.strip_prefix(root)?.display());
    }
    Ok(())
}

/// The diffs as they should be now: each chapter against the one before it,
/// and `final` against the last chapter, over the files a chapter is made
/// of (its manifest and its sources).
pub fn render(root: &Path) -> anyhow::Result<Vec<ChapterDiff>> {
    let mut chapters = chapters(root)?;
    // `final` is the last chapter plus production: its diff is that lesson.
    let production = root.join("final");
    if production.join("Cargo.toml").is_file() {
        chapters.push(production);
    }
    let mut diffs = Vec::new();
    for pair in chapters.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        let name = after.file_name().unwrap().to_string_lossy().into_owned();
        diffs.push(ChapterDiff {
            file: root.join(DIFF_DIR).join(format!("{name}.diff")),
            text: diff_dirs(root, before, after)?,
        });
    }
    Ok(diffs)
}

/// The chapter directories, in order (`00-baseline`, `01-metrics`, ...).
fn chapters(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("chapters"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    dirs.retain(|dir| dir.join("Cargo.toml").is_file());
    dirs.sort();
    Ok(dirs)
}

/// A unified diff of `Cargo.toml` and `src/` between two chapters, paths
/// relative to the workspace root, files in a stable order.
fn diff_dirs(root: &Path, before: &Path, after: &Path) -> anyhow::Result<String> {
    let mut names = lesson_files(before)?;
    names.extend(lesson_files(after)?);
    names.sort();
    names.dedup();

    let mut out = String::new();
    for name in names {
        let (old, new) = (before.join(&name), after.join(&name));
        let (old_text, new_text) = (read_or_empty(&old), read_or_empty(&new));
        if old_text == new_text {
            continue;
        }
        // A file only one side has is labelled /dev/null on the other, as git does.
        let label = |path: &Path| match path.strip_prefix(root) {
            Ok(relative) if path.exists() => relative.display().to_string(),
            _ => "/dev/null".to_owned(),
        };
        let diff = TextDiff::from_lines(&old_text, &new_text);
        out.push_str(
            &diff
                .unified_diff()
                .context_radius(3)
                .header(&label(&old), &label(&new))
                .to_string(),
        );
    }
    Ok(out)
}

fn read_or_empty(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `Cargo.toml` and every file under `src/`, relative to the chapter.
fn lesson_files(chapter: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = vec![PathBuf::from("Cargo.toml")];
    for file in crate::files_under(&chapter.join("src"))? {
        files.push(file.strip_prefix(chapter)?.to_owned());
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The book shows these diffs: they must match the chapters as they are.
    #[test]
    fn the_book_diffs_are_up_to_date() {
        let root = crate::workspace_root();
        for diff in render(&root).unwrap() {
            let on_disk = std::fs::read_to_string(&diff.file).unwrap_or_default();
            assert!(
                on_disk == diff.text,
                "{} is stale: run `cargo xtask diffs` and commit the result",
                diff.file.display()
            );
        }
        let expected: Vec<PathBuf> = render(&root).unwrap().into_iter().map(|d| d.file).collect();
        for entry in std::fs::read_dir(root.join(DIFF_DIR)).into_iter().flatten() {
            let path = entry.unwrap().path();
            assert!(
                expected.contains(&path),
                "{} belongs to no chapter: run `cargo xtask diffs`",
                path.display()
            );
        }
    }

    #[test]
    fn a_diff_names_both_chapters_and_shows_the_change() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (chapter, body) in [
            ("00-a", "fn main() {}\n"),
            ("01-b", "fn main() {\n    lesson();\n}\n"),
            (
                "../final",
                "fn main() {\n    lesson();\n    production();\n}\n",
            ),
        ] {
            std::fs::create_dir_all(root.join("chapters").join(chapter).join("src")).unwrap();
            std::fs::write(
                root.join("chapters").join(chapter).join("Cargo.toml"),
                "[package]\n",
            )
            .unwrap();
            std::fs::write(
                root.join("chapters").join(chapter).join("src/main.rs"),
                body,
            )
            .unwrap();
        }
        let diffs = render(root).unwrap();
        assert_eq!(diffs.len(), 2);
        assert!(diffs[0].file.ends_with("book/diffs/01-b.diff"));
        assert!(diffs[1].file.ends_with("book/diffs/final.diff"));
        assert!(
            diffs[1]
                .text
                .contains("--- chapters/01-b/src/main.rs\n+++ final/src/main.rs")
                && diffs[1].text.contains("+    production();"),
            "the last chapter to final: {}",
            diffs[1].text
        );
        let text = &diffs[0].text;
        assert!(
            text.contains("--- chapters/00-a/src/main.rs\n+++ chapters/01-b/src/main.rs"),
            "{text}"
        );
        assert!(text.contains("+    lesson();"), "{text}");
        assert!(
            !text.contains("Cargo.toml"),
            "unchanged files are left out: {text}"
        );
    }
}
