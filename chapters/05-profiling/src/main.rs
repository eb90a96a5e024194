//! Chapter 05: the order system with profiles. Each service serves, on its
//! admin port, what Go's `net/http/pprof` serves: a CPU profile (pprof
//! protobuf or a flamegraph), a heap profile from jemalloc, and a view of
//! the Tokio runtime. The traces of chapters 03 and 04, the JSON logs of
//! chapter 02 and the `/metrics` of chapter 01 stay. Everything the
//! chapters add is set up in [`telemetry`], and the services only call it.
//!
//! One binary, four subcommands: `gateway`, `logic` and `task` run one
//! service each; `all` (the default) runs the three as child processes.

mod gateway;
mod logic;
mod task;
mod telemetry;

use clap::{Parser, Subcommand};
use orders::topology::Service;

#[derive(Parser)]
#[command(version, about = "Chapter 05: the order system, now with profiles")]
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
    // ANCHOR: init_logs
    // Each service logs JSON lines; `all` passes them through as they are.
    let service = match &command {
        Command::Gateway(_) => Some(Service::Gateway),
        Command::Logic(_) => Some(Service::Logic),
        Command::Task(_) => Some(Service::Task),
        Command::All(_) => None,
    };
    if let Some(service) = service {
        telemetry::init_logs(service)?;
    }
    // ANCHOR_END: init_logs
    let result = match command {
        Command::Gateway(args) => gateway::run(args).await,
        Command::Logic(args) => logic::run(args).await,
        Command::Task(args) => task::run(args).await,
        Command::All(args) => {
            let hints = telemetry::banner_hints(&args.topology);
            orders::launcher::run(orders::launcher::Launch {
                chapter: env!("CARGO_PKG_NAME").to_owned(),
                topology: args.topology,
                hints,
            })
            .await
        }
    };
    // ANCHOR: shutdown
    // The spans still queued are sent before the process exits.
    telemetry::shutdown_traces().await;
    // ANCHOR_END: shutdown
    result
}
