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

mod config;
mod gateway;
mod health;
mod logic;
mod secret;
mod server;
mod shutdown;
mod task;
mod telemetry;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use orders::topology::Service;
use telemetry::Telemetry;

use crate::config::{Cli, Command, Config};
use crate::shutdown::Shutdown;

/// How long the runtime waits, on the way out, for blocking work still
/// running (a CPU profile being taken, say) before it leaves it behind.
const RUNTIME_GRACE: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let command = Cli::parse().into_command();
    hand_down(command.config());
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

/// Runs one service, or `all`, to its end.
async fn run(command: Command) -> ExitCode {
    let config = command.config().clone();
    if let Command::ReprocessDeadLetters(_) = command {
        let reprocessed = orders::dead_letters::reprocess_command(config.topology.nats_url()).await;
        return report(None, reprocessed);
    }
    let Some(service) = command.service() else {
        let hints = telemetry::banner_hints(&config.topology);
        let launched = orders::launcher::run(orders::launcher::Launch {
            chapter: env!("CARGO_PKG_NAME").to_owned(),
            topology: config.topology,
            hints,
        })
        .await;
        return report(None, launched);
    };
    match service {
        Service::Gateway => serve(service, config, gateway::run).await,
        Service::Logic => serve(service, config, logic::run).await,
        Service::Task => serve(service, config, task::run).await,
    }
}

// ANCHOR: serve
/// Runs one service with its telemetry: set up before the service starts,
/// shut down (what is buffered is sent) after it stopped, whatever it
/// returned. The service stops on SIGTERM or Ctrl-C, see [`Shutdown`].
async fn serve<F>(
    service: Service,
    config: Config,
    run: impl FnOnce(Config, Telemetry, Shutdown) -> F,
) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let telemetry = match telemetry::init(service) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("Error: setting up the telemetry: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    check_log_filter(&config.log_filter);
    let result = match Shutdown::on_signals(config.shutdown_delay(), config.shutdown_timeout()) {
        Ok(shutdown) => run(config, telemetry.clone(), shutdown).await,
        Err(e) => Err(e.into()),
    };
    let code = report(Some(service), result);
    telemetry.shutdown().await;
    // And the log lines stdout may still hold.
    let _ = std::io::stdout().flush();
    code
}
// ANCHOR_END: serve

/// The exit code of `result`, after logging its error: as a log line of
/// the service, or on stderr for `all`.
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

/// Puts the settings into this process's environment, as the variables
/// that set them. The services of `all`, which it starts with the
/// topology's flags only, inherit them; and the telemetry reads its log
/// filter from `RUST_LOG`, as in the chapters, which `--log-filter` sets.
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

/// A log filter that does not parse is replaced by the default one (see
/// `telemetry::init`); this says so, once the logs work.
fn check_log_filter(filter: &str) {
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(filter) {
        tracing::info_span!("startup").in_scope(|| {
            tracing::warn!(
                filter,
                error = %e,
                default = telemetry::DEFAULT_FILTER,
                "invalid log filter, using the default"
            );
        });
    }
}
