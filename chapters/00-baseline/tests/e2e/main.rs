//! End-to-end tests of chapter 00, the baseline, no observability yet: the real binary, a real
//! nats-server, real HTTP and gRPC on loopback, and an OTLP receiver for
//! any spans. Each test is a promise, a contract of `testkit::contracts`
//! named as in `testkit::contracts::promises(0)`: its own promises: the order flow, the refusals, the faults, the launcher and the progress report.
//! `cargo xtask check 00` runs the same tests against a learner's copy.

testkit::promise_tests!(binary: "ch00-baseline", lessons: 0);
