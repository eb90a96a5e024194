//! `cargo xtask demo`: the whole system, a few orders, and what became of
//! each, in one command and a few seconds.
//!
//! It drives the system from outside, exactly as a client would: it starts
//! the chapter's `all` launcher as a child process, talks to it over HTTP
//! only, and stops it with SIGTERM as an operator would.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use orders::fulfilment::SOLD_OUT_PREFIX;
use orders::topology::{Service, Topology};
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use testkit::{Api, OtlpReceiver, order_body};

use crate::{launch, provision, show};

/// The package the demo runs: the most complete chapter written so far.
pub const CHAPTER: &str = "final";

/// The orders placed: (product, quantity). One product is sold out, so the
/// demo shows the failure path next to the happy one.
const ORDERS: [(&str, u32); 5] = [
    ("A001", 2),
    ("B042", 1),
    ("sold-out-lamp", 1),
    ("C777", 5),
    ("D310", 3),
];

/// How long each profile of task samples.
const PROFILE_SECONDS: u64 = 2;
const READY_DEADLINE: Duration = Duration::from_secs(60);
const HANDLED_DEADLINE: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long one request to the system may take, unless it says otherwise.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(clap::Args)]
pub struct Args {
    /// The chapter package to run; each shows what its layer adds.
    #[arg(long, default_value = CHAPTER)]
    chapter: String,
}

/// Runs the demo; an error means some order was not handled as expected or
/// the system misbehaved.
pub async fn run(root: &Path, args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let nats_server = provision::nats_server()?;
    let chapter = args.chapter.as_str();
    let binary = build(root, chapter)?;

    let topology = Topology::on_free_ports()?;
    // The demo is the system's trace collector: spans come here, not to Tempo.
    let collector = OtlpReceiver::start().await?;
    let mut system = start(chapter, &binary, &nats_server, &topology, &collector, &[])?;
    let logs = capture_logs(&mut system);
    // Whatever happens while the system runs, it is stopped afterwards.
    let target = crate::target_dir(root);
    let outcome = exercise(&topology, &mut system, &logs, &target).await;
    let stopped = stop(&mut system).await;
    // Stopping flushed the services' last spans: now the trace is whole.
    if let Ok(first_order) = &outcome {
        show_trace(&collector, first_order.as_deref());
    }
    println!(
        "[demo] wall time {:.1} s, build included",
        started.elapsed().as_secs_f64()
    );
    outcome.and(stopped)
}

/// Builds the chapter with the same cargo that runs us and returns its binary.
fn build(root: &Path, chapter: &str) -> anyhow::Result<PathBuf> {
    println!("[demo] building {chapter}");
    let status = crate::cargo(root)
        .args(["build", "--package", chapter])
        .status()
        .context("running cargo build")?;
    ensure!(
        status.success(),
        "cargo build -p {chapter} failed ({status})"
    );
    let binary = crate::target_dir(root)
        .join("debug")
        .join(launch::binary_name(chapter));
    ensure!(
        binary.is_file(),
        "built {chapter}, but found no binary at {}",
        binary.display()
    );
    Ok(binary)
}

/// Starts `<chapter> all` on `topology` with its own nats-server, its
/// spans sent to `collector`, and the variables `envs` set (such as
/// chapter 04's `TRACE_RELATION`). Its stdout is piped: read it with
/// [`capture_logs`].
pub(crate) fn start(
    chapter: &str,
    binary: &Path,
    nats_server: &Path,
    topology: &Topology,
    collector: &OtlpReceiver,
    envs: &[(&str, &str)],
) -> anyhow::Result<Child> {
    println!("[demo] starting {chapter} all");
    let mut command = Command::new(binary);
    command
        .arg("all")
        .args(topology.to_args())
        .env("NATS_SERVER_BIN", nats_server)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        // A NATS server or database from the caller's shell would make the
        // demo depend on, and write into, state it does not own.
        .env_remove("NATS_URL")
        .env_remove("ORDERS_DB")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    orders::launcher::die_with_parent(&mut command);
    command
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

/// The JSON log lines the system writes to stdout, kept to be shown after
/// the orders; its other lines (the launcher's banner) are printed as they
/// come.
pub(crate) fn capture_logs(system: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let logs = Arc::new(Mutex::new(Vec::new()));
    let stdout = system.stdout.take().expect("stdout is piped");
    let keep = logs.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with('{') {
                keep.lock().unwrap().push(line);
            } else {
                println!("{line}");
            }
        }
    });
    logs
}

