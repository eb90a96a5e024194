//! A chapter's whole system as `load --start` and `bench` run it: built by
//! cargo, started as `<binary> all` on free ports with its own nats-server
//! and database, its spans sent to a receiver in this process, and stopped
//! with SIGTERM as an operator would.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use orders::topology::{Service, Topology};
use testkit::OtlpReceiver;
use tokio::process::{Child, Command};
use tokio::time::Instant;

const READY_DEADLINE: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(15);

/// The bearer token the systems run with: `$API_TOKEN`, else the book's.
pub fn api_token() -> String {
    std::env::var("API_TOKEN").unwrap_or_else(|_| orders::DEFAULT_API_TOKEN.to_owned())
}

/// The name of the binary `package` builds: the package's own, but for
/// `final`, whose binary is `orders-final` so that its crate is
/// `orders_final` (a crate named `final` would be `r#final` in every module
/// path, so in every log line's `target`): see `final/Cargo.toml`.
pub fn binary_name(package: &str) -> &str {
    match package {
        "final" => "orders-final",
        package => package,
    }
}

/// Builds the packages in one cargo run and returns their binaries.
pub fn build(root: &Path, packages: &[&str], release: bool) -> anyhow::Result<Vec<PathBuf>> {
    let profile = if release { "release" } else { "debug" };
    println!("[xtask] building {} ({profile})", packages.join(", "));
    let mut command = crate::cargo(root);
    command.arg("build");
    if release {
        command.arg("--release");
    }
    for package in packages {
        command.args(["--package", package]);
    }
    let status = command.status().context("running cargo build")?;
    ensure!(status.success(), "cargo build failed ({status})");
    packages
        .iter()
        .map(|package| {
            let binary = crate::target_dir(root)
                .join(profile)
                .join(binary_name(package));
            ensure!(
                binary.is_file(),
                "built {package}, but found no binary at {}",
                binary.display()
            );
            Ok(binary)
        })
        .collect()
}

/// Where the system's stdout (its logs, in chapters that write them) goes.
pub enum Output {
    /// To ours.
    Inherit,
    /// Into this file, truncated first; stderr into the same name with the
    /// extension `stderr.log`.
    File(PathBuf),
}

/// A running system.
pub struct System {
    pub package: String,
    pub topology: Topology,
    child: Child,
    /// Counts the spans and keeps none ([`OtlpReceiver::counting`]).
    spans: OtlpReceiver,
    http: reqwest::Client,
}

impl System {
    /// Starts `<binary> all` on free ports and waits until all three
    /// services are ready.
    pub async fn start(
        package: &str,
        binary: &Path,
        nats_server: &Path,
        output: Output,
    ) -> anyhow::Result<Self> {
        let topology = Topology::on_free_ports()?;
        let spans = OtlpReceiver::counting().await?;
        let create = |path: &Path| -> anyhow::Result<Stdio> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            Ok(Stdio::from(file))
        };
        let (stdout, stderr, stderr_path) = match &output {
            Output::Inherit => (Stdio::inherit(), Stdio::inherit(), None),
            Output::File(path) => {
                let stderr_path = path.with_extension("stderr.log");
                (create(path)?, create(&stderr_path)?, Some(stderr_path))
            }
        };
        let mut command = Command::new(binary);
        command
            .arg("all")
            .args(topology.to_args())
            .env("NATS_SERVER_BIN", nats_server)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", spans.endpoint())
            // State or settings from the caller's shell would make runs
            // differ: each system owns its nats-server and database, and
            // logs at its default levels.
            .env_remove("NATS_URL")
            .env_remove("ORDERS_DB")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true);
        orders::launcher::die_with_parent(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut system = Self {
            package: package.to_owned(),
            topology,
            child,
            spans,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        };
        if let Err(e) = system.wait_until_ready().await {
            let stderr = stderr_path
                .and_then(|path| std::fs::read_to_string(path).ok())
                .unwrap_or_default();
            let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(e.context(format!("its stderr ended with:\n{}", tail.join("\n"))));
        }
        Ok(system)
    }

    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_DEADLINE;
        for service in Service::ALL {
            while !orders::admin::is_ready(&self.http, self.topology.admin(service)).await {
                if let Some(status) = self.child.try_wait()? {
                    bail!("{} exited with {status} while starting", self.package);
                }
                ensure!(
                    Instant::now() < deadline,
                    "{service} of {} was not ready within {} s",
                    self.package,
                    READY_DEADLINE.as_secs()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// The launcher's process id; the services are its children.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The count of spans received, which goes on counting until the
    /// system has stopped (stopping flushes the last batches).
    pub fn span_counter(&self) -> Arc<AtomicU64> {
        self.spans.span_counter()
    }

    /// The gateway's `/metrics` text, when it has metrics.
    pub async fn gateway_metrics(&self) -> Option<String> {
        self.admin_get(Service::Gateway, "/metrics", Duration::from_secs(5))
            .await
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
    }

    /// `GET http://<admin of service><path>`; an error unless it is 2xx.
    pub async fn admin_get(
        &self,
        service: Service,
        path: &str,
        timeout: Duration,
    ) -> anyhow::Result<Vec<u8>> {
        let url = format!("http://{}{path}", self.topology.admin(service));
        let response = self
            .http
            .get(&url)
            .timeout(timeout)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?
            .error_for_status()?;
        Ok(response.bytes().await?.to_vec())
    }

    /// Stops the system with SIGTERM and waits for it; kills it if it does
    /// not stop within the grace period.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let Some(pid) = self.child.id() else {
            bail!("{} had already exited", self.package);
        };
        let _ = kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGTERM);
        match tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => bail!("{} exited with {status} on SIGTERM", self.package),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                orders::launcher::terminate(&mut self.child, Duration::from_secs(1)).await;
                bail!(
                    "{} did not stop within {} s of SIGTERM; killed it",
                    self.package,
                    STOP_GRACE.as_secs()
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mapping says what `final/Cargo.toml` says.
    #[test]
    fn the_binary_of_final_is_the_one_its_manifest_names() {
        let manifest =
            std::fs::read_to_string(crate::workspace_root().join("final/Cargo.toml")).unwrap();
        let declared = format!("[[bin]]\nname = \"{}\"", binary_name("final"));
        assert!(manifest.contains(&declared), "{manifest}");
        assert_eq!(binary_name("ch05-profiling"), "ch05-profiling");
    }
}
