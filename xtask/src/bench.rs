//! `cargo xtask bench`: what the observability costs, measured.
//!
//! It builds chapter 00 (no observability) and the full system in release
//! mode and runs them on this machine, one after the other, under the same
//! open-model load ([`crate::load`]):
//!
//! 1. a fixed rate, in rounds that alternate the order (ABBA): CPU seconds
//!    per order of each process (from `/proc`), peak memory of each, HTTP
//!    and end-to-end latency;
//! 2. a saturation search: the rate steps up until a system fails the
//!    limit (1% errors, HTTP p99 100 ms); the last rate it passed is the
//!    highest it sustains;
//! 3. a CPU profile of the full system's services under the fixed rate.
//!
//! The full system runs as in production: spans exported over OTLP (to a
//! receiver in this process that counts and discards them), JSON logs
//! written (to a file under `bench/results/logs/`), metrics registered and
//! updated. The report gives every figure for both and the ratio, as
//! markdown, JSON and an SVG chart under `bench/results/`.

mod procfs;
mod svg;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, ensure};
use hdrhistogram::Histogram;
use orders::topology::Service;
use serde_json::{Value, json};

use crate::launch::{self, Output, System};
use crate::load::report::{Percentiles, Report, ms, round};
use crate::load::schedule::{Schedule, format_duration, parse_duration, trim};
use crate::load::{Options, Target, completion_between, run_schedule, utc_stamp};
use crate::profile;

/// Chapter 00: the system with no observability at all.
pub const BASELINE: &str = "ch00-baseline";

/// The full system: every layer on, wired for production. (Chapter 05 has
/// every layer too, and stood in for it before `final` was written.)
pub const FULL: &str = "final";

/// The saturation limit: a rate is sustained when fewer than 1% of its
/// requests fail and the HTTP p99 stays under 100 ms.
pub const MAX_ERROR_RATE: f64 = 0.01;
pub const MAX_P99_MS: f64 = 100.0;

/// Before each measurement the system gets a short warm-up: connections
/// opened, the JetStream consumer caught up, SQLite's pages in memory.
const WARMUP: Duration = Duration::from_secs(2);
const WARMUP_RATE: f64 = 100.0;

const PRODUCTS: [&str; 4] = ["A001", "B001", "C001", "D001"];

/// Above this share of the machine used by other processes during a run,
/// the bench warns that its figures are disturbed.
const FOREIGN_WARNING: f64 = 0.05;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Fixed-rate phase: orders per second.
    #[arg(long, default_value_t = 300.0)]
    pub rate: f64,
    /// Fixed-rate phase: how long each system is loaded in each round.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Fixed-rate phase: rounds, each running both systems (ABBA order).
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    /// Saturation: the first rate tried, and the step between rates.
    #[arg(long, default_value_t = 200.0)]
    pub step: f64,
    /// Saturation: the highest rate tried.
    #[arg(long, default_value_t = 4000.0)]
    pub max_rate: f64,
    /// Saturation: how long each rate is held.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub step_duration: Duration,
    /// Saturation: how many times the interval between the last rate
    /// passed and the first failed is halved afterwards.
    #[arg(long, default_value_t = 2)]
    pub refine: u32,
    /// How long the full system's services are CPU-profiled at the fixed
    /// rate (`0s`: no profile).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub profile: Duration,
    /// A shorter run: 10 s at the fixed rate, one round, saturation steps
    /// of 400/s held 5 s and refined once, a 5 s profile (overrides those
    /// flags).
    #[arg(long)]
    pub quick: bool,
    /// Skip the saturation search.
    #[arg(long)]
    pub no_saturation: bool,
    /// The system without observability.
    #[arg(long, default_value = BASELINE)]
    pub baseline: String,
    /// The system with every layer on.
    #[arg(long, default_value = FULL)]
    pub full: String,
    /// Where the results go (relative to the workspace root).
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
}

impl Args {
    fn settled(&self) -> Self {
        let mut args = self.clone();
        if args.quick {
            args.duration = Duration::from_secs(10);
            args.rounds = 1;
            args.step = 400.0;
            args.step_duration = Duration::from_secs(5);
            args.refine = 1;
            args.profile = Duration::from_secs(5);
        }
        args
    }
}

/// A system under test.
struct Sut {
    package: String,
    binary: PathBuf,
}

/// One measured run of one system.
#[derive(Debug)]
struct Run {
    package: String,
    rate: f64,
    report: Report,
    /// CPU seconds used during the measured run, by process role.
    cpu: BTreeMap<String, f64>,
    /// Peak resident memory at the end of the run, by role, bytes.
    rss: BTreeMap<String, u64>,
    /// CPU seconds this process (the load generator) used meanwhile.
    loadgen_cpu: f64,
    /// The share of the machine's CPU that other processes (and the
    /// kernel's interrupt handling, not charged to any process) used
    /// meanwhile: a busy machine disturbs every figure.
    foreign: f64,
    /// Orders accepted over the system's life (warm-up included), to share
    /// out what is counted per life: spans and log bytes.
    orders_in_life: u64,
    spans: u64,
    log_bytes: u64,
    /// 2 for a saturation step's second attempt.
    attempt: u32,
}

impl Run {
    fn passes(&self) -> bool {
        self.report.error_rate() < MAX_ERROR_RATE
            && self.report.http().is_some_and(|p| p.p99 < MAX_P99_MS)
    }