/// Waits for readiness, places the orders and waits for their outcome,
/// then shows what the chapter's metrics and logs say about them. Fails
/// unless every order ended as its product says it should. Returns the
/// trace id of the first order, when the gateway named it.
async fn exercise(
    topology: &Topology,
    system: &mut Child,
    logs: &Mutex<Vec<String>>,
    target: &Path,
) -> anyhow::Result<Option<String>> {
    let started = Instant::now();
    let api = Api::with_timeout(
        format!("http://{}", topology.gateway_http),
        launch::api_token(),
        REQUEST_TIMEOUT,
    );
    wait_until_ready(&api, topology, system).await?;

    let mut placed = Vec::new();
    for (i, (product, quantity)) in ORDERS.into_iter().enumerate() {
        let order = place(&api, product, quantity).await?;
        println!(
            "[demo] order {}/{} accepted: {} ({product} x{quantity})",
            i + 1,
            ORDERS.len(),
            order.id
        );
        placed.push(order);
    }

    wait_until_handled(&api, system, &mut placed).await?;
    print_table(&placed);
    check(&placed)?;

    show_metrics(&api, topology, started.elapsed()).await;
    show_logs(&logs.lock().unwrap(), &placed[0].id);
    profile_task(&api, topology, target).await?;
    Ok(placed[0].trace_id.clone())
}

/// Profiles task's CPU for a couple of seconds while orders keep coming,
/// prints the functions that used it most, and writes a flamegraph of a
/// second sampling to `target/demo/task-flamegraph.svg`.
async fn profile_task(api: &Api, topology: &Topology, target: &Path) -> anyhow::Result<()> {
    let admin = format!("http://{}/debug/pprof", topology.admin(Service::Task));
    let available = api.http().get(format!("{admin}/")).send().await;
    if !available.is_ok_and(|r| r.status().is_success()) {
        println!("[demo] profiles: none at {admin}/ (this chapter has no profiles yet)");
        return Ok(());
    }
    println!("[demo] profiling task for {PROFILE_SECONDS} s while orders keep coming");
    let busy = std::sync::atomic::AtomicBool::new(true);
    let load = async {
        let mut accepted = 0;
        while busy.load(std::sync::atomic::Ordering::Relaxed) {
            let batch = (0..8).map(|_| place(api, "A001", 10));
            accepted += futures::future::join_all(batch)
                .await
                .into_iter()
                .filter(Result::is_ok)
                .count();
        }
        accepted
    };
    let sample = async {
        let admin = admin.as_str();
        let fetch = |path: &'static str| async move {
            let response = api
                .http()
                .get(format!("{admin}/{path}?seconds={PROFILE_SECONDS}"))
                .timeout(Duration::from_secs(60))
                .send()
                .await?
                .error_for_status()?;
            anyhow::Ok(response.bytes().await?)
        };
        let profile = fetch("profile").await;
        let flamegraph = fetch("flamegraph").await;
        busy.store(false, std::sync::atomic::Ordering::Relaxed);
        (profile, flamegraph)
    };
    let (accepted, (profile, flamegraph)) = tokio::join!(load, sample);
    println!("[demo] {accepted} more orders accepted while profiling");

    println!(
        "[demo] task's top functions by CPU samples (flat: the function itself; cum: with what it calls):"
    );
    println!("  {:>6}  {:>6}  function", "flat", "cum");
    for (function, flat, cumulative) in crate::profile::top_functions(&profile?, 10)? {
        println!(
            "  {:>5.1}%  {:>5.1}%  {function}",
            flat * 100.0,
            cumulative * 100.0
        );
    }
    let path = target.join("demo/task-flamegraph.svg");
    std::fs::create_dir_all(path.parent().expect("a parent directory"))?;
    std::fs::write(&path, flamegraph?)?;
    println!(
        "[demo] flamegraph of task written to {} (open it in a browser)",
        path.display()
    );
    println!();
    Ok(())
}

