//! `cargo xtask load`: an open-model load generator for the gateway.
//!
//! Requests leave on a fixed schedule whatever the responses do, and each
//! latency is counted from the instant its request was scheduled, so an
//! overloaded system cannot hide its queue (see [`drive`]). The profiles
//! and their `LOAD_*` variables are those of the Go demo's k6 script, with
//! the same defaults: `fixed` (5/s for 10m), `wave` and `weekday`.
//!
//! While it runs it shows progress; at the end it prints a summary table
//! and writes the whole result as JSON under `bench/results/`.

pub mod drive;
pub mod report;
pub mod schedule;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use clap::ValueEnum;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use testkit::exposition::{Sample, samples};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::launch;
use drive::{Tick, histogram, record};
use report::{EndToEnd, Report};
use schedule::{Schedule, parse_duration};

/// The k6 script's weekday curve: a morning climb, a lunch dip, an
/// afternoon peak and the evening fall (requests per second).
pub const DEFAULT_WEEKDAY_PATTERN: &str = "80,120,180,260,360,500,680,820,760,690,620,560,620,720,840,980,1120,1020,900,780,660,520,400,300,220,150";

/// How often a sampled order is polled for its outcome at first: every
/// 2 ms, then every tenth of the time it has waited so far, at most every
/// 100 ms. The end-to-end figures are exact to within 2 ms or 10%, and a
/// backlog of slow orders does not turn into a flood of polls.
pub const E2E_POLL: Duration = Duration::from_millis(2);
const E2E_POLL_MAX: Duration = Duration::from_millis(100);
/// At most this many orders are followed at once.
const E2E_FOLLOWED: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// A constant rate (`LOAD_RATE`) for `LOAD_DURATION`.
    Fixed,
    /// Cycles between a low and a high rate, ramping between them.
    Wave,
    /// A working day's curve, step by step.
    Weekday,
}

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Load profile.
    #[arg(long, env = "LOAD_PROFILE", value_enum, default_value_t = Profile::Fixed)]
    pub profile: Profile,
    /// fixed: requests per second.
    #[arg(long, env = "LOAD_RATE", default_value_t = 5.0)]
    pub rate: f64,
    /// fixed: how long (`30s`, `10m`, `1h`, `1m30s`).
    #[arg(long, env = "LOAD_DURATION", default_value = "10m", value_parser = parse_duration)]
    pub duration: Duration,
    /// wave: the low rate, where it starts.
    #[arg(long, env = "LOAD_WAVE_LOW_RATE", default_value_t = 80.0)]
    pub wave_low_rate: f64,
    /// wave: the high rate.
    #[arg(long, env = "LOAD_WAVE_HIGH_RATE", default_value_t = 300.0)]
    pub wave_high_rate: f64,
    /// wave: how many low-high-low cycles.
    #[arg(long, env = "LOAD_WAVE_CYCLES", default_value_t = 6)]
    pub wave_cycles: u32,
    /// wave: how long each ramp between the rates takes.
    #[arg(long, env = "LOAD_WAVE_RAMP", default_value = "2m", value_parser = parse_duration)]
    pub wave_ramp: Duration,
    /// wave: how long each rate is held.
    #[arg(long, env = "LOAD_WAVE_HOLD", default_value = "8m", value_parser = parse_duration)]
    pub wave_hold: Duration,
    /// weekday: the rates of the curve, comma-separated.
    #[arg(long, env = "LOAD_WEEKDAY_PATTERN", default_value = DEFAULT_WEEKDAY_PATTERN)]
    pub weekday_pattern: String,
    /// weekday: how long the move to each rate of the curve takes.
    #[arg(long, env = "LOAD_WEEKDAY_STEP", default_value = "5m", value_parser = parse_duration)]
    pub weekday_step: Duration,
    /// weekday: how many times through the curve.
    #[arg(long, env = "LOAD_WEEKDAY_CYCLES", default_value_t = 2)]
    pub weekday_cycles: u32,
    /// Where to POST orders.
    #[arg(long, env = "LOAD_URL", default_value = "http://localhost:8080/orders")]
    pub url: String,
    /// The Authorization header sent with every request.
    #[arg(
        long,
        env = "LOAD_AUTH",
        default_value = "Bearer demo-token",
        hide_env_values = true
    )]
    pub auth: String,
    /// Products ordered, in turn, comma-separated.
    #[arg(long, env = "LOAD_PRODUCTS", default_value = "A001,B001,C001,D001")]
    pub products: String,
    /// At most this many requests wait for an answer at once; a request due
    /// when the cap is reached is not sent and counts as an error
    /// ("dropped"), so the schedule never slows down. k6's `LOAD_MAX_VUS`.
    #[arg(long, env = "LOAD_MAX_VUS", default_value_t = 2000)]
    pub max_in_flight: usize,
    /// How long one request may take before it counts as a timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// How many accepted orders per second are followed to completion with
    /// `GET /orders/{id}` (each polled every 2 ms); 0 turns it off.
    #[arg(long, default_value_t = 10.0)]
    pub e2e_samples: f64,
    /// Instead of the gateway at --url, build this chapter package, start
    /// it on free ports, load it, and stop it.
    #[arg(long, value_name = "PACKAGE")]
    pub start: Option<String>,
    /// With --start: build in release mode.
    #[arg(long, requires = "start")]
    pub release: bool,
    /// Where the JSON result goes (relative to the workspace root).
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
}

