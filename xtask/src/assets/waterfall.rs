//! One order's traces as a picture: the SVG counterpart of testkit's
//! text waterfall ([`testkit::otlp::render_waterfall`]), drawn from the
//! spans an OTLP receiver got.
//!
//! Each span is a row: its service, name and kind on one line, its
//! duration at the right, and under them a bar on one time axis that every
//! trace of the picture shares, so that two traces of one order (chapter
//! 03's, or chapter 04's in link mode) show when each ran. Rows are in tree
//! order and indented by depth ([`testkit::otlp::walk_trace`]). A span's
//! link is drawn as a dashed arrow from the span to the span it points at,
//! labelled `link (same trace)` or `link (other trace)`; a link to a span
//! that is not drawn is named in words.

use std::fmt::Write as _;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use testkit::ReceivedSpan;
use testkit::otlp::{trace_id_hex, walk_trace};

use super::draw::{ACCENT, Anchor, Font, INK, MUTED, PAPER, Stroke, Svg, num, text_width};

const WIDTH: f64 = 720.0;
const MARGIN: f64 = 16.0;
const HEADER: f64 = 78.0;
const TRACE_ROW: f64 = 30.0;
const SPAN_ROW: f64 = 40.0;
const INDENT: f64 = 12.0;
const NAME_FONT: f64 = 13.0;
const BAR_HEIGHT: f64 = 13.0;
/// The bars' colours, one per service, each above 4.5:1 on white.
const SERVICE_COLORS: [(&str, &str); 3] = [
    ("gateway", "#0069a8"),
    ("logic", "#007a5a"),
    ("task", "#a23b8f"),
];
/// A span in tree order, with its depth.
type Row<'a> = (usize, &'a ReceivedSpan);

const OTHER_COLOR: &str = "#4b5563";
const ERROR_COLOR: &str = "#b91c1c";

