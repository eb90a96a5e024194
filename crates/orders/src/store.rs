//! The SQLite store of `logic`: one table, an outbox flag and the result on
//! each row.
//!
//! An order is written with `published = 0` and flagged once JetStream has
//! acknowledged its message. Rows still unflagged are the outbox: logic's
//! sweep publishes them again, so a stored order is never lost to a NATS
//! outage. The result task reports (through the gateway) is stored on the
//! order's row, first one wins: no service keeps an order's state in
//! memory, so any gateway answers for any order, and a restart forgets
//! nothing.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::deadline;
use crate::domain::Order;
use crate::pb::{self, Outcome};

// ANCHOR: schema
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (
    order_id           TEXT PRIMARY KEY NOT NULL,
    user_id            TEXT NOT NULL,
    product_id         TEXT NOT NULL,
    quantity           INTEGER NOT NULL,
    created_at_unix_ms INTEGER NOT NULL,
    published          INTEGER NOT NULL DEFAULT 0,
    -- NULL until the first result: completed, failed (or dead_lettered).
    outcome            TEXT,
    detail             TEXT,
    -- The client's Idempotency-Key: a retry with it gets this order back.
    idempotency_key    TEXT,
    -- The trace context the order was created in (a W3C traceparent), so
    -- that the outbox republishes it in the same trace.
    trace_context      TEXT
);
CREATE INDEX IF NOT EXISTS orders_unpublished ON orders (created_at_unix_ms) WHERE published = 0;
";