/// The waterfall of one order's trace, if the chapter exports spans.
fn show_trace(collector: &OtlpReceiver, trace_id: Option<&str>) {
    let spans = collector.spans();
    let Some(trace_id) = trace_id else {
        println!(
            "[demo] traces: the gateway named no trace (no `traceresponse` header in this chapter)"
        );
        return;
    };
    let Some(bytes) = testkit::otlp::trace_id_bytes(trace_id)
        .filter(|id| spans.iter().any(|s| s.span.trace_id == *id))
    else {
        println!("[demo] traces: no span of trace {trace_id} reached the demo's collector");
        return;
    };
    println!("[demo] the trace of the first order, as the services exported it:");
    println!("{}", testkit::otlp::render_waterfall(&spans, &bytes, 40));
}

/// A few figures from each service's `/metrics`, if the chapter has them.
async fn show_metrics(api: &Api, topology: &Topology, elapsed: Duration) {
    let mut scraped = Vec::new();
    for service in Service::ALL {
        let url = format!("http://{}/metrics", topology.admin(service));
        match api.http().get(&url).send().await {
            Ok(response) if response.status().is_success() => {
                let text = response.text().await.unwrap_or_default();
                match testkit::exposition::samples(&text) {
                    Ok(samples) => scraped.push((service, samples)),
                    Err(e) => {
                        println!("[demo] metrics: {url} is not Prometheus text ({e:?})");
                        return;
                    }
                }
            }
            _ => {
                println!("[demo] metrics: none at {url} (this chapter has no metrics yet)");
                return;
            }
        }
    }
    let seconds = elapsed.as_secs_f64();
    let ms = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{:.2} ms", v * 1e3));
    println!("[demo] metrics, scraped from the admin ports after {seconds:.1} s:");
    for (service, samples) in &scraped {
        let lines: Vec<(String, String)> = match service {
            Service::Gateway => {
                let created = show::sum(
                    samples,
                    "http_requests_total",
                    &[("route", "/orders"), ("status", "201")],
                );
                let post = [("route", "/orders"), ("method", "POST")];
                vec![
                    (
                        "http_requests_total{route=\"/orders\",status=\"201\"}".to_owned(),
                        format!("{created} ({:.1}/s over the demo)", created / seconds),
                    ),
                    (
                        "POST /orders latency p99".to_owned(),
                        ms(show::quantile(
                            samples,
                            "http_request_duration_seconds",
                            &post,
                            0.99,
                        )),
                    ),
                    (
                        "orders_completed_total by outcome".to_owned(),
                        format!(
                            "completed {}, failed {}",
                            show::sum(
                                samples,
                                "orders_completed_total",
                                &[("outcome", "completed")]
                            ),
                            show::sum(samples, "orders_completed_total", &[("outcome", "failed")])
                        ),
                    ),
                    (
                        "order completion p99".to_owned(),
                        ms(show::quantile(
                            samples,
                            "order_completion_seconds",
                            &[],
                            0.99,
                        )),
                    ),
                ]
            }
            Service::Logic => vec![
                (
                    "orders_created_total".to_owned(),
                    show::sum(samples, "orders_created_total", &[]).to_string(),
                ),
                (
                    "SQLite insert p99".to_owned(),
                    ms(show::quantile(
                        samples,
                        "db_query_duration_seconds",
                        &[("operation", "insert")],
                        0.99,
                    )),
                ),
                (
                    "JetStream publish p99".to_owned(),
                    ms(show::quantile(
                        samples,
                        "mq_publish_duration_seconds",
                        &[],
                        0.99,
                    )),
                ),
            ],
            Service::Task => vec![
                (
                    "mq_consumed_total{status=\"ack\"}".to_owned(),
                    show::sum(samples, "mq_consumed_total", &[("status", "ack")]).to_string(),
                ),
                (
                    "queue delay p99".to_owned(),
                    ms(show::quantile(samples, "mq_queue_delay_seconds", &[], 0.99)),
                ),
                (
                    "handling p99".to_owned(),
                    ms(show::quantile(
                        samples,
                        "mq_handle_duration_seconds",
                        &[],
                        0.99,
                    )),
                ),
            ],
        };
        for (what, value) in lines {
            println!("  {service:<8} {what:<48} {value}");
        }
    }
    println!();
}

