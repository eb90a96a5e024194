//! End-to-end tests of chapter 05, profiling: the real binary, a real
//! nats-server, real HTTP and gRPC on loopback, and an OTLP receiver for
//! any spans. Each test is a promise, a contract of `testkit::contracts`
//! named as in `testkit::contracts::promises(5)`: those of chapters 00 to 04, which still hold, then its own lesson's, profiling.
//! `cargo xtask check 05` runs the same tests against a learner's copy.

testkit::promise_tests!(binary: "ch05-profiling", lessons: 0 1 2 3 4 5);
