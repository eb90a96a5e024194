//! A small line chart, written by hand: latency (log scale) against the
//! offered rate, one line per system and percentile.

use std::fmt::Write as _;

/// One line of the chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub dashed: bool,
    /// (offered rate per second, latency in milliseconds).
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 210.0;
const TOP: f64 = 46.0;
const BOTTOM: f64 = 56.0;

/// The chart as an SVG document; `limit_ms` is drawn as a horizontal line.
pub fn latency_chart(title: &str, series: &[Series], limit_ms: f64) -> String {
    let points = || series.iter().flat_map(|s| s.points.iter().copied());
    let max_rate = points().map(|(x, _)| x).fold(0.0, f64::max).max(1.0);
    let (x_step, x_max) = axis_step(max_rate);
    let latencies = points()
        .map(|(_, y)| y)
        .chain([limit_ms])
        .filter(|y| *y > 0.0);
    let (low, high) = latencies.fold((f64::INFINITY, 0.0_f64), |(l, h), y| (l.min(y), h.max(y)));
    let decade_low = low.log10().floor().min(0.0) as i32;
    let decade_high = (high.log10().ceil() as i32).max(decade_low + 1);

    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_of = |x: f64| LEFT + x / x_max * plot_w;
    let y_of = |y: f64| {
        let y = y.max(10f64.powi(decade_low));
        let share = (y.log10() - f64::from(decade_low)) / f64::from(decade_high - decade_low);
        TOP + plot_h * (1.0 - share)
    };

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" font-size="15" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    // Grid and axes.
    for decade in decade_low..=decade_high {
        let y = y_of(10f64.powi(decade));
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            LEFT + plot_w
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y + 4.0,
            decade_label(decade)
        );
    }
    let mut x = 0.0;
    while x <= x_max + 1e-9 {
        let px = x_of(x);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#eee"/>"##,
            TOP + plot_h
        );
        let _ = writeln!(
            svg,
            r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{x}</text>"#,
            TOP + plot_h + 18.0
        );
        x += x_step;
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w:.1}" height="{plot_h:.1}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">offered rate (orders per second)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 14.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">POST /orders latency (log scale)</text>"#,
        TOP + plot_h / 2.0
    );
    // The limit.
    let limit_y = y_of(limit_ms);
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{limit_y:.1}" x2="{:.1}" y2="{limit_y:.1}" stroke="#c00" stroke-dasharray="2 3"/>"##,
        LEFT + plot_w
    );
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" fill="#c00" text-anchor="end">p99 limit {}</text>"##,
        LEFT + plot_w - 4.0,
        limit_y - 4.0,
        escape(&crate::load::report::ms(limit_ms))
    );
    // The series and the legend.
    for (i, s) in series.iter().enumerate() {
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let path: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", x_of(x), y_of(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            path.join(" "),
            s.color
        );
        for &(x, y) in &s.points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"><title>{}: {x}/s, {}</title></circle>"#,
                x_of(x),
                y_of(y),
                s.color,
                escape(&s.name),
                escape(&crate::load::report::ms(y))
            );
        }
        let ly = TOP + 10.0 + i as f64 * 20.0;
        let lx = WIDTH - RIGHT + 16.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/>"#,
            lx + 26.0,
            s.color
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}">{}</text>"#,
            lx + 32.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A round tick step for an axis up to `max`, and the axis end.
fn axis_step(max: f64) -> (f64, f64) {
    let raw = max / 6.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    (step, (max / step).ceil() * step)
}

fn decade_label(decade: i32) -> String {
    match decade {
        d if d >= 3 => format!("{} s", 10u64.pow((d - 3) as u32)),
        d if d >= 0 => format!("{} ms", 10u64.pow(d as u32)),
        d => format!("{} ms", 10f64.powi(d)),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_is_well_formed_svg_with_a_line_per_series() {
        let series = vec![
            Series {
                name: "ch00 p99".into(),
                color: "#1f77b4",
                dashed: false,
                points: vec![(200.0, 3.0), (400.0, 5.0), (600.0, 800.0)],
            },
            Series {
                name: "final <p50>".into(),
                color: "#ff7f0e",
                dashed: true,
                points: vec![(200.0, 0.8), (400.0, 1.2)],
            },
        ];
        let svg = latency_chart("latency & rate", &series, 100.0);
        let document = roxmltree::Document::parse(&svg).expect("well-formed SVG");
        let polylines = document
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .count();
        assert_eq!(polylines, 2);
        assert!(svg.contains("final &lt;p50&gt;"));
        assert!(
            svg.contains(">1 s<"),
            "a decade label above the slowest point"
        );
        assert!(
            svg.contains(">0.1 ms<"),
            "a decade label below the fastest point"
        );
    }

    #[test]
    fn axis_steps_are_round() {
        assert_eq!(axis_step(1000.0), (200.0, 1000.0));
        assert_eq!(axis_step(1300.0), (250.0, 1500.0));
        assert_eq!(axis_step(3000.0), (500.0, 3000.0));
        assert_eq!(decade_label(-1), "0.1 ms");
        assert_eq!(decade_label(2), "100 ms");
        assert_eq!(decade_label(4), "10 s");
    }
}
