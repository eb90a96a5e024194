//! The built book, looked at in a real browser: every page is opened in
//! headless Chromium at 1280 px, as a reader at a laptop would see it, and
//! the check fails on a `pre` block wider than its column (the reader would
//! scroll sideways to read it) or an image that does not load.
//!
//! The measuring is done by `book/layout-check.js`, which mdBook adds to
//! every page and which does nothing unless the page is opened with
//! `?layout-check`. It writes what it found into one element;
//! `chromium --dump-dom` prints the page with it, and this reads it back.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;

/// The width the pages are looked at, in CSS pixels: a laptop screen, at
/// which mdBook shows its sidebar and a 750 px text column.
pub const WINDOW_WIDTH: u32 = 1280;

/// What was wrong on the pages of the book built in `book_dir`, one line
/// each (`page: problem`); empty when nothing was.
///
/// Errors: no page found, Chromium failing to start, or a page whose check
/// did not report (the script missing from the build, say).
pub fn check(chromium: &Path, book_dir: &Path) -> anyhow::Result<Vec<String>> {
    let pages = pages(book_dir)?;
    if pages.is_empty() {
        bail!("no HTML page in {}", book_dir.display());
    }
    let mut problems = Vec::new();
    for page in &pages {
        let name = page.strip_prefix(book_dir)?.display().to_string();
        let found = check_page(chromium, page).with_context(|| format!("checking {name}"))?;
        problems.extend(
            found
                .into_iter()
                .map(|problem| format!("{name}: {problem}")),
        );
    }
    Ok(problems)
}

/// The book's pages: every `.html` at the top of the build, without the
/// ones mdBook makes for itself (the whole book on one page, 404, the
/// table of contents).
fn pages(book_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(book_dir)
        .with_context(|| format!("reading {}", book_dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    pages.retain(|page| {
        let name = page.file_name().unwrap_or_default().to_string_lossy();
        name.ends_with(".html") && !["print.html", "404.html", "toc.html"].contains(&&*name)
    });
    pages.sort();
    Ok(pages)
}

/// The problems `layout-check.js` found on one page.
fn check_page(chromium: &Path, page: &Path) -> anyhow::Result<Vec<String>> {
    let url = format!("file://{}?layout-check", page.canonicalize()?.display());
    let output = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            &format!("--window-size={WINDOW_WIDTH},900"),
            // Enough for the page, its fonts and images to load and the
            // script to run; virtual time, so a fast machine waits less.
            "--virtual-time-budget=10000",
            "--dump-dom",
            &url,
        ])
        .output()
        .with_context(|| format!("running {}", chromium.display()))?;
    if !output.status.success() {
        bail!(
            "{} exited with {}: {}",
            chromium.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    report(&String::from_utf8_lossy(&output.stdout))
}

/// The problems in the dumped page's `<pre id="layout-check-result">`.
fn report(dom: &str) -> anyhow::Result<Vec<String>> {
    let start = dom
        .find(r#"<pre id="layout-check-result">"#)
        .context("the page has no layout-check result: is book/layout-check.js in the build?")?;
    let body = &dom[start..];
    let json = body[body.find('>').unwrap() + 1..]
        .split("</pre>")
        .next()
        .unwrap_or_default();
    // The dump escapes the text as HTML.
    let json = json
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let result: Value = serde_json::from_str(&json).context("reading the layout-check result")?;
    Ok(result["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|problem| problem.as_str().map(str::to_owned))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_result_out_of_the_dumped_page() {
        let dom = r#"<html><body><main></main><pre id="layout-check-result">{"checked":true,"problems":["wide pre (900 px in 700 px): fn main() &amp;&amp; x"]}</pre></body></html>"#;
        assert_eq!(
            report(dom).unwrap(),
            ["wide pre (900 px in 700 px): fn main() && x"]
        );
        assert!(report("<html></html>").is_err(), "no result is an error");
    }

    /// A page with a wide block and a broken image, in a real Chromium,
    /// when one is on PATH (CI installs it).
    #[test]
    fn finds_a_wide_block_and_a_broken_image_in_a_real_browser() {
        let Some(chromium) = orders::nats_server::find_on_path("chromium") else {
            // CI installs Chromium (.ci/run): there, its absence is a failure.
            assert!(
                std::env::var_os("CI").is_none(),
                "CI=true but no chromium on PATH"
            );
            eprintln!("no chromium on PATH: the real-browser half of this test did not run");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let script =
            std::fs::read_to_string(crate::workspace_root().join("book/layout-check.js")).unwrap();
        let wide = "x".repeat(400);
        std::fs::write(
            dir.path().join("page.html"),
            format!(
                "<html><body><main style=\"width:600px\"><pre style=\"overflow-x:auto\">{wide}</pre>\
                 <pre>short</pre><img src=\"missing.svg\"></main><script>{script}</script></body></html>"
            ),
        )
        .unwrap();
        let problems = check(&chromium, dir.path()).unwrap();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("page.html: wide pre"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("broken image: missing.svg"),
            "{problems:?}"
        );
    }
}
