//! End-to-end tests of chapter 02: the real binary, a real nats-server,
//! real HTTP and gRPC on loopback. One test binary for the whole chapter,
//! one module per concern.

mod logs;

/// The binary under test: this chapter's, unless `CHAPTER_BIN` names another.
const CHAPTER_BIN: &str = env!("CARGO_BIN_EXE_ch02-logs");

fn subject() -> testkit::Subject {
    testkit::Subject::new(env!("CARGO_BIN_EXE_ch02-logs"), env!("CARGO_MANIFEST_DIR"))
}

testkit::promise_tests!(subject; 0 1);
