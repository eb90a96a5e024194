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
//!
//! The generator runs on a thread of its own, on a single-threaded tokio
//! runtime, with a small HTTP/1.1 client of its own ([`client`]): it
//! shares the machine with the system it measures, so it must cost little,
//! and its CPU is counted on that thread alone. `--against-wrk` compares
//! that cost with wrk's ([`wrk`]).

pub mod client;
pub mod drive;
pub mod report;
pub mod schedule;
pub mod wrk;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use clap::ValueEnum;
use hdrhistogram::Histogram;
use serde_json::Value;
use testkit::exposition::{Sample, samples};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::launch;
use client::Client;
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
    /// Instead of a profile: run wrk (with bench/wrk/post-orders.lua) for
    /// this long, then the generator at wrk's rate for as long, and print
    /// the CPU each used per request.
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "30s",
          value_parser = parse_duration)]
    pub against_wrk: Option<Duration>,
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
    if let Some(bad) = products.iter().find(|p| !client::json_safe(p)) {
        anyhow::bail!("LOAD_PRODUCTS: {bad:?} has a quote, backslash or control character");
    }
    if let Some(duration) = args.against_wrk {
        return match &args.start {
            None => {
                let target = running_target(args, products).await?;
                wrk::compare(root, &target, duration).await
            }
            Some(package) => {
                let (system, target) = start(root, package, args.release, products).await?;
                let compared = wrk::compare(root, &target, duration).await;
                let stopped = system.stop().await;
                compared.and(stopped)
            }
        };
    }
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

    let (mut report, cpu) = match &args.start {
        None => {
            let target = running_target(args, products).await?;
            println!(
                "[load] {} ({} requests) against {}",
                schedule.describe(),
                schedule.planned(),
                target.orders_url
            );
            run_measured(&schedule, &target, &options).await?
        }
        Some(package) => {
            let (system, target) = start(root, package, args.release, products).await?;
            println!(
                "[load] {} ({} requests) against {package} at {}",
                schedule.describe(),
                schedule.planned(),
                target.orders_url
            );
            let before = system.gateway_metrics().await;
            let outcome = run_measured(&schedule, &target, &options).await;
            let after = system.gateway_metrics().await;
            let stopped = system.stop().await;
            let (mut report, cpu) = outcome?;
            stopped?;
            report.gateway_completion = completion_between(before.as_deref(), after.as_deref());
            (report, cpu)
        }
    };
    if args.profile != Profile::Fixed {
        report.profile = format!("{}: {}", profile_name(args.profile), report.profile);
    }
    println!();
    print!("{}", report.table());
    println!(
        "[load] the generator used {:.1} µs of CPU per request answered ({:.3} s on its thread)",
        cpu.as_secs_f64() * 1e6 / report.outcome.ok.max(1) as f64,
        cpu.as_secs_f64()
    );
    let path = write_result(&root.join(&args.out), "load", &report.to_json())?;
    println!("[load] result written to {}", path.display());
    Ok(())
}

/// The gateway of a system already running, at `--url` with `--auth`.
/// Errors: nothing answers there.
async fn running_target(args: &Args, products: Vec<String>) -> anyhow::Result<Target> {
    let target = Target {
        orders_url: args.url.clone(),
        authorization: args.auth.clone(),
        products,
    };
    check_reachable(&target.orders_url).await?;
    Ok(target)
}

/// Builds `package`, starts it on free ports and returns it with its
/// gateway as the target. Errors: the build, or a system that does not
/// become ready.
async fn start(
    root: &Path,
    package: &str,
    release: bool,
    products: Vec<String>,
) -> anyhow::Result<(launch::System, Target)> {
    let nats_server = crate::provision::nats_server()?;
    let binary = launch::build(root, &[package], release)?.remove(0);
    let system =
        launch::System::start(package, &binary, &nats_server, launch::Output::Inherit).await?;
    let target = Target {
        orders_url: format!("http://{}/orders", system.topology.gateway_http),
        authorization: format!("Bearer {}", launch::api_token()),
        products,
    };
    Ok((system, target))
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
/// progress, and returns the report once every answer is in. Errors: the
/// generator's thread or runtime could not start, or the target's URL or
/// authorization is not valid HTTP.
pub async fn run_schedule(
    schedule: &Schedule,
    target: &Target,
    options: &Options,
) -> anyhow::Result<Report> {
    Ok(run_measured(schedule, target, options).await?.0)
}

/// [`run_schedule`], and the CPU time (user plus system) the generator's
/// thread used, from its start to its last answer.
///
/// The generator runs on a thread of its own with a single-threaded
/// runtime. One thread is enough for thousands of requests a second, and
/// it costs the least: no work stealing, no waking of other threads, no
/// locks that are ever contended. Its CPU can then be told apart from the
/// rest of this process (the bench's span receiver, the caller's runtime).
pub async fn run_measured(
    schedule: &Schedule,
    target: &Target,
    options: &Options,
) -> anyhow::Result<(Report, Duration)> {
    let (schedule, target, options) = (schedule.clone(), target.clone(), options.clone());
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("load-generator".to_owned())
        .spawn(move || {
            let run = || -> anyhow::Result<(Report, Duration)> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let before = thread_cpu()?;
                let report = runtime.block_on(generate(&schedule, &target, &options))?;
                Ok((report, thread_cpu()? - before))
            };
            let _ = done.send(run());
        })
        .context("starting the load generator's thread")?;
    result
        .await
        .context("the load generator's thread panicked")?
}

