//! `cargo xtask load --against-wrk`: what the generator costs, next to wrk.
//!
//! The generator runs on the machine it measures, so its own CPU per
//! request is taken from the system under test. wrk (a closed-loop C
//! generator: a few connections, each sending its next request when the
//! last is answered) is the yardstick for what sending a request needs. The
//! comparison sends the same requests to the same gateway: wrk first, with
//! `bench/wrk/post-orders.lua`, for the given time; then the generator for
//! the same time at the rate wrk achieved, open model as always, without
//! end-to-end sampling (wrk sends no `GET`s). Each side's CPU is its own:
//! wrk's whole process (its script reads `clock()` at the end), the
//! generator's thread (this process also receives the system's spans when
//! it started the system, which is not the generator's work).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail, ensure};

use super::schedule::{Schedule, format_duration};
use super::{Options, Target, run_measured};

/// The wrk script, relative to the workspace root.
pub const SCRIPT: &str = "bench/wrk/post-orders.lua";

/// wrk's connections (and threads): one, so that its closed loop runs at
/// a rate the system sustains with room to spare, as in a bench run.
const CONNECTIONS: u32 = 1;

/// What the script's `done()` prints at the end of a wrk run: the line
/// that starts with `wrk-cost`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WrkCost {
    /// Requests answered (any status).
    pub requests: u64,
    /// Connect, read, write and timeout errors, and answers of 400 or more.
    pub errors: u64,
    /// How long wrk sent requests.
    pub duration: Duration,
    /// User plus system CPU seconds of the whole wrk process.
    pub cpu_seconds: f64,
}

impl WrkCost {
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.duration.as_secs_f64().max(1e-9)
    }
}

/// Finds and reads the `wrk-cost requests=N errors=N duration_us=N
/// cpu_seconds=F` line in wrk's output. `None` when there is no such line
/// or one of its four fields is missing or not a number.
pub fn parse_wrk_cost(output: &str) -> Option<WrkCost> {
    let line = output.lines().find_map(|l| l.strip_prefix("wrk-cost "))?;
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    };
    Some(WrkCost {
        requests: field("requests")?.parse().ok()?,
        errors: field("errors")?.parse().ok()?,
        duration: Duration::from_micros(field("duration_us")?.parse().ok()?),
        cpu_seconds: field("cpu_seconds")?.parse().ok()?,
    })
}

/// Runs wrk with the script against `target` for `duration` (whole
/// seconds, at least one). Errors: wrk is not installed, fails, or its
/// output lacks the script's last line.
pub async fn run_wrk(root: &Path, target: &Target, duration: Duration) -> anyhow::Result<WrkCost> {
    let script = root.join(SCRIPT);
    let output = tokio::process::Command::new("wrk")
        .arg(format!("--threads={CONNECTIONS}"))
        .arg(format!("--connections={CONNECTIONS}"))
        .arg(format!("--duration={}s", duration.as_secs().max(1)))
        .arg(format!("--script={}", script.display()))
        .arg(&target.orders_url)
        .arg("--")
        .arg(&target.authorization)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    let output = match output {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("wrk is not installed (Debian and Ubuntu: `apt install wrk`)")
        }
        Err(e) => return Err(e).context("running wrk"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "wrk failed ({}): {}{}",
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    parse_wrk_cost(&stdout)
        .with_context(|| format!("no `wrk-cost` line from {}:\n{stdout}", script.display()))
}

/// Runs wrk, then the generator at wrk's rate, each for `duration`, and
/// prints both CPU costs per request and their ratio. Errors: as
/// [`run_wrk`], or the generator's.
pub async fn compare(root: &Path, target: &Target, duration: Duration) -> anyhow::Result<()> {
    println!(
        "[load] wrk, {CONNECTIONS} connection, closed loop, for {} against {}",
        format_duration(duration),
        target.orders_url
    );
    let wrk = run_wrk(root, target, duration).await?;
    ensure!(wrk.requests > 0, "wrk got no answer: {wrk:?}");
    let rate = wrk.rate();
    println!(
        "[load] the generator, open model, at wrk's {rate:.1}/s for {}",
        format_duration(duration)
    );
    let mut options = Options::new("generator");
    options.e2e_samples = 0.0;
    let schedule = Schedule::fixed(rate, duration);
    let (report, cpu) = run_measured(&schedule, target, &options).await?;
    let ours = &report.outcome;

    let per_request = |seconds: f64, requests: u64| seconds * 1e6 / requests.max(1) as f64;
    let wrk_us = per_request(wrk.cpu_seconds, wrk.requests);
    let ours_us = per_request(cpu.as_secs_f64(), ours.ok);
    println!();
    println!("| | requests | errors | rate | CPU | CPU per request |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| wrk | {} | {} | {:.1}/s | {:.3} s | {wrk_us:.1} µs |",
        wrk.requests, wrk.errors, rate, wrk.cpu_seconds
    );
    println!(
        "| generator | {} | {} | {:.1}/s | {:.3} s | {ours_us:.1} µs |",
        ours.ok,
        report.error_total(),
        report.achieved_rate(),
        cpu.as_secs_f64()
    );
    println!();
    println!(
        "[load] the generator's CPU per request is {:.2}x wrk's",
        ours_us / wrk_us.max(1e-9)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// wrk's own summary, then the script's line.
    const OUTPUT: &str = "\
Running 30s test @ http://127.0.0.1:8080/orders
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.41ms  512.01us  14.02ms   90.12%
    Req/Sec   415.53     30.18   480.00     71.00%
  12411 requests in 30.00s, 2.61MB read
Requests/sec:    413.67
Transfer/sec:     89.05KB
wrk-cost requests=12411 errors=2 duration_us=30002345 cpu_seconds=0.412000
";

    #[test]
    fn the_scripts_line_is_read_from_wrks_output() {
        let cost = parse_wrk_cost(OUTPUT).unwrap();
        assert_eq!(
            cost,
            WrkCost {
                requests: 12_411,
                errors: 2,
                duration: Duration::from_micros(30_002_345),
                cpu_seconds: 0.412,
            }
        );
        assert!((cost.rate() - 413.67).abs() < 0.01, "{}", cost.rate());
    }

    #[test]
    fn a_missing_or_broken_line_is_no_result() {
        // wrk without the script: only its own summary.
        let summary: String = OUTPUT.lines().take(8).collect::<Vec<_>>().join("\n");
        assert_eq!(parse_wrk_cost(&summary), None);
        let broken = OUTPUT.replace("cpu_seconds=0.412000", "cpu_seconds=");
        assert_eq!(parse_wrk_cost(&broken), None);
        let missing = OUTPUT.replace(" errors=2", "");
        assert_eq!(parse_wrk_cost(&missing), None);
        // A field's name must match whole: `requests_x=` is not `requests=`.
        let renamed = OUTPUT.replace("requests=12411", "requests_x=12411");
        assert_eq!(parse_wrk_cost(&renamed), None);
    }
}
