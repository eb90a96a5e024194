//! The promises, written once: by lesson, then by module, in the order the
//! book teaches them. Each names its contract (`module` and function), what
//! holds, the likely mistake when it does not, and where the book explains
//! it.

define_promises! { $
    0 {
        flow {
            an_order_is_created_then_completed {
                claim: "an order is created, then completed by task's callback",
                diagnosis: "a service does not start or cannot reach the next one: the gateway does \
                    not call logic, logic does not publish, or task never calls PushResult back",
                section: "00-baseline.md#following-one-order",
            }
            an_order_for_a_sold_out_product_fails {
                claim: "an order for a sold-out product ends up failed, with the reason",
                diagnosis: "task's outcome or its detail is lost on the way back: PushResult sends \
                    Completed whatever the work said, or the gateway does not store the detail",
                section: "00-baseline.md#task-at-least-once-handling",
            }
            a_repeated_callback_changes_nothing {
                claim: "a repeated callback for an order is answered and changes nothing",
                diagnosis: "the gateway records every PushResult instead of the first one per order: \
                    a redelivery overwrites the result",
                section: "00-baseline.md#gateway-again-the-callback",
            }
            fifty_concurrent_orders_each_complete_once {
                claim: "fifty concurrent orders each get an id, complete, and are published once",
                diagnosis: "shared state under concurrency: ids reused, a lock held across an await, \
                    or the outbox publishing an order twice without its order id as message id",
                section: "00-baseline.md#logic-store-first-then-publish",
            }
        }
    }
}
