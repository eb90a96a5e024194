//! Chapter 00: the order system with no observability at all.
//!
//! One binary, five subcommands: `gateway`, `logic` and `task` run one
//! service each; `all` (the default) runs the three as child processes;
//! `reprocess-dead-letters` puts the orders task gave up on back in line.

mod gateway;
mod logic;
mod task;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Chapter 00: the order system, no observability yet")]
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
        Command::Gateway(args) => gateway::run(args).await,
        Command::Logic(args) => logic::run(args).await,
        Command::Task(args) => task::run(args).await,
        Command::ReprocessDeadLetters(args) => {
            orders::dead_letters::reprocess_command(args.topology.nats_url()).await
        }
        Command::All(args) => {
            orders::launcher::run(orders::launcher::Launch {
                chapter: env!("CARGO_PKG_NAME").to_owned(),
                topology: args.topology,
                hints: Vec::new(),
            })
            .await
        }
    }
}
