//! End-to-end tests of chapter 02, logs: the real binary, a real
//! nats-server, real HTTP and gRPC on loopback, and an OTLP receiver for
//! any spans. Each test is a promise, a contract of `testkit::contracts`
//! named as in `testkit::contracts::promises(2)`: those of chapters 00 and 01, which still hold, then its own lesson's, logs.
//! `cargo xtask check 02` runs the same tests against a learner's copy.

testkit::promise_tests!(binary: "ch02-logs", lessons: 0 1 2);
