//! A few lines of SVG writing for the book's pictures: a document that
//! scales to the width of the page (`width="100%"` and a `viewBox`, so
//! the same file is read on a desktop and on a phone), its title and
//! description for screen readers, and the shapes the pictures use.
//!
//! Every coordinate and size is in the `viewBox`'s units, which are CSS
//! pixels when the picture is shown at its full width. The output depends
//! only on the calls made, so a picture generated twice is the same text,
//! byte for byte (the architecture diagrams' up-to-date check relies on
//! it).

use std::fmt::Write as _;

/// The one font stack of every picture: the platform's sans-serif.
pub const FONT: &str =
    "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', Arial, sans-serif";

/// Text colour: near-black on white, a contrast ratio above 15.
pub const INK: &str = "#111827";
/// Secondary text, still above 7:1 on white and on [`PAPER`].
pub const MUTED: &str = "#4b5563";
/// The fill of boxes.
pub const PAPER: &str = "#f3f4f6";
/// What a picture marks as new: strokes and text (7:1 on white).
pub const ACCENT: &str = "#1d4ed8";
/// The fill behind accented text (the text stays above 7:1).
pub const ACCENT_FILL: &str = "#dbeafe";
/// Accented text on [`ACCENT_FILL`].
pub const ACCENT_INK: &str = "#1e3a8a";

/// An SVG document being written.
#[derive(Debug)]
pub struct Svg {
    out: String,
}

/// How a piece of text is anchored at its `x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

impl Anchor {
    fn attribute(self) -> &'static str {
        match self {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        }
    }
}

/// The look of one piece of text.
#[derive(Debug, Clone, Copy)]
pub struct Font {
    /// In `viewBox` units (CSS pixels at full width); the pictures use 12
    /// and more.
    pub size: f64,
    pub bold: bool,
    pub color: &'static str,
    pub anchor: Anchor,
    /// A white outline around the glyphs, so that text written over a
    /// line stays readable.
    pub halo: bool,
}

impl Font {
    /// Regular ink text of `size`, anchored at its start.
    pub fn new(size: f64) -> Self {
        Self {
            size,
            bold: false,
            color: INK,
            anchor: Anchor::Start,
            halo: false,
        }
    }

    pub fn halo(self) -> Self {
        Self { halo: true, ..self }
    }

    pub fn bold(self) -> Self {
        Self { bold: true, ..self }
    }

    pub fn color(self, color: &'static str) -> Self {
        Self { color, ..self }
    }

    pub fn anchor(self, anchor: Anchor) -> Self {
        Self { anchor, ..self }
    }
}

/// The look of a line or of a box's outline.
#[derive(Debug, Clone, Copy)]
pub struct Stroke {
    pub color: &'static str,
    pub width: f64,
    /// `stroke-dasharray`, e.g. `"6 4"`; `None` for a solid line.
    pub dash: Option<&'static str>,
}

impl Stroke {
    pub fn solid(color: &'static str, width: f64) -> Self {
        Self {
            color,
            width,
            dash: None,
        }
    }

    pub fn dashed(self, dash: &'static str) -> Self {
        Self {
            dash: Some(dash),
            ..self
        }
    }

