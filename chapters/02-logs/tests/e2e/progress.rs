//! The progress report for one order: at chapter 02, metrics and JSON logs
//! with trace ids on every service.

use testkit::{System, order_body, progress_report};

use crate::CHAPTER_BIN;

#[tokio::test(flavor = "multi_thread")]
async fn progress_for_one_order() {
    let system = System::start(CHAPTER_BIN).await;
    let order_id = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&order_id).await;

    insta::assert_snapshot!("progress_report", progress_report(&system, &order_id).await);
}