    fn one_line(&self) -> String {
        let http = self.report.http();
        let e2e = self.report.end_to_end();
        let cpu: f64 = self.cpu.values().sum();
        format!(
            "{:.1}/s ok, errors {:.2}%, HTTP p50 {} p99 {}, end-to-end p99 {}, CPU {:.3} ms/order",
            self.report.achieved_rate(),
            self.report.error_rate() * 100.0,
            http.map_or("-".into(), |p| ms(p.p50)),
            http.map_or("-".into(), |p| ms(p.p99)),
            e2e.map_or("-".into(), |p| ms(p.p99)),
            cpu * 1e3 / self.report.outcome.ok.max(1) as f64,
        )
    }
}

/// `cargo xtask bench`.
pub async fn run(root: &Path, args: &Args) -> anyhow::Result<()> {
    let args = args.settled();
    ensure!(
        args.rate > 0.0 && args.step > 0.0 && args.rounds > 0,
        "--rate, --step and --rounds must be positive"
    );
    let out = root.join(&args.out);
    std::fs::create_dir_all(&out)?;
    let nats_server = crate::provision::nats_server()?;
    let binaries = launch::build(root, &[&args.baseline, &args.full], true)?;
    let suts = [
        Sut {
            package: args.baseline.clone(),
            binary: binaries[0].clone(),
        },
        Sut {
            package: args.full.clone(),
            binary: binaries[1].clone(),
        },
    ];
    let machine = machine();
    println!("[bench] on {}", machine["summary"].as_str().unwrap_or("?"));
    let bench = Bench {
        out: out.clone(),
        nats_server,
    };

    // 1. The fixed rate, ABBA.
    println!(
        "[bench] fixed rate: {}/s for {}, {} round(s)",
        trim(args.rate),
        format_duration(args.duration),
        args.rounds
    );
    let mut fixed: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    for round in 0..args.rounds {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let label = format!("{} {}/s", suts[i].package, trim(args.rate));
            let run = bench
                .measure(&suts[i], args.rate, args.duration, &label)
                .await?;
            println!("[bench] {label}: {}", run.one_line());
            fixed[i].push(run);
        }
    }

    // 2. Saturation.
    let mut steps: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    let mut unconfirmed: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    if !args.no_saturation {
        println!(
            "[bench] saturation: from {}/s in steps of {}/s, each held {}, until errors >= {}% or HTTP p99 >= {}",
            trim(args.step),
            trim(args.step),
            format_duration(args.step_duration),
            MAX_ERROR_RATE * 100.0,
            ms(MAX_P99_MS)
        );
        let mut failed = [false, false];
        let mut rate = args.step;

        while rate <= args.max_rate + 1e-9 && failed.contains(&false) {
            for i in 0..2 {
                if failed[i] {
                    continue;
                }
                let run = bench
                    .step(&suts[i], rate, args.step_duration, &mut unconfirmed[i])
                    .await?;
                failed[i] = !run.passes();
                steps[i].push(run);
            }
            rate += args.step;
        }
        // Then halve the interval between the last rate passed and the
        // first failed, `--refine` times.
        for _ in 0..args.refine {
            for i in 0..2 {
                let (Some(passed), Some(failed_at)) =
                    (saturation(&steps[i]).0, first_failure(&steps[i]))
                else {
                    continue;
                };
                let rate = ((passed + failed_at) / 2.0).round();
                if rate <= passed || rate >= failed_at {
                    continue;
                }
                let run = bench
                    .step(&suts[i], rate, args.step_duration, &mut unconfirmed[i])
                    .await?;
                steps[i].push(run);
            }
        }
    }

    // 3. Where the full system's CPU goes.
    let profiles = if args.profile.is_zero() {
        None
    } else {
        Some(bench.profile(&suts[1], args.rate, args.profile).await?)
    };

    // The systems inherit the environment, so an `OTEL_*` variable (a
    // sampler, a batch size) changes what is measured: the command names
    // the ones that were set.
    let mut otel: Vec<String> = std::env::vars()
        .filter(|(name, _)| name.starts_with("OTEL_") && name != "OTEL_EXPORTER_OTLP_ENDPOINT")
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    otel.sort();
    let command = otel
        .into_iter()
        .chain(["cargo xtask".to_owned()])
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let results = Results {
        args: &args,
        machine,
        command,
        stamp: utc_stamp(std::time::SystemTime::now()),
        names: [suts[0].package.clone(), suts[1].package.clone()],
        fixed,
        steps,
        unconfirmed,
        profiles,
    };
    let markdown = results.markdown();
    let svg = results.svg();
    let json = results.json();
    let stamp = &results.stamp;
    for (name, text) in [
        (format!("bench-{stamp}.md"), markdown.as_str()),
        (format!("bench-{stamp}.svg"), svg.as_str()),
        ("bench-latest.md".to_owned(), markdown.as_str()),
        ("bench-latest.svg".to_owned(), svg.as_str()),
    ] {
        std::fs::write(out.join(&name), text)?;
    }
    let json_path = crate::load::write_result(&out, "bench", &json)?;
    println!();
    println!("{markdown}");
    println!(
        "[bench] written: {}, bench-{stamp}.md and .svg, and bench-latest.* in {}",
        json_path.display(),
        out.display()
    );
    Ok(())
}

struct Bench {
    out: PathBuf,
    nats_server: PathBuf,
}

impl Bench {
    async fn start(&self, sut: &Sut) -> anyhow::Result<(System, PathBuf)> {
        let log = self.out.join("logs").join(format!("{}.log", sut.package));
        let system = System::start(
            &sut.package,
            &sut.binary,
            &self.nats_server,
            Output::File(log.clone()),
        )
        .await?;
        Ok((system, log))
    }

