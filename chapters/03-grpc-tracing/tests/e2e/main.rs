//! End-to-end tests of chapter 03, tracing across gRPC: the real binary, a real
//! nats-server, real HTTP and gRPC on loopback, and an OTLP receiver for
//! any spans. Each test is a promise, a contract of `testkit::contracts`
//! named as in `testkit::contracts::promises(3)`: those of chapters 00 to 02, which still hold, then its own lesson's, traces across gRPC.
//! `cargo xtask check 03` runs the same tests against a learner's copy.

testkit::promise_tests!(binary: "ch03-grpc-tracing", lessons: 0 1 2 3);
