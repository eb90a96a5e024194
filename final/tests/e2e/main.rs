//! End-to-end tests of `final`: the real binary, a real nats-server, real
//! HTTP and gRPC on loopback, a real OTLP receiver for the spans.
//!
//! `final` must behave as chapter 05 does, so chapter 05's tests run here
//! against `final` (`faults`, `flow`, `launcher`, `logs`, `messaging`,
//! `metrics`, `profiling`, `rejections`, `traces`), except those that
//! compare with a snapshot: `same_as_chapter_05` runs them against both
//! binaries and compares the two, so that the two cannot drift. What only
//! `final` does is in `help`, `health` and `shutdown`.

mod health;
mod help;
mod messaging;
mod profiling;
mod same_as_chapter_05;
mod shutdown;
mod stack;
mod traces;

/// The binary under test: package `final`'s binary, `orders-final` (see
/// its Cargo.toml), unless `CHAPTER_BIN` names another.
const FINAL_BIN: &str = env!("CARGO_BIN_EXE_orders-final");

fn subject() -> testkit::Subject {
    testkit::Subject::new(
        env!("CARGO_BIN_EXE_orders-final"),
        env!("CARGO_MANIFEST_DIR"),
    )
}

testkit::promise_tests!(subject; 0 1 2);