    /// Starts the system, warms it up, loads it at `rate` for `duration`
    /// while counting what each process used, and stops it.
    async fn measure(
        &self,
        sut: &Sut,
        rate: f64,
        duration: Duration,
        label: &str,
    ) -> anyhow::Result<Run> {
        let (system, log) = self.start(sut).await?;
        let measured = measure_running(&system, rate, duration, label).await;
        let spans = system.span_counter();
        let stopped = system.stop().await;
        let mut run = measured?;
        if let Err(e) = stopped {
            println!("[bench] warning: {e:#}");
        }
        run.spans = spans.load(std::sync::atomic::Ordering::Relaxed);
        run.log_bytes = std::fs::metadata(&log).map_or(0, |m| m.len());
        Ok(run)
    }

    /// One saturation step: `rate` for `duration` on a fresh system. One
    /// bad episode in a short step is not saturation: a step over the limit
    /// counts once a second fresh system fails it too; the first attempt
    /// goes to `unconfirmed`.
    async fn step(
        &self,
        sut: &Sut,
        rate: f64,
        duration: Duration,
        unconfirmed: &mut Vec<Run>,
    ) -> anyhow::Result<Run> {
        let label = format!("{} {}/s", sut.package, trim(rate));
        let mut run = self.measure(sut, rate, duration, &label).await?;
        if !run.passes() {
            println!(
                "[bench] {label}: over the limit ({}); once more on a fresh system to confirm",
                run.one_line()
            );
            let mut again = self.measure(sut, rate, duration, &label).await?;
            again.attempt = 2;
            unconfirmed.push(std::mem::replace(&mut run, again));
        }
        let verdict = if run.passes() { "pass" } else { "FAIL" };
        println!("[bench] {label}: {verdict}: {}", run.one_line());
        Ok(run)
    }

    /// Profiles the CPU of each service of the full system for `seconds`
    /// while it takes `rate` orders per second.
    async fn profile(
        &self,
        sut: &Sut,
        rate: f64,
        length: Duration,
    ) -> anyhow::Result<Vec<ServiceProfile>> {
        println!(
            "[bench] profiling {}'s services for {} at {}/s",
            sut.package,
            format_duration(length),
            trim(rate)
        );
        let (system, _) = self.start(sut).await?;
        let outcome = async {
            let target = target(&system);
            let warm = quiet("warm-up");
            run_schedule(
                &Schedule::fixed(WARMUP_RATE.min(rate), WARMUP),
                &target,
                &warm,
            )
            .await?;
            let seconds = length.as_secs().max(1);
            let schedule = Schedule::fixed(rate, length + Duration::from_secs(2));
            let options = options(&format!("{} profiled", sut.package));
            let load = run_schedule(&schedule, &target, &options);
            let sample = async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let fetches = Service::ALL.map(|service| {
                    let system = &system;
                    async move {
                        let body = system
                            .admin_get(
                                service,
                                &format!("/debug/pprof/profile?seconds={seconds}"),
                                Duration::from_secs(seconds + 30),
                            )
                            .await;
                        (service, body)
                    }
                });
                futures::future::join_all(fetches).await
            };
            let (load, bodies) = tokio::join!(load, sample);
            load?;
            let mut profiles = Vec::new();
            for (service, body) in bodies {
                let body = body.with_context(|| {
                    format!("{} has no CPU profile endpoint on {service}", sut.package)
                })?;
                let path = self.out.join(format!("profile-{service}.pb.gz"));
                std::fs::write(&path, &body)?;
                profiles.push(ServiceProfile {
                    service: service.name().to_owned(),
                    categories: profile::categories(&body)?,
                    crates: profile::crate_shares(&body)?,
                    functions: profile::top_functions(&body, 12)?,
                    path,
                });
            }
            anyhow::Ok(profiles)
        }
        .await;
        let stopped = system.stop().await;
        let profiles = outcome?;
        if let Err(e) = stopped {
            println!("[bench] warning: {e:#}");
        }
        Ok(profiles)
    }
}

/// The load's target: the gateway of `system`, with the bench's products.
pub(crate) fn target(system: &System) -> Target {
    Target {
        orders_url: format!("http://{}/orders", system.topology.gateway_http),
        authorization: format!("Bearer {}", launch::api_token()),
        products: PRODUCTS.map(str::to_owned).to_vec(),
    }
}

fn options(label: &str) -> Options {
    let mut options = Options::new(label);
    options.e2e_deadline = Duration::from_secs(10);
    options
}

fn quiet(label: &str) -> Options {
    let mut options = options(label);
    options.progress = false;
    options.e2e_samples = 0.0;
    options
}

