//! The progress report for one order: at chapter 05, every pillar: metrics,
//! JSON logs, spans from every service in one trace, and profiles.

use testkit::{System, order_body, progress_report};

use crate::CHAPTER_BIN;

#[tokio::test(flavor = "multi_thread")]
async fn progress_for_one_order() {
    let system = System::start(CHAPTER_BIN).await;
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

    insta::assert_snapshot!("progress_report", progress_report(&system, &order_id).await);
}
