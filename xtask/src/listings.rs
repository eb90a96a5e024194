//! The book's listings say where they come from: every fenced block that
//! includes a file (`{{#include path:anchor}}`) has, on the line above it,
//! `File `path`, anchor `anchor`:`, the path from the repository's root.
//! The generated diffs are left out: their `<summary>` names both sides.
//!
//! The caption is written by hand beside the include it names, so a check
//! keeps the two together: move a listing and the test names the caption
//! that went stale.

use std::path::Path;

/// One `{{#include}}` in a fenced block of a page, as `(page, line, wanted
/// caption)` for each whose caption is missing or names something else.
/// Errors: the book's directory cannot be read.
fn stale_captions(root: &Path) -> anyhow::Result<Vec<(String, usize, String)>> {
    let mut stale = Vec::new();
    let mut pages: Vec<_> = std::fs::read_dir(root.join("book"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    pages.retain(|page| page.extension().is_some_and(|e| e == "md"));
    pages.sort();
    for page in pages {
        let text = std::fs::read_to_string(&page)?;
        let lines: Vec<&str> = text.lines().collect();
        for (at, line) in lines.iter().enumerate() {
            let Some(include) = line
                .strip_prefix("{{#include ")
                .and_then(|rest| rest.strip_suffix("}}"))
            else {
                continue;
            };
            let fenced = at > 0 && lines[at - 1].starts_with("```");
            if !fenced || include.starts_with("diffs/") {
                continue;
            }
            let wanted = caption(include);
            // The fence is at `at - 1`, a blank line above it, the caption above that.
            let found = at.checked_sub(3).map(|i| lines[i]);
            if found != Some(wanted.as_str()) {
                let name = page.file_name().unwrap().to_string_lossy().into_owned();
                stale.push((name, at + 1, wanted));
            }
        }
    }
    Ok(stale)
}

/// The caption of `{{#include path:anchor}}`: the path from the repository
/// root (the book's sources are in `book/`, so `../x` is `x`). A test's
/// output, fitted to the page in `outputs/<crate>/<name>.txt`, is captioned
/// with the snapshot it comes from.
fn caption(include: &str) -> String {
    if let Some((krate, name)) = include
        .strip_prefix("outputs/")
        .and_then(|rest| rest.strip_suffix(".txt"))
        .and_then(|rest| rest.split_once('/'))
    {
        let krate = match krate {
            "final" => "final".to_owned(),
            chapter => format!("chapters/{chapter}"),
        };
        return format!("Snapshot `{krate}/tests/e2e/snapshots/{name}.snap`:");
    }
    let (path, anchor) = include.split_once(':').unwrap_or((include, ""));
    let shown = match path.strip_prefix("../") {
        Some(outside_the_book) => outside_the_book.to_owned(),
        None => format!("book/{path}"),
    };
    match anchor {
        "" => format!("File `{shown}`:"),
        anchor => format!("File `{shown}`, anchor `{anchor}`:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_included_listing_names_its_file() {
        let stale = stale_captions(&crate::workspace_root()).unwrap();
        assert!(
            stale.is_empty(),
            "listings whose caption (the line two above the fence) is missing or stale:\n{}",
            stale
                .iter()
                .map(|(page, line, wanted)| format!("  book/{page}:{line}: wants {wanted}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    #[test]
    fn a_caption_names_the_path_from_the_root_and_the_anchor() {
        assert_eq!(
            caption("../chapters/01-metrics/src/main.rs:serve"),
            "File `chapters/01-metrics/src/main.rs`, anchor `serve`:"
        );
        assert_eq!(
            caption("../config/prometheus/rules.yml"),
            "File `config/prometheus/rules.yml`:"
        );
        assert_eq!(
            caption("outputs/02-logs/e2e__logs__one_order.txt"),
            "Snapshot `chapters/02-logs/tests/e2e/snapshots/e2e__logs__one_order.snap`:"
        );
    }
}
