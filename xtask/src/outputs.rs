//! The test outputs the book shows, made to fit its page.
//!
//! A chapter's "what you see" blocks are insta snapshots: what a test saw,
//! so the book cannot drift from the code. As stored, a snapshot starts
//! with insta's header and has lines of 200 to 340 characters (a JSON log
//! line, a span with its attributes), which a 1280 px page cuts off. This
//! writes each snapshot into `book/outputs/<crate>/<name>.txt` without the
//! header and with no line over [`WIDTH`] characters, and a test fails when
//! one is stale, as for the diffs.
//!
//! - A JSON log line becomes `level service "message"` and its ids, then
//!   its other fields as `key=value`, indented below it.
//! - Any other long line is wrapped at spaces; its continuation lines are
//!   indented four columns more than the line, so a tree stays a tree.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The widest line of an output, in characters: what the book's code
/// blocks show without scrolling at 1280 px (mdBook's 750 px column, 14 px
/// monospace at about 8.4 px a character, less padding).
pub const WIDTH: usize = 80;

/// Where the outputs go, inside the book's sources.
const OUTPUT_DIR: &str = "book/outputs";

/// One output: the file in `book/outputs/` and its text.
#[derive(Debug, PartialEq, Eq)]
pub struct Output {
    pub file: PathBuf,
    pub text: String,
}

/// Writes every output, and removes outputs whose snapshot is gone.
/// Errors: a snapshot or the output directory cannot be read or written.
pub fn write(root: &Path) -> anyhow::Result<()> {
    let outputs = render(root)?;
    let dir = root.join(OUTPUT_DIR);
    if dir.is_dir() {
        for stale in crate::files_under(&dir)? {
            if !outputs.iter().any(|o| o.file == stale) {
                std::fs::remove_file(&stale)?;
            }
        }
    }
    for output in &outputs {
        std::fs::create_dir_all(output.file.parent().unwrap())?;
        std::fs::write(&output.file, &output.text)?;
    }
    println!("[outputs] wrote {} files under {OUTPUT_DIR}", outputs.len());
    Ok(())
}

/// The outputs as they should be now: one per snapshot of every chapter's
/// and final's end-to-end tests.
pub fn render(root: &Path) -> anyhow::Result<Vec<Output>> {
    let mut crates: Vec<PathBuf> = std::fs::read_dir(root.join("chapters"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    crates.push(root.join("final"));
    crates.sort();
    let mut outputs = Vec::new();
    for krate in crates {
        let snapshots = krate.join("tests/e2e/snapshots");
        if !snapshots.is_dir() {
            continue;
        }
        let name = krate.file_name().unwrap().to_string_lossy().into_owned();
        let mut files = crate::files_under(&snapshots)?;
        files.retain(|file| file.extension().is_some_and(|e| e == "snap"));
        files.sort();
        for snapshot in files {
            let stem = snapshot.file_stem().unwrap().to_string_lossy().into_owned();
            outputs.push(Output {
                file: root
                    .join(OUTPUT_DIR)
                    .join(&name)
                    .join(format!("{stem}.txt")),
                text: fit(&std::fs::read_to_string(&snapshot)?),
            });
        }
    }
    Ok(outputs)
}

/// A snapshot as the book shows it: no header, no line over [`WIDTH`].
pub fn fit(snapshot: &str) -> String {
    let mut out = String::new();
    for line in without_header(snapshot).lines() {
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(fields)) => log_line(&fields, &mut out),
            _ => wrap(line, &mut out),
        }
    }
    out
}

/// The snapshot's body: what follows insta's `---` ... `---` header.
fn without_header(snapshot: &str) -> &str {
    let Some(rest) = snapshot.strip_prefix("---\n") else {
        return snapshot;
    };
    match rest.find("\n---\n") {
        Some(end) => &rest[end + "\n---\n".len()..],
        None => snapshot,
    }
}