/// The log lines of one order, if the chapter writes JSON logs.
fn show_logs(lines: &[String], order_id: &str) {
    let mine = show::lines_of_order(lines, order_id);
    if mine.is_empty() {
        println!(
            "[demo] logs: no JSON log line names order {order_id} (this chapter has no structured logs yet)"
        );
        return;
    }
    println!(
        "[demo] the log lines of order {order_id}; the trace_id shows which lines one trace joins:"
    );
    for line in mine {
        if let Some(text) = show::readable_log_line(line) {
            println!("  {text}");
        }
    }
    println!();
}

/// Stops the system as an operator would, with SIGTERM, and waits for it;
/// kills it if it does not stop within the grace period. A system that has
/// already exited needs no stopping: that was reported where it was seen.
pub(crate) async fn stop(system: &mut Child) -> anyhow::Result<()> {
    let Some(pid) = system.id() else {
        return Ok(());
    };
    println!("[demo] stopping the system (SIGTERM)");
    let pid = Pid::from_raw(i32::try_from(pid)?);
    let _ = kill(pid, Signal::SIGTERM);
    match tokio::time::timeout(STOP_GRACE, system.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => bail!("the system exited with {status} on SIGTERM"),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => {
            orders::launcher::terminate(system, Duration::from_secs(1)).await;
            bail!(
                "the system did not stop within {} s of SIGTERM; killed it",
                STOP_GRACE.as_secs()
            )
        }
    }
}

/// One order the demo placed and, once known, how it ended.
pub(crate) struct Placed {
    pub(crate) id: String,
    product: &'static str,
    sent_at: Instant,
    /// From the gateway's W3C `traceresponse` header, when it sends one.
    pub(crate) trace_id: Option<String>,
    pub(crate) outcome: Option<Outcome>,
}

pub(crate) struct Outcome {
    pub(crate) status: String,
    detail: String,
    /// From sending `POST /orders` to the first `GET` that saw the result.
    millis: u128,
}

/// Places an order of `quantity` `product` for user 1001 and returns it,
/// with the trace id the gateway named. An error unless it is 201.
pub(crate) async fn place(
    api: &Api,
    product: &'static str,
    quantity: u32,
) -> anyhow::Result<Placed> {
    let sent_at = Instant::now();
    let response = api
        .request(Method::POST, "/orders")
        .json(&order_body("1001", product, i64::from(quantity)))
        .send()
        .await?;
    let status = response.status();
    // `traceresponse: 00-<trace id>-<span id>-<flags>`
    let trace_id = response
        .headers()
        .get("traceresponse")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split('-').nth(1))
        .map(str::to_owned);
    let body: Value = response.json().await?;
    ensure!(
        status == reqwest::StatusCode::CREATED,
        "POST /orders for {product} answered {status}: {body}"
    );
    let id = body["order_id"]
        .as_str()
        .with_context(|| format!("no order_id in {body}"))?;
    Ok(Placed {
        id: id.to_owned(),
        product,
        sent_at,
        trace_id,
        outcome: None,
    })
}

