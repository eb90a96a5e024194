//! The work `task` does for each order: a small, deterministic, CPU-bound
//! step, so that a CPU profile of `task` has something real to show.

use crate::domain::OrderCreated;

/// Rounds of mixing per item ordered; a few milliseconds for a typical order.
const ROUNDS_PER_ITEM: u32 = 20_000;
/// Products whose id starts with this are out of stock: their orders fail.
/// It gives the system a business failure path that is easy to trigger.
pub const SOLD_OUT_PREFIX: &str = "sold-out";

/// What handling an order produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fulfilment {
    /// Packed; the value is a checksum of the packing plan.
    Packed { checksum: u64 },
    /// The order cannot be fulfilled.
    Rejected { reason: String },
}

/// Plans the packing of an order. The same order always gives the same
/// result, so a redelivered message is handled identically.
pub fn plan_packing(order: &OrderCreated) -> Fulfilment {
    if order.product_id.starts_with(SOLD_OUT_PREFIX) {
        return Fulfilment::Rejected {
            reason: format!("product {} is sold out", order.product_id),
        };
    }
    let mut state = seed(&order.order_id) ^ seed(&order.product_id);
    for _ in 0..ROUNDS_PER_ITEM * order.quantity.min(10) {
        state = mix(state);
    }
    Fulfilment::Packed { checksum: state }
}

fn seed(text: &str) -> u64 {
    // FNV-1a: stable across runs and platforms, unlike `DefaultHasher`.
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[inline(never)]
fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(product: &str) -> OrderCreated {
        OrderCreated {
            order_id: "00000000-0000-0000-0000-000000000001".into(),
            user_id: "1001".into(),
            product_id: product.into(),
            quantity: 2,
            created_at_unix_ms: 0,
        }
    }

    #[test]
    fn is_deterministic() {
        assert_eq!(plan_packing(&order("A001")), plan_packing(&order("A001")));
        assert_ne!(plan_packing(&order("A001")), plan_packing(&order("A002")));
    }

    #[test]
    fn sold_out_products_are_rejected() {
        assert!(matches!(
            plan_packing(&order("sold-out-lamp")),
            Fulfilment::Rejected { .. }
        ));
    }
}
