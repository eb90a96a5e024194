//! End-to-end tests of chapter 01: the real binary, a real nats-server,
//! real HTTP and gRPC on loopback. One test binary for the whole chapter,
//! one module per concern.

mod metrics;

/// The binary under test: this chapter's, unless `CHAPTER_BIN` names another.
const CHAPTER_BIN: &str = env!("CARGO_BIN_EXE_ch01-metrics");

fn subject() -> testkit::Subject {
    testkit::Subject::new(
        env!("CARGO_BIN_EXE_ch01-metrics"),
        env!("CARGO_MANIFEST_DIR"),
    )
}

testkit::promise_tests!(subject; 0);
