//! The system's architecture, drawn once per chapter with that chapter's
//! layer marked: the same boxes and arrows on every page (client, the
//! three services with their ports, SQLite, NATS JetStream), and in
//! [`ACCENT`] what the chapter adds.
//!
//! The ports come from [`Topology::default`], the ones the book uses, so
//! the pictures cannot drift from the code that binds them. The layout is
//! portrait, 560 units wide, with text of 13 to 20 units: shown at the
//! width of the book's column (750 px) the text is 17 px and more, and on a
//! 400 px phone it is still about 9 px.

use orders::queue::{ORDERS_CREATED, STREAM};
use orders::topology::{Service, Topology};

use super::draw::{
    ACCENT, ACCENT_FILL, ACCENT_INK, Anchor, Font, INK, MUTED, PAPER, Stroke, Svg, pill_width,
};

/// A book page with an architecture picture: one per chapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Chapter {
    Baseline,
    Metrics,
    Logs,
    GrpcTracing,
    NatsTracing,
    Profiling,
    Final,
}

impl Chapter {
    pub const ALL: [Chapter; 7] = [
        Chapter::Baseline,
        Chapter::Metrics,
        Chapter::Logs,
        Chapter::GrpcTracing,
        Chapter::NatsTracing,
        Chapter::Profiling,
        Chapter::Final,
    ];

    /// The picture's file name in `book/assets/`, after the chapter's
    /// directory (`architecture-01-metrics.svg`).
    pub fn file_name(self) -> String {
        let directory = match self {
            Chapter::Baseline => "00-baseline",
            Chapter::Metrics => "01-metrics",
            Chapter::Logs => "02-logs",
            Chapter::GrpcTracing => "03-grpc-tracing",
            Chapter::NatsTracing => "04-nats-tracing",
            Chapter::Profiling => "05-profiling",
            Chapter::Final => "final",
        };
        format!("architecture-{directory}.svg")
    }

    /// The short name in the picture's corner.
    fn label(self) -> &'static str {
        match self {
            Chapter::Baseline => "00 · baseline",
            Chapter::Metrics => "01 · metrics",
            Chapter::Logs => "02 · logs",
            Chapter::GrpcTracing => "03 · gRPC tracing",
            Chapter::NatsTracing => "04 · NATS tracing",
            Chapter::Profiling => "05 · profiling",
            Chapter::Final => "final · the stack",
        }
    }

    /// What the chapter adds, in words: the picture's description, for
    /// screen readers.
    fn adds(self) -> &'static str {
        match self {
            Chapter::Baseline => "No telemetry: the admin ports answer only /healthz and /readyz.",
            Chapter::Metrics => {
                "New in chapter 01: a /metrics endpoint on each service's admin port, read by Prometheus or curl."
            }
            Chapter::Logs => {
                "New in chapter 02: every service writes JSON log lines with trace_id and span_id to stdout."
            }
            Chapter::GrpcTracing => {
                "New in chapter 03: every service exports spans over OTLP, and both gRPC calls carry the trace context (traceparent)."
            }
            Chapter::NatsTracing => {
                "New in chapter 04: the JetStream message carries traceparent in its headers, between a producer span in logic and a consumer span in task."
            }
            Chapter::Profiling => {
                "New in chapter 05: /debug/pprof (CPU profile, flame graph, heap, runtime) on each admin port."
            }
            Chapter::Final => {
                "New in the final build: the stack of docker compose. Prometheus scrapes /metrics, Tempo receives the spans, Alloy ships the log lines to Loki, and Grafana shows all three."
            }
        }
    }
}

/// One telemetry layer a service shows as a label, in the chapter that
/// introduces it and every later one.
struct Badge {
    text: &'static str,
    since: Chapter,
}

/// In the order they are drawn: the admin port's two endpoints, then the
/// two outputs, so that a narrow box shows them in two rows of two.
const BADGES: [Badge; 4] = [
    Badge {
        text: "/metrics",
        since: Chapter::Metrics,
    },
    Badge {
        text: "/debug/pprof",
        since: Chapter::Profiling,
    },
    Badge {
        text: "JSON logs",
        since: Chapter::Logs,
    },
    Badge {
        text: "OTLP spans",
        since: Chapter::GrpcTracing,
    },
];

