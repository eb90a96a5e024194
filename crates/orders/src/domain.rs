//! Domain types and the validation rules every service agrees on.

use std::ops::RangeInclusive;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

// ANCHOR: limits
/// Longest `user_id`, `product_id` or `order_id` accepted, in characters.
pub const MAX_ID_CHARS: usize = 64;
/// How many items one order may ask for.
pub const QUANTITY_RANGE: RangeInclusive<i64> = 1..=1000;
// ANCHOR_END: limits

/// A rejected field, with a reason a client can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidOrder {
    pub field: &'static str,
    pub reason: String,
}

/// An order that passed validation and has no id yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub user_id: String,
    pub product_id: String,
    pub quantity: u32,
}

impl NewOrder {
    /// Checks the fields of an incoming order. The gateway calls this before
    /// anything leaves the process, and logic calls it again, because a gRPC
    /// server cannot trust that every client is the gateway.
    pub fn validate(user_id: &str, product_id: &str, quantity: i64) -> Result<Self, InvalidOrder> {
        validate_id("user_id", user_id)?;
        validate_id("product_id", product_id)?;
        if !QUANTITY_RANGE.contains(&quantity) {
            return Err(InvalidOrder {
                field: "quantity",
                reason: format!(
                    "must be between {} and {}",
                    QUANTITY_RANGE.start(),
                    QUANTITY_RANGE.end()
                ),
            });
        }
        Ok(Self {
            user_id: user_id.to_owned(),
            product_id: product_id.to_owned(),
            quantity: quantity as u32,
        })
    }
}

// ANCHOR: validate_id
/// An identifier is non-empty, at most [`MAX_ID_CHARS`] characters, and has
/// no control characters (so it can never forge a line in a log or a
/// header), and no format or separator characters either: Unicode's
/// categories Cf, Zl and Zp, which are invisible or break a line where
/// they are shown (U+200B, U+FEFF, U+202E that turns the text around, the
/// isolates U+2066 to U+2069, U+2028, U+2029), so an id that looks like
/// another cannot be made.
pub fn validate_id(field: &'static str, value: &str) -> Result<(), InvalidOrder> {
    let reason = if value.trim().is_empty() {
        "must not be empty".to_owned()
    } else if value.chars().count() > MAX_ID_CHARS {
        format!("must be at most {MAX_ID_CHARS} characters")
    } else if value.chars().any(char::is_control) {
        "must not contain control characters".to_owned()
    } else if value.chars().any(invisible) {
        "must not contain format or separator characters".to_owned()
    } else {
        return Ok(());
    };
    Err(InvalidOrder { field, reason })
}
// ANCHOR_END: validate_id

/// A format character (Cf) or a line or paragraph separator (Zl, Zp).
fn invisible(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// A stored order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Order {
    pub order_id: String,
    pub user_id: String,
    pub product_id: String,
    pub quantity: u32,
    pub created_at_unix_ms: i64,
}

impl Order {
    /// Gives a validated order its id and creation time.
    pub fn create(new: NewOrder) -> Self {
        Self {
            order_id: uuid::Uuid::new_v4().to_string(),
            user_id: new.user_id,
            product_id: new.product_id,
            quantity: new.quantity,
            created_at_unix_ms: unix_millis(),
        }
    }
}

impl From<Order> for crate::pb::Order {
    fn from(o: Order) -> Self {
        Self {
            order_id: o.order_id,
            user_id: o.user_id,
            product_id: o.product_id,
            quantity: o.quantity,
            created_at_unix_ms: o.created_at_unix_ms,
            // No result yet: a stored order's result is added by the store.
            ..Default::default()
        }
    }
}

/// The payload of an `orders.created` message: the stored order, as JSON.
pub type OrderCreated = Order;

/// Milliseconds since the Unix epoch, the time unit stored and sent on the wire.
pub fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_plain_order() {
        let order = NewOrder::validate("1001", "A001", 2).unwrap();
        assert_eq!(order.quantity, 2);
    }

    #[test]
    fn rejects_each_bad_field_by_name() {
        let long = "x".repeat(MAX_ID_CHARS + 1);
        let cases = [
            ("", "A001", 1, "user_id"),
            ("   ", "A001", 1, "user_id"),
            ("1001", long.as_str(), 1, "product_id"),
            ("10\n01", "A001", 1, "user_id"),
            ("1001", "A\u{1b}[31m", 1, "product_id"),
            ("\u{200b}", "A001", 1, "user_id"),
            ("1001\u{202e}", "A001", 1, "user_id"),
            ("1001", "\u{feff}A001", 1, "product_id"),
            ("10\u{2028}01", "A001", 1, "user_id"),
            ("10\u{2029}01", "A001", 1, "user_id"),
            ("1001", "A\u{2066}001\u{2069}", 1, "product_id"),
            ("1001", "A\u{2067}001", 1, "product_id"),
            ("1001", "A\u{2068}001", 1, "product_id"),
            ("1001", "A\u{85}001", 1, "product_id"),
            ("1001", "A001", 0, "quantity"),
            ("1001", "A001", 1001, "quantity"),
            ("1001", "A001", -5, "quantity"),
        ];
        for (user, product, quantity, field) in cases {
            let err = NewOrder::validate(user, product, quantity).unwrap_err();
            assert_eq!(err.field, field, "{user:?} {product:?} {quantity}");
        }
    }

    #[test]
    fn visible_non_ascii_is_an_id() {
        for id in ["Ann O'Brien", "☃ 🦀", "é", "名前", "a b"] {
            assert!(validate_id("user_id", id).is_ok(), "{id:?}");
        }
    }

    #[test]
    fn the_limit_counts_characters_not_bytes() {
        let id = "é".repeat(MAX_ID_CHARS);
        assert!(validate_id("user_id", &id).is_ok());
    }
}
