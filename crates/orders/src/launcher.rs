//! `all`: the whole system from one command.
//!
//! The launcher runs each service as a child process of the same binary,
//! so every hop between services is a real network call between processes,
//! as it would be in production. It starts a `nats-server` too unless
//! `NATS_URL` names one, waits until every service is ready, prints how to
//! use it, and on Ctrl-C or SIGTERM stops everything it started.
//!
//! The launcher's own lines (the banner, what it starts and stops) go to
//! stderr; stdout is the services' alone, which they inherit. From the
//! chapter with JSON logs on, every line of stdout is one JSON object, so
//! `cargo run -p ch02-logs | jq .` reads it as it is.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::future::select_all;
use tokio::process::{Child, Command};

use crate::nats_server::NatsServer;
pub use crate::process::{die_with_parent, terminate};
use crate::topology::{Service, Topology};

/// What to start and what to tell the reader once it runs.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Shown in the banner, e.g. `ch00-baseline`.
    pub chapter: String,
    pub topology: Topology,
    /// Extra lines for the banner: where to look for what this chapter adds.
    pub hints: Vec<String>,
}

/// Runs the system until Ctrl-C or SIGTERM, or until a service dies.
pub async fn run(mut launch: Launch) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding this program's path")?;
    let run_dir = tempfile::Builder::new().prefix("orders-run-").tempdir()?;

    let mut nats = None;
    if launch.topology.nats_url.is_none() {
        let server = NatsServer::start(&run_dir.path().join("nats")).await?;
        eprintln!("[all] started nats-server -js on {}", server.url());
        launch.topology.nats_url = Some(server.url());
        nats = Some(server);
    }
    if launch.topology.database.is_none() {
        launch.topology.database = Some(run_dir.path().join("orders.db"));
    }

    // ANCHOR: spawn_children
    let mut children = Vec::new();
    for service in Service::ALL {
        let mut command = Command::new(&exe);
        command
            .arg(service.name())
            .args(launch.topology.to_args())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("starting {service}"))?;
        children.push((service, child));
    }
    // ANCHOR_END: spawn_children

    let outcome = tokio::select! {
        ready = wait_until_ready(&launch.topology, &mut children) => match ready {
            Ok(()) => {
                print_banner(&launch);
                supervise(&mut children).await
            }
            Err(e) => Err(e),
        },
        () = crate::shutdown::terminated() => Ok(()),
    };

    eprintln!("[all] stopping");
    for (_, child) in &mut children {
        terminate(child, Duration::from_secs(10)).await;
    }
    if let Some(mut server) = nats {
        server.stop().await?;
    }
    outcome
}

async fn wait_until_ready(
    topology: &Topology,
    children: &mut [(Service, Child)],
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for service in Service::ALL {
        loop {
            if crate::admin::is_ready(&http, topology.admin(service)).await {
                break;
            }
            for (name, child) in children.iter_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("{name} exited with {status} while starting");
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{service} was not ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM; a service exiting on its own is an error.
async fn supervise(children: &mut [(Service, Child)]) -> anyhow::Result<()> {
    let exits = children
        .iter_mut()
        .map(|(service, child)| Box::pin(async move { (*service, child.wait().await) }));
    tokio::select! {
        ((service, status), _, _) = select_all(exits) => {
            let status: std::io::Result<ExitStatus> = status;
            bail!("{service} exited unexpectedly ({})", describe(status));
        }
        () = crate::shutdown::terminated() => Ok(()),
    }
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => e.to_string(),
    }
}

fn print_banner(launch: &Launch) {
    let t = &launch.topology;
    let token = std::env::var("API_TOKEN").unwrap_or_else(|_| crate::DEFAULT_API_TOKEN.to_owned());
    eprintln!();
    eprintln!("[all] {} is ready", launch.chapter);
    eprintln!(
        "  gateway  http://{}  (gRPC callback {})",
        t.gateway_http, t.gateway_grpc
    );
    eprintln!("  logic    gRPC {}", t.logic_grpc);
    eprintln!("  nats     {}", t.nats_url());
    eprintln!("  database {}", t.database().display());
    eprintln!();
    eprintln!("Place an order:");
    eprintln!(
        "  curl -s -X POST http://{}/orders -H 'Authorization: Bearer {token}' \\\n    -H 'Content-Type: application/json' -d '{{\"user_id\":\"1001\",\"product_id\":\"A001\",\"quantity\":2}}'",
        t.gateway_http
    );
    eprintln!("Then read it back (paste the order_id):");
    eprintln!(
        "  curl -s http://{}/orders/<order_id> -H 'Authorization: Bearer {token}'",
        t.gateway_http
    );
    for hint in &launch.hints {
        eprintln!("{hint}");
    }
    eprintln!();
    eprintln!("Ctrl-C stops everything.");
}
