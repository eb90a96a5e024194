//! Deadlines across a gRPC call: the caller sends how long it will wait
//! (the `grpc-timeout` header), and the callee stops, and commits nothing,
//! once that time is up, because the caller has answered its own client
//! already (a 504) and will not see the result.

use std::time::{Duration, Instant};

/// The header of the gRPC wire protocol that carries the caller's timeout
/// (grpc/doc/PROTOCOL-HTTP2.md, "Timeout"): at most 8 digits and a unit.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// How much later than the caller's own timer the header says: tonic
/// enforces `grpc-timeout` on both ends (and answers `Cancelled` when it
/// does), so the header leaves the caller's timer to fire first, and the
/// caller answers its client (504, `DeadlineExceeded`) itself.
pub const TRANSPORT_GRACE: Duration = Duration::from_millis(50);

/// How much earlier than the header says the callee gives up: enough to
/// stop before the caller's timer ([`TRANSPORT_GRACE`] less than this), so
/// that its answer (`DeadlineExceeded`, and a log line saying why) is sent
/// while the caller still listens.
pub const MARGIN: Duration = Duration::from_millis(100);

/// A request for `message` whose caller waits `timeout` for the answer:
/// tonic sends `timeout` plus [`TRANSPORT_GRACE`] as `grpc-timeout`.
pub fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout + TRANSPORT_GRACE);
    request
}

/// When the server must have finished `request`: the header's timeout less
/// [`MARGIN`], from now, which is before the caller's own timer fires.
/// `None` when the caller set no deadline (or a malformed one, which is
/// ignored as gRPC servers do).
pub fn of<T>(request: &tonic::Request<T>) -> Option<Instant> {
    let value = request.metadata().get(GRPC_TIMEOUT)?.to_str().ok()?;
    let timeout = parse_grpc_timeout(value)?;
    Some(Instant::now() + timeout.saturating_sub(MARGIN))
}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits, then `H`, `M`,
/// `S`, `m` (milliseconds), `u` (microseconds) or `n` (nanoseconds).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Whether `deadline` (from [`of`]) has passed; never, without one.
pub fn passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|at| Instant::now() >= at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_of_the_protocol() {
        let cases = [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("3S", Duration::from_secs(3)),
            ("2000m", Duration::from_millis(2000)),
            ("5u", Duration::from_micros(5)),
            ("99999999n", Duration::from_nanos(99_999_999)),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_grpc_timeout(value), Some(expected), "{value}");
        }
    }

    #[test]
    fn malformed_values_are_no_deadline() {
        for value in ["", "m", "123456789m", "-1S", "1.5S", "10s", "1 S", "١S"] {
            assert_eq!(parse_grpc_timeout(value), None, "{value:?}");
        }
    }

    #[test]
    fn the_deadline_is_read_back_from_the_request_tonic_sends() {
        let request = request((), Duration::from_millis(2000));
        let value = request.metadata().get(GRPC_TIMEOUT);
        assert!(value.is_some(), "tonic puts the timeout in the metadata");
        let deadline = of(&request).unwrap();
        let left = deadline - Instant::now();
        assert!(
            left < Duration::from_millis(2000),
            "before the caller's timer: {left:?}"
        );
        assert!(left > Duration::from_millis(1800), "{left:?}");
        assert!(!passed(Some(deadline)));
        assert!(passed(Some(Instant::now())));
        assert!(!passed(None));
    }
}
