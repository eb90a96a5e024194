//! Chapter 01: the order system with Prometheus metrics. Each service serves
//! `/metrics` on its admin port; everything the chapter adds is set up in
//! [`telemetry`], and the services only call it.
//!
//! One binary, five subcommands: `gateway`, `logic` and `task` run one
//! service each; `all` (the default) runs the three as child processes;
//! `reprocess-dead-letters` puts the orders task gave up on back in line.

mod gateway;
mod logic;
mod task;
mod telemetry;

use clap::{Parser, Subcommand};
use orders::topology::Service;
use telemetry::Telemetry;

#[derive(Parser)]
#[command(version, about = "Chapter 01: the order system, now with metrics")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand, the flags of `all`.
    #[command(flatten)]
    all: AllArgs,
}

#[derive(Subcommand)]
enum Command {
    /// HTTP API for clients, gRPC callback server for task.
    Gateway(gateway::Args),
    /// gRPC order service: stores orders in SQLite, publishes them to NATS.
    Logic(logic::Args),
    /// Consumes orders from NATS, handles them, reports back to the gateway.
    Task(task::Args),
    /// All three services as child processes, plus a nats-server (default).
    All(AllArgs),
    /// Puts the orders task gave up on (the dead letters) back on
    /// orders.created, each once.
    ReprocessDeadLetters(AllArgs),
}

#[derive(clap::Args)]
struct AllArgs {
    #[command(flatten)]
    topology: orders::Topology,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::All(cli.all));
    match command {
        Command::Gateway(args) => serve(Service::Gateway, |t| gateway::run(args, t)).await,
        Command::Logic(args) => serve(Service::Logic, |t| logic::run(args, t)).await,
        Command::Task(args) => serve(Service::Task, |t| task::run(args, t)).await,
        Command::ReprocessDeadLetters(args) => {
            orders::dead_letters::reprocess_command(args.topology.nats_url()).await
        }
        Command::All(args) => {
            let hints = telemetry::banner_hints(&args.topology);
            orders::launcher::run(orders::launcher::Launch {
                chapter: env!("CARGO_PKG_NAME").to_owned(),
                topology: args.topology,
                hints,
            })
            .await
        }
    }
}

// ANCHOR: serve
/// Runs one service with its telemetry: set up before the service starts,
/// shut down (what is buffered is sent) after it stopped.
async fn serve<F>(service: Service, run: impl FnOnce(Telemetry) -> F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let telemetry = telemetry::init(service)?;
    let result = run(telemetry.clone()).await;
    telemetry.shutdown().await;
    result
}
// ANCHOR_END: serve