impl Args {
    pub fn schedule(&self) -> anyhow::Result<Schedule> {
        let positive = |what: &str, rate: f64| {
            ensure!(
                rate.is_finite() && rate > 0.0,
                "{what} must be a positive rate, not {rate}"
            );
            Ok(())
        };
        Ok(match self.profile {
            Profile::Fixed => {
                positive("LOAD_RATE", self.rate)?;
                Schedule::fixed(self.rate, self.duration)
            }
            Profile::Wave => {
                positive("LOAD_WAVE_LOW_RATE", self.wave_low_rate)?;
                positive("LOAD_WAVE_HIGH_RATE", self.wave_high_rate)?;
                Schedule::wave(
                    self.wave_low_rate,
                    self.wave_high_rate,
                    self.wave_cycles,
                    self.wave_ramp,
                    self.wave_hold,
                )
            }
            Profile::Weekday => {
                let pattern = parse_pattern(&self.weekday_pattern)?;
                Schedule::weekday(&pattern, self.weekday_step, self.weekday_cycles)
            }
        })
    }
}

/// `80,120,180` as rates; every one must be positive.
fn parse_pattern(text: &str) -> anyhow::Result<Vec<f64>> {
    let rates = text
        .split(',')
        .map(|item| {
            let rate: f64 = item
                .trim()
                .parse()
                .with_context(|| format!("LOAD_WEEKDAY_PATTERN: {item:?} is not a number"))?;
            ensure!(
                rate > 0.0,
                "LOAD_WEEKDAY_PATTERN: {rate} is not a positive rate"
            );
            Ok(rate)
        })
        .collect::<anyhow::Result<Vec<f64>>>()?;
    ensure!(!rates.is_empty(), "LOAD_WEEKDAY_PATTERN is empty");
    Ok(rates)
}

/// Where the requests go.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port/orders`.
    pub orders_url: String,
    /// The whole `Authorization` header value.
    pub authorization: String,
    pub products: Vec<String>,
}

/// How the runner behaves.
#[derive(Debug, Clone)]
pub struct Options {
    pub max_in_flight: usize,
    pub timeout: Duration,
    /// Orders followed to completion per second.
    pub e2e_samples: f64,
    /// How long a sampled order may take to leave `created`.
    pub e2e_deadline: Duration,
    /// Shown before the progress line.
    pub label: String,
    /// Whether to show the progress line at all.
    pub progress: bool,
    /// Set to stop the schedule early (Ctrl-C); the run then reports what
    /// it has.
    pub stop: Arc<AtomicBool>,
}

