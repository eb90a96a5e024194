//! The order system with metrics, JSON logs, traces across HTTP, gRPC and
//! NATS, and profiles, as chapter 05 of the book has them, organized as a
//! service to run rather than as a lesson:
//!
//! - [`config`]: every setting from a flag or its variable, listed by
//!   `--help` with the `OTEL_*` variables the SDK reads itself;
//! - [`shutdown`]: SIGTERM or Ctrl-C stops accepting, drains what is in
//!   flight, sends the last spans, exits 0;
//! - `gateway`, `logic`, `task`: the three services, each with `/healthz`
//!   and `/readyz` on its admin port;
//! - `telemetry`: metrics, logs, traces, messaging and profiling, by
//!   concern.
//!
//! One binary, four subcommands: `gateway`, `logic` and `task` run one
//! service each (one container each in docker compose); `all` (the
//! default) runs the three as child processes, with a nats-server.

pub mod config;
mod gateway;
mod logic;
mod server;
pub mod shutdown;
mod task;
mod telemetry;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use orders::topology::Service;

use crate::config::{Cli, Command, Config};
use crate::shutdown::Shutdown;

/// How long the runtime waits, on the way out, for blocking work still
/// running (a CPU profile being taken, say) before it leaves it behind.
const RUNTIME_GRACE: Duration = Duration::from_secs(1);

/// Parses the command line and runs what it says; the process's exit code.
pub fn main() -> ExitCode {
    let command = Cli::parse().into_command();
    if let Command::All(config) = &command {
        hand_down(config);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("Error: starting the Tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(command));
    runtime.shutdown_timeout(RUNTIME_GRACE);
    code
}

// ANCHOR: run
/// Runs one service, or `all`, to its end.
async fn run(command: Command) -> ExitCode {
    let Some(service) = command.service() else {
        let Command::All(config) = command else {
            unreachable!("only `all` runs no service")
        };
        return report(None, run_all(config).await);
    };
    let config = command.config().clone();
    // Each service logs JSON lines, and sends spans.
    if let Err(e) = telemetry::init_logs(service, &config.log_filter) {
        eprintln!("Error: setting up the logs and traces: {e:#}");
        return ExitCode::FAILURE;
    }
    let shutdown = match Shutdown::on_signals(config.shutdown_delay(), config.shutdown_timeout()) {
        Ok(shutdown) => shutdown,
        Err(e) => return report(Some(service), Err(e.into())),
    };
    let result = match service {
        Service::Gateway => gateway::run(config, shutdown).await,
        Service::Logic => logic::run(config, shutdown).await,
        Service::Task => task::run(config, shutdown).await,
    };
    let code = report(Some(service), result);
    // The spans still queued are sent before the process exits.
    telemetry::shutdown().await;
    code
}
// ANCHOR_END: run

/// `all`: the three services as child processes of this binary.
async fn run_all(config: Config) -> anyhow::Result<()> {
    let hints = telemetry::banner_hints(&config.topology);
    orders::launcher::run(orders::launcher::Launch {
        chapter: env!("CARGO_PKG_NAME").to_owned(),
        topology: config.topology,
        hints,
    })
    .await
}

/// The exit code of `result`, after logging its error.
fn report(service: Option<Service>, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => {
            if service.is_some() {
                tracing::info_span!("shutdown").in_scope(|| tracing::info!("stopped"));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            match service {
                Some(_) => tracing::info_span!("shutdown").in_scope(|| {
                    tracing::error!(error = %format!("{e:#}"), "stopped on an error");
                }),
                None => eprintln!("Error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// Hands the settings of `all` down to its services. The launcher starts
/// them with the topology's flags only, and each reads the rest from its
/// environment, which it inherits from this process.
fn hand_down(config: &Config) {
    for (name, value) in config.environment() {
        // SAFETY: called from `main` before the Tokio runtime, or any other
        // thread, is started: nothing can read the environment meanwhile.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var(name, value);
        }
    }
}