/// The CPU time (user plus system) the calling thread has used so far,
/// from the first field of `/proc/thread-self/schedstat` (nanoseconds on a
/// CPU, the sum `utime` and `stime` are shares of). The kernel adds the
/// running slice at each scheduler tick or switch, so the figure may lag
/// by a tick (a few ms): nothing over a run of seconds. Errors: no such
/// file (not Linux, or a kernel without scheduler statistics).
pub fn thread_cpu() -> anyhow::Result<Duration> {
    let path = "/proc/thread-self/schedstat";
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    parse_schedstat(&text).with_context(|| format!("parsing {path}: {text:?}"))
}

/// The time on a CPU in a `schedstat` line: `<ns on cpu> <ns waiting>
/// <timeslices>`.
fn parse_schedstat(text: &str) -> Option<Duration> {
    text.split_whitespace()
        .next()?
        .parse()
        .ok()
        .map(Duration::from_nanos)
}

/// The run itself, on the generator's runtime.
async fn generate(
    schedule: &Schedule,
    target: &Target,
    options: &Options,
) -> anyhow::Result<Report> {
    let started_at = utc_stamp(std::time::SystemTime::now());
    let client = Arc::new(Client::new(target, options.timeout)?);
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
    let products = &target.products;
    let deadline = options.e2e_deadline;
    let send = |i: u64| {
        let client = client.clone();
        let body = client::order_body(i, products);
        let sampler = sampler.clone();
        async move {
            let answer = client.post_order(&body).await?;
            if answer.status != 201 {
                return Err(format!("http {}", answer.status));
            }
            if let Some(gap) = gap {
                sample(&client, &answer.body, gap, deadline, &sampler);
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

/// Starts following the order just accepted (its `201` body is `body`)
/// when the last one followed was accepted at least `gap` ago and fewer
/// than [`E2E_FOLLOWED`] are being followed. Only then is the body parsed.
fn sample(
    client: &Arc<Client>,
    body: &[u8],
    gap: Duration,
    deadline: Duration,
    sampler: &Arc<Mutex<Sampler>>,
) {
    let accepted = Instant::now();
    let mut s = sampler.lock().unwrap();
    let due = s
        .last
        .is_none_or(|last| accepted.duration_since(last) >= gap)
        && s.active < E2E_FOLLOWED;
    if !due {
        return;
    }
    let order_id = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["order_id"].as_str().map(str::to_owned));
    let Some(order_id) = order_id else {
        return;
    };
    s.last = Some(accepted);
    s.sampled += 1;
    s.active += 1;
    let poll = tokio::spawn(follow(
        client.clone(),
        order_id,
        accepted,
        deadline,
        sampler.clone(),
    ));
    s.polls.push(poll);
}

/// Polls one order until it is no longer `created`, and records how long
/// after its acceptance the poll that saw it was sent.
async fn follow(
    client: Arc<Client>,
    order_id: String,
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
        let status = match client.get_order(&order_id).await {
            Ok(answer) if (200..300).contains(&answer.status) => {
                serde_json::from_slice::<Value>(&answer.body)
                    .ok()
                    .and_then(|v| v["status"].as_str().map(str::to_owned))
            }
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
    fn the_time_on_a_cpu_is_the_first_field_of_schedstat() {
        assert_eq!(
            parse_schedstat("1234567890 5000 42\n"),
            Some(Duration::from_nanos(1_234_567_890))
        );
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
        // The real file, for this thread, is there and reads as a time. (Not
        // above zero: a thread that has not yet been descheduled or ticked
        // may still read 0.)
        thread_cpu().expect("/proc/thread-self/schedstat reads");
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