/// How a part of the picture relates to the chapter drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// Not there yet.
    Absent,
    /// Added by an earlier chapter.
    Earlier,
    /// What this chapter adds.
    New,
}

impl Mark {
    fn of(since: Chapter, chapter: Chapter) -> Self {
        if chapter < since {
            Mark::Absent
        } else if chapter == since {
            Mark::New
        } else {
            Mark::Earlier
        }
    }
}

const WIDTH: f64 = 560.0;
const TITLE_FONT: f64 = 21.0;
const LABEL_FONT: f64 = 17.0;
const BADGE_FONT: f64 = 16.0;
const LINE: f64 = 18.0;
/// Where the band of what reads the telemetry starts.
const READERS_TOP: f64 = 596.0;

/// The picture of `chapter`, as SVG text. The same chapter always gives
/// the same text.
pub fn diagram(chapter: Chapter) -> String {
    let ports = Topology::default();
    let port = |address: std::net::SocketAddr| format!(":{}", address.port());
    let admin = |service: Service| port(ports.admin(service));

    let readers_height = if chapter == Chapter::Final {
        250.0
    } else {
        80.0
    };
    let legend = chapter != Chapter::Baseline;
    let height = READERS_TOP + readers_height + if legend { 40.0 } else { 0.0 };
    let title = format!(
        "The order system in chapter {}",
        chapter.label().replace(" · ", ", ")
    );
    let description = format!(
        "A client sends HTTP POST /orders to the gateway; the gateway calls logic over gRPC (CreateOrder); logic stores the order in SQLite and publishes {ORDERS_CREATED} on NATS JetStream; task consumes the message and calls the gateway back over gRPC (PushResult). Each service has an admin port ({}, {}, {}). {}",
        admin(Service::Gateway),
        admin(Service::Logic),
        admin(Service::Task),
        chapter.adds()
    );
    let mut svg = Svg::new(WIDTH, height, &title, &description);

    // The chapter, top left.
    svg.text(
        10.0,
        30.0,
        Font::new(LABEL_FONT).bold().color(ACCENT_INK),
        chapter.label(),
    );

    // client -> gateway
    service_box(&mut svg, 200.0, 8.0, 160.0, 44.0, "client", &[], None);
    let normal = Stroke::solid(INK, 1.8);
    svg.arrow(&[(280.0, 52.0), (280.0, 98.0)], normal);
    svg.text(290.0, 81.0, Font::new(LABEL_FONT), "HTTP POST /orders");

    // The three services.
    let gateway_ports = format!(
        "HTTP {} · gRPC {} · admin {}",
        port(ports.gateway_http),
        port(ports.gateway_grpc),
        admin(Service::Gateway)
    );
    service_box(
        &mut svg,
        40.0,
        100.0,
        480.0,
        106.0,
        "gateway",
        &[&gateway_ports],
        Some(chapter),
    );
    let logic_ports = [
        format!("gRPC {}", port(ports.logic_grpc)),
        format!("admin {}", admin(Service::Logic)),
    ];
    let task_ports = [
        "JetStream consumer".to_owned(),
        format!("admin {}", admin(Service::Task)),
    ];
    service_box(
        &mut svg,
        10.0,
        274.0,
        260.0,
        148.0,
        "logic",
        &[&logic_ports[0], &logic_ports[1]],
        Some(chapter),
    );
    service_box(
        &mut svg,
        290.0,
        274.0,
        260.0,
        148.0,
        "task",
        &[&task_ports[0], &task_ports[1]],
        Some(chapter),
    );

    // gRPC, both ways, with chapter 03's context.
    let grpc = Mark::of(Chapter::GrpcTracing, chapter);
    let grpc_stroke = match grpc {
        Mark::New => Stroke::solid(ACCENT, 3.4),
        _ => normal,
    };
    svg.arrow(&[(120.0, 206.0), (120.0, 272.0)], grpc_stroke);
    svg.arrow(&[(440.0, 272.0), (440.0, 206.0)], grpc_stroke);
    let mut create = vec![("gRPC", Mark::Earlier), ("CreateOrder", Mark::Earlier)];
    let mut push = vec![("gRPC", Mark::Earlier), ("PushResult", Mark::Earlier)];
    if grpc != Mark::Absent {
        create.push(("+ traceparent", grpc));
        push.push(("+ traceparent", grpc));
    }
    labels(&mut svg, 130.0, 228.0, Anchor::Start, &create);
    labels(&mut svg, 430.0, 228.0, Anchor::End, &push);

    // SQLite and NATS, with chapter 04's context.
    let nats = Mark::of(Chapter::NatsTracing, chapter);
    let nats_stroke = match nats {
        Mark::New => Stroke::solid(ACCENT, 3.4),
        _ => normal,
    };
    svg.arrow(&[(70.0, 422.0), (70.0, 488.0)], normal);
    labels(
        &mut svg,
        80.0,
        446.0,
        Anchor::Start,
        &[("INSERT", Mark::Earlier), ("UPDATE", Mark::Earlier)],
    );
    service_box(&mut svg, 10.0, 490.0, 140.0, 66.0, "SQLite", &[], None);
    svg.text(26.0, 544.0, Font::new(LABEL_FONT).color(MUTED), "orders.db");
    svg.arrow(&[(190.0, 422.0), (190.0, 488.0)], nats_stroke);
    svg.arrow(&[(530.0, 490.0), (530.0, 424.0)], nats_stroke);
    let mut publish = vec![("publish", Mark::Earlier)];
    let mut consume = vec![("consume", Mark::Earlier)];
    if nats != Mark::Absent {
        publish.push(("producer span", nats));
        consume.push(("consumer span", nats));
    }
    labels(&mut svg, 200.0, 446.0, Anchor::Start, &publish);
    labels(&mut svg, 520.0, 446.0, Anchor::End, &consume);
    service_box(
        &mut svg,
        170.0,
        490.0,
        380.0,
        86.0,
        "NATS JetStream :4222",
        &[&format!("stream {STREAM} · {ORDERS_CREATED}")],
        None,
    );
    if nats != Mark::Absent {
        let font = match nats {
            Mark::New => Font::new(LABEL_FONT).bold().color(ACCENT),
            _ => Font::new(LABEL_FONT).color(MUTED),
        };
        svg.text(186.0, 566.0, font, "headers carry traceparent");
    }

    // What reads the telemetry.
    readers(&mut svg, chapter, READERS_TOP, readers_height, &ports);

    if legend {
        let y = READERS_TOP + readers_height + 4.0;
        let x = 10.0 + badge(&mut svg, 10.0, y, "new in this chapter", Mark::New) + 10.0;
        if chapter != Chapter::Metrics {
            badge(&mut svg, x, y, "from earlier chapters", Mark::Earlier);
        }
    }
    svg.finish()
}

