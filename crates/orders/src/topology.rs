//! Where each service listens and how the services find each other.
//!
//! Every subcommand takes the whole topology, so one set of flags or
//! environment variables describes the system whichever process reads it:
//! the `all` launcher, a single service, docker compose, or a test.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// The three services of the order system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Gateway,
    Logic,
    Task,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Gateway, Service::Logic, Service::Task];

    /// The name used everywhere: subcommand, `service.name`, log field and
    /// Prometheus `job`.
    pub fn name(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::Logic => "logic",
            Service::Task => "task",
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// Addresses of the system. Defaults are the ports of the book.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Where the gateway serves the public HTTP API.
    #[arg(long, env = "GATEWAY_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub gateway_http: SocketAddr,
    /// Where the gateway serves the gRPC callback `PushResult`.
    #[arg(long, env = "GATEWAY_GRPC_ADDR", default_value = "127.0.0.1:9091")]
    pub gateway_grpc: SocketAddr,
    /// Where logic serves gRPC `OrderService`.
    #[arg(long, env = "LOGIC_GRPC_ADDR", default_value = "127.0.0.1:9092")]
    pub logic_grpc: SocketAddr,
    /// The gateway's admin port: /healthz and /readyz, and whatever the
    /// chapter adds there (/metrics, /debug/pprof/*); never the public one.
    #[arg(long, env = "GATEWAY_ADMIN_ADDR", default_value = "127.0.0.1:9101")]
    pub gateway_admin: SocketAddr,
    /// Logic's admin port (as the gateway's).
    #[arg(long, env = "LOGIC_ADMIN_ADDR", default_value = "127.0.0.1:9102")]
    pub logic_admin: SocketAddr,
    /// Task's admin port (as the gateway's).
    #[arg(long, env = "TASK_ADMIN_ADDR", default_value = "127.0.0.1:9103")]
    pub task_admin: SocketAddr,
    /// URL the gateway dials for logic [default: http:// + --logic-grpc].
    #[arg(long, env = "LOGIC_URL")]
    pub logic_url: Option<String>,
    /// URL task dials for the gateway's callback [default: http:// + --gateway-grpc].
    #[arg(long, env = "GATEWAY_CALLBACK_URL")]
    pub gateway_callback_url: Option<String>,
    /// NATS server [default: nats://127.0.0.1:4222; `all` starts its own when unset].
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// Logic's SQLite file [default: orders.db; `all` uses a temporary directory when unset].
    #[arg(long, env = "ORDERS_DB")]
    pub database: Option<PathBuf>,
}

impl Default for Topology {
    fn default() -> Self {
        let local = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        Self {
            gateway_http: local(8080),
            gateway_grpc: local(9091),
            logic_grpc: local(9092),
            gateway_admin: local(9101),
            logic_admin: local(9102),
            task_admin: local(9103),
            logic_url: None,
            gateway_callback_url: None,
            nats_url: None,
            database: None,
        }
    }
}

impl Topology {
    /// A topology on loopback ports reserved for this process (see
    /// [`crate::ports`]), for systems that run side by side.
    pub fn on_free_ports() -> std::io::Result<Self> {
        let free = || -> std::io::Result<SocketAddr> {
            Ok(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                crate::ports::reserve()?,
            ))
        };
        Ok(Self {
            gateway_http: free()?,
            gateway_grpc: free()?,
            logic_grpc: free()?,
            gateway_admin: free()?,
            logic_admin: free()?,
            task_admin: free()?,
            ..Self::default()
        })
    }

    pub fn logic_url(&self) -> String {
        self.logic_url
            .clone()
            .unwrap_or_else(|| dial_url(self.logic_grpc))
    }

    pub fn gateway_callback_url(&self) -> String {
        self.gateway_callback_url
            .clone()
            .unwrap_or_else(|| dial_url(self.gateway_grpc))
    }

    pub fn nats_url(&self) -> String {
        self.nats_url
            .clone()
            .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned())
    }

    pub fn database(&self) -> PathBuf {
        self.database.clone().unwrap_or_else(|| "orders.db".into())
    }

    pub fn admin(&self, service: Service) -> SocketAddr {
        match service {
            Service::Gateway => self.gateway_admin,
            Service::Logic => self.logic_admin,
            Service::Task => self.task_admin,
        }
    }

    /// The flags that make a child process see this same topology.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--gateway-http={}", self.gateway_http),
            format!("--gateway-grpc={}", self.gateway_grpc),
            format!("--logic-grpc={}", self.logic_grpc),
            format!("--gateway-admin={}", self.gateway_admin),
            format!("--logic-admin={}", self.logic_admin),
            format!("--task-admin={}", self.task_admin),
        ];
        let optional = [
            ("--logic-url", self.logic_url.clone()),
            ("--gateway-callback-url", self.gateway_callback_url.clone()),
            ("--nats-url", self.nats_url.clone()),
            (
                "--database",
                self.database.as_ref().map(|p| p.display().to_string()),
            ),
        ];
        for (flag, value) in optional {
            if let Some(value) = value {
                args.push(format!("{flag}={value}"));
            }
        }
        args
    }
}

/// `http://host:port` for a listen address; an unspecified address
/// (`0.0.0.0`) is dialled on loopback.
fn dial_url(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        addr.ip()
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        topology: Topology,
    }

    #[test]
    fn flags_round_trip() {
        let mut topology = Topology::on_free_ports().unwrap();
        topology.nats_url = Some("nats://127.0.0.1:4333".into());
        topology.database = Some("/tmp/x.db".into());
        let parsed = Cli::parse_from(std::iter::once("cli".to_owned()).chain(topology.to_args()));
        assert_eq!(parsed.topology, topology);
    }

    #[test]
    fn unspecified_listen_addresses_are_dialled_on_loopback() {
        let topology = Topology {
            logic_grpc: "0.0.0.0:9092".parse().unwrap(),
            ..Topology::default()
        };
        assert_eq!(topology.logic_url(), "http://127.0.0.1:9092");
    }
}