/// Made after the columns were added, so a database from before them gets
/// its columns (see `add_missing_columns`) before this index.
const KEY_INDEX: &str = "
CREATE UNIQUE INDEX IF NOT EXISTS orders_idempotency_key ON orders (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
";
// ANCHOR_END: schema

// ANCHOR: one_writer
/// The orders database: connections for reading, and one for writing.
///
/// SQLite lets one connection write at a time. With several writing
/// connections, every one that finds the lock taken waits in SQLite's busy
/// handler, which sleeps and polls (1, 2, 5, ... up to 100 ms between
/// tries): under load, commits queue behind those sleeps, and the wait
/// shows as a latency cliff long before the CPU or the disk is busy. With
/// a single writing connection, writers queue in the pool instead, first
/// come first served, and wake the moment the writer is free; the busy
/// timeout is left to guard against other processes.
#[derive(Clone, Debug)]
pub struct Store {
    readers: SqlitePool,
    writer: SqlitePool,
}
// ANCHOR_END: one_writer

impl Store {
    /// Opens (creating if needed) the database at `path`, in WAL mode so
    /// readers never wait for the writer, with one writing connection and
    /// four read-only ones, and a busy timeout so that a writer of another
    /// process is waited for instead of failing with `SQLITE_BUSY`.
    pub async fn open(path: &Path) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode, NORMAL syncs the log at checkpoints, not at every
            // commit: a crash of logic loses nothing, a power cut or an OS
            // crash may lose the last commits (never the file's integrity).
            // See https://www.sqlite.org/pragma.html#pragma_synchronous.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&writer).await?;
        add_missing_columns(&writer).await?;
        sqlx::raw_sql(KEY_INDEX).execute(&writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { readers, writer })
    }

    // ANCHOR: insert
    /// Stores a new order, not yet published, with what `row` adds to it,
    /// and commits only if `deadline` has not passed by then: a caller that
    /// gave up (and answered its client 504) must not find the order
    /// created behind its back. The write lock is taken first (`BEGIN
    /// IMMEDIATE`), so the wait for it counts against the deadline; if the
    /// future is dropped before the commit, sqlx rolls the transaction back.
    ///
    /// With an idempotency key that an earlier order was stored under,
    /// nothing is stored and that order is returned, if it is the same
    /// order (same user, product and quantity).
    ///
    /// Errors: [`StoreError::DeadlinePassed`], [`StoreError::KeyReused`]
    /// (the key names another order), [`StoreError::Database`].
    pub async fn insert(
        &self,
        order: &Order,
        row: NewRow<'_>,
        deadline: Option<Instant>,
    ) -> Result<Inserted, StoreError> {
        let mut tx = self.begin_before(deadline).await?;
        if let Some(key) = row.idempotency_key {
            let earlier: Option<Order> = sqlx::query_as(
                "SELECT order_id, user_id, product_id, quantity, created_at_unix_ms
                 FROM orders WHERE idempotency_key = ?",
            )
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(earlier) = earlier {
                let same = (&earlier.user_id, &earlier.product_id, earlier.quantity)
                    == (&order.user_id, &order.product_id, order.quantity);
                return match same {
                    true => Ok(Inserted::Earlier(earlier)),
                    false => Err(StoreError::KeyReused {
                        order_id: earlier.order_id,
                    }),
                };
            }
        }
        sqlx::query(
            "INSERT INTO orders (order_id, user_id, product_id, quantity, created_at_unix_ms,
                                 idempotency_key, trace_context)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&order.order_id)
        .bind(&order.user_id)
        .bind(&order.product_id)
        .bind(order.quantity)
        .bind(order.created_at_unix_ms)
        .bind(row.idempotency_key)
        .bind(row.trace_context)
        .execute(&mut *tx)
        .await?;
        if deadline::passed(deadline) {
            tx.rollback().await?;
            return Err(StoreError::DeadlinePassed);
        }
        tx.commit().await?;
        Ok(Inserted::New)
    }
    // ANCHOR_END: insert

    /// Takes the writer and the write lock (`BEGIN IMMEDIATE`), waiting for
    /// them no later than `deadline`: other writers queue for the writer,
    /// and another process may hold the lock for seconds.
    async fn begin_before(
        &self,
        deadline: Option<Instant>,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        let begin = self.writer.begin_with("BEGIN IMMEDIATE");
        match deadline {
            Some(at) => tokio::time::timeout_at(at.into(), begin)
                .await
                .map_err(|_| StoreError::DeadlinePassed)?
                .map_err(StoreError::from),
            None => Ok(begin.await?),
        }
    }

    /// Reads one order, with its result if one was recorded.
    pub async fn get(&self, order_id: &str) -> Result<Option<StoredOrder>, sqlx::Error> {
        sqlx::query_as(
            "SELECT order_id, user_id, product_id, quantity, created_at_unix_ms, outcome, detail
             FROM orders WHERE order_id = ?",
        )
        .bind(order_id)
        .fetch_optional(&self.readers)
        .await
    }

    // ANCHOR: record_result
    /// Stores the result of an order unless it has one already: the first
    /// result wins, atomically, whichever gateway forwards it. The one
    /// exception is [`Outcome::DeadLettered`], which only says that task
    /// gave up: the result of a reprocessed dead letter replaces it. `None`
    /// when there is no such order.
    ///
    /// Like [`Store::insert`], commits nothing once `deadline` has passed:
    /// the caller would not learn that this result was the first, and so
    /// would never count the order as completed.
    ///
    /// Errors: [`StoreError::DeadlinePassed`], [`StoreError::Database`].
    pub async fn record_result(
        &self,
        order_id: &str,
        outcome: Outcome,
        detail: &str,
        deadline: Option<Instant>,
    ) -> Result<Option<Recorded>, StoreError> {
        let mut tx = self.begin_before(deadline).await?;
        let first: Option<(i64,)> = sqlx::query_as(
            "UPDATE orders SET outcome = ?, detail = ?
             WHERE order_id = ? AND (outcome IS NULL OR outcome = 'dead_lettered')
             RETURNING created_at_unix_ms",
        )
        .bind(outcome.status())
        .bind(detail)
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?;
        if deadline::passed(deadline) {
            tx.rollback().await?;
            return Err(StoreError::DeadlinePassed);
        }
        tx.commit().await?;
        if let Some((created_at_unix_ms,)) = first {
            return Ok(Some(Recorded {
                recorded: true,
                created_at_unix_ms,
            }));
        }
        let known: Option<(i64,)> =
            sqlx::query_as("SELECT created_at_unix_ms FROM orders WHERE order_id = ?")
                .bind(order_id)
                .fetch_optional(&self.readers)
                .await?;
        Ok(known.map(|(created_at_unix_ms,)| Recorded {
            recorded: false,
            created_at_unix_ms,
        }))
    }
    // ANCHOR_END: record_result

    /// Says that task gave up on an order (its message was dead-lettered),
    /// unless the order has a result already. True when this changed it.
    pub async fn mark_dead_lettered(
        &self,
        order_id: &str,
        reason: &str,
    ) -> Result<bool, sqlx::Error> {
        let changed = sqlx::query(
            "UPDATE orders SET outcome = ?, detail = ? WHERE order_id = ? AND outcome IS NULL",
        )
        .bind(Outcome::DeadLettered.status())
        .bind(reason)
        .bind(order_id)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }

    /// Flags an order whose message JetStream has acknowledged.
    pub async fn mark_published(&self, order_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE orders SET published = 1 WHERE order_id = ?")
            .bind(order_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// The outbox: orders created before `created_before_unix_ms` whose
    /// message was never acknowledged, oldest first, each with the trace
    /// context it was created in.
    pub async fn unpublished(
        &self,
        created_before_unix_ms: i64,
        limit: u32,
    ) -> Result<Vec<Unpublished>, sqlx::Error> {
        sqlx::query_as(
            "SELECT order_id, user_id, product_id, quantity, created_at_unix_ms, trace_context
             FROM orders WHERE published = 0 AND created_at_unix_ms < ?
             ORDER BY created_at_unix_ms LIMIT ?",
        )
        .bind(created_before_unix_ms)
        .bind(limit)
        .fetch_all(&self.readers)
        .await
    }

    /// How many orders are stored.
    pub async fn count(&self) -> Result<u64, sqlx::Error> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM orders")
            .fetch_one(&self.readers)
            .await?;
        Ok(n as u64)
    }

    /// Cheap check that the database answers, for `/readyz`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.readers).await?;
        Ok(())
    }
}