/// Every chapter's picture, with its file name.
pub fn all() -> Vec<(String, String)> {
    Chapter::ALL
        .into_iter()
        .map(|chapter| (chapter.file_name(), diagram(chapter)))
        .collect()
}

/// A box with a bold `title` and lines of smaller text under it. With
/// `badges`, the box is a service's in that chapter, and shows the badges
/// of the layers the chapter has: in one row when the box is wide, in two
/// when it is narrow.
#[allow(clippy::too_many_arguments)]
fn service_box(
    svg: &mut Svg,
    x: f64,
    y: f64,
    width: f64,
    height: f64,
    title: &str,
    lines: &[&str],
    badges: Option<Chapter>,
) {
    svg.rect(
        x,
        y,
        width,
        height,
        8.0,
        PAPER,
        Some(Stroke::solid(INK, 1.4)),
    );
    let title_font = Font::new(TITLE_FONT).bold();
    if lines.is_empty() && height < 50.0 {
        svg.text(
            x + width / 2.0,
            y + height / 2.0 + 7.0,
            title_font.anchor(Anchor::Middle),
            title,
        );
    } else {
        svg.text(x + 16.0, y + 28.0, title_font, title);
    }
    for (i, line) in lines.iter().enumerate() {
        svg.text(
            x + 16.0,
            y + 54.0 + i as f64 * 22.0,
            Font::new(LABEL_FONT),
            line,
        );
    }
    let Some(chapter) = badges else {
        return;
    };
    // The badges: one row in a wide box, two in a narrow one.
    let row_top = y + 54.0 + (lines.len() as f64 - 1.0) * 22.0 + 12.0;
    let per_row = if width > 400.0 { 4 } else { 2 };
    let shown: Vec<(&Badge, Mark)> = BADGES
        .iter()
        .map(|badge| (badge, Mark::of(badge.since, chapter)))
        .collect();
    if shown.iter().all(|(_, mark)| *mark == Mark::Absent) {
        svg.text(
            x + 16.0,
            row_top + 20.0,
            Font::new(LABEL_FONT).color(MUTED),
            "no telemetry",
        );
        return;
    }
    for (row, badges) in shown.chunks(per_row).enumerate() {
        let mut bx = x + 16.0;
        let by = row_top + row as f64 * (BADGE_FONT + 14.0);
        for (layer, mark) in badges {
            if *mark == Mark::Absent {
                bx += pill_width(layer.text, BADGE_FONT) + 6.0;
                continue;
            }
            bx += badge(svg, bx, by, layer.text, *mark) + 6.0;
        }
    }
}