impl Options {
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            max_in_flight: 2000,
            timeout: Duration::from_secs(5),
            e2e_samples: 10.0,
            e2e_deadline: Duration::from_secs(30),
            label: label.into(),
            progress: true,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// `cargo xtask load`.
pub async fn run(root: &Path, args: &Args) -> anyhow::Result<()> {
    let schedule = args.schedule()?;
    let products: Vec<String> = args
        .products
        .split(',')
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    ensure!(!products.is_empty(), "LOAD_PRODUCTS names no product");
    let mut options = Options::new("load");
    options.max_in_flight = args.max_in_flight;
    options.timeout = args.timeout;
    options.e2e_samples = args.e2e_samples;
    let stop = options.stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\n[load] Ctrl-C: stopping the schedule, waiting for the answers");
            stop.store(true, Ordering::Relaxed);
        }
    });

    let mut report = match &args.start {
        None => {
            let target = Target {
                orders_url: args.url.clone(),
                authorization: args.auth.clone(),
                products,
            };
            check_reachable(&target.orders_url).await?;
            println!(
                "[load] {} ({} requests) against {}",
                schedule.describe(),
                schedule.planned(),
                target.orders_url
            );
            run_schedule(&schedule, &target, &options).await?
        }
        Some(package) => {
            let nats_server = crate::provision::nats_server()?;
            let binary = launch::build(root, &[package.as_str()], args.release)?.remove(0);
            let system =
                launch::System::start(package, &binary, &nats_server, launch::Output::Inherit)
                    .await?;
            let target = Target {
                orders_url: format!("http://{}/orders", system.topology.gateway_http),
                authorization: format!("Bearer {}", launch::api_token()),
                products,
            };
            println!(
                "[load] {} ({} requests) against {package} at {}",
                schedule.describe(),
                schedule.planned(),
                target.orders_url
            );
            let before = system.gateway_metrics().await;
            let outcome = run_schedule(&schedule, &target, &options).await;
            let after = system.gateway_metrics().await;
            let stopped = system.stop().await;
            let mut report = outcome?;
            stopped?;
            report.gateway_completion = completion_between(before.as_deref(), after.as_deref());
            report
        }
    };
    if args.profile != Profile::Fixed {
        report.profile = format!("{}: {}", profile_name(args.profile), report.profile);
    }
    println!();
    print!("{}", report.table());
    let path = write_result(&root.join(&args.out), "load", &report.to_json())?;
    println!("[load] result written to {}", path.display());
    Ok(())
}

/// Fails at once, with what to do, when nothing answers HTTP at `url`:
/// otherwise a user who forgot to start a system would watch ten minutes
/// of connection errors. Any answer will do (a `GET` on `/orders` is a
/// 405); only the connection is checked, and no order is placed.
async fn check_reachable(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    if let Err(error) = client.get(url).send().await {
        anyhow::bail!(
            "nothing answers at {url} ({}). Start a system first (`cargo run -p final`, or \
             `docker compose up`), point --url / LOAD_URL at one, or let the load generator \
             start one: `cargo xtask load --start final --release`",
            error_kind(&error)
        );
    }
    Ok(())
}

fn profile_name(profile: Profile) -> &'static str {
    match profile {
        Profile::Fixed => "fixed",
        Profile::Wave => "wave",
        Profile::Weekday => "weekday",
    }
}

