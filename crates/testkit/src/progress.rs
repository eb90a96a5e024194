//! The progress report: which pillars of observability a chapter shows for
//! one order. Every chapter's tests call this same function and snapshot
//! its text, so the snapshots side by side show each pillar appearing.

use std::fmt::Write;
use std::time::Duration;

use crate::{Service, System};

/// Probes the running system after `order_id` was handled and describes,
/// per service, what a learner could observe about it.
pub async fn progress_report(system: &System, order_id: &str) -> String {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let (_, order) = system.api.get_order(order_id).await;

    let mut report = String::new();

    let mut metrics = Vec::new();
    let mut profiles = Vec::new();
    for service in Service::ALL {
        let admin = system.topology.admin(service);
        metrics.push((
            service,
            serves_prometheus_text(&client, &format!("http://{admin}/metrics")).await,
        ));
        profiles.push((
            service,
            serves_non_empty(
                &client,
                &format!("http://{admin}/debug/pprof/profile?seconds=1"),
            )
            .await,
        ));
    }
    let logs = Service::ALL.map(|service| {
        (
            service,
            logs_are_json_with_trace_id(&system.stdout(service)),
        )
    });
    let spans = system.spans();
    let traced =
        Service::ALL.map(|service| (service, spans.iter().any(|s| s.service == service.name())));

    writeln!(
        report,
        "order handled: {}",
        order["status"].as_str().unwrap_or("unknown")
    )
    .unwrap();
    report += &row("metrics: /metrics on the admin port", &metrics);
    report += &row("logs: every stdout line JSON with trace_id", &logs);
    report += &row("traces: spans at the OTLP receiver", &traced);
    let joined = spans_share_one_trace(&spans);
    writeln!(
        report,
        "{:<44} {}",
        "one trace across services",
        if joined.is_empty() {
            "none".to_owned()
        } else {
            joined.join(" + ")
        }
    )
    .unwrap();
    report += &row("profiles: /debug/pprof/profile", &profiles);
    report
}

fn row(pillar: &str, cells: &[(Service, bool)]) -> String {
    let cells: Vec<String> = cells
        .iter()
        .map(|(service, yes)| format!("{service}: {}", if *yes { "yes" } else { "no" }))
        .collect();
    format!("{pillar:<44} {}\n", cells.join("  "))
}

async fn serves_prometheus_text(client: &reqwest::Client, url: &str) -> bool {
    match client.get(url).send().await {
        Ok(response) if response.status().is_success() => response
            .text()
            .await
            .is_ok_and(|text| text.lines().any(|line| line.starts_with("# TYPE "))),
        _ => false,
    }
}

async fn serves_non_empty(client: &reqwest::Client, url: &str) -> bool {
    match client.get(url).send().await {
        Ok(response) if response.status().is_success() => {
            response.bytes().await.is_ok_and(|body| !body.is_empty())
        }
        _ => false,
    }
}

/// True when the service wrote at least one line and every line is a JSON
/// object with a `trace_id`.
fn logs_are_json_with_trace_id(lines: &[String]) -> bool {
    !lines.is_empty()
        && lines.iter().all(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .is_ok_and(|value| value.get("trace_id").is_some_and(|id| id.is_string()))
        })
}

/// The services in the order's own trace, the one of the gateway's
/// `POST /orders`, when it spans more than one service. Another trace does
/// not count: task's callback makes one of its own (task, the gateway,
/// logic) until the context crosses NATS.
fn spans_share_one_trace(spans: &[crate::otlp::ReceivedSpan]) -> Vec<&'static str> {
    let Some(post) = spans
        .iter()
        .find(|s| s.service == Service::Gateway.name() && s.span.name == "POST /orders")
    else {
        return Vec::new();
    };
    let services: Vec<&'static str> = Service::ALL
        .into_iter()
        .map(Service::name)
        .filter(|name| {
            spans
                .iter()
                .any(|s| s.span.trace_id == post.span.trace_id && s.service == *name)
        })
        .collect();
    if services.len() > 1 {
        services
    } else {
        Vec::new()
    }
}