async fn measure_running(
    system: &System,
    rate: f64,
    duration: Duration,
    label: &str,
) -> anyhow::Result<Run> {
    let launcher = system.pid().context("the system has exited")?;
    let processes = procfs::children(launcher)?;
    for role in ["gateway", "logic", "task"] {
        ensure!(
            processes.contains_key(role),
            "no {role} process under the launcher (pid {launcher}): found {processes:?}"
        );
    }
    let target = target(system);
    let warm = run_schedule(
        &Schedule::fixed(WARMUP_RATE.min(rate), WARMUP),
        &target,
        &quiet("warm-up"),
    )
    .await?;
    if warm.error_total() > 0 {
        println!(
            "[bench] warning: {} errors during the warm-up of {}",
            warm.error_total(),
            system.package
        );
    }

    let cpu = |pid: u32| procfs::cpu_seconds(pid);
    let before: BTreeMap<&String, f64> = processes
        .iter()
        .map(|(role, pid)| Ok((role, cpu(*pid)?)))
        .collect::<anyhow::Result<_>>()?;
    let own_before = procfs::own_cpu_seconds()?;
    let launcher_before = cpu(launcher)?;
    let machine_before = procfs::machine_busy_seconds()?;
    let wall = std::time::Instant::now();
    let metrics_before = system.gateway_metrics().await;

    let mut report =
        run_schedule(&Schedule::fixed(rate, duration), &target, &options(label)).await?;

    let own = procfs::own_cpu_seconds()? - own_before;
    let machine = procfs::machine_busy_seconds()? - machine_before;
    let wall = wall.elapsed().as_secs_f64();
    let mut used = BTreeMap::new();
    let mut rss = BTreeMap::new();
    for (role, pid) in &processes {
        used.insert(role.clone(), cpu(*pid)? - before[role]);
        rss.insert(role.clone(), procfs::peak_rss(*pid)?);
    }
    let ours = own + (cpu(launcher)? - launcher_before) + used.values().sum::<f64>();
    let capacity = wall * std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let foreign = ((machine - ours) / capacity).max(0.0);
    if foreign > FOREIGN_WARNING {
        println!(
            "[bench] warning: other processes used {:.0}% of the machine during this run; its figures are disturbed",
            foreign * 100.0
        );
    }
    let metrics_after = system.gateway_metrics().await;
    report.gateway_completion =
        completion_between(metrics_before.as_deref(), metrics_after.as_deref());
    let orders_in_life = warm.outcome.ok + report.outcome.ok;
    Ok(Run {
        package: system.package.clone(),
        rate,
        report,
        cpu: used,
        rss,
        loadgen_cpu: own,
        foreign,
        orders_in_life,
        spans: 0,
        log_bytes: 0,
        attempt: 1,
    })
}

/// One service's CPU profile, summarized.
struct ServiceProfile {
    service: String,
    categories: Vec<(String, f64)>,
    crates: profile::Shares,
    functions: Vec<(String, f64, f64)>,
    path: PathBuf,
}

/// The machine, as the report states it.
fn machine() -> Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_owned(), |m| m.trim().to_owned());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let memory_gib = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or(String::new(), |v| v.trim().to_owned());
    json!({
        "cpu_model": model,
        "cpus": cpus,
        "memory_gib": round(memory_gib),
        "kernel": kernel,
        "rustc": rustc,
        "summary": format!("{model}, {cpus} CPUs, {memory_gib:.1} GiB RAM, Linux {kernel}, {rustc}"),
    })
}

/// Everything measured, and the three renderings of it.
struct Results<'a> {
    args: &'a Args,
    machine: Value,
    command: String,
    stamp: String,
    names: [String; 2],
    fixed: [Vec<Run>; 2],
    /// The run that decided each rate.
    steps: [Vec<Run>; 2],
    /// First attempts over the limit, each followed by a second attempt.
    unconfirmed: [Vec<Run>; 2],
    profiles: Option<Vec<ServiceProfile>>,
}

/// The fixed-rate figures of one system, its rounds pooled.
#[derive(Debug, Clone, Default)]
struct Figures {
    /// CPU milliseconds per order, by role, and all together.
    cpu_ms: BTreeMap<String, f64>,
    /// Peak RSS in MiB, by role, and all together.
    rss_mib: BTreeMap<String, f64>,
    http: Option<Percentiles>,
    e2e: Option<Percentiles>,
    error_rate: f64,
    achieved: f64,
    loadgen_cpu_ms: f64,
    /// The largest share of the machine other processes used in a run.
    foreign: f64,
    spans_per_order: f64,
    log_bytes_per_order: f64,
}

const ROLES: [&str; 4] = ["gateway", "logic", "task", "nats-server"];

fn pooled(runs: &[Run]) -> Figures {
    let mut f = Figures::default();
    if runs.is_empty() {
        return f;
    }
    let ok: u64 = runs.iter().map(|r| r.report.outcome.ok).sum();
    let per_order = |seconds: f64| seconds * 1e3 / ok.max(1) as f64;
    for role in ROLES {
        let seconds: f64 = runs.iter().filter_map(|r| r.cpu.get(role)).sum();
        f.cpu_ms.insert(role.to_owned(), per_order(seconds));
        let peak = runs.iter().filter_map(|r| r.rss.get(role)).max().copied();
        f.rss_mib
            .insert(role.to_owned(), peak.unwrap_or(0) as f64 / 1024.0 / 1024.0);
    }
    let cpu_total = ROLES.iter().map(|r| f.cpu_ms[*r]).sum();
    f.cpu_ms.insert("total".to_owned(), cpu_total);
    let rss_total = ROLES.iter().map(|r| f.rss_mib[*r]).sum();
    f.rss_mib.insert("total".to_owned(), rss_total);
    let merge = |pick: fn(&Report) -> &Histogram<u64>| {
        let mut all = crate::load::drive::histogram();
        for run in runs {
            let _ = all.add(pick(&run.report));
        }
        Percentiles::of(&all)
    };
    f.http = merge(|r| &r.outcome.latency);
    f.e2e = merge(|r| &r.e2e.latency);
    let planned: u64 = runs.iter().map(|r| r.report.outcome.planned).sum();
    let errors: u64 = runs.iter().map(|r| r.report.error_total()).sum();
    f.error_rate = errors as f64 / planned.max(1) as f64;
    f.achieved = runs.iter().map(|r| r.report.achieved_rate()).sum::<f64>() / runs.len() as f64;
    f.loadgen_cpu_ms = per_order(runs.iter().map(|r| r.loadgen_cpu).sum());
    f.foreign = runs.iter().map(|r| r.foreign).fold(0.0, f64::max);
    let life: u64 = runs.iter().map(|r| r.orders_in_life).sum::<u64>().max(1);
    f.spans_per_order = runs.iter().map(|r| r.spans).sum::<u64>() as f64 / life as f64;
    f.log_bytes_per_order = runs.iter().map(|r| r.log_bytes).sum::<u64>() as f64 / life as f64;
    f
}