/// Runs `schedule` against `target`: POSTs an order at each scheduled
/// instant, follows a sample of the accepted ones to completion, shows
/// progress, and returns the report once every answer is in.
pub async fn run_schedule(
    schedule: &Schedule,
    target: &Target,
    options: &Options,
) -> anyhow::Result<Report> {
    let started_at = utc_stamp(std::time::SystemTime::now());
    let client = reqwest::Client::builder()
        .timeout(options.timeout)
        .pool_max_idle_per_host(usize::MAX)
        .tcp_nodelay(true)
        .build()?;
    let sampler = Arc::new(Mutex::new(Sampler {
        latency: histogram(),
        outcomes: BTreeMap::new(),
        sampled: 0,
        active: 0,
        last: None,
        polls: Vec::new(),
    }));
    let gap = if options.e2e_samples > 0.0 {
        Some(Duration::from_secs_f64(1.0 / options.e2e_samples))
    } else {
        None
    };
    let products: Arc<[String]> = target.products.clone().into();
    let send = |i: u64| {
        let client = client.clone();
        let url = target.orders_url.clone();
        let authorization = target.authorization.clone();
        let product = products[(i % products.len() as u64) as usize].clone();
        let sampler = sampler.clone();
        let deadline = options.e2e_deadline;
        async move {
            let body = json!({
                "user_id": format!("load_user_{}", i % 10_000),
                "product_id": product,
                "quantity": 1,
            });
            let response = client
                .post(&url)
                .header(reqwest::header::AUTHORIZATION, &authorization)
                .json(&body)
                .send()
                .await
                .map_err(|e| error_kind(&e))?;
            let status = response.status();
            let bytes = response.bytes().await.map_err(|e| error_kind(&e))?;
            if status != reqwest::StatusCode::CREATED {
                return Err(format!("http {}", status.as_u16()));
            }
            let accepted = Instant::now();
            if let Some(gap) = gap {
                let take = {
                    let mut s = sampler.lock().unwrap();
                    let due = s
                        .last
                        .is_none_or(|last| accepted.duration_since(last) >= gap)
                        && s.active < E2E_FOLLOWED;
                    let order_id = serde_json::from_slice::<Value>(&bytes)
                        .ok()
                        .and_then(|v| v["order_id"].as_str().map(str::to_owned))
                        .filter(|_| due);
                    if order_id.is_some() {
                        s.last = Some(accepted);
                        s.sampled += 1;
                        s.active += 1;
                    }
                    order_id
                };
                if let Some(order_id) = take {
                    let poll = tokio::spawn(follow(
                        client,
                        format!("{url}/{order_id}"),
                        authorization,
                        accepted,
                        deadline,
                        sampler.clone(),
                    ));
                    sampler.lock().unwrap().polls.push(poll);
                }
            }
            Ok(())
        }
    };

    let progress = Progress::new(&options.label, schedule, options.progress);
    let stop = options.stop.clone();
    let outcome = drive::drive(
        schedule,
        options.max_in_flight,
        send,
        |tick| progress.show(tick),
        &stop,
    )
    .await;
    progress.finish();

    // The sampled orders still on their way.
    let polls = std::mem::take(&mut sampler.lock().unwrap().polls);
    for poll in polls {
        let _ = poll.await;
    }
    let sampler = sampler.lock().unwrap();
    let duration = if stop.load(Ordering::Relaxed) {
        outcome.elapsed.min(schedule.duration())
    } else {
        schedule.duration()
    };
    Ok(Report {
        profile: schedule.describe(),
        url: target.orders_url.clone(),
        duration,
        outcome,
        e2e: EndToEnd {
            latency: sampler.latency.clone(),
            outcomes: sampler.outcomes.clone(),
            sampled: sampler.sampled,
            poll_interval: E2E_POLL,
        },
        gateway_completion: None,
        started_at,
    })
}

/// The orders followed to completion.
struct Sampler {
    latency: Histogram<u64>,
    outcomes: BTreeMap<String, u64>,
    sampled: u64,
    /// Being followed now.
    active: usize,
    last: Option<Instant>,
    polls: Vec<JoinHandle<()>>,
}

/// Polls one order until it is no longer `created`, and records how long
/// after its acceptance the poll that saw it was sent.
async fn follow(
    client: reqwest::Client,
    url: String,
    authorization: String,
    accepted: Instant,
    deadline: Duration,
    sampler: Arc<Mutex<Sampler>>,
) {
    let give_up = accepted + deadline;
    let mut errors = 0;
    let outcome = loop {
        let waited = accepted.elapsed();
        tokio::time::sleep((waited / 10).clamp(E2E_POLL, E2E_POLL_MAX)).await;
        if Instant::now() > give_up {
            break "unfinished".to_owned();
        }
        let asked = Instant::now();
        let answer = client
            .get(&url)
            .header(reqwest::header::AUTHORIZATION, &authorization)
            .send()
            .await;
        let status = match answer {
            Ok(response) if response.status().is_success() => response
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["status"].as_str().map(str::to_owned)),
            _ => None,
        };
        match status.as_deref() {
            Some("created") => {}
            Some(done) => {
                record(
                    &mut sampler.lock().unwrap().latency,
                    asked.duration_since(accepted),
                );
                break done.to_owned();
            }
            None => errors += 1,
        }
    };
    let mut s = sampler.lock().unwrap();
    s.active -= 1;
    *s.outcomes.entry(outcome).or_default() += 1;
    if errors > 0 {
        *s.outcomes.entry("poll errors".to_owned()).or_default() += errors;
    }
}

/// The kind of a request that got no HTTP answer.
fn error_kind(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timeout".to_owned()
    } else if error.is_connect() {
        "connect error".to_owned()
    } else {
        "transport error".to_owned()
    }
}