/// A layer's label at (`x`, `y`), its top-left corner: bold on blue when
/// it is new, muted when an earlier chapter added it, outlined either way
/// so that it stands out from the box it is in. Returns its width.
fn badge(svg: &mut Svg, x: f64, y: f64, text: &str, mark: Mark) -> f64 {
    let (font, fill, outline) = match mark {
        Mark::New => (
            Font::new(BADGE_FONT).bold().color(ACCENT_INK),
            ACCENT_FILL,
            ACCENT,
        ),
        _ => (Font::new(BADGE_FONT).color(MUTED), PAPER, MUTED),
    };
    let width = svg.pill(x, y, text, font, fill);
    let height = BADGE_FONT + 10.0;
    svg.rect(
        x,
        y,
        width,
        height,
        height / 2.0,
        "none",
        Some(Stroke::solid(outline, 1.0)),
    );
    width
}

/// Lines of an arrow's label from `y` down: ink for the flow itself,
/// [`ACCENT`] for what the chapter adds, [`MUTED`] for what an earlier
/// chapter added (an [`Mark::Earlier`] line of the flow itself is ink).
fn labels(svg: &mut Svg, x: f64, y: f64, anchor: Anchor, lines: &[(&str, Mark)]) {
    for (i, (text, mark)) in lines.iter().enumerate() {
        let font = Font::new(LABEL_FONT).anchor(anchor);
        let font = match mark {
            Mark::New => font.bold().color(ACCENT),
            Mark::Earlier if text.starts_with('+') || text.ends_with("span") => font.color(MUTED),
            _ => font,
        };
        svg.text(x, y + i as f64 * LINE, font, text);
    }
}

/// The band under the system, `height` high from `top`: what reads the
/// telemetry in `chapter`.
fn readers(svg: &mut Svg, chapter: Chapter, top: f64, height: f64, ports: &Topology) {
    let admins = Service::ALL
        .map(|s| format!(":{}", ports.admin(s).port()))
        .join(", ");
    let (first, second) = match chapter {
        Chapter::Baseline => {
            let box_stroke = Stroke::solid(MUTED, 1.2).dashed("5 4");
            svg.rect(
                10.0,
                top,
                540.0,
                height - 16.0,
                8.0,
                "white",
                Some(box_stroke),
            );
            svg.text(
                26.0,
                top + 27.0,
                Font::new(LABEL_FONT).bold().color(MUTED),
                "Nothing to read yet",
            );
            svg.text(
                26.0,
                top + 50.0,
                Font::new(LABEL_FONT).color(MUTED),
                "the admin ports answer /healthz, /readyz",
            );
            return;
        }
        Chapter::Metrics => (
            "Prometheus or curl scrapes /metrics".to_owned(),
            format!("on the admin ports {admins}"),
        ),
        Chapter::Logs => (
            "stdout: one JSON object per line".to_owned(),
            "with trace_id and span_id; read it with jq".to_owned(),
        ),
        Chapter::GrpcTracing => (
            "spans over OTLP/gRPC to :4317".to_owned(),
            "Jaeger, Tempo, or the demo's receiver".to_owned(),
        ),
        Chapter::NatsTracing => (
            "spans over OTLP/gRPC to :4317".to_owned(),
            "one trace per order, across the queue".to_owned(),
        ),
        Chapter::Profiling => (
            "go tool pprof, or a browser".to_owned(),
            "CPU profile, flame graph, heap, runtime".to_owned(),
        ),
        Chapter::Final => {
            stack(svg, top, height - 16.0);
            return;
        }
    };
    svg.rect(
        10.0,
        top,
        540.0,
        height - 16.0,
        8.0,
        ACCENT_FILL,
        Some(Stroke::solid(ACCENT, 1.6)),
    );
    svg.text(
        26.0,
        top + 27.0,
        Font::new(LABEL_FONT + 1.0).bold().color(ACCENT_INK),
        &first,
    );
    svg.text(
        26.0,
        top + 50.0,
        Font::new(LABEL_FONT).color(ACCENT_INK),
        &second,
    );
}

