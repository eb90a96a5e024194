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
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

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
    -- NULL until the first result: completed or failed.
    outcome            TEXT,
    detail             TEXT
);
CREATE INDEX IF NOT EXISTS orders_unpublished ON orders (created_at_unix_ms) WHERE published = 0;
";
// ANCHOR_END: schema

/// A pool of connections to the orders database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, in WAL mode so
    /// readers never wait for the writer, with a busy timeout so concurrent
    /// writers queue instead of failing with `SQLITE_BUSY`.
    pub async fn open(path: &Path) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        add_result_columns(&pool).await?;
        Ok(Self { pool })
    }

    /// Stores a new order, not yet published.
    pub async fn insert(&self, order: &Order) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO orders (order_id, user_id, product_id, quantity, created_at_unix_ms)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&order.order_id)
        .bind(&order.user_id)
        .bind(&order.product_id)
        .bind(order.quantity)
        .bind(order.created_at_unix_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Reads one order, with its result if one was recorded.
    pub async fn get(&self, order_id: &str) -> Result<Option<StoredOrder>, sqlx::Error> {
        sqlx::query_as(
            "SELECT order_id, user_id, product_id, quantity, created_at_unix_ms, outcome, detail
             FROM orders WHERE order_id = ?",
        )
        .bind(order_id)
        .fetch_optional(&self.pool)
        .await
    }

    // ANCHOR: record_result
    /// Stores the result of an order unless it has one already: the first
    /// result wins, atomically, whichever gateway forwards it. `None` when
    /// there is no such order.
    pub async fn record_result(
        &self,
        order_id: &str,
        outcome: Outcome,
        detail: &str,
    ) -> Result<Option<Recorded>, sqlx::Error> {
        let first: Option<(i64,)> = sqlx::query_as(
            "UPDATE orders SET outcome = ?, detail = ?
             WHERE order_id = ? AND outcome IS NULL
             RETURNING created_at_unix_ms",
        )
        .bind(outcome.status())
        .bind(detail)
        .bind(order_id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some((created_at_unix_ms,)) = first {
            return Ok(Some(Recorded {
                recorded: true,
                created_at_unix_ms,
            }));
        }
        let known: Option<(i64,)> =
            sqlx::query_as("SELECT created_at_unix_ms FROM orders WHERE order_id = ?")
                .bind(order_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(known.map(|(created_at_unix_ms,)| Recorded {
            recorded: false,
            created_at_unix_ms,
        }))
    }
    // ANCHOR_END: record_result

    /// Flags an order whose message JetStream has acknowledged.
    pub async fn mark_published(&self, order_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE orders SET published = 1 WHERE order_id = ?")
            .bind(order_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The outbox: orders created before `created_before_unix_ms` whose
    /// message was never acknowledged, oldest first.
    pub async fn unpublished(
        &self,
        created_before_unix_ms: i64,
        limit: u32,
    ) -> Result<Vec<Order>, sqlx::Error> {
        sqlx::query_as(
            "SELECT order_id, user_id, product_id, quantity, created_at_unix_ms
             FROM orders WHERE published = 0 AND created_at_unix_ms < ?
             ORDER BY created_at_unix_ms LIMIT ?",
        )
        .bind(created_before_unix_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// How many orders are stored.
    pub async fn count(&self) -> Result<u64, sqlx::Error> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM orders")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    /// Cheap check that the database answers, for `/readyz`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Adds the result columns to a database made before they existed.
async fn add_result_columns(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let (has,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM pragma_table_info('orders') WHERE name = 'outcome'")
            .fetch_one(pool)
            .await?;
    if has == 0 {
        sqlx::raw_sql("ALTER TABLE orders ADD COLUMN outcome TEXT; ALTER TABLE orders ADD COLUMN detail TEXT;")
            .execute(pool)
            .await?;
    }
    Ok(())
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
        }
    }

    fn from_status(status: &str) -> Self {
        match status {
            "completed" => Outcome::Completed,
            "failed" => Outcome::Failed,
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
        store.insert(&order).await.unwrap();

        assert_eq!(
            store.get(&order.order_id).await.unwrap().map(|s| s.order),
            Some(order.clone())
        );
        let later = order.created_at_unix_ms + 1;
        assert_eq!(
            store.unpublished(later, 10).await.unwrap(),
            vec![order.clone()]
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
        store.insert(&order).await.unwrap();
        assert_eq!(
            store.get(&order.order_id).await.unwrap().unwrap().outcome(),
            Outcome::Unspecified
        );

        let first = store
            .record_result(&order.order_id, Outcome::Completed, "packed")
            .await
            .unwrap();
        let again = store
            .record_result(&order.order_id, Outcome::Failed, "late")
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
                .record_result("no-such-order", Outcome::Completed, "")
                .await
                .unwrap(),
            None
        );
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
        store.insert(&order).await.unwrap();
        let recorded = store
            .record_result(&order.order_id, Outcome::Failed, "sold out")
            .await
            .unwrap();
        assert!(recorded.unwrap().recorded);
    }
}
