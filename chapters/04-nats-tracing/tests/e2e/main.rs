//! End-to-end tests of chapter 04, tracing across NATS: the real binary, a real
//! nats-server, real HTTP and gRPC on loopback, and an OTLP receiver for
//! any spans. Each test is a promise, a contract of `testkit::contracts`
//! named as in `testkit::contracts::promises(4)`: those of chapters 00 to 03, which still hold, then its own lesson's, messaging.
//! `cargo xtask check 04` runs the same tests against a learner's copy.

testkit::promise_tests!(binary: "ch04-nats-tracing", lessons: 0 1 2 3 4);
