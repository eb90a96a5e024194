//! The order system with every layer of the book, as chapter 05 has them:
//! metrics, JSON logs, traces across HTTP, gRPC and NATS, and profiles, all
//! set up in [`telemetry`], which the services only call. What this crate
//! adds is what running the system for real needs:
//!
//! - [`config`]: every setting from a flag or its variable, listed by
//!   `--help` with the `OTEL_*` variables the SDK reads itself;
//! - [`shutdown`]: SIGTERM or Ctrl-C makes the service not ready, stops
//!   accepting, drains what is in flight within a deadline, sends the last
//!   spans and exits 0;
//! - [`health`]: `/readyz` answers 503 from the moment a shutdown begins;
//! - [`server`]: every port bound before anything is served, and an admin
//!   port that outlives the draining;
//! - [`secret`]: the API's token compared in constant time.
//!
//! One binary, five subcommands: `gateway`, `logic` and `task` run one
//! service each (one container each in docker compose); `all` (the
//! default) runs the three as child processes, with a nats-server;
//! `reprocess-dead-letters` puts the orders task gave up on back in line.

pub mod config;
pub mod faults;
pub mod gateway;
mod health;
pub mod logic;
mod secret;
mod server;
pub mod shutdown;
pub mod task;
pub mod telemetry;
