//! The progress report for one order: at chapter 05, every pillar: metrics,
//! JSON logs, spans from every service in one trace, and profiles.

use testkit::{System, order_body, progress_report};

/// `same_as_chapter_05` compares what `binary` shows with chapter 05's.
pub(crate) async fn progress_for_one_order(binary: &str) -> String {
    let system = System::start(binary).await;
    let order_id = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&order_id).await;
    // Spans leave in batches, every 5 s by default.
    system
        .wait_for_spans("a trace across every service", |spans| {
            spans.iter().any(|task| {
                task.service == "task"
                    && ["gateway", "logic"].iter().all(|service| {
                        spans
                            .iter()
                            .any(|s| s.service == *service && s.span.trace_id == task.span.trace_id)
                    })
            })
        })
        .await;

    progress_report(&system, &order_id).await
}