/// The progress line: a bar, elapsed time, target and achieved rate,
/// errors and the p99 of the last second. On a terminal it redraws in
/// place; otherwise (a log, CI) it prints a line every ten seconds.
struct Progress {
    label: String,
    total: Duration,
    terminal: bool,
    enabled: bool,
}

impl Progress {
    fn new(label: &str, schedule: &Schedule, enabled: bool) -> Self {
        Self {
            label: label.to_owned(),
            total: schedule.duration(),
            terminal: std::io::stderr().is_terminal(),
            enabled,
        }
    }

    fn show(&self, tick: &Tick) {
        if !self.enabled {
            return;
        }
        let line = self.line(tick);
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r{line}\x1b[K");
            let _ = err.flush();
        } else if (tick.at.round() as u64).is_multiple_of(5) {
            let _ = writeln!(err, "{line}");
        }
    }

    fn line(&self, tick: &Tick) -> String {
        let total = self.total.as_secs_f64().max(1e-9);
        let done = (tick.at / total).clamp(0.0, 1.0);
        let width = 20;
        let filled = (done * width as f64).round() as usize;
        let clock = |s: f64| format!("{:02}:{:02}", (s / 60.0) as u64, (s % 60.0) as u64);
        format!(
            "[{}] [{}{}] {}/{}  target {}/s  achieved {}/s  errors {}  p99 {}  in flight {}",
            self.label,
            "#".repeat(filled),
            "-".repeat(width - filled),
            clock(tick.at),
            clock(total),
            schedule::trim(tick.target_rate.round()),
            tick.ok,
            tick.total_errors,
            tick.p99_ms.map_or("-".to_owned(), report::ms),
            tick.in_flight,
        )
    }

    fn finish(&self) {
        if self.enabled && self.terminal {
            eprintln!();
        }
    }
}

/// The percentiles of the gateway's `order_completion_seconds` between two
/// scrapes of its `/metrics`, when it has that histogram.
pub fn completion_between(
    before: Option<&str>,
    after: Option<&str>,
) -> Option<BTreeMap<String, f64>> {
    let name = "order_completion_seconds";
    let after = samples(after?).ok()?;
    let before = before
        .and_then(|text| samples(text).ok())
        .unwrap_or_default();
    let mut delta: Vec<Sample> = after
        .into_iter()
        .filter(|s| s.name.starts_with(name))
        .collect();
    for sample in &mut delta {
        if let Some(old) = before
            .iter()
            .find(|b| b.name == sample.name && b.labels == sample.labels)
        {
            sample.value -= old.value;
        }
    }
    let count = crate::show::sum(&delta, &format!("{name}_count"), &[]);
    if count <= 0.0 {
        return None;
    }
    let mut out = BTreeMap::from([("count".to_owned(), count)]);
    for (key, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        let value = crate::show::quantile(&delta, name, &[], q)?;
        out.insert(key.to_owned(), report::round(value * 1e3));
    }
    Some(out)
}

/// Writes `<dir>/<kind>-<stamp>.json` and a copy as `<kind>-latest.json`;
/// returns the first.
pub fn write_result(dir: &Path, kind: &str, value: &Value) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stamp = utc_stamp(std::time::SystemTime::now());
    let path = dir.join(format!("{kind}-{stamp}.json"));
    let text = serde_json::to_string_pretty(value)? + "\n";
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::write(dir.join(format!("{kind}-latest.json")), &text)?;
    Ok(path)
}