/// Adds the columns a database made before them lacks.
async fn add_missing_columns(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    for column in ["outcome", "detail", "idempotency_key", "trace_context"] {
        let (has,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM pragma_table_info('orders') WHERE name = ?")
                .bind(column)
                .fetch_one(pool)
                .await?;
        if has == 0 {
            // A name from the list above, never from input.
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "ALTER TABLE orders ADD COLUMN {column} TEXT"
            )))
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

/// What [`Store::insert`] stores with an order besides its fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewRow<'a> {
    /// The client's `Idempotency-Key`, if it sent one.
    pub idempotency_key: Option<&'a str>,
    /// The W3C `traceparent` of the span the order was created in.
    pub trace_context: Option<&'a str>,
}

/// What [`Store::insert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// The order was stored.
    New,
    /// Nothing was stored: this order had been stored under the same
    /// idempotency key.
    Earlier(Order),
}

/// An order of the outbox, with the context to publish it in.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Unpublished {
    #[sqlx(flatten)]
    pub order: Order,
    pub trace_context: Option<String>,
}

/// Why a write was not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The caller's deadline passed before the commit: nothing was stored.
    #[error("the caller's deadline passed before the write was committed; nothing was stored")]
    DeadlinePassed,
    /// The idempotency key was used for another order.
    #[error("this Idempotency-Key was used for another order, {order_id}")]
    KeyReused { order_id: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// How a write that was not stored answers a gRPC call: past the deadline
/// `DeadlineExceeded`, a reused key `InvalidArgument` (the gateway's 422),
/// a database failure `Unavailable` (worth retrying).
impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DeadlinePassed => tonic::Status::deadline_exceeded(e.to_string()),
            StoreError::KeyReused { .. } => tonic::Status::invalid_argument(e.to_string()),
            StoreError::Database(_) => tonic::Status::unavailable(format!("the database: {e}")),
        }
    }
}

/// A stored order and its result, if one was recorded.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredOrder {
    #[sqlx(flatten)]
    pub order: Order,
    /// [`Outcome::status`] of the result; `None` until one was recorded.
    pub outcome: Option<String>,
    pub detail: Option<String>,
}

impl StoredOrder {
    /// The result's outcome; [`Outcome::Unspecified`] while there is none.
    pub fn outcome(&self) -> Outcome {
        self.outcome
            .as_deref()
            .map_or(Outcome::Unspecified, Outcome::from_status)
    }
}

impl From<StoredOrder> for pb::Order {
    fn from(stored: StoredOrder) -> Self {
        let outcome = stored.outcome();
        Self {
            outcome: outcome.into(),
            detail: stored.detail,
            ..pb::Order::from(stored.order)
        }
    }
}