    fn attributes(self) -> String {
        let mut attributes = format!(
            r#"stroke="{}" stroke-width="{}""#,
            self.color,
            num(self.width)
        );
        if let Some(dash) = self.dash {
            let _ = write!(attributes, r#" stroke-dasharray="{dash}""#);
        }
        attributes
    }
}

impl Svg {
    /// A document of `width` by `height` units, scaled to the width of
    /// whatever shows it, on a white background. `title` and
    /// `description` are what a screen reader announces (the page's alt
    /// text says the same). Arrowheads: [`Svg::arrow`].
    pub fn new(width: f64, height: f64, title: &str, description: &str) -> Self {
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="100%" viewBox="0 0 {} {}" role="img" aria-labelledby="title desc" font-family="{FONT}">"#,
            num(width),
            num(height)
        );
        let _ = writeln!(out, r#"<title id="title">{}</title>"#, escape(title));
        let _ = writeln!(out, r#"<desc id="desc">{}</desc>"#, escape(description));
        out.push_str("<defs>\n");
        for (id, color) in [
            ("arrow", INK),
            ("arrow-accent", ACCENT),
            ("arrow-muted", MUTED),
        ] {
            let _ = writeln!(
                out,
                r#"<marker id="{id}" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="11" markerHeight="11" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>"#
            );
        }
        out.push_str("</defs>\n");
        let _ = writeln!(
            out,
            r#"<rect x="0" y="0" width="{}" height="{}" fill="white"/>"#,
            num(width),
            num(height)
        );
        Self { out }
    }

    /// A rectangle with corners rounded by `radius`.
    #[allow(clippy::too_many_arguments)]
    pub fn rect(
        &mut self,
        x: f64,
        y: f64,
        width: f64,
        height: f64,
        radius: f64,
        fill: &str,
        stroke: Option<Stroke>,
    ) {
        let stroke = stroke.map_or_else(|| r#"stroke="none""#.to_owned(), Stroke::attributes);
        let _ = writeln!(
            self.out,
            r#"<rect x="{}" y="{}" width="{}" height="{}" rx="{}" fill="{fill}" {stroke}/>"#,
            num(x),
            num(y),
            num(width),
            num(height),
            num(radius)
        );
    }

    /// One line of text with its baseline at `y`.
    pub fn text(&mut self, x: f64, y: f64, font: Font, text: &str) {
        let weight = if font.bold {
            r#" font-weight="bold""#
        } else {
            ""
        };
        let _ = writeln!(
            self.out,
            r#"<text x="{}" y="{}" font-size="{}" fill="{}" text-anchor="{}"{weight}{}>{}</text>"#,
            num(x),
            num(y),
            num(font.size),
            font.color,
            font.anchor.attribute(),
            halo(font),
            escape(text)
        );
    }

    /// One line of text in runs of different looks (a bold name, then
    /// regular text, then muted), each run `gap` units after the one before,
    /// so that the browser, not an estimate, places each run after the
    /// last. The first run's anchor and halo apply to the line.
    pub fn text_runs(&mut self, x: f64, y: f64, gap: f64, runs: &[(Font, &str)]) {
        let Some((first, _)) = runs.first() else {
            return;
        };
        let _ = write!(
            self.out,
            r#"<text x="{}" y="{}" text-anchor="{}"{}>"#,
            num(x),
            num(y),
            first.anchor.attribute(),
            halo(*first)
        );
        for (i, (font, text)) in runs.iter().enumerate() {
            let dx = if i == 0 {
                String::new()
            } else {
                format!(r#" dx="{}""#, num(gap))
            };
            let weight = if font.bold {
                r#" font-weight="bold""#
            } else {
                ""
            };
            let _ = write!(
                self.out,
                r#"<tspan{dx} font-size="{}" fill="{}"{weight}>{}</tspan>"#,
                num(font.size),
                font.color,
                escape(text)
            );
        }
        self.out.push_str("</text>\n");
    }

    /// A line through `points`, without an arrowhead.
    pub fn polyline(&mut self, points: &[(f64, f64)], stroke: Stroke) {
        let _ = writeln!(
            self.out,
            r#"<polyline points="{}" fill="none" {}/>"#,
            points_attribute(points),
            stroke.attributes()
        );
    }

    /// A line through `points` with an arrowhead at its last point, in
    /// the colour of the stroke ([`INK`], [`ACCENT`] or [`MUTED`]; any
    /// other colour gets an ink arrowhead).
    pub fn arrow(&mut self, points: &[(f64, f64)], stroke: Stroke) {
        let marker = match stroke.color {
            ACCENT => "arrow-accent",
            MUTED => "arrow-muted",
            _ => "arrow",
        };
        let _ = writeln!(
            self.out,
            r#"<polyline points="{}" fill="none" {} marker-end="url(#{marker})"/>"#,
            points_attribute(points),
            stroke.attributes()
        );
    }

    /// A cubic Bézier from `from` to `to` through the two control points,
    /// with an arrowhead at `to` (colours as in [`Svg::arrow`]).
    pub fn curved_arrow(
        &mut self,
        from: (f64, f64),
        controls: [(f64, f64); 2],
        to: (f64, f64),
        stroke: Stroke,
    ) {
        let marker = match stroke.color {
            ACCENT => "arrow-accent",
            MUTED => "arrow-muted",
            _ => "arrow",
        };
        let _ = writeln!(
            self.out,
            r#"<path d="M{},{} C{},{} {},{} {},{}" fill="none" {} marker-end="url(#{marker})"/>"#,
            num(from.0),
            num(from.1),
            num(controls[0].0),
            num(controls[0].1),
            num(controls[1].0),
            num(controls[1].1),
            num(to.0),
            num(to.1),
            stroke.attributes()
        );
    }

    /// A rounded label, `text` centred in a box sized to it, its top-left
    /// corner at (`x`, `y`); returns the box's width. [`pill_width`] gives
    /// the width beforehand.
    pub fn pill(&mut self, x: f64, y: f64, text: &str, font: Font, fill: &str) -> f64 {
        let width = pill_width(text, font.size);
        let height = font.size + 10.0;
        self.rect(x, y, width, height, height / 2.0, fill, None);
        self.text(
            x + width / 2.0,
            y + font.size + 2.5,
            font.anchor(Anchor::Middle),
            text,
        );
        width
    }

    /// The finished document.
    pub fn finish(mut self) -> String {
        self.out.push_str("</svg>\n");
        self.out
    }
}

/// The attributes of a [`Font::halo`]: a white stroke painted under the
/// fill.
fn halo(font: Font) -> &'static str {
    if font.halo {
        r#" stroke="white" stroke-width="4" stroke-linejoin="round" paint-order="stroke""#
    } else {
        ""
    }
}

/// The width of [`Svg::pill`] for `text` at `size`.
pub fn pill_width(text: &str, size: f64) -> f64 {
    text_width(text, size) + 16.0
}

/// A generous estimate of the width of `text` at `size`: 0.6 em a
/// character, as wide as the widest common sans-serif fonts (DejaVu Sans),
/// so that a layout computed with it leaves room on every platform.
pub fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.6
}

/// A number as SVG wants it: at most one decimal, none when it is whole.
pub fn num(value: f64) -> String {
    let rounded = (value * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 {
        format!("{}", rounded as i64)
    } else {
        format!("{rounded:.1}")
    }
}

fn points_attribute(points: &[(f64, f64)]) -> String {
    points
        .iter()
        .map(|(x, y)| format!("{},{}", num(*x), num(*y)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` with XML's special characters escaped.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_scales_and_escapes() {
        let mut svg = Svg::new(100.0, 50.0, "a <title>", "a & b");
        svg.text(1.0, 2.0, Font::new(12.0).bold(), "x < y");
        svg.arrow(&[(0.0, 0.0), (10.25, 3.0)], Stroke::solid(ACCENT, 2.0));
        svg.text_runs(
            1.0,
            2.0,
            6.0,
            &[
                (Font::new(12.0).bold(), "task"),
                (Font::new(12.0), "handle"),
            ],
        );
        let text = svg.finish();
        let document = roxmltree::Document::parse(&text).expect("well-formed");
        let root = document.root_element();
        assert_eq!(root.attribute("width"), Some("100%"));
        assert_eq!(root.attribute("viewBox"), Some("0 0 100 50"));
        assert!(text.contains("<title id=\"title\">a &lt;title&gt;</title>"));
        assert!(text.contains(">x &lt; y</text>"));
        assert!(text.contains(r#"points="0,0 10.3,3""#), "{text}");
        assert!(text.contains("url(#arrow-accent)"));
        assert!(text.contains(
            r##"<tspan font-size="12" fill="#111827" font-weight="bold">task</tspan><tspan dx="6" font-size="12" fill="#111827">handle</tspan>"##
        ));
    }

    #[test]
    fn numbers_have_one_decimal_at_most() {
        assert_eq!(num(3.0), "3");
        assert_eq!(num(3.04), "3");
        assert_eq!(num(3.25), "3.3");
        assert_eq!(num(-0.5), "-0.5");
    }
}
