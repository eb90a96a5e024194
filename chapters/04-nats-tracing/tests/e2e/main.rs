//! End-to-end tests of chapter 04: the real binary, a real nats-server,
//! real HTTP and gRPC on loopback, a real OTLP receiver for the spans. One
//! test binary for the whole chapter, one module per concern.

mod messaging;
mod traces;

/// The binary under test: this chapter's, unless `CHAPTER_BIN` names another.
const CHAPTER_BIN: &str = env!("CARGO_BIN_EXE_ch04-nats-tracing");

fn subject() -> testkit::Subject {
    testkit::Subject::new(
        env!("CARGO_BIN_EXE_ch04-nats-tracing"),
        env!("CARGO_MANIFEST_DIR"),
    )
}

testkit::promise_tests!(subject; 0 1 2);
