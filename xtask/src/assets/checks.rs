//! The book's pictures, checked against the real files: every image a page
//! shows exists, is SVG and says what it shows; every file in
//! `book/assets/` is on a page; and the architecture pictures are what the
//! code draws now (the waterfalls and the flame graph come from live runs,
//! so only their form is checked).

use std::path::{Path, PathBuf};

use super::{ASSETS_DIR, architecture};

/// A reference to a file of `book/assets/` in a page's markdown.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    /// `book/<page>.md`, or the file a page includes, for messages.
    page: String,
    /// The path as written, relative to the book: `assets/x.svg`.
    target: String,
    /// `Some(alt text)` for an image (`![alt](target)`), `None` for a link.
    alt: Option<String>,
}

/// Every `](assets/...)` in `text`: images with their alt text, and links.
fn references(page: &str, text: &str) -> Vec<Reference> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("](assets/") {
        let at = from + at;
        let target_start = at + 2;
        let target_end = text[target_start..]
            .find(')')
            .map_or(text.len(), |end| target_start + end);
        let target = text[target_start..target_end].to_owned();
        // Back to the `[` that opens the text, brackets inside it balanced.
        let mut depth = 0usize;
        let mut open = None;
        for (i, c) in text[..at].char_indices().rev() {
            match c {
                ']' => depth += 1,
                '[' if depth == 0 => {
                    open = Some(i);
                    break;
                }
                '[' => depth -= 1,
                _ => {}
            }
        }
        let alt = open
            .filter(|&open| open > 0 && text[..open].ends_with('!'))
            .map(|open| text[open + 1..at].to_owned());
        found.push(Reference {
            page: page.to_owned(),
            target,
            alt,
        });
        from = target_end;
    }
    found
}

/// The references of every page of the book, and of the markdown files the
/// pages include whole (`{{#include ../BENCHMARKS.md}}`), whose paths are
/// read from the book's directory too.
fn book_references(root: &Path) -> anyhow::Result<Vec<Reference>> {
    let book = root.join("book");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&book)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    pages.retain(|page| page.extension().is_some_and(|e| e == "md"));
    pages.sort();
    let mut found = Vec::new();
    for page in pages {
        let text = std::fs::read_to_string(&page)?;
        let name = format!("book/{}", page.file_name().unwrap().to_string_lossy());
        found.extend(references(&name, &text));
        for line in text.lines() {
            let included = line
                .strip_prefix("{{#include ")
                .and_then(|rest| rest.strip_suffix("}}"))
                .filter(|path| path.ends_with(".md"));
            if let Some(path) = included {
                let text = std::fs::read_to_string(book.join(path))?;
                found.extend(references(&format!("{name} (including {path})"), &text));
            }
        }
    }
    Ok(found)
}

/// The files in `book/assets/`, by name.
fn asset_files(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(root.join(ASSETS_DIR))?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    Ok(names)
}

/// `text` parsed as an SVG document; the error says why it is not one.
/// The flame graphs inferno draws begin with a DOCTYPE, so one is allowed.
fn parse_svg(text: &str) -> Result<(), String> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let document = roxmltree::Document::parse_with_options(text, options)
        .map_err(|e| format!("not XML: {e}"))?;
    let root = document.root_element();
    if root.tag_name().name() != "svg"
        || root.tag_name().namespace() != Some("http://www.w3.org/2000/svg")
    {
        return Err(format!(
            "its root is <{}>, not SVG's <svg>",
            root.tag_name().name()
        ));
    }
    Ok(())
}

#[test]
fn every_image_of_the_book_exists_is_svg_and_has_alt_text() {
    let root = crate::workspace_root();
    let images: Vec<Reference> = book_references(&root)
        .unwrap()
        .into_iter()
        .filter(|r| r.alt.is_some())
        .collect();
    assert!(!images.is_empty(), "the book shows no picture at all");
    let mut wrong = Vec::new();
    for image in &images {
        let path = root.join("book").join(&image.target);
        let described = image.alt.as_deref().unwrap_or_default();
        match std::fs::read_to_string(&path) {
            Err(e) => wrong.push(format!("{}: {}: {e}", image.page, image.target)),
            Ok(text) => {
                if let Err(e) = parse_svg(&text) {
                    wrong.push(format!("{}: {}: {e}", image.page, image.target));
                }
            }
        }
        // Alt text that says what the picture shows: a sentence, not a
        // file name or a word.
        if described.split_whitespace().count() < 8 {
            wrong.push(format!(
                "{}: {}: alt text {described:?} does not say what it shows",
                image.page, image.target
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_asset_is_on_a_page() {
    let root = crate::workspace_root();
    let referenced: Vec<String> = book_references(&root)
        .unwrap()
        .into_iter()
        .filter_map(|r| r.target.strip_prefix("assets/").map(str::to_owned))
        .collect();
    let unused: Vec<String> = asset_files(&root)
        .unwrap()
        .into_iter()
        .filter(|name| !referenced.contains(name))
        .collect();
    assert!(
        unused.is_empty(),
        "in {ASSETS_DIR} but on no page (show them, or delete them): {}",
        unused.join(", ")
    );
}

#[test]
fn the_architecture_pictures_are_up_to_date() {
    let root = crate::workspace_root();
    for (name, svg) in architecture::all() {
        let path = root.join(ASSETS_DIR).join(&name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == svg,
            "{} is not what the code draws: run `cargo xtask book-assets --only architecture` and commit the result",
            path.display()
        );
    }
}

#[test]
fn references_are_found_in_images_and_links_alike() {
    let text = "See ![A [nested] picture](assets/a.svg) and\n\
                [![linked](assets/b.svg)](assets/b.svg), not (assets/c.svg).";
    let found = references("p.md", text);
    let simple: Vec<(&str, Option<&str>)> = found
        .iter()
        .map(|r| (r.target.as_str(), r.alt.as_deref()))
        .collect();
    assert_eq!(
        simple,
        [
            ("assets/a.svg", Some("A [nested] picture")),
            ("assets/b.svg", Some("linked")),
            ("assets/b.svg", None),
        ]
    );
}

#[test]
fn only_svg_documents_pass() {
    assert!(parse_svg(r#"<svg xmlns="http://www.w3.org/2000/svg"/>"#).is_ok());
    assert!(
        parse_svg(
            r#"<?xml version="1.0"?><!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd"><svg xmlns="http://www.w3.org/2000/svg"/>"#
        )
        .is_ok(),
        "inferno's flame graphs have a DOCTYPE"
    );
    assert!(parse_svg("<svg>").is_err(), "not well-formed");
    assert!(parse_svg("<html/>").is_err(), "not SVG");
    assert!(parse_svg("<svg/>").is_err(), "SVG without its namespace");
}
