//! End-to-end tests of chapter 01, metrics: the real binary, a real
//! nats-server, real HTTP and gRPC on loopback, and an OTLP receiver for
//! any spans. Each test is a promise, a contract of `testkit::contracts`
//! named as in `testkit::contracts::promises(1)`: chapter 00's, which still hold, then its own lesson's, metrics.
//! `cargo xtask check 01` runs the same tests against a learner's copy.

testkit::promise_tests!(binary: "ch01-metrics", lessons: 0 1);