/// The picture of the spans of `traces` (trace ids as OTLP carries them,
/// 16 bytes), in the order given, on one time axis in milliseconds from
/// the earliest span's start. `heading` is written at the top; `description`
/// is the picture's text for screen readers. Spans of other traces in
/// `spans` are left out, but a link to one is named.
///
/// Errors: none of `traces` has a span in `spans`.
pub fn waterfall(
    spans: &[ReceivedSpan],
    traces: &[Vec<u8>],
    heading: &str,
    description: &str,
) -> anyhow::Result<String> {
    let walked: Vec<(Vec<u8>, Vec<Row>)> = traces
        .iter()
        .map(|id| (id.clone(), walk_trace(spans, id)))
        .filter(|(_, rows)| !rows.is_empty())
        .collect();
    let drawn: Vec<&ReceivedSpan> = walked
        .iter()
        .flat_map(|(_, rows)| rows.iter().map(|(_, s)| *s))
        .collect();
    let Some(start) = drawn.iter().map(|s| s.span.start_time_unix_nano).min() else {
        anyhow::bail!("no span of the {} trace(s) to draw", traces.len());
    };
    let end = drawn
        .iter()
        .map(|s| s.span.end_time_unix_nano)
        .max()
        .unwrap_or(start)
        .max(start + 1);
    let total_ms = (end - start) as f64 / 1e6;
    let (step, axis_ms) = tick_step(total_ms);
    let bar_left = MARGIN;
    let bar_width = WIDTH - 2.0 * MARGIN;
    let x_of =
        |nanos: u64| bar_left + (nanos.saturating_sub(start) as f64 / 1e6) / axis_ms * bar_width;

    let rows: f64 = walked
        .iter()
        .map(|(_, rows)| TRACE_ROW + rows.len() as f64 * SPAN_ROW)
        .sum();
    let height = HEADER + rows + 44.0;
    let mut svg = Svg::new(WIDTH, height, heading, description);
    svg.text(MARGIN, 24.0, Font::new(16.0).bold(), heading);
    svg.text(
        MARGIN,
        44.0,
        Font::new(13.0).color(MUTED),
        "milliseconds from the first span's start; one row per span, indented under its parent",
    );

    // The time axis: its ticks over the whole height.
    let mut tick = 0.0;
    while tick <= axis_ms + 1e-9 {
        let x = bar_left + tick / axis_ms * bar_width;
        svg.polyline(
            &[(x, HEADER - 8.0), (x, height - 44.0)],
            Stroke::solid("#d1d5db", 1.0),
        );
        let anchor = if tick == 0.0 {
            Anchor::Start
        } else if tick + step > axis_ms + 1e-9 {
            Anchor::End
        } else {
            Anchor::Middle
        };
        svg.text(
            x,
            HEADER - 12.0,
            Font::new(12.0).color(MUTED).anchor(anchor),
            &format!("{} ms", trim_ms(tick)),
        );
        tick += step;
    }

    // Where each row goes: a trace's heading, then its spans, each with
    // its bar (span, left, right, top).
    let mut headings: Vec<(f64, &Vec<u8>, &[Row])> = Vec::new();
    let mut bars: Vec<(&ReceivedSpan, f64, f64, f64)> = Vec::new();
    let mut y = HEADER;
    for (trace, rows) in &walked {
        headings.push((y, trace, rows));
        y += TRACE_ROW;
        for (_, span) in rows {
            let x0 = x_of(span.span.start_time_unix_nano);
            let x1 = x_of(span.span.end_time_unix_nano).max(x0 + 2.0);
            bars.push((span, x0, x1, y + 21.0));
            y += SPAN_ROW;
        }
    }

    // The links first, so that the rows' text is written over them: from
    // the span that has one to the span it points at, labelled beside the
    // span pointed at, on the side of its bar with more room.
    for &(span, x, x_end, top) in &bars {
        for link in &span.span.links {
            let target = bars
                .iter()
                .find(|(t, ..)| t.span.trace_id == link.trace_id && t.span.span_id == link.span_id);
            let same = if link.trace_id == span.span.trace_id {
                "same trace"
            } else {
                "other trace"
            };
            let (label, size, (left, right, line)) = match target {
                Some(&(_, tx, tx_end, ttop)) => {
                    let tbottom = ttop + BAR_HEIGHT;
                    let mid = top + BAR_HEIGHT / 2.0;
                    let tip = (tx + 6.0).min(tx_end);
                    svg.curved_arrow(
                        (x - 2.0, mid),
                        [(x - 28.0, mid), (tip, tbottom + 28.0)],
                        (tip, tbottom + 1.0),
                        Stroke::solid(ACCENT, 2.0).dashed("5 3"),
                    );
                    (format!("link ({same})"), 13.0, (tx, tx_end, tbottom - 1.0))
                }
                None => {
                    let described = spans_named(spans, &link.trace_id, &link.span_id)
                        .unwrap_or_else(|| "a span not received".to_owned());
                    (
                        format!("link to {described} ({same})"),
                        12.0,
                        (x, x_end, top + BAR_HEIGHT - 1.0),
                    )
                }
            };
            let font = Font::new(size).bold().color(ACCENT);
            let room_right = WIDTH - MARGIN - (right + 8.0);
            let room_left = left - 8.0 - MARGIN;
            if text_width(&label, size) <= room_right || room_right >= room_left {
                svg.text(right + 8.0, line, font, &label);
            } else {
                svg.text(left - 8.0, line, font.anchor(Anchor::End), &label);
            }
        }
    }

    // The rows.
    for (y, trace, rows) in headings {
        let trace_start = rows.iter().map(|(_, s)| s.span.start_time_unix_nano).min();
        let trace_end = rows.iter().map(|(_, s)| s.span.end_time_unix_nano).max();
        let trace_ms = match (trace_start, trace_end) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e6,
            _ => 0.0,
        };
        let mut services: Vec<&str> = rows.iter().map(|(_, s)| s.service.as_str()).collect();
        services.sort_unstable();
        services.dedup();
        svg.rect(
            MARGIN - 6.0,
            y + 4.0,
            WIDTH - 2.0 * MARGIN + 12.0,
            TRACE_ROW - 6.0,
            4.0,
            PAPER,
            None,
        );
        svg.text(
            MARGIN,
            y + 21.0,
            Font::new(13.0).bold(),
            &format!(
                "trace {}…  ·  {} spans from {}  ·  {:.2} ms",
                &trace_id_hex(trace)[..8],
                rows.len(),
                services.join(", "),
                trace_ms
            ),
        );
    }
    for ((depth, span), &(_, x0, x1, top)) in
        walked.iter().flat_map(|(_, rows)| rows.iter()).zip(&bars)
    {
        let s = &span.span;
        let y = top - 21.0;
        let x_text = MARGIN + *depth as f64 * INDENT;
        let color = service_color(&span.service);
        svg.rect(x_text, y + 6.0, 9.0, 9.0, 1.0, color, None);
        let error = s.status.as_ref().is_some_and(|status| status.code == 2);
        let kind = if error {
            format!("{}, error", kind_name(s.kind))
        } else {
            kind_name(s.kind).to_owned()
        };
        svg.text_runs(
            x_text + 13.0,
            y + 15.0,
            6.0,
            &[
                (Font::new(NAME_FONT).bold().halo(), &span.service),
                (Font::new(NAME_FONT), &s.name),
                (
                    Font::new(12.0).color(if error { ERROR_COLOR } else { MUTED }),
                    &kind,
                ),
            ],
        );
        let millis = s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) as f64 / 1e6;
        svg.text(
            WIDTH - MARGIN,
            y + 15.0,
            Font::new(NAME_FONT).anchor(Anchor::End).halo(),
            &format!("{millis:.2} ms"),
        );
        let stroke = error.then(|| Stroke::solid(ERROR_COLOR, 2.0));
        svg.rect(x0, top, x1 - x0, BAR_HEIGHT, 2.0, color, stroke);
    }

    // The legend: the services' colours.
    let mut x = MARGIN;
    let legend_y = height - 18.0;
    for (service, color) in SERVICE_COLORS {
        svg.rect(x, legend_y - 10.0, 12.0, 12.0, 2.0, color, None);
        svg.text(x + 17.0, legend_y, Font::new(13.0).color(INK), service);
        x += 17.0 + text_width(service, 13.0) + 18.0;
    }
    svg.text(
        WIDTH - MARGIN,
        legend_y,
        Font::new(12.0).color(MUTED).anchor(Anchor::End),
        "drawn from the spans an OTLP receiver got",
    );
    Ok(svg.finish())
}

