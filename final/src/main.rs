//! `orders-final`: the command line of [`orders_final`]. It parses the
//! settings, starts the Tokio runtime and runs the service (or `all`, or
//! `reprocess-dead-letters`) that the subcommand names, with its telemetry
//! set up before and shut down after.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use orders::topology::Service;
use orders_final::config::{Cli, Command, Config};
use orders_final::shutdown::Shutdown;
use orders_final::telemetry::{self, Telemetry};
use orders_final::{gateway, logic, task};

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
