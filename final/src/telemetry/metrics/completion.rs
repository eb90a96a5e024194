//! The orders on their way, for `order_completion_seconds`: the gateway
//! times an order from receiving it to its first result, and the two ends
//! can come in either order. task's callback can beat logic's answer to the
//! gateway, since logic publishes before it answers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Beyond this many orders in flight, those older than [`FORGET_AFTER`] are
/// dropped: an order whose result never comes must not hold memory forever.
const IN_FLIGHT_LIMIT: usize = 10_000;
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// The first of the two ends of an order, by order id.
#[derive(Default)]
pub struct InFlight(Mutex<HashMap<String, Milestone>>);

/// When the gateway received an order, or when its result arrived if that
/// came first.
enum Milestone {
    Received(Instant),
    Completed(Instant),
}

impl InFlight {
    /// The gateway accepted an order it received at `received`: the time to
    /// its result if that came first, else `None` (and it is remembered).
    pub fn accepted(&self, order_id: &str, received: Instant) -> Option<Duration> {
        let mut in_flight = self.0.lock().unwrap();
        match in_flight.remove(order_id) {
            Some(Milestone::Completed(at)) => Some(at.duration_since(received)),
            _ => {
                remember(&mut in_flight, order_id, Milestone::Received(received));
                None
            }
        }
    }

    /// The first result of an order arrived: the time since the order was
    /// received if that is known, else `None` (and it is remembered).
    pub fn completed(&self, order_id: &str) -> Option<Duration> {
        let mut in_flight = self.0.lock().unwrap();
        match in_flight.remove(order_id) {
            Some(Milestone::Received(received)) => Some(received.elapsed()),
            _ => {
                let now = Milestone::Completed(Instant::now());
                remember(&mut in_flight, order_id, now);
                None
            }
        }
    }
}

fn remember(in_flight: &mut HashMap<String, Milestone>, order_id: &str, milestone: Milestone) {
    if in_flight.len() >= IN_FLIGHT_LIMIT {
        in_flight.retain(|_, milestone| {
            let (Milestone::Received(at) | Milestone::Completed(at)) = milestone;
            at.elapsed() < FORGET_AFTER
        });
    }
    in_flight.insert(order_id.to_owned(), milestone);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_is_timed_whichever_milestone_comes_first() {
        let in_flight = InFlight::default();
        assert_eq!(in_flight.accepted("accepted-first", Instant::now()), None);
        assert!(in_flight.completed("accepted-first").is_some());
        // task's callback beat logic's answer to the gateway.
        assert_eq!(in_flight.completed("completed-first"), None);
        assert!(
            in_flight
                .accepted("completed-first", Instant::now())
                .is_some()
        );

        assert!(
            in_flight.0.lock().unwrap().is_empty(),
            "nothing left behind"
        );
    }
}
