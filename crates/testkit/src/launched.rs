//! `all` as `cargo run` starts it: the launcher, its banner on stderr, and
//! the services' output on stdout, kept apart.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use crate::{DEADLINE, Service, Topology, wait_for};

/// The line the banner ends with.
const BANNER_END: &str = "Ctrl-C stops everything";

/// A running `all`: the launcher process, its banner, and every line the
/// services have written to stdout so far.
pub struct Launched {
    pub child: Child,
    /// The launcher's stderr up to and including [`BANNER_END`].
    pub banner: String,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Launched {
    /// Starts `binary all` on `topology` with the flags `args` and the
    /// variables `env` (no `NATS_URL`, so it starts its own nats-server; no
    /// `API_TOKEN` unless `env` sets it), and waits up to 60 s for the
    /// banner. Panics if the launcher exits first or the banner never ends.
    pub async fn start(
        binary: &std::ffi::OsStr,
        topology: &Topology,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = tokio::process::Command::new(binary)
            .arg("all")
            .args(topology.to_args())
            .args(args)
            .env_remove("NATS_URL")
            .env_remove("API_TOKEN")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting the launcher");

        let stdout = Arc::new(Mutex::new(Vec::new()));
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let kept = stdout.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                kept.lock().unwrap().push(line);
            }
        });

        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut banner = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = err.next_line().await {
                let end = line.contains(BANNER_END);
                banner.push(line);
                if end {
                    return true;
                }
            }
            false
        })
        .await;
        let banner = banner.join("\n");
        match ended {
            Ok(true) => {}
            Ok(false) => panic!("the launcher exited before its banner ended:\n{banner}"),
            Err(_) => panic!("no end of the banner within 60 s:\n{banner}"),
        }
        // Keep draining stderr, so that a full pipe never blocks the launcher.
        tokio::spawn(async move { while let Ok(Some(_)) = err.next_line().await {} });
        Self {
            child,
            banner,
            stdout,
        }
    }

    /// The lines the services wrote to stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits (up to [`DEADLINE`]) until each service has written a line to
    /// stdout, then checks that every line there is one JSON object: what
    /// `cargo run -p <chapter> | jq` needs. Panics naming the first line
    /// that is not.
    pub async fn stdout_is_json_lines_of_every_service(&self) {
        wait_for("a line of every service on stdout", DEADLINE, || {
            let lines = self.stdout();
            async move {
                Service::ALL
                    .iter()
                    .all(|service| {
                        let field = format!("\"service\":\"{service}\"");
                        lines.iter().any(|line| line.contains(&field))
                    })
                    .then_some(())
            }
        })
        .await;
        for line in self.stdout() {
            crate::logs::parse(&line).unwrap_or_else(|e| panic!("stdout is not JSON lines: {e}"));
        }
    }
}
