//! A real Prometheus server, started by a test: it scrapes a system's
//! `/metrics` and evaluates the project's rules on what it scraped, so a
//! test can ask Prometheus itself what a recording rule or a dashboard's
//! query reads, `rate()`'s extrapolation and all.
//!
//! The binary comes with Debian's `prometheus` package (the one that also
//! brings `promtool`), or from `$PROMETHEUS_BIN`. Without it a test cannot
//! run: [`binary`] fails in CI and, on a developer's machine, lets the test
//! say so and return.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::{DEADLINE, wait_for};

/// The environment variable naming a `prometheus` binary to use instead of
/// the one on `PATH`.
pub const PROMETHEUS_BIN_ENV: &str = "PROMETHEUS_BIN";

/// How often the test's Prometheus scrapes and evaluates its rules: often,
/// so a test waits seconds, not the stack's 10 s per step.
pub const INTERVAL: &str = "1s";

/// The `prometheus` to run: `$PROMETHEUS_BIN`, else `prometheus` on `PATH`.
/// When there is none: in CI (`$CI` set) a panic, since a check that did
/// not run has checked nothing; elsewhere `None`, after a line on stderr
/// saying what was not checked and how to install it.
pub fn binary(what: &str) -> Option<PathBuf> {
    let found = std::env::var_os(PROMETHEUS_BIN_ENV)
        .map(PathBuf::from)
        .or_else(|| orders::nats_server::find_on_path("prometheus"));
    if found.is_some() {
        return found;
    }
    let help = "no `prometheus` on PATH: it comes with Debian's package `prometheus` \
                (apt-get install prometheus, as .ci/run does), or set PROMETHEUS_BIN";
    assert!(
        std::env::var_os("CI").is_none(),
        "{help}; cannot check {what}"
    );
    eprintln!("NOT CHECKED: {what}: {help}");
    None
}

/// A running Prometheus, killed when dropped, with its data in a temporary
/// directory of its own.
pub struct Prometheus {
    child: Child,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`.
    base: String,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts `binary` scraping each of `targets` (a job name and the address
    /// of its `/metrics`) and evaluating `rule_files`, both every
    /// [`INTERVAL`], and waits until it is ready.
    pub async fn start(
        binary: &Path,
        targets: &[(&str, SocketAddr)],
        rule_files: &[PathBuf],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("prometheus-").tempdir()?;
        let mut config = format!(
            "global:\n  scrape_interval: {INTERVAL}\n  scrape_timeout: {INTERVAL}\n  \
             evaluation_interval: {INTERVAL}\nrule_files:\n"
        );
        for file in rule_files {
            writeln!(config, "  - {:?}", file.display().to_string())?;
        }
        config.push_str("scrape_configs:\n");
        for (job, address) in targets {
            writeln!(
                config,
                "  - job_name: {job}\n    static_configs:\n      - targets: [\"{address}\"]"
            )?;
        }
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config)?;
        let port = orders::ports::reserve()?;
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut prometheus = Self {
            child,
            dir,
            base: format!("http://{listen}"),
            http: reqwest::Client::new(),
        };
        let ready = format!("{}/-/ready", prometheus.base);
        let give_up = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(status) = prometheus.child.try_wait()? {
                bail!("prometheus exited ({status}):\n{}", prometheus.log());
            }
            let answer = prometheus.http.get(&ready).send().await;
            if answer.is_ok_and(|response| response.status().is_success()) {
                return Ok(prometheus);
            }
            if tokio::time::Instant::now() > give_up {
                bail!(
                    "prometheus not ready within {DEADLINE:?}:\n{}",
                    prometheus.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What Prometheus has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The instant vector `promql` evaluates to now, through the HTTP API:
    /// each series' labels and value.
    pub async fn query(&self, promql: &str) -> anyhow::Result<Vec<(Value, f64)>> {
        let url = format!("{}/api/v1/query", self.base);
        let answer: Value = (self
            .http
            .get(&url)
            .query(&[("query", promql)])
            .send()
            .await?)
            .json()
            .await?;
        if answer["status"] != "success" {
            bail!("{promql}: {answer}");
        }
        let mut vector = Vec::new();
        for series in answer["data"]["result"].as_array().into_iter().flatten() {
            let value = series["value"][1].as_str().context("a sample's value")?;
            vector.push((series["metric"].clone(), value.parse()?));
        }
        Ok(vector)
    }

    /// The one value `promql` evaluates to now, `None` while it has none.
    pub async fn value(&self, promql: &str) -> Option<f64> {
        match self.query(promql).await.expect("querying prometheus")[..] {
            [(_, value)] => Some(value),
            _ => None,
        }
    }

    /// Waits until every target has been scraped successfully at least once.
    pub async fn wait_until_scraped(&self, jobs: usize) {
        wait_for("prometheus to scrape every target", DEADLINE, || async {
            let up = self.query("up == 1").await.ok()?;
            (up.len() == jobs).then_some(())
        })
        .await;
    }
}