/// What [`Store::record_result`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// False when the order had a result already: nothing changed.
    pub recorded: bool,
    pub created_at_unix_ms: i64,
}

impl From<Recorded> for pb::RecordResultResponse {
    fn from(r: Recorded) -> Self {
        Self {
            recorded: r.recorded,
            created_at_unix_ms: r.created_at_unix_ms,
        }
    }
}

impl Outcome {
    /// An order's status with this result, as stored and as
    /// `GET /orders/{id}` shows it: `created` while there is none.
    pub fn status(self) -> &'static str {
        match self {
            Outcome::Unspecified => "created",
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
            Outcome::DeadLettered => "dead_lettered",
        }
    }

    fn from_status(status: &str) -> Self {
        match status {
            "completed" => Outcome::Completed,
            "failed" => Outcome::Failed,
            "dead_lettered" => Outcome::DeadLettered,
            _ => Outcome::Unspecified,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NewOrder;

    #[tokio::test]
    async fn an_order_stays_in_the_outbox_until_published() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("orders.db")).await.unwrap();
        let order = Order::create(NewOrder::validate("1001", "A001", 3).unwrap());
        store.insert(&order, NewRow::default(), None).await.unwrap();

        assert_eq!(
            store.get(&order.order_id).await.unwrap().map(|s| s.order),
            Some(order.clone())
        );
        let later = order.created_at_unix_ms + 1;
        assert_eq!(
            store.unpublished(later, 10).await.unwrap(),
            vec![Unpublished {
                order: order.clone(),
                trace_context: None
            }]
        );
        assert!(
            store
                .unpublished(order.created_at_unix_ms, 10)
                .await
                .unwrap()
                .is_empty()
        );

        store.mark_published(&order.order_id).await.unwrap();
        assert!(store.unpublished(later, 10).await.unwrap().is_empty());
        assert_eq!(store.count().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn the_first_result_wins_and_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("orders.db")).await.unwrap();
        let order = Order::create(NewOrder::validate("1001", "A001", 3).unwrap());
        store.insert(&order, NewRow::default(), None).await.unwrap();
        assert_eq!(
            store.get(&order.order_id).await.unwrap().unwrap().outcome(),
            Outcome::Unspecified
        );

        let first = store
            .record_result(&order.order_id, Outcome::Completed, "packed", None)
            .await
            .unwrap();
        let again = store
            .record_result(&order.order_id, Outcome::Failed, "late", None)
            .await
            .unwrap();
        assert_eq!(
            (first, again),
            (
                Some(Recorded {
                    recorded: true,
                    created_at_unix_ms: order.created_at_unix_ms
                }),
                Some(Recorded {
                    recorded: false,
                    created_at_unix_ms: order.created_at_unix_ms
                })
            )
        );
        let stored: pb::Order = store.get(&order.order_id).await.unwrap().unwrap().into();
        assert_eq!(stored.outcome(), Outcome::Completed);
        assert_eq!(stored.detail.as_deref(), Some("packed"));
        assert_eq!(
            store
                .record_result("no-such-order", Outcome::Completed, "", None)
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn a_dead_letter_marks_only_an_unfinished_order_and_a_later_result_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("orders.db")).await.unwrap();
        let given_up = Order::create(NewOrder::validate("1001", "A001", 1).unwrap());
        let done = Order::create(NewOrder::validate("1002", "A001", 1).unwrap());
        store
            .insert(&given_up, NewRow::default(), None)
            .await
            .unwrap();
        store.insert(&done, NewRow::default(), None).await.unwrap();
        let recorded = |o: &Order| {
            let store = store.clone();
            let id = o.order_id.clone();
            async move { store.get(&id).await.unwrap().unwrap().outcome() }
        };

        store
            .record_result(&done.order_id, Outcome::Completed, "packed", None)
            .await
            .unwrap();
        assert!(
            !store
                .mark_dead_lettered(&done.order_id, "late")
                .await
                .unwrap()
        );
        assert_eq!(recorded(&done).await, Outcome::Completed);

        assert!(
            store
                .mark_dead_lettered(&given_up.order_id, "10 deliveries")
                .await
                .unwrap()
        );
        assert_eq!(recorded(&given_up).await, Outcome::DeadLettered);
        let reprocessed = store
            .record_result(&given_up.order_id, Outcome::Completed, "packed", None)
            .await
            .unwrap();
        assert!(reprocessed.unwrap().recorded);
        let again = store
            .record_result(&given_up.order_id, Outcome::Completed, "packed", None)
            .await
            .unwrap();
        assert!(
            !again.unwrap().recorded,
            "a result replaces a dead letter once"
        );
        assert_eq!(recorded(&given_up).await, Outcome::Completed);
    }

    #[tokio::test]
    async fn a_retry_with_the_same_key_gets_the_same_order_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("orders.db")).await.unwrap();
        let first = Order::create(NewOrder::validate("1001", "A001", 2).unwrap());
        let keyed = NewRow {
            idempotency_key: Some("key-1"),
            trace_context: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        };
        assert_eq!(
            store.insert(&first, keyed, None).await.unwrap(),
            Inserted::New
        );

        let retry = Order::create(NewOrder::validate("1001", "A001", 2).unwrap());
        assert_eq!(
            store.insert(&retry, keyed, None).await.unwrap(),
            Inserted::Earlier(first.clone())
        );
        let other = Order::create(NewOrder::validate("1001", "A001", 3).unwrap());
        match store.insert(&other, keyed, None).await {
            Err(StoreError::KeyReused { order_id }) => assert_eq!(order_id, first.order_id),
            other => panic!("a key for another order: {other:?}"),
        }
        // Without a key, or with another key, orders are new.
        let unkeyed = Order::create(NewOrder::validate("1001", "A001", 2).unwrap());
        assert_eq!(
            store
                .insert(&unkeyed, NewRow::default(), None)
                .await
                .unwrap(),
            Inserted::New
        );
        assert_eq!(store.count().await.unwrap(), 2);
        // The outbox hands the context back with the order.
        let outbox = store.unpublished(i64::MAX, 10).await.unwrap();
        assert_eq!(outbox[0].trace_context.as_deref(), keyed.trace_context);
        assert_eq!(outbox[1].trace_context, None);
    }

    #[tokio::test]
    async fn nothing_is_committed_once_the_deadline_has_passed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("orders.db")).await.unwrap();
        let late = Some(Instant::now());
        let order = Order::create(NewOrder::validate("1001", "A001", 1).unwrap());
        let row = NewRow {
            idempotency_key: Some("late"),
            ..NewRow::default()
        };
        assert!(matches!(
            store.insert(&order, row, late).await,
            Err(StoreError::DeadlinePassed)
        ));
        assert_eq!(store.count().await.unwrap(), 0);
        // The key was not taken either: the retry stores the order.
        assert_eq!(
            store.insert(&order, row, None).await.unwrap(),
            Inserted::New
        );

        assert!(matches!(
            store
                .record_result(&order.order_id, Outcome::Completed, "packed", late)
                .await,
            Err(StoreError::DeadlinePassed)
        ));
        assert_eq!(
            store.get(&order.order_id).await.unwrap().unwrap().outcome(),
            Outcome::Unspecified
        );
        let in_time = Some(Instant::now() + Duration::from_secs(5));
        let recorded = store
            .record_result(&order.order_id, Outcome::Completed, "packed", in_time)
            .await
            .unwrap();
        assert!(recorded.unwrap().recorded);
    }

    #[tokio::test]
    async fn a_database_from_before_results_gets_their_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.db");
        let options = SqliteConnectOptions::from_str("sqlite://")
            .unwrap()
            .filename(&path)
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE orders (order_id TEXT PRIMARY KEY NOT NULL, user_id TEXT NOT NULL,
             product_id TEXT NOT NULL, quantity INTEGER NOT NULL,
             created_at_unix_ms INTEGER NOT NULL, published INTEGER NOT NULL DEFAULT 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let store = Store::open(&path).await.unwrap();
        let order = Order::create(NewOrder::validate("1001", "A001", 1).unwrap());
        store.insert(&order, NewRow::default(), None).await.unwrap();
        let recorded = store
            .record_result(&order.order_id, Outcome::Failed, "sold out", None)
            .await
            .unwrap();
        assert!(recorded.unwrap().recorded);
    }
}