/// The highest rate that passed before the first that failed, and whether
/// one failed at all (if not, the system sustained every rate tried).
fn saturation(steps: &[Run]) -> (Option<f64>, bool) {
    let failed_at = first_failure(steps);
    let best = steps
        .iter()
        .filter(|run| run.passes() && failed_at.is_none_or(|failed| run.rate < failed))
        .map(|run| run.rate)
        .fold(None, |best: Option<f64>, rate| {
            Some(best.map_or(rate, |b| b.max(rate)))
        });
    (best, failed_at.is_some())
}

/// The lowest rate over the limit, if any was.
fn first_failure(steps: &[Run]) -> Option<f64> {
    steps
        .iter()
        .filter(|run| !run.passes())
        .map(|run| run.rate)
        .min_by(f64::total_cmp)
}

fn ratio(full: f64, base: f64) -> String {
    if base > 0.0 && full.is_finite() {
        format!("{:.2}x", full / base)
    } else {
        "-".to_owned()
    }
}

impl Results<'_> {
    fn markdown(&self) -> String {
        let a = self.args;
        let [base, full] = &self.names;
        let fb = pooled(&self.fixed[0]);
        let ff = pooled(&self.fixed[1]);
        let mut md = String::new();
        let _ = writeln!(md, "# Benchmark: {base} against {full}\n");
        let _ = writeln!(md, "- run: {} (UTC)", self.stamp);
        let _ = writeln!(
            md,
            "- machine: {}",
            self.machine["summary"].as_str().unwrap_or("?")
        );
        let _ = writeln!(md, "- command: `{}`", self.command);
        let _ = writeln!(
            md,
            "- load: open model, {} products in turn, quantity 1; latency from the scheduled send; the load generator runs on the same machine\n",
            PRODUCTS.len()
        );
        let _ = writeln!(
            md,
            "## Fixed rate: {}/s for {}, {} round(s) per system, alternating\n",
            trim(a.rate),
            format_duration(a.duration),
            a.rounds
        );
        let _ = writeln!(md, "| figure | {base} | {full} | {full} / {base} |");
        let _ = writeln!(md, "|---|---:|---:|---:|");
        let mut row = |what: &str, b: f64, f: f64, fmt: &dyn Fn(f64) -> String| {
            // What the baseline does not do at all has no ratio.
            let r = if ["spans", "log bytes", "other"]
                .iter()
                .any(|w| what.starts_with(w))
            {
                "-".to_owned()
            } else {
                ratio(f, b)
            };
            let _ = writeln!(md, "| {what} | {} | {} | {r} |", fmt(b), fmt(f));
        };
        let ms3 = |v: f64| format!("{v:.3} ms");
        let mib = |v: f64| format!("{v:.1} MiB");
        for role in ROLES.iter().copied().chain(["total"]) {
            row(
                &format!("CPU per order, {role}"),
                fb.cpu_ms[role],
                ff.cpu_ms[role],
                &ms3,
            );
        }
        for role in ROLES.iter().copied().chain(["total"]) {
            row(
                &format!("peak RSS, {role}"),
                fb.rss_mib[role],
                ff.rss_mib[role],
                &mib,
            );
        }
        let pick =
            |p: Option<Percentiles>, q: fn(&Percentiles) -> f64| p.as_ref().map_or(f64::NAN, q);
        row(
            "HTTP p50",
            pick(fb.http, |p| p.p50),
            pick(ff.http, |p| p.p50),
            &|v| ms(v),
        );
        row(
            "HTTP p99",
            pick(fb.http, |p| p.p99),
            pick(ff.http, |p| p.p99),
            &|v| ms(v),
        );
        row(
            "end-to-end p50",
            pick(fb.e2e, |p| p.p50),
            pick(ff.e2e, |p| p.p50),
            &|v| ms(v),
        );
        row(
            "end-to-end p99",
            pick(fb.e2e, |p| p.p99),
            pick(ff.e2e, |p| p.p99),
            &|v| ms(v),
        );
        row(
            "errors",
            fb.error_rate * 100.0,
            ff.error_rate * 100.0,
            &|v| format!("{v:.2}%"),
        );
        row("achieved rate", fb.achieved, ff.achieved, &|v| {
            format!("{v:.1}/s")
        });
        row(
            "spans exported per order",
            fb.spans_per_order,
            ff.spans_per_order,
            &|v| format!("{v:.1}"),
        );
        row(
            "log bytes per order",
            fb.log_bytes_per_order,
            ff.log_bytes_per_order,
            &|v| format!("{v:.0} B"),
        );
        row(
            "load generator CPU per order",
            fb.loadgen_cpu_ms,
            ff.loadgen_cpu_ms,
            &ms3,
        );
        row(
            "other processes' CPU, worst run",
            fb.foreign * 100.0,
            ff.foreign * 100.0,
            &|v| format!("{v:.1}% of the machine"),
        );
        let (sat_b, _) = saturation(&self.steps[0]);
        let (sat_f, _) = saturation(&self.steps[1]);
        if !a.no_saturation {
            row(
                "highest sustained rate",
                sat_b.unwrap_or(0.0),
                sat_f.unwrap_or(0.0),
                &|v| format!("{}/s", trim(v)),
            );
        }
        let rounds = |runs: &[Run]| {
            runs.iter()
                .map(|r| r.report.http().map_or("-".to_owned(), |p| ms(p.p99)))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let _ = writeln!(
            md,
            "| HTTP p99 by round | {} | {} | - |",
            rounds(&self.fixed[0]),
            rounds(&self.fixed[1])
        );
        let disturbed = self
            .fixed
            .iter()
            .chain(&self.steps)
            .flatten()
            .filter(|run| run.foreign > FOREIGN_WARNING)
            .count();
        if disturbed > 0 {
            let _ = writeln!(
                md,
                "\n**Warning: in {disturbed} run(s) other processes used more than {:.0}% of the machine; those figures are disturbed. Run the bench on an otherwise idle machine.**",
                FOREIGN_WARNING * 100.0
            );
        }
        let _ = writeln!(
            md,
            "\nCPU per order: CPU seconds (user + system, `/proc/<pid>/stat`) each process used during the measured run, divided by the orders accepted in it. Peak RSS: `VmHWM` of each process at the end. End-to-end: from the `201` to the first `GET /orders/{{id}}` that saw `completed`, for about 10 sampled orders per second."
        );

        if !a.no_saturation {
            let _ = writeln!(
                md,
                "\n## Saturation: steps of {}/s, each held {}, then {} halving(s) of the last interval; limit: errors < {}% and HTTP p99 < {}\n",
                trim(a.step),
                format_duration(a.step_duration),
                a.refine,
                MAX_ERROR_RATE * 100.0,
                ms(MAX_P99_MS)
            );
            let _ = writeln!(
                md,
                "| offered | {base} p50 | {base} p99 | {base} errors | {full} p50 | {full} p99 | {full} errors |"
            );
            let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|");
            let rates: Vec<f64> = {
                let mut r: Vec<f64> = self.steps.iter().flatten().map(|run| run.rate).collect();
                r.sort_by(f64::total_cmp);
                r.dedup();
                r
            };
            for rate in rates {
                let cell = |i: usize| {
                    self.steps[i].iter().find(|run| run.rate == rate).map_or(
                        "| | | ".to_owned(),
                        |run| {
                            let p = run.report.http();
                            let mut mark = if run.passes() { "" } else { " ✗" }.to_owned();
                            if run.attempt > 1 {
                                mark.push_str(" (2nd try)");
                            }
                            format!(
                                "| {} | {}{mark} | {:.2}% ",
                                p.map_or("-".into(), |p| ms(p.p50)),
                                p.map_or("-".into(), |p| ms(p.p99)),
                                run.report.error_rate() * 100.0
                            )
                        },
                    )
                };
                let _ = writeln!(md, "| {}/s {}{}|", trim(rate), cell(0), cell(1));
            }
            let describe = |best: Option<f64>, failed: bool| match (best, failed) {
                (Some(rate), true) => format!("{}/s", trim(rate)),
                (Some(rate), false) => format!("at least {}/s (every rate tried)", trim(rate)),
                (None, _) => format!("below {}/s", trim(a.step)),
            };
            let (b, bf) = saturation(&self.steps[0]);
            let (f, ff_) = saturation(&self.steps[1]);
            let _ = writeln!(
                md,
                "\nHighest sustained rate: {base} {}, {full} {}. ✗: over the limit. A rate over the limit is tried once more on a fresh system, and counts as sustained if that second try passes (2nd try: the figures are the second's).\n\n![latency against offered rate](bench-{}.svg)",
                describe(b, bf),
                describe(f, ff_),
                self.stamp
            );
        }

        if let Some(profiles) = &self.profiles {
            let _ = writeln!(
                md,
                "\n## Where {full}'s CPU goes: profiles at {}/s\n",
                trim(a.rate)
            );
            let _ = writeln!(
                md,
                "CPU per order by service (above) says which process spends it; each profile says on what. A sample counts for a telemetry category when a frame of that telemetry is anywhere on its stack (a log line's JSON formatting is the log's cost), except frames that only wrap the request's future (`Instrumented<T>`, `WithContext<T>`); otherwise for the innermost crate it names. ms per order: the share times the service's CPU per order."
            );
            let _ = writeln!(
                md,
                "\n| what | {} |",
                profiles
                    .iter()
                    .map(|p| format!("{} share | {} ms/order", p.service, p.service))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            let _ = writeln!(md, "|---|{}", "---:|---:|".repeat(profiles.len()));
            let per_order =
                |p: &ServiceProfile| ff.cpu_ms.get(&p.service).copied().unwrap_or(f64::NAN);
            let names: Vec<String> = profiles
                .first()
                .map(|p| p.categories.iter().map(|(n, _)| n.clone()).collect())
                .unwrap_or_default();
            for (i, name) in names.iter().enumerate() {
                let cells: Vec<String> = profiles
                    .iter()
                    .map(|p| {
                        let share = p.categories.get(i).map_or(0.0, |c| c.1);
                        format!("{:.1}% | {:.3}", share * 100.0, share * per_order(p))
                    })
                    .collect();
                let _ = writeln!(md, "| {name} | {} |", cells.join(" | "));
            }
            let cells: Vec<String> = profiles
                .iter()
                .map(|p| {
                    let share: f64 = p
                        .categories
                        .iter()
                        .take(profile::TELEMETRY)
                        .map(|c| c.1)
                        .sum();
                    format!(
                        "**{:.1}%** | **{:.3}**",
                        share * 100.0,
                        share * per_order(p)
                    )
                })
                .collect();
            let _ = writeln!(md, "| **all telemetry** | {} |", cells.join(" | "));
            for p in profiles {
                let _ = writeln!(
                    md,
                    "\n{}: top functions (`go tool pprof -top {}`)\n",
                    p.service,
                    p.path
                        .file_name()
                        .map_or(String::new(), |n| n.to_string_lossy().into_owned())
                );
                let _ = writeln!(md, "| function | flat | cumulative |");
                let _ = writeln!(md, "|---|---:|---:|");
                for (name, flat, cumulative) in p.functions.iter().take(8) {
                    let short: String = name.chars().take(110).collect();
                    let _ = writeln!(
                        md,
                        "| `{}` | {:.1}% | {:.1}% |",
                        short.replace('|', "\\|"),
                        flat * 100.0,
                        cumulative * 100.0
                    );
                }
            }
        }
        md
    }

    fn svg(&self) -> String {
        let points = |runs: &[Run]| {
            runs.iter()
                .filter_map(|run| {
                    let p = run.report.http()?;
                    Some((run.rate, p.p50, p.p99))
                })
                .collect::<Vec<_>>()
        };
        saturation_chart(
            &self.names,
            [points(&self.steps[0]), points(&self.steps[1])],
        )
    }

    fn json(&self) -> Value {
        let run_json = |run: &Run| {
            json!({
                "package": run.package,
                "rate": run.rate,
                "passes": run.passes(),
                "cpu_seconds": run.cpu,
                "peak_rss_bytes": run.rss,
                "loadgen_cpu_seconds": round(run.loadgen_cpu),
                "other_processes_machine_share": round(run.foreign),
                "orders_in_life": run.orders_in_life,
                "attempt": run.attempt,
                "spans": run.spans,
                "log_bytes": run.log_bytes,
                "load": run.report.to_json(),
            })
        };
        let figures = |f: &Figures| {
            json!({
                "cpu_ms_per_order": f.cpu_ms,
                "peak_rss_mib": f.rss_mib,
                "http_ms": f.http.map(|p| p.to_json()),
                "e2e_ms": f.e2e.map(|p| p.to_json()),
                "error_rate": f.error_rate,
                "achieved_rate": round(f.achieved),
                "loadgen_cpu_ms_per_order": round(f.loadgen_cpu_ms),
                "other_processes_max_machine_share": round(f.foreign),
                "spans_per_order": round(f.spans_per_order),
                "log_bytes_per_order": round(f.log_bytes_per_order),
            })
        };
        let [base, full] = &self.names;
        json!({
            "kind": "bench",
            "stamp": self.stamp,
            "command": self.command,
            "machine": self.machine,
            "limits": {"error_rate": MAX_ERROR_RATE, "http_p99_ms": MAX_P99_MS},
            "fixed": {
                "rate": self.args.rate,
                "duration_s": self.args.duration.as_secs_f64(),
                "rounds": self.args.rounds,
                base: figures(&pooled(&self.fixed[0])),
                full: figures(&pooled(&self.fixed[1])),
                "runs": self.fixed.iter().flatten().map(run_json).collect::<Vec<_>>(),
            },
            "saturation": {
                "step": self.args.step,
                "step_duration_s": self.args.step_duration.as_secs_f64(),
                base: saturation(&self.steps[0]).0,
                full: saturation(&self.steps[1]).0,
                "runs": self.steps.iter().flatten().map(run_json).collect::<Vec<_>>(),
                "unconfirmed_failures": self.unconfirmed.iter().flatten().map(run_json).collect::<Vec<_>>(),
            },
            "profiles": self.profiles.as_ref().map(|profiles| profiles.iter().map(|p| json!({
                "service": p.service,
                "file": p.path.display().to_string(),
                "categories": p.categories.iter().map(|(n, v)| json!({"what": n, "share": round(*v)})).collect::<Vec<_>>(),
                "crates": p.crates.iter().map(|(n, f, c)| json!({"crate": n, "flat": round(*f), "cumulative": round(*c)})).collect::<Vec<_>>(),
                "functions": p.functions.iter().map(|(n, f, c)| json!({"function": n, "flat": round(*f), "cumulative": round(*c)})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>()),
        })
    }
}

/// The chart of a saturation search: for each of the two systems
/// (`names`: baseline, full), the HTTP p50 (dashed) and p99 against the
/// offered rate, from its `(rate per second, p50 ms, p99 ms)` steps; the
/// p99 limit as a line.
fn saturation_chart(names: &[String; 2], steps: [Vec<(f64, f64, f64)>; 2]) -> String {
    let colors = ["#1f77b4", "#ff7f0e"];
    let mut series = Vec::new();
    for (i, (name, steps)) in names.iter().zip(steps).enumerate() {
        for (q, dashed) in [("p50", true), ("p99", false)] {
            let mut points: Vec<(f64, f64)> = steps
                .iter()
                .map(|&(rate, p50, p99)| (rate, if q == "p50" { p50 } else { p99 }))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            series.push(svg::Series {
                name: format!("{name} {q}"),
                color: colors[i],
                dashed,
                points,
            });
        }
    }
    svg::latency_chart(
        "POST /orders latency against offered rate",
        &series,
        MAX_P99_MS,
    )
}

/// The latency chart of a bench result as `cargo xtask bench` wrote it
/// (`bench/results/bench-*.json`), drawn again: the same picture as the
/// run's `bench-*.svg`, from the saturation steps it recorded.
///
/// Errors: the JSON is not a bench result with saturation steps of two
/// systems.
pub fn chart_from_result(result: &Value) -> anyhow::Result<String> {
    ensure!(result["kind"] == "bench", "not a bench result");
    let runs = result["saturation"]["runs"]
        .as_array()
        .context("the result has no saturation runs (was it run with --no-saturation?)")?;
    let mut names: Vec<String> = Vec::new();
    let mut steps: [Vec<(f64, f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for run in runs {
        let package = run["package"].as_str().context("a run without a package")?;
        if !names.iter().any(|name| name == package) {
            names.push(package.to_owned());
        }
        let i = names.iter().position(|name| name == package).unwrap();
        ensure!(i < 2, "more than two systems in the result");
        let http = &run["load"]["http_ms"];
        if let (Some(rate), Some(p50), Some(p99)) = (
            run["rate"].as_f64(),
            http["p50"].as_f64(),
            http["p99"].as_f64(),
        ) {
            steps[i].push((rate, p50, p99));
        }
    }
    let names: [String; 2] = names.try_into().map_err(|names: Vec<String>| {
        anyhow::anyhow!("{} systems in the result, not two", names.len())
    })?;
    Ok(saturation_chart(&names, steps))
}

/// In a debug build (what `cargo xtask` runs) the load generator itself
/// would be several times slower and compete with the systems for the
/// CPU: the bench runs itself again, built in release mode.
pub fn rerun_in_release(root: &Path) -> Option<std::process::ExitCode> {
    if !cfg!(debug_assertions) {
        return None;
    }
    println!("[bench] building xtask in release mode, so the load generator is not the bottleneck");
    let status = crate::cargo(root)
        .args(["run", "--release", "--quiet", "--package", "xtask", "--"])
        .args(std::env::args_os().skip(1))
        .status();
    Some(match status {
        Ok(status) if status.success() => std::process::ExitCode::SUCCESS,
        Ok(_) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("[bench] error: running cargo: {e}");
            std::process::ExitCode::FAILURE
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rate: f64, planned: u64, errors: u64, p99_ms: u64) -> Run {
        let mut latency = crate::load::drive::histogram();
        for _ in 0..planned - errors {
            crate::load::drive::record(&mut latency, Duration::from_millis(p99_ms));
        }
        let report = Report {
            profile: String::new(),
            url: String::new(),
            duration: Duration::from_secs(10),
            outcome: crate::load::drive::Outcome {
                planned,
                sent: planned,
                ok: planned - errors,
                errors: if errors > 0 {
                    BTreeMap::from([("timeout".to_owned(), errors)])
                } else {
                    BTreeMap::new()
                },
                latency,
                timeline: Vec::new(),
                elapsed: Duration::from_secs(10),
            },
            e2e: crate::load::report::EndToEnd {
                latency: crate::load::drive::histogram(),
                outcomes: BTreeMap::new(),
                sampled: 0,
                poll_interval: Duration::from_millis(2),
            },
            gateway_completion: None,
            started_at: String::new(),
        };
        Run {
            package: "x".into(),
            rate,
            report,
            cpu: BTreeMap::from([("gateway".to_owned(), 1.0), ("task".to_owned(), 3.0)]),
            rss: BTreeMap::from([("gateway".to_owned(), 10 << 20)]),
            loadgen_cpu: 0.5,
            foreign: 0.0,
            orders_in_life: planned,
            spans: planned * 10,
            log_bytes: planned * 300,
            attempt: 1,
        }
    }

    #[test]
    fn saturation_is_the_last_rate_before_the_first_failure() {
        let steps = vec![
            run(200.0, 2000, 0, 2),
            run(400.0, 4000, 0, 5),
            run(600.0, 6000, 0, 150),
            run(800.0, 8000, 0, 3),
        ];
        assert_eq!(saturation(&steps), (Some(400.0), true));
        let errors = vec![run(200.0, 2000, 0, 2), run(400.0, 4000, 40, 2)];
        assert_eq!(saturation(&errors), (Some(200.0), true), "1% errors fails");
        let fine = vec![run(200.0, 2000, 19, 2)];
        assert_eq!(saturation(&fine), (Some(200.0), false));
        assert_eq!(saturation(&[run(200.0, 10, 0, 500)]), (None, true));
        // Refined between 400 (pass) and 600 (fail): 500 passed, 550 not.
        let refined = vec![
            run(200.0, 2000, 0, 2),
            run(400.0, 4000, 0, 5),
            run(600.0, 6000, 0, 150),
            run(500.0, 5000, 0, 50),
            run(550.0, 5500, 0, 120),
        ];
        assert_eq!(saturation(&refined), (Some(500.0), true));
    }

    #[test]
    fn the_chart_of_a_result_is_drawn_from_its_saturation_steps() {
        let step = |package: &str, rate: f64, p50: f64, p99: f64| json!({"package": package, "rate": rate, "load": {"http_ms": {"p50": p50, "p99": p99}}});
        let result = json!({"kind": "bench", "saturation": {"runs": [
            step("ch00", 400.0, 2.0, 5.0),
            step("ch00", 200.0, 1.0, 3.0),
            step("final", 200.0, 1.5, 4.0),
        ]}});
        let names = ["ch00".to_owned(), "final".to_owned()];
        let steps = [
            vec![(400.0, 2.0, 5.0), (200.0, 1.0, 3.0)],
            vec![(200.0, 1.5, 4.0)],
        ];
        assert_eq!(
            chart_from_result(&result).unwrap(),
            saturation_chart(&names, steps)
        );
        assert!(chart_from_result(&json!({"kind": "load"})).is_err());
        let one_system =
            json!({"kind": "bench", "saturation": {"runs": [step("ch00", 200.0, 1.0, 3.0)]}});
        assert!(chart_from_result(&one_system).is_err());
    }

    #[test]
    fn figures_are_per_order_over_the_rounds() {
        let f = pooled(&[run(100.0, 1000, 0, 2), run(100.0, 1000, 0, 4)]);
        // 2 s of gateway CPU over 2000 orders.
        assert!((f.cpu_ms["gateway"] - 1.0).abs() < 1e-9);
        assert!((f.cpu_ms["total"] - 4.0).abs() < 1e-9);
        assert!((f.rss_mib["gateway"] - 10.0).abs() < 1e-9);
        assert_eq!(f.http.unwrap().count, 2000);
        assert!((f.spans_per_order - 10.0).abs() < 1e-9);
        assert!((f.log_bytes_per_order - 300.0).abs() < 1e-9);
        assert_eq!(ratio(3.0, 2.0), "1.50x");
        assert_eq!(ratio(3.0, 0.0), "-");
    }
}
