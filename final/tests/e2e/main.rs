//! End-to-end tests of `final`, chapter 05 plus production: the real
//! binary, a real nats-server, real HTTP and gRPC on loopback, and an OTLP
//! receiver for the spans. Each test is a promise, a contract of
//! `testkit::contracts` named as in `testkit::contracts::promises(6)`:
//! every chapter's, checked against chapter 05's snapshots (`final` must
//! show what chapter 05 shows), then production's own: configuration,
//! health, graceful shutdown, the stack.

testkit::promise_tests!(binary: "orders-final", lessons: 0 1 2 3 4 5 6);
