//! The dead-letter path: where a message of `orders.created` goes when
//! every delivery JetStream allows ([`MAX_DELIVER`]) has failed.
//!
//! Without it, JetStream simply stops delivering such a message: the order
//! stays `created` forever and nothing says so. Here task moves the message
//! to a stream of its own ([`STREAM`]), headers and all (so the trace
//! context travels with it), logic marks the order `dead_lettered`, and
//! `reprocess-dead-letters` puts each dead letter back on `orders.created`
//! exactly once, when whatever failed has been fixed.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer, message::PublishMessage, stream};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::OrderCreated;
use crate::queue::{self, MAX_DELIVER, ORDERS_CREATED};

/// The stream that keeps dead letters until they are reprocessed. Its own
/// stream, not a subject of [`queue::STREAM`]: task's consumer never sees
/// them, and they outlive any retention set on the orders stream.
pub const STREAM: &str = "DEAD_LETTERS";
/// The subject task moves a dead `orders.created` message to.
pub const SUBJECT: &str = "dead_letters.orders.created";
/// logic's durable consumer of dead letters: it marks each order.
pub const RECORDER: &str = "logic";
/// The durable consumer of `reprocess-dead-letters`: its ack floor is what
/// makes each dead letter reprocessed once, however often it runs.
pub const REPROCESSOR: &str = "reprocess";
/// Header of a dead letter: why its last delivery failed.
pub const REASON_HEADER: &str = "Dead-Letter-Reason";
/// Header of a dead letter: how many deliveries failed.
pub const DELIVERIES_HEADER: &str = "Dead-Letter-Deliveries";
/// Longest reason kept in the header, in bytes: the error text of a failed
/// call can be long and is not ours to bound.
pub const MAX_REASON_BYTES: usize = 256;

/// Whether a delivery is the last one JetStream makes: when it fails, the
/// message must be dead-lettered, not redelivered.
pub fn is_last_delivery(delivery: i64) -> bool {
    delivery >= MAX_DELIVER
}

/// Creates the dead-letter stream, or returns it if it exists.
pub async fn ensure_stream(js: &jetstream::Context) -> anyhow::Result<stream::Stream> {
    let config = stream::Config {
        name: STREAM.to_owned(),
        subjects: vec![SUBJECT.to_owned()],
        storage: stream::StorageType::File,
        duplicate_window: queue::DEDUP_WINDOW,
        ..Default::default()
    };
    Ok(js.get_or_create_stream(config).await?)
}

// ANCHOR: move_to_dead_letters
/// Moves a message whose last delivery failed to the dead-letter stream,
/// with its headers and `reason`, then terminates it in its own stream.
///
/// Errors: the dead-letter stream did not store it (NATS down or slow).
/// The message is then still terminated: JetStream would not deliver it
/// again anyway, and the caller must say, as an error, that it is lost.
pub async fn move_to_dead_letters(
    message: &jetstream::Message,
    reason: &str,
) -> anyhow::Result<()> {
    let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
    let (sequence, deliveries) = (info.stream_sequence, info.delivered);
    let mut headers = message.headers.clone().unwrap_or_default();
    headers.insert(REASON_HEADER, truncate(reason, MAX_REASON_BYTES));
    headers.insert(DELIVERIES_HEADER, deliveries.to_string().as_str());
    // The original's stream sequence as id: moving the same message twice
    // (task crashed before terminating it) stores one dead letter.
    let moved = PublishMessage::build()
        .payload(message.payload.clone())
        .headers(headers)
        .message_id(format!("{}:{sequence}", message.subject));
    let stored = async {
        ensure_stream(&message.context).await?;
        message.context.send_publish(SUBJECT, moved).await?.await?;
        anyhow::Ok(())
    }
    .await;
    let _ = message.ack_with(AckKind::Term).await;
    stored
}
// ANCHOR_END: move_to_dead_letters

/// A dead letter as logic reads it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub order: OrderCreated,
    /// Why the last delivery failed, from [`REASON_HEADER`].
    pub reason: String,
}