/// `20250314T092653Z`: UTC, sortable, safe in a file name.
pub fn utc_stamp(time: std::time::SystemTime) -> String {
    let seconds = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn the_defaults_are_the_k6_scripts() {
        // Only flags here: the LOAD_* variables of the shell running the
        // test would change the defaults.
        let cli = Cli::parse_from(["load"]);
        let args = cli.args;
        if std::env::vars().any(|(k, _)| k.starts_with("LOAD_")) {
            return;
        }
        assert_eq!(args.profile, Profile::Fixed);
        assert_eq!(
            args.schedule().unwrap(),
            Schedule::fixed(5.0, Duration::from_secs(600))
        );
        assert_eq!(args.url, "http://localhost:8080/orders");
        assert_eq!(args.auth, "Bearer demo-token");
        let wave = Cli::parse_from(["load", "--profile", "wave"])
            .args
            .schedule()
            .unwrap();
        assert_eq!(
            wave,
            Schedule::wave(
                80.0,
                300.0,
                6,
                Duration::from_secs(120),
                Duration::from_secs(480)
            )
        );
        let weekday = Cli::parse_from(["load", "--profile=weekday", "--weekday-step=3m"])
            .args
            .schedule()
            .unwrap();
        assert_eq!(weekday.stages.len(), 52);
        assert_eq!(weekday.duration(), Duration::from_secs(52 * 180));
        assert!(parse_pattern("1,x").is_err());
        assert!(parse_pattern("1,0").is_err());
    }

    #[test]
    fn stamps_are_utc_and_sortable() {
        let at = |s: u64| std::time::UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(utc_stamp(at(0)), "19700101T000000Z");
        assert_eq!(utc_stamp(at(951_782_400)), "20000229T000000Z");
        assert_eq!(utc_stamp(at(1_741_944_413)), "20250314T092653Z");
    }

    #[test]
    fn the_gateway_histogram_counts_only_the_run() {
        let text = |bucket_1: u64, bucket_inf: u64| {
            format!(
                "order_completion_seconds_bucket{{le=\"0.01\"}} {bucket_1}\n\
                 order_completion_seconds_bucket{{le=\"0.1\"}} {bucket_inf}\n\
                 order_completion_seconds_bucket{{le=\"+Inf\"}} {bucket_inf}\n\
                 order_completion_seconds_count {bucket_inf}\n"
            )
        };
        // Before: 10 slow orders; during the run: 100 fast ones.
        let before = text(0, 10);
        let after = text(100, 110);
        let p = completion_between(Some(&before), Some(&after)).unwrap();
        assert_eq!(p["count"], 100.0);
        assert!(p["p99"] <= 10.0, "{p:?}");
        assert_eq!(completion_between(None, Some("up 1\n")), None);
        assert_eq!(completion_between(Some(&before), None), None);
    }

    /// With nothing listening, `load` stops before its schedule and says
    /// how to start a system.
    #[tokio::test]
    async fn a_gateway_that_is_not_running_is_reported_before_the_load() {
        let port = orders::ports::reserve().unwrap();
        let url = format!("http://127.0.0.1:{port}/orders");
        let error = check_reachable(&url).await.unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("nothing answers at {url}")),
            "{error}"
        );
        assert!(error.contains("cargo xtask load --start final"), "{error}");
    }

    /// A short real run: 2 s at 20 orders/s against chapter 00, every
    /// order accepted and the sampled ones completed. Counts only; the
    /// figures belong to the benchmark.
    #[tokio::test]
    async fn a_short_run_against_chapter_00_ends_without_errors() {
        let package = crate::bench::BASELINE;
        let binary = crate::target_dir(&crate::workspace_root())
            .join("debug")
            .join(package);
        assert!(
            binary.is_file() || std::env::var_os(testkit::system::CHAPTER_BIN_ENV).is_some(),
            "{} is missing: build it first with `cargo build -p {package}` \
             (`cargo nextest run --workspace` builds every binary before the tests)",
            binary.display()
        );
        let system = testkit::System::start(&binary).await;
        let target = Target {
            orders_url: format!("{}/orders", system.api.base),
            authorization: format!("Bearer {}", system.api.token),
            products: vec!["A001".to_owned(), "B042".to_owned()],
        };
        let mut options = Options::new("test");
        options.progress = false;
        options.e2e_samples = 20.0;
        check_reachable(&target.orders_url)
            .await
            .expect("the gateway answers");
        let schedule = Schedule::fixed(20.0, Duration::from_secs(2));
        let report = run_schedule(&schedule, &target, &options).await.unwrap();

        let o = &report.outcome;
        assert!(o.errors.is_empty(), "{}", report.table());
        assert_eq!(
            (o.planned, o.sent, o.ok),
            (40, 40, 40),
            "{}",
            report.table()
        );
        assert_eq!(report.http().map(|p| p.count), Some(40));
        assert!(report.e2e.sampled > 0, "{}", report.table());
        assert_eq!(
            report.e2e.outcomes.get("completed").copied(),
            Some(report.e2e.sampled),
            "{}",
            report.table()
        );
        assert_eq!(system.stored_orders().await, 40);
    }
}
