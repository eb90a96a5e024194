//! The parts of the order system that are the same in every chapter.
//!
//! A chapter crate holds the three services (`gateway`, `logic`, `task`) and,
//! from chapter 01 on, its `telemetry` module: the code a learner reads and
//! diffs. Everything here is plumbing that no chapter teaches, kept in one
//! place so that `diff chapters/00-baseline chapters/01-metrics` shows only
//! the lesson.

pub mod admin;
pub mod dead_letters;
pub mod deadline;
pub mod domain;
pub mod fulfilment;
pub mod http;
pub mod launcher;
pub mod nats_server;
pub mod ports;
pub mod process;
pub mod queue;
pub mod shutdown;
pub mod store;
pub mod topology;

/// The generated gRPC code for `proto/orders/v1/orders.proto`.
pub mod pb {
    tonic::include_proto!("orders.v1");
}

pub use domain::{InvalidOrder, NewOrder, Order, OrderCreated};
pub use topology::Topology;

/// The bearer token the gateway accepts unless `API_TOKEN` says otherwise.
pub const DEFAULT_API_TOKEN: &str = "demo-token";