/// `GET /orders/{id}`: its status and detail. An error unless it is 2xx
/// with a JSON body.
async fn order_status(api: &Api, id: &str) -> anyhow::Result<(String, String)> {
    let response = api
        .request(Method::GET, &format!("/orders/{id}"))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    ensure!(
        status.is_success(),
        "GET /orders/{id} answered {status}: {body}"
    );
    let text = |field: &str| body[field].as_str().unwrap_or_default().to_owned();
    Ok((text("status"), text("detail")))
}

/// Polls every admin `/readyz` until all answer 200.
pub(crate) async fn wait_until_ready(
    api: &Api,
    topology: &Topology,
    system: &mut Child,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_DEADLINE;
    for service in Service::ALL {
        loop {
            if orders::admin::is_ready(api.http(), topology.admin(service)).await {
                break;
            }
            still_running(system)?;
            ensure!(
                Instant::now() < deadline,
                "{service} was not ready within {} s",
                READY_DEADLINE.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!("[demo] all three services are ready");
    Ok(())
}

/// Polls each order until its status is no longer `created`.
pub(crate) async fn wait_until_handled(
    api: &Api,
    system: &mut Child,
    placed: &mut [Placed],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + HANDLED_DEADLINE;
    while placed.iter().any(|order| order.outcome.is_none()) {
        for order in placed.iter_mut().filter(|order| order.outcome.is_none()) {
            let (status, detail) = order_status(api, &order.id).await?;
            if status != "created" {
                order.outcome = Some(Outcome {
                    status,
                    detail,
                    millis: order.sent_at.elapsed().as_millis(),
                });
            }
        }
        still_running(system)?;
        if Instant::now() > deadline {
            let pending = placed.iter().filter(|order| order.outcome.is_none());
            let ids: Vec<&str> = pending.map(|order| order.id.as_str()).collect();
            bail!(
                "not handled within {} s: {}",
                HANDLED_DEADLINE.as_secs(),
                ids.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn still_running(system: &mut Child) -> anyhow::Result<()> {
    match system.try_wait()? {
        Some(status) => bail!("the system exited with {status}; its output is above"),
        None => Ok(()),
    }
}

/// Sold-out products fail, everything else completes.
fn expected_status(product: &str) -> &'static str {
    if product.starts_with(SOLD_OUT_PREFIX) {
        "failed"
    } else {
        "completed"
    }
}

fn print_table(placed: &[Placed]) {
    println!();
    println!(
        "{:<36}  {:<13}  {:<9}  {:>5}  detail",
        "order id", "product", "status", "ms"
    );
    for order in placed {
        if let Some(outcome) = &order.outcome {
            println!(
                "{:<36}  {:<13}  {:<9}  {:>5}  {}",
                order.id, order.product, outcome.status, outcome.millis, outcome.detail
            );
        }
    }
    println!();
}

/// Every order ended as its product says it should.
fn check(placed: &[Placed]) -> anyhow::Result<()> {
    let wrong: Vec<String> = placed
        .iter()
        .filter_map(|order| {
            let status = order.outcome.as_ref().map_or("", |o| o.status.as_str());
            let expected = expected_status(order.product);
            (status != expected).then(|| {
                format!(
                    "{} ({}): {status}, expected {expected}",
                    order.id, order.product
                )
            })
        })
        .collect();
    ensure!(
        wrong.is_empty(),
        "orders not handled as expected:\n  {}",
        wrong.join("\n  ")
    );
    println!("[demo] all {} orders handled as expected", placed.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_shows_both_outcomes() {
        let statuses: Vec<&str> = ORDERS.iter().map(|(p, _)| expected_status(p)).collect();
        assert!(statuses.contains(&"completed"));
        assert!(statuses.contains(&"failed"));
    }
}
