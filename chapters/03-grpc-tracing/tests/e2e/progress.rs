//! The progress report for one order: at chapter 03, metrics, JSON logs, and
//! spans from every service, one trace across the gateway and logic.

use testkit::{Service, System, order_body, progress_report};

use crate::CHAPTER_BIN;

#[tokio::test(flavor = "multi_thread")]
async fn progress_for_one_order() {
    let system = System::start(CHAPTER_BIN).await;
    let order_id = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&order_id).await;
    // Spans leave in batches, every 5 s by default.
    system
        .wait_for_spans("spans from every service, a trace across two", |spans| {
            let joined = spans.iter().any(|logic| {
                logic.service == "logic"
                    && spans.iter().any(|gateway| {
                        gateway.service == "gateway" && gateway.span.trace_id == logic.span.trace_id
                    })
            });
            joined
                && Service::ALL
                    .iter()
                    .all(|service| spans.iter().any(|s| s.service == service.name()))
        })
        .await;

    insta::assert_snapshot!("progress_report", progress_report(&system, &order_id).await);
}
