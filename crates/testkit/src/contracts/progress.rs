//! The progress report for one order: which pillars the chapter shows,
//! snapshotted per chapter, so that side by side they show each pillar
//! appearing. `final` must show chapter 05's.

use crate::{Service, Subject, order_body, progress_report};

pub async fn progress_for_one_order(subject: &Subject) {
    let system = subject.start().await;
    let order_id = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&order_id).await;
    // Spans leave in batches, every 5 s by default: wait for the trace the
    // chapter joins, across gRPC (03) and then NATS too (04).
    let joined: &[&str] = match subject.chapter() {
        ..3 => &[],
        3 => &["gateway", "logic"],
        _ => &["gateway", "logic", "task"],
    };
    if !joined.is_empty() {
        system
            .wait_for_spans("spans from every service, one trace across them", |spans| {
                let every_service = Service::ALL
                    .iter()
                    .all(|service| spans.iter().any(|s| s.service == service.name()));
                let one_trace = spans.iter().any(|first| {
                    joined.iter().all(|service| {
                        spans.iter().any(|s| {
                            s.service == *service && s.span.trace_id == first.span.trace_id
                        })
                    })
                });
                every_service && one_trace
            })
            .await;
    }

    let report = progress_report(&system, &order_id).await;
    subject.assert_snapshot(
        "e2e__progress__progress_report",
        &[0, 1, 2, 3, 4, 5],
        &report,
    );
}
