//! The JetStream layout: one stream for order events, one durable consumer
//! for `task`. Both `logic` and `task` declare the stream, so either may
//! start first.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

/// The subject `logic` publishes each new order to.
pub const ORDERS_CREATED: &str = "orders.created";
/// The stream that keeps order events until `task` acknowledges them.
pub const STREAM: &str = "ORDERS";
/// The durable consumer (and consumer group) of `task`.
pub const CONSUMER: &str = "task";
// ANCHOR: delivery_limits
/// JetStream drops a second message with the same id within this window,
/// so the outbox may republish an order without it being handled twice.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(120);
/// How long JetStream waits for an ack before it redelivers a message.
pub const ACK_WAIT: Duration = Duration::from_secs(5);
/// After this many deliveries JetStream gives up on a message.
pub const MAX_DELIVER: i64 = 10;
// ANCHOR_END: delivery_limits

/// Creates the stream, or returns it if it exists. File storage, so the
/// messages survive a restart of `nats-server`.
pub async fn ensure_stream(js: &jetstream::Context) -> anyhow::Result<stream::Stream> {
    let config = stream::Config {
        name: STREAM.to_owned(),
        subjects: vec!["orders.>".to_owned()],
        storage: stream::StorageType::File,
        duplicate_window: DEDUP_WINDOW,
        ..Default::default()
    };
    Ok(js.get_or_create_stream(config).await?)
}

// ANCHOR: consumer
/// Creates the durable pull consumer of `task`, or returns it if it exists.
pub async fn ensure_consumer(stream: &stream::Stream) -> anyhow::Result<consumer::PullConsumer> {
    let config = consumer::pull::Config {
        durable_name: Some(CONSUMER.to_owned()),
        filter_subject: ORDERS_CREATED.to_owned(),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_deliver: MAX_DELIVER,
        ..Default::default()
    };
    Ok(stream.get_or_create_consumer(CONSUMER, config).await?)
}

/// How long to wait before the next delivery of a message that failed on
/// its `delivery`-th attempt: doubling from 100 ms, capped at 5 s.
pub fn redelivery_backoff(delivery: i64) -> Duration {
    let exponent = delivery.clamp(1, 7) - 1;
    Duration::from_millis(100 << exponent).min(Duration::from_secs(5))
}
// ANCHOR_END: consumer

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(redelivery_backoff(1), Duration::from_millis(100));
        assert_eq!(redelivery_backoff(2), Duration::from_millis(200));
        assert_eq!(redelivery_backoff(6), Duration::from_millis(3200));
        assert_eq!(redelivery_backoff(7), Duration::from_secs(5));
        assert_eq!(redelivery_backoff(100), Duration::from_secs(5));
    }
}
