//! End-to-end tests of chapter 02: the real binary, a real nats-server,
//! real HTTP and gRPC on loopback. One test binary for the whole chapter,
//! one module per concern.

fn subject() -> testkit::Subject {
    testkit::Subject::new(env!("CARGO_BIN_EXE_ch02-logs"), env!("CARGO_MANIFEST_DIR"))
}

testkit::promise_tests!(subject; 0 1 2);