/// `level service "message" trace=.. span=..`, then every other field.
fn log_line(fields: &serde_json::Map<String, Value>, out: &mut String) {
    let text = |key: &str| match fields.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "-".to_owned(),
    };
    let mut head = format!(
        "{} {} {:?}",
        text("level"),
        text("service"),
        text("message")
    );
    for (key, short) in [("trace_id", "trace"), ("span_id", "span")] {
        if fields.contains_key(key) {
            head.push_str(&format!(" {short}={}", text(key)));
        }
    }
    wrap(&head, out);
    let rest: Vec<String> = fields
        .iter()
        .filter(|(key, _)| {
            !["level", "service", "message", "trace_id", "span_id"].contains(&key.as_str())
        })
        .map(|(key, value)| match value {
            Value::String(s) => format!("{key}={s}"),
            other => format!("{key}={other}"),
        })
        .collect();
    if !rest.is_empty() {
        wrap_with(&format!("    {}", rest.join(" ")), 0, out);
    }
}

/// Appends `line`, broken at spaces into lines of at most [`WIDTH`]
/// characters where it can be (a single word longer than that stays whole),
/// continued four columns right of the line's own indent.
pub(crate) fn wrap(line: &str, out: &mut String) {
    wrap_with(line, 4, out);
}

/// [`wrap`], continued `more` columns right of the line's own indent.
fn wrap_with(line: &str, more: usize, out: &mut String) {
    let indent = line.len() - line.trim_start().len();
    let continuation = " ".repeat(indent + more);
    let mut current = line[..indent].to_owned();
    let mut empty = true;
    for word in line[indent..].split(' ') {
        let fits = current.chars().count() + 1 + word.chars().count() <= WIDTH;
        if !empty && !fits {
            out.push_str(current.trim_end());
            out.push('\n');
            current = continuation.clone();
            empty = true;
        }
        if !empty {
            current.push(' ');
        }
        current.push_str(word);
        empty = false;
    }
    out.push_str(current.trim_end());
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The book shows these outputs: they must match the snapshots.
    #[test]
    fn the_book_outputs_are_up_to_date() {
        let root = crate::workspace_root();
        let outputs = render(&root).unwrap();
        for output in &outputs {
            let on_disk = std::fs::read_to_string(&output.file).unwrap_or_default();
            assert!(
                on_disk == output.text,
                "{} is stale: run `cargo xtask diffs` and commit the result",
                output.file.display()
            );
        }
        for file in crate::files_under(&root.join(OUTPUT_DIR)).unwrap_or_default() {
            assert!(
                outputs.iter().any(|o| o.file == file),
                "{} belongs to no snapshot: run `cargo xtask diffs`",
                file.display()
            );
        }
    }

    #[test]
    fn an_output_has_no_header_and_no_line_wider_than_the_page() {
        let span = format!(
            "  logic producer publish orders.created [{}]",
            (1..=12)
                .map(|i| format!("messaging.attribute.{i}=value"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let log = r#"{"level":"info","service":"gateway","target":"ch04::gateway","message":"order accepted","trace_id":"[trace-1]","span_id":"[span-1]","method":"POST","order_id":"[order-1]","route":"/orders","status":201}"#;
        let snapshot = format!("---\nsource: x.rs\nexpression: snapshot\n---\n{span}\n{log}\n");
        let fitted = fit(&snapshot);

        assert!(!fitted.contains("source:"), "{fitted}");
        assert!(
            fitted.lines().all(|l| l.chars().count() <= WIDTH),
            "{fitted}"
        );
        let lines: Vec<&str> = fitted.lines().collect();
        assert!(lines[0].starts_with("  logic producer publish"), "{fitted}");
        assert!(
            lines[1].starts_with("      messaging."),
            "a tree stays a tree: {fitted}"
        );
        assert!(
            fitted.contains("info gateway \"order accepted\" trace=[trace-1] span=[span-1]\n"),
            "{fitted}"
        );
        assert!(
            fitted.contains("\n    method=POST order_id=[order-1] route=/orders status=201"),
            "the other fields, below: {fitted}"
        );
        // Nothing is lost: every word of the snapshot is in the output.
        for word in span.split_whitespace() {
            assert!(fitted.contains(word), "{word} lost: {fitted}");
        }
    }
}
