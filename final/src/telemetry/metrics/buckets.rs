//! Histogram buckets, in seconds, one set per kind of measured work.

// ANCHOR: buckets
// Histogram buckets, in seconds. A histogram only tells in which bucket a
// value fell, so the buckets must be dense where the values are.

/// HTTP and gRPC calls take about a millisecond on loopback and the gateway
/// gives logic 2 s, so 0.5 ms to 5 s covers both the usual and the slow.
pub const REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// A SQLite query or a JetStream publish takes from a few hundred
/// microseconds to a few milliseconds, so the buckets start at 0.1 ms; 1 s
/// is the publish timeout.
pub const STORAGE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Handling a message is a few milliseconds of work and one callback that
/// task abandons after 2 s, so 0.1 ms to 2.5 s.
pub const HANDLE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// An order completes within milliseconds when all is well, and only after
/// seconds of redelivery backoff when task or the gateway was down: 1 ms to 30 s.
pub const COMPLETION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// A message waits well under a millisecond while task keeps up, and up to
/// minutes while it is down or behind; that tail is the point: 0.1 ms to 60 s.
pub const QUEUE_DELAY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];
// ANCHOR_END: buckets