/// The final chapter's stack, `height` high from `top`: three stores, one
/// under the other, and Grafana beside them reading all three.
fn stack(svg: &mut Svg, top: f64, height: f64) {
    let frame = Stroke::solid(ACCENT, 1.6);
    svg.rect(10.0, top, 540.0, height, 8.0, "white", Some(frame));
    svg.text(
        24.0,
        top + 25.0,
        Font::new(LABEL_FONT).bold().color(ACCENT_INK),
        "docker compose up: the stack",
    );
    let stores = [
        ("Prometheus :9090", "scrapes /metrics"),
        ("Tempo :3200", "spans over OTLP :4317"),
        ("Loki :3100", "log lines, shipped by Alloy"),
    ];
    let box_stroke = Some(Stroke::solid(ACCENT, 1.4));
    let first_top = top + 38.0;
    for (i, (name, what)) in stores.iter().enumerate() {
        let y = first_top + i as f64 * 62.0;
        svg.rect(20.0, y, 330.0, 54.0, 8.0, ACCENT_FILL, box_stroke);
        svg.text(
            32.0,
            y + 23.0,
            Font::new(LABEL_FONT).bold().color(ACCENT_INK),
            name,
        );
        svg.text(32.0, y + 45.0, Font::new(16.0).color(ACCENT_INK), what);
        svg.arrow(
            &[(350.0, y + 27.0), (378.0, y + 27.0)],
            Stroke::solid(ACCENT, 1.8),
        );
    }
    let grafana_height = 2.0 * 62.0 + 54.0;
    svg.rect(
        380.0,
        first_top,
        160.0,
        grafana_height,
        8.0,
        ACCENT_FILL,
        box_stroke,
    );
    svg.text(
        394.0,
        first_top + 28.0,
        Font::new(TITLE_FONT).bold().color(ACCENT_INK),
        "Grafana",
    );
    let ink = Font::new(16.0).color(ACCENT_INK);
    for (i, line) in [
        ":3000",
        "dashboards,",
        "alerts, and",
        "metric → trace",
        "→ logs",
    ]
    .iter()
    .enumerate()
    {
        svg.text(394.0, first_top + 54.0 + i as f64 * 22.0, ink, line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_chapter_marks_its_own_layer_only() {
        let count = |svg: &str, text: &str| svg.matches(&format!(">{text}<")).count();
        let metrics = diagram(Chapter::Metrics);
        assert_eq!(count(&metrics, "/metrics"), 3, "a badge on each service");
        assert_eq!(count(&metrics, "JSON logs"), 0);
        let profiling = diagram(Chapter::Profiling);
        assert_eq!(count(&profiling, "/debug/pprof"), 3);
        assert_eq!(count(&profiling, "+ traceparent"), 2, "both gRPC calls");
        assert!(diagram(Chapter::Baseline).contains(">no telemetry<"));
        assert!(diagram(Chapter::Final).contains(">Grafana<"));
    }

    #[test]
    fn every_picture_is_well_formed_and_describes_itself() {
        for (name, svg) in all() {
            let document = roxmltree::Document::parse(&svg).expect(&name);
            let desc = document
                .descendants()
                .find(|n| n.has_tag_name("desc"))
                .and_then(|n| n.text())
                .unwrap_or_default();
            assert!(desc.contains("PushResult"), "{name}: {desc}");
            let sizes = document
                .descendants()
                .filter_map(|n| n.attribute("font-size")?.parse::<f64>().ok());
            assert!(sizes.into_iter().all(|size| size >= 12.0), "{name}");
        }
    }
}
