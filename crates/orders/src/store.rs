//! The SQLite store of `logic`: one table, and an outbox flag on each row.
//!
//! An order is written with `published = 0` and flagged once JetStream has
//! acknowledged its message. Rows still unflagged are the outbox: logic's
//! sweep publishes them again, so a stored order is never lost to a NATS
//! outage.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::domain::Order;

// ANCHOR: schema
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (
    order_id           TEXT PRIMARY KEY NOT NULL,
    user_id            TEXT NOT NULL,
    product_id         TEXT NOT NULL,
    quantity           INTEGER NOT NULL,
    created_at_unix_ms INTEGER NOT NULL,
    published          INTEGER NOT NULL DEFAULT 0
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

    /// Reads one order.
    pub async fn get(&self, order_id: &str) -> Result<Option<Order>, sqlx::Error> {
        sqlx::query_as(
            "SELECT order_id, user_id, product_id, quantity, created_at_unix_ms
             FROM orders WHERE order_id = ?",
        )
        .bind(order_id)
        .fetch_optional(&self.pool)
        .await
    }

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
            store.get(&order.order_id).await.unwrap(),
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
}