/// The service and name of the span `span_id` of `trace_id`, if received.
fn spans_named(spans: &[ReceivedSpan], trace_id: &[u8], span_id: &[u8]) -> Option<String> {
    spans
        .iter()
        .find(|s| s.span.trace_id == trace_id && s.span.span_id == span_id)
        .map(|s| format!("{} {}", s.service, s.span.name))
}

fn service_color(service: &str) -> &'static str {
    SERVICE_COLORS
        .iter()
        .find(|(name, _)| *name == service)
        .map_or(OTHER_COLOR, |(_, color)| color)
}

/// The OTLP span kinds, by their number on the wire.
fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

/// A round step for an axis of `total` milliseconds (about five ticks),
/// and the axis's end, a whole number of steps.
fn tick_step(total: f64) -> (f64, f64) {
    let total = total.max(0.001);
    let raw = total / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    (step, (total / step).ceil() * step)
}

/// A tick's milliseconds without trailing zeros: `0`, `2.5`, `0.25`.
fn trim_ms(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// The value of the span attribute `key`, when it is text.
pub fn text_attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    let value = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    match value {
        Value::StringValue(text) => Some(text),
        _ => None,
    }
}

/// A one-line account of the spans of `traces`, for the terminal: how many
/// per trace, and the trace's length in milliseconds.
pub fn summary(spans: &[ReceivedSpan], traces: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for trace in traces {
        let rows = walk_trace(spans, trace);
        let start = rows.iter().map(|(_, s)| s.span.start_time_unix_nano).min();
        let end = rows.iter().map(|(_, s)| s.span.end_time_unix_nano).max();
        let millis = match (start, end) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e6,
            _ => 0.0,
        };
        let _ = write!(
            out,
            "{}trace {} ({} spans, {} ms)",
            if out.is_empty() { "" } else { "; " },
            trace_id_hex(trace),
            rows.len(),
            num(millis)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::span::Link;

    fn span(
        service: &str,
        name: &str,
        id: u8,
        parent: Option<u8>,
        trace: u8,
        from_ms: u64,
        to_ms: u64,
    ) -> ReceivedSpan {
        ReceivedSpan {
            service: service.into(),
            resource: Vec::new(),
            span: Span {
                trace_id: vec![trace; 16],
                span_id: vec![id; 8],
                parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
                name: name.into(),
                kind: 2,
                start_time_unix_nano: 1_000_000_000 + from_ms * 1_000_000,
                end_time_unix_nano: 1_000_000_000 + to_ms * 1_000_000,
                ..Default::default()
            },
        }
    }

    #[test]
    fn two_traces_share_one_axis_and_a_link_is_drawn() {
        let mut process = span("task", "process orders.created", 3, None, 2, 6, 9);
        process.span.links.push(Link {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            ..Default::default()
        });
        let spans = vec![
            span("gateway", "POST /orders", 1, None, 1, 0, 5),
            span("logic", "publish orders.created", 2, Some(1), 1, 3, 4),
            process,
            span("other", "not drawn", 9, None, 7, 0, 50),
        ];
        let svg = waterfall(&spans, &[vec![1; 16], vec![2; 16]], "one <order>", "alt").unwrap();
        let document = roxmltree::Document::parse(&svg).expect("well-formed");
        let bars: Vec<(f64, f64)> = document
            .descendants()
            .filter(|n| n.has_tag_name("rect") && n.attribute("height") == Some("13"))
            .map(|n| {
                let number = |a| n.attribute(a).unwrap().parse::<f64>().unwrap();
                (number("x"), number("width"))
            })
            .collect();
        assert_eq!(bars.len(), 3, "one bar per span drawn");
        // 9 ms over an axis of 10 ms (ticks of 2 ms), 688 units wide.
        let unit = (WIDTH - 2.0 * MARGIN) / 10.0;
        assert!((bars[0].0 - MARGIN).abs() < 0.1, "{bars:?}");
        assert!((bars[0].1 - 5.0 * unit).abs() < 0.2, "{bars:?}");
        assert!((bars[2].0 - (MARGIN + 6.0 * unit)).abs() < 0.1, "{bars:?}");
        assert!(svg.contains(">link (other trace)<"), "{svg}");
        assert!(svg.contains(">one &lt;order&gt;<"));
        assert!(!svg.contains("not drawn"));
        assert!(svg.contains(">10 ms<"), "the axis ends on a tick");
    }

    #[test]
    fn no_span_no_picture() {
        assert!(waterfall(&[], &[vec![1; 16]], "h", "d").is_err());
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(9.0), (2.0, 10.0));
        assert_eq!(tick_step(12.3), (2.5, 12.5));
        assert_eq!(tick_step(0.9), (0.2, 1.0));
        assert_eq!(trim_ms(2.5), "2.5");
        assert_eq!(trim_ms(0.0), "0");
        assert_eq!(trim_ms(10.0), "10");
    }
}