/// logic's side: reads the dead-letter stream with the durable consumer
/// [`RECORDER`] and calls `record` for each dead letter, acking it once
/// `record` succeeded (a failure leaves it to be delivered again). Runs
/// until `shutdown`; binds again whenever the message stream ends. Every
/// failure, to bind or to record, goes to `report`, which writes it the
/// chapter's way (stderr before the logs chapter, a log line from it on).
pub async fn follow<F, Fut>(
    js: jetstream::Context,
    shutdown: CancellationToken,
    record: F,
    report: impl Fn(anyhow::Error),
) where
    F: Fn(DeadLetter) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    while !shutdown.is_cancelled() {
        let messages = async {
            let stream = ensure_stream(&js).await?;
            let consumer = durable(&stream, RECORDER).await?;
            anyhow::Ok(consumer.messages().await?)
        };
        match messages.await {
            Ok(messages) => {
                let mut messages = std::pin::pin!(messages.take_until(shutdown.cancelled()));
                while let Some(Ok(message)) = messages.next().await {
                    let Ok(order) = serde_json::from_slice::<OrderCreated>(&message.payload) else {
                        let _ = message.ack_with(AckKind::Term).await;
                        continue;
                    };
                    let order_id = order.order_id.clone();
                    let reason = header(&message.headers, REASON_HEADER).unwrap_or_default();
                    match record(DeadLetter { order, reason }).await {
                        Ok(()) => drop(message.ack().await),
                        Err(e) => {
                            report(
                                e.context(format!("recording the dead letter of order {order_id}")),
                            );
                            drop(message.ack_with(AckKind::Nak(None)).await);
                        }
                    }
                }
            }
            Err(e) => report(e.context("binding the dead letters' consumer")),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

// ANCHOR: reprocess
/// Puts every dead letter not reprocessed yet back on `orders.created`,
/// headers kept (minus the dead-letter ones), so the order continues its
/// trace. Each is published under a message id of its own, then acked
/// twice (the server confirms the ack): a run that stops half-way and runs
/// again republishes nothing twice within [`queue::DEDUP_WINDOW`], and
/// logic records one result per order whatever happens. Returns how many
/// it put back.
///
/// Errors: NATS unreachable, or a publish JetStream did not confirm (the
/// dead letters from there on stay for the next run).
pub async fn reprocess(js: &jetstream::Context) -> anyhow::Result<usize> {
    let stream = ensure_stream(js).await?;
    let consumer = durable(&stream, REPROCESSOR).await?;
    let mut reprocessed = 0;
    loop {
        let mut batch = consumer.fetch().max_messages(100).messages().await?;
        let mut fetched = 0;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
            fetched += 1;
            let sequence = message
                .info()
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .stream_sequence;
            let mut headers = HeaderMap::new();
            for (name, values) in message.headers.iter().flat_map(|h| h.iter()) {
                let name: &str = name.as_ref();
                if name == REASON_HEADER || name == DELIVERIES_HEADER || name.starts_with("Nats-") {
                    continue;
                }
                for value in values {
                    headers.append(name, value.as_str());
                }
            }
            let again = PublishMessage::build()
                .payload(message.payload.clone())
                .headers(headers)
                .message_id(format!("reprocessed:{sequence}"));
            js.send_publish(ORDERS_CREATED, again)
                .await?
                .await
                .context("JetStream did not store the reprocessed order")?;
            message
                .double_ack()
                .await
                .map_err(|e| anyhow::anyhow!("acking dead letter {sequence}: {e}"))?;
            reprocessed += 1;
        }
        if fetched == 0 {
            return Ok(reprocessed);
        }
    }
}
// ANCHOR_END: reprocess

/// The `reprocess-dead-letters` command: [`reprocess`] on the NATS server
/// at `nats_url`, then one line on stdout saying how many went back.
///
/// Errors: those of [`reprocess`].
pub async fn reprocess_command(nats_url: String) -> anyhow::Result<()> {
    let nats = async_nats::connect(&nats_url)
        .await
        .with_context(|| format!("connecting to {nats_url}"))?;
    let reprocessed = reprocess(&jetstream::new(nats.clone())).await?;
    nats.flush().await?;
    println!("reprocessed {reprocessed} dead letters onto {ORDERS_CREATED}");
    Ok(())
}

async fn durable(stream: &stream::Stream, name: &str) -> anyhow::Result<consumer::PullConsumer> {
    let config = consumer::pull::Config {
        durable_name: Some(name.to_owned()),
        ack_policy: consumer::AckPolicy::Explicit,
        ..Default::default()
    };
    Ok(stream.get_or_create_consumer(name, config).await?)
}

fn header(headers: &Option<HeaderMap>, name: &str) -> Option<String> {
    Some(headers.as_ref()?.get(name)?.as_str().to_owned())
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_delivery_dead_letters() {
        assert!(!is_last_delivery(1));
        assert!(!is_last_delivery(MAX_DELIVER - 1));
        assert!(is_last_delivery(MAX_DELIVER));
    }

    /// A dead letter logic fails to record is reported, not dropped in
    /// silence, and recorded when it comes again. Needs `nats-server`.
    #[tokio::test]
    async fn a_dead_letter_that_fails_to_record_is_reported_and_recorded_again() {
        use std::sync::{Arc, Mutex};

        let dir = tempfile::tempdir().unwrap();
        let server = crate::nats_server::NatsServer::start(dir.path())
            .await
            .unwrap();
        let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
        ensure_stream(&js).await.unwrap();
        let order = OrderCreated {
            order_id: "order-1".to_owned(),
            user_id: "1001".to_owned(),
            product_id: "A001".to_owned(),
            quantity: 1,
            created_at_unix_ms: 0,
        };
        let mut headers = HeaderMap::new();
        headers.insert(REASON_HEADER, "callback refused");
        let payload = serde_json::to_vec(&order).unwrap();
        js.publish_with_headers(SUBJECT, headers, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();

        let attempts = Arc::new(Mutex::new(Vec::new()));
        let reported = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let following = follow(
            js.clone(),
            shutdown.clone(),
            |dead| {
                let (attempts, shutdown) = (attempts.clone(), shutdown.clone());
                async move {
                    let mut attempts = attempts.lock().unwrap();
                    attempts.push((dead.order.order_id, dead.reason));
                    if attempts.len() == 1 {
                        anyhow::bail!("the database is locked");
                    }
                    shutdown.cancel();
                    Ok(())
                }
            },
            |e| reported.lock().unwrap().push(format!("{e:#}")),
        );
        tokio::time::timeout(Duration::from_secs(30), following)
            .await
            .expect("the dead letter recorded on its second delivery");

        let attempt = ("order-1".to_owned(), "callback refused".to_owned());
        assert_eq!(*attempts.lock().unwrap(), vec![attempt.clone(), attempt]);
        assert_eq!(
            *reported.lock().unwrap(),
            vec!["recording the dead letter of order order-1: the database is locked"]
        );
    }

    #[test]
    fn a_long_reason_is_cut_on_a_character_boundary() {
        let reason = "é".repeat(MAX_REASON_BYTES);
        let cut = truncate(&reason, MAX_REASON_BYTES);
        assert_eq!(cut.len(), MAX_REASON_BYTES);
        assert_eq!(truncate("short", MAX_REASON_BYTES), "short");
        assert_eq!(truncate("aé", 2), "a");
    }
}
