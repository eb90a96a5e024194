//! `cargo xtask incident NAME`: a staged incident, and what each pillar
//! shows of it.
//!
//! It starts `final` (no Docker: the `all` launcher, with its own
//! nats-server, a trace collector in this process and, when `prometheus`
//! is on PATH, a Prometheus that scrapes the services and evaluates the
//! project's recording and alert rules), puts a steady load on it, and
//! then, in three phases, prints what an on-call engineer would look at:
//!
//! 1. **baseline**: the incident's metrics, by their PromQL;
//! 2. **fault on** (switched on the service's admin port, as a reader
//!    would): the same metrics, the alerts that went pending or firing,
//!    the waterfall of an affected trace, the log lines of that request,
//!    and, where CPU or memory is the cause, the profile's top functions;
//! 3. **fault off**: the metrics again, back to the baseline.
//!
//! `cargo xtask incident --list` names the incidents; the book has one page
//! per incident (`book/incidents/`), written as a case to solve.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use orders::topology::{Service, Topology};
use serde_json::{Value, json};
use testkit::otlp::{ReceivedSpan, attribute, render_waterfall, trace_id_hex};
use testkit::prometheus::Prometheus;
use testkit::{Api, OtlpReceiver, order_body};

use crate::{demo, launch, profile, provision, show};

/// Prints a line and keeps it in the report.
macro_rules! say {
    ($report:expr, $($arg:tt)*) => {
        $report.line(format!($($arg)*))
    };
}

/// What an incident prints, kept as it goes, to be written to a file too
/// (`--write`: the book's pages include these outputs).
#[derive(Debug, Clone, Default)]
pub struct Report(Arc<Mutex<String>>);

impl Report {
    /// Prints `text` and keeps it.
    pub fn line(&self, text: impl AsRef<str>) {
        let text = text.as_ref();
        println!("{text}");
        let mut kept = self.0.lock().unwrap();
        kept.push_str(text);
        kept.push('\n');
    }

    /// Everything printed so far.
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// One staged incident: the fault, and where its evidence is.
#[derive(Debug)]
pub struct Incident {
    /// The name on the command line: the fault's own.
    pub name: &'static str,
    /// The service the fault lives in, and the setting it is given.
    pub service: Service,
    pub value: f64,
    /// What a user or a dashboard notices first.
    pub symptom: &'static str,
    /// The queries whose values move, each with what it measures.
    pub metrics: &'static [(&'static str, &'static str)],
    /// The alerts whose condition the fault makes true.
    pub alerts: &'static [&'static str],
    /// The span that shows the fault best: its service and name, and
    /// which one to pick among many.
    pub span: (&'static str, &'static str, Pick),
    /// The profile that names the cause, when CPU or memory is it.
    pub profile: Option<(Service, &'static str)>,
}

/// Which span of many [`Incident::span`] picks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pick {
    /// The longest, among those made while the fault was on.
    Slowest,
    /// The first whose status is an error.
    Failed,
    /// The first that is a root: the start of a trace of its own.
    Root,
}

/// Every incident, in the book's order.
pub const INCIDENTS: [Incident; 6] = [
    Incident {
        name: "slow_writes",
        service: Service::Logic,
        value: 300.0,
        symptom: "POST /orders is slow: every answer takes over 300 ms, the latency SLO burns",
        metrics: &[
            (
                "POST /orders p99, seconds (gateway)",
                r#"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job="gateway",method="POST",route="/orders"}[15s])))"#,
            ),
            (
                "SQLite insert p99, seconds (logic)",
                r#"histogram_quantile(0.99, sum by (le) (rate(db_query_duration_seconds_bucket{job="logic",operation="insert"}[15s])))"#,
            ),
            (
                "share of POST /orders slower than the SLO's 250 ms, 5m",
                "slo:post_orders_slow:ratio_rate5m",
            ),
        ],
        alerts: &["OrdersLatencyBurnFast", "FaultSwitchedOn"],
        span: ("logic", "INSERT orders", Pick::Slowest),
        profile: None,
    },
    Incident {
        name: "error_burst",
        service: Service::Logic,
        value: 0.3,
        symptom: "three POST /orders in ten fail with 503, the availability SLO burns",
        metrics: &[
            (
                "POST /orders answered 503, per second (gateway)",
                r#"sum(rate(http_requests_total{job="gateway",route="/orders",status="503"}[15s])) or vector(0)"#,
            ),
            (
                "CreateOrder answered Unavailable, per second (logic)",
                r#"sum(rate(grpc_server_handled_total{job="logic",method="CreateOrder",code="Unavailable"}[15s])) or vector(0)"#,
            ),
            (
                "share of POST /orders answered 5xx, 5m",
                "slo:post_orders_errors:ratio_rate5m",
            ),
        ],
        alerts: &["OrdersAvailabilityBurnFast", "FaultSwitchedOn"],
        span: ("logic", "orders.v1.OrderService/CreateOrder", Pick::Failed),
        profile: None,
    },
    Incident {
        name: "lost_context",
        service: Service::Logic,
        value: 1.0,
        symptom: "nothing on the dashboards: orders complete; in Tempo, task's spans are no longer in the orders' traces",
        metrics: &[
            (
                "orders completed, per second (gateway)",
                r#"sum(rate(orders_completed_total{job="gateway"}[15s]))"#,
            ),
            (
                "deliveries acked, per second (task)",
                r#"sum(rate(mq_consumed_total{job="task",status="ack"}[15s]))"#,
            ),
        ],
        alerts: &["FaultSwitchedOn"],
        span: ("task", "process orders.created", Pick::Root),
        profile: None,
    },
    Incident {
        name: "cpu_hog",
        service: Service::Task,
        value: 0.5,
        symptom: "orders of some products take much longer to complete; task's CPU climbs",
        metrics: &[
            (
                "task's CPU, seconds per second",
                r#"rate(process_cpu_seconds_total{job="task"}[15s])"#,
            ),
            (
                "handling of a delivery, p99, seconds (task)",
                r#"histogram_quantile(0.99, sum by (le) (rate(mq_handle_duration_seconds_bucket{job="task"}[15s])))"#,
            ),
            (
                "order accepted to completed, p99, seconds (gateway)",
                r#"histogram_quantile(0.99, sum by (le) (rate(order_completion_seconds_bucket{job="gateway"}[15s])))"#,
            ),
        ],
        alerts: &["QueueDelayGrowing", "FaultSwitchedOn"],
        span: ("task", "handle", Pick::Slowest),
        profile: Some((Service::Task, "profile")),
    },
    Incident {
        name: "memory_leak",
        service: Service::Gateway,
        value: 64.0,
        symptom: "the gateway's memory grows with every order and never comes back",
        metrics: &[(
            "gateway's resident memory, MiB",
            r#"process_resident_memory_bytes{job="gateway"} / 2^20"#,
        )],
        alerts: &["ServiceMemoryGrowing", "FaultSwitchedOn"],
        span: ("gateway", "POST /orders", Pick::Slowest),
        profile: Some((Service::Gateway, "heap")),
    },
    Incident {
        name: "failing_callbacks",
        service: Service::Gateway,
        value: 0.3,
        symptom: "three orders in ten never complete: task retries them, then gives up",
        metrics: &[
            (
                "redeliveries, per second (task)",
                r#"sum(rate(mq_redeliveries_total{job="task"}[15s])) or vector(0)"#,
            ),
            (
                "PushResult answered Unavailable, per second (gateway)",
                r#"sum(rate(grpc_server_handled_total{job="gateway",method="PushResult",code="Unavailable"}[15s])) or vector(0)"#,
            ),
            (
                "messages moved to the dead letters, last 5m (task)",
                r#"sum(increase(mq_dead_lettered_total{job="task"}[5m]))"#,
            ),
        ],
        alerts: &[
            "OrdersDeadLettered",
            "QueueDelayGrowing",
            "OrdersNotCompleting",
            "FaultSwitchedOn",
        ],
        span: (
            "gateway",
            "orders.v1.GatewayCallback/PushResult",
            Pick::Failed,
        ),
        profile: None,
    },
];

/// The products the load orders, in turn: several, so that a fault that
/// picks products picks some and not others.
const PRODUCTS: [&str; 6] = ["A001", "B042", "C777", "D310", "E555", "F900"];

#[derive(clap::Args)]
pub struct Args {
    /// The incident: one of `--list`.
    #[arg(required_unless_present = "list")]
    name: Option<String>,
    /// Name every incident, with its symptom, and stop.
    #[arg(long)]
    list: bool,
    /// Orders per second of the steady load.
    #[arg(long, default_value_t = 20)]
    rate: u32,
    /// Seconds of each phase: baseline, fault on, fault off. The fault
    /// phase lasts twice as long (redeliveries need it).
    #[arg(long, default_value_t = 20)]
    phase_seconds: u64,
    /// Run a release build (profiles as in production; builds once, longer).
    #[arg(long)]
    release: bool,
    /// Also write the output to book/incidents/outputs/NAME.txt, for the
    /// incident's page.
    #[arg(long)]
    write: bool,
}

/// Runs the incident `args` names, or lists them.
pub async fn run(root: &Path, args: &Args) -> anyhow::Result<()> {
    let report = Report::default();
    if args.list {
        for incident in &INCIDENTS {
            say!(report, "{:<18} {}", incident.name, incident.symptom);
        }
        return Ok(());
    }
    let name = args.name.as_deref().unwrap_or_default();
    let Some(incident) = INCIDENTS.iter().find(|i| i.name == name) else {
        let names: Vec<&str> = INCIDENTS.iter().map(|i| i.name).collect();
        bail!(
            "no incident {name:?}; the incidents are {}",
            names.join(", ")
        );
    };
    let binary = launch::build(root, &["final"], args.release)?
        .pop()
        .context("the binary of final")?;
    run_with(root, &binary, incident, args, &report).await?;
    if args.write {
        let path = root.join(OUTPUTS).join(format!("{}.txt", incident.name));
        std::fs::create_dir_all(path.parent().expect("a parent directory"))?;
        // Fitted to the book's page, as the tests' outputs are.
        let mut fitted = String::new();
        for line in report.text().lines() {
            // A waterfall's lines stay whole: wrapped, its bars would break.
            if line.contains('█') {
                fitted.push_str(line);
                fitted.push('\n');
            } else {
                crate::outputs::wrap(line, &mut fitted);
            }
        }
        std::fs::write(&path, fitted)?;
        println!("[incident] written to {}", path.display());
    }
    Ok(())
}

/// Where `--write` puts each incident's output, for its page to include.
pub const OUTPUTS: &str = "book/incidents/outputs";

/// Starts `binary` (final's `all`) and stages `incident` on it.
async fn run_with(
    root: &Path,
    binary: &Path,
    incident: &Incident,
    args: &Args,
    report: &Report,
) -> anyhow::Result<()> {
    let nats_server = provision::nats_server()?;
    let topology = Topology::on_free_ports()?;
    let collector = OtlpReceiver::start().await?;
    let mut system = demo::start("final", binary, &nats_server, &topology, &collector, &[])?;
    let logs = demo::capture_logs(&mut system);
    let api = Api::with_timeout(
        format!("http://{}", topology.gateway_http),
        launch::api_token(),
        demo::REQUEST_TIMEOUT,
    );
    let outcome = async {
        demo::wait_until_ready(&api, &topology, &mut system).await?;
        let prometheus = start_prometheus(report, root, &topology).await?;
        let staged = Staged {
            api: &api,
            topology: &topology,
            prometheus: prometheus.as_ref(),
            collector: &collector,
            logs: &logs,
        };
        stage(report, incident, args, &staged).await
    }
    .await;
    let stopped = demo::stop(&mut system).await;
    outcome.and(stopped)
}

/// The running system an incident is staged on, and what watches it.
struct Staged<'a> {
    api: &'a Api,
    topology: &'a Topology,
    prometheus: Option<&'a Prometheus>,
    collector: &'a OtlpReceiver,
    logs: &'a Mutex<Vec<String>>,
}

/// A Prometheus scraping the three services with the project's rules, or
/// `None` (with a line saying so) when there is no `prometheus` on PATH.
async fn start_prometheus(
    report: &Report,
    root: &Path,
    topology: &Topology,
) -> anyhow::Result<Option<Prometheus>> {
    let Some(binary) = testkit::prometheus::binary("the incident's PromQL and alerts") else {
        say!(
            report,
            "[incident] no prometheus on PATH: metrics and alerts are not shown \
             (the alerts' promtool tests, config/prometheus/tests/incidents_test.yml, show them)"
        );
        return Ok(None);
    };
    let rules: Vec<PathBuf> = ["recording.rules.yml", "alerts.rules.yml"]
        .iter()
        .map(|file| root.join("config/prometheus").join(file))
        .collect();
    let targets: Vec<(&str, std::net::SocketAddr)> = Service::ALL
        .iter()
        .map(|s| (s.name(), topology.admin(*s)))
        .collect();
    let prometheus = Prometheus::start(&binary, &targets, &rules).await?;
    prometheus.wait_until_scraped(targets.len()).await;
    Ok(Some(prometheus))
}

/// The three phases, under a steady load.
async fn stage(
    report: &Report,
    incident: &Incident,
    args: &Args,
    system: &Staged<'_>,
) -> anyhow::Result<()> {
    let Staged {
        api,
        topology,
        prometheus,
        collector,
        logs,
    } = *system;
    let load = Load::start(api.clone(), args.rate);
    let phase = Duration::from_secs(args.phase_seconds);
    say!(
        report,
        "[incident] {}: a steady {} orders/s; baseline for {} s",
        incident.name,
        args.rate,
        phase.as_secs()
    );
    tokio::time::sleep(phase).await;
    heading(report, "baseline");
    show_metrics(report, incident, prometheus).await;
    load.report_and_reset(report);

    switch(report, api, topology, incident, incident.value).await?;
    let switched_at = std::time::SystemTime::now();
    tokio::time::sleep(phase * 2).await;
    heading(
        report,
        &format!(
            "{}={} on, for {} s",
            incident.name,
            incident.value,
            phase.as_secs() * 2
        ),
    );
    say!(report, "symptom: {}", incident.symptom);
    load.report_and_reset(report);
    show_metrics(report, incident, prometheus).await;
    show_alerts(report, incident, prometheus).await;
    let spans = collector.spans();
    let trace = show_trace(report, incident, &spans, switched_at);
    show_logs(report, &logs.lock().unwrap(), &spans, trace.as_deref());
    if let Some((service, kind)) = incident.profile {
        show_profile(report, api, topology, service, kind).await?;
    }

    switch(report, api, topology, incident, 0.0).await?;
    tokio::time::sleep(phase).await;
    heading(
        report,
        &format!("{} off, for {} s", incident.name, phase.as_secs()),
    );
    load.report_and_reset(report);
    show_metrics(report, incident, prometheus).await;
    load.stop();
    Ok(())
}

fn heading(report: &Report, text: &str) {
    say!(report, "\n== {text} ==");
}

/// `PUT /admin/faults/{name}` on the admin port of the incident's service.
async fn switch(
    report: &Report,
    api: &Api,
    topology: &Topology,
    incident: &Incident,
    value: f64,
) -> anyhow::Result<()> {
    let url = format!(
        "http://{}/admin/faults/{}",
        topology.admin(incident.service),
        incident.name
    );
    say!(
        report,
        "\n$ curl -X PUT {url} -d '{}'",
        json!({ "value": value })
    );
    let answer = api
        .http()
        .put(&url)
        .json(&json!({ "value": value }))
        .send()
        .await
        .with_context(|| format!("PUT {url}"))?;
    let status = answer.status();
    let body: Value = answer.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("PUT {url}: {status} {body}");
    }
    // The service's answer: the fault's setting now, with its unit.
    let set = body["faults"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["name"] == incident.name);
    if let Some(fault) = set {
        say!(
            report,
            "{} = {} ({})",
            incident.name,
            fault["value"],
            fault["unit"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

/// The incident's PromQL and what each evaluates to now.
async fn show_metrics(report: &Report, incident: &Incident, prometheus: Option<&Prometheus>) {
    let Some(prometheus) = prometheus else {
        return;
    };
    say!(report, "metrics (PromQL, evaluated by Prometheus now):");
    for (what, promql) in incident.metrics {
        let value = match prometheus.query(promql).await {
            Ok(vector) => match vector.as_slice() {
                [] => "no data".to_owned(),
                series => series
                    .iter()
                    .map(|(_, v)| format_value(*v))
                    .collect::<Vec<_>>()
                    .join(", "),
            },
            Err(e) => format!("error: {e:#}"),
        };
        say!(report, "  {what}: {value}\n    {promql}");
    }
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN (nothing to measure)".to_owned()
    } else if value.abs() >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}

/// The incident's alerts, as Prometheus's `ALERTS` series has them: pending
/// while the condition holds for less than the rule's `for`, then firing.
async fn show_alerts(report: &Report, incident: &Incident, prometheus: Option<&Prometheus>) {
    let Some(prometheus) = prometheus else {
        return;
    };
    say!(
        report,
        "alerts (config/prometheus/alerts.rules.yml, evaluated every second):"
    );
    let states = prometheus
        .query(r#"ALERTS{alertstate=~"pending|firing"}"#)
        .await
        .unwrap_or_default();
    for alert in incident.alerts {
        // Each state, with the jobs (or subjects) it holds for.
        let mut by_state = std::collections::BTreeMap::<&str, Vec<&str>>::new();
        for (labels, _) in states.iter().filter(|(l, _)| l["alertname"] == *alert) {
            let state = labels["alertstate"].as_str().unwrap_or("?");
            let on = labels["job"]
                .as_str()
                .or(labels["subject"].as_str())
                .unwrap_or("");
            by_state.entry(state).or_default().push(on);
        }
        let shown: Vec<String> = by_state
            .iter()
            .map(|(state, on)| {
                let on: Vec<&str> = on.iter().copied().filter(|o| !o.is_empty()).collect();
                match on.as_slice() {
                    [] => (*state).to_owned(),
                    on => format!("{state} ({})", on.join(", ")),
                }
            })
            .collect();
        let shown = if shown.is_empty() {
            "inactive".to_owned()
        } else {
            shown.join(", ")
        };
        say!(report, "  {alert}: {shown}");
    }
}

/// The waterfall of the trace of the incident's span, and that trace's id.
fn show_trace(
    report: &Report,
    incident: &Incident,
    spans: &[ReceivedSpan],
    since: std::time::SystemTime,
) -> Option<String> {
    let (service, name, pick) = incident.span;
    let since = since
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let candidates = spans.iter().filter(|s| {
        s.service == service && s.span.name == name && s.span.start_time_unix_nano >= since
    });
    let chosen = match pick {
        Pick::Slowest => {
            candidates.max_by_key(|s| s.span.end_time_unix_nano - s.span.start_time_unix_nano)
        }
        // The earliest: its trace has had the most time to show its story
        // (every redelivery of a refused callback, say).
        Pick::Failed => candidates
            .clone()
            .find(|s| s.span.status.as_ref().is_some_and(|st| st.code == 2)),
        Pick::Root => candidates
            .clone()
            .find(|s| s.span.parent_span_id.is_empty()),
    };
    let Some(chosen) = chosen else {
        say!(
            report,
            "trace: no {service} span {name:?} made while the fault was on reached the collector"
        );
        return None;
    };
    let trace = trace_id_hex(&chosen.span.trace_id);
    let which = match pick {
        Pick::Slowest => format!("the trace of the slowest {service} span {name:?}:"),
        Pick::Failed => format!("the trace of the first failed {service} span {name:?}:"),
        Pick::Root => format!("the first trace that starts at a {service} span {name:?}:"),
    };
    say!(report, "{which}");
    say!(
        report,
        "{}",
        render_waterfall(spans, &chosen.span.trace_id, 20)
    );
    if let Some(active) = attribute(&chosen.span, "app.faults.active") {
        say!(report, "  app.faults.active = {active} on the span");
    }
    Some(trace)
}

/// The log lines of the trace, and of its order where one is named.
fn show_logs(report: &Report, lines: &[String], spans: &[ReceivedSpan], trace: Option<&str>) {
    let Some(trace) = trace else {
        return;
    };
    let order = spans
        .iter()
        .filter(|s| trace_id_hex(&s.span.trace_id) == trace)
        .find_map(|s| {
            attribute(&s.span, "order_id").or_else(|| attribute(&s.span, "messaging.message.id"))
        });
    let of_trace = |line: &&String| {
        serde_json::from_str::<Value>(line).is_ok_and(|v| {
            v["trace_id"] == trace || order.as_deref().is_some_and(|o| v["order_id"] == o)
        })
    };
    let mine: Vec<&String> = lines.iter().filter(of_trace).collect();
    match &order {
        Some(order) => say!(report, "log lines of trace {trace} and order {order}:"),
        None => say!(report, "log lines of trace {trace}:"),
    }
    for line in mine.iter().take(16) {
        if let Some(text) = show::readable_log_line(line) {
            say!(report, "  {text}");
        }
    }
    if mine.len() > 16 {
        say!(report, "  ... and {} more", mine.len() - 16);
    }
}

/// The top functions of a profile of `service`: `profile` (CPU, 5 s while
/// the load goes on) or `heap` (what is allocated now).
async fn show_profile(
    report: &Report,
    api: &Api,
    topology: &Topology,
    service: Service,
    kind: &str,
) -> anyhow::Result<()> {
    let url = match kind {
        "profile" => format!(
            "http://{}/debug/pprof/profile?seconds=5",
            topology.admin(service)
        ),
        _ => format!("http://{}/debug/pprof/{kind}", topology.admin(service)),
    };
    say!(report, "$ go tool pprof -top {url}");
    let body = api
        .http()
        .get(&url)
        .timeout(Duration::from_secs(60))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let (top, heading) = match kind {
        "heap" => (
            profile::top_allocation_sites(&body, 10)?,
            "in use, by the code that allocated it (flat: its own; cum: with what it calls)",
        ),
        _ => (
            profile::top_functions(&body, 10)?,
            "CPU samples (flat: the function itself; cum: with what it calls)",
        ),
    };
    say!(report, "  {heading}:");
    say!(report, "  {:>6}  {:>6}  function", "flat", "cum");
    for (function, flat, cumulative) in top {
        say!(
            report,
            "  {:>5.1}%  {:>5.1}%  {function}",
            flat * 100.0,
            cumulative * 100.0
        );
    }
    Ok(())
}

/// A steady load of `rate` orders per second, from a task of its own,
/// counting the answers by status.
struct Load {
    stop: Arc<AtomicBool>,
    created: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
}

impl Load {
    fn start(api: Api, rate: u32) -> Load {
        let load = Load {
            stop: Arc::default(),
            created: Arc::default(),
            failed: Arc::default(),
        };
        let (stop, created, failed) =
            (load.stop.clone(), load.created.clone(), load.failed.clone());
        tokio::spawn(async move {
            let mut ticks =
                tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                ticks.tick().await;
                let product = PRODUCTS[n % PRODUCTS.len()];
                n += 1;
                let (api, created, failed) = (api.clone(), created.clone(), failed.clone());
                tokio::spawn(async move {
                    match api.post_order(&order_body("1001", product, 1)).await {
                        (status, _) if status.is_success() => {
                            created.fetch_add(1, Ordering::Relaxed);
                        }
                        (status, _) => failed.lock().unwrap().push(status.to_string()),
                    }
                });
            }
        });
        load
    }

    /// Prints what the load got since the last report.
    fn report_and_reset(&self, report: &Report) {
        let created = self.created.swap(0, Ordering::Relaxed);
        let failed = std::mem::take(&mut *self.failed.lock().unwrap());
        let mut by_status = std::collections::BTreeMap::<String, u64>::new();
        for status in failed {
            *by_status.entry(status).or_default() += 1;
        }
        let failed: Vec<String> = by_status
            .iter()
            .map(|(s, n)| format!("{n} x {s}"))
            .collect();
        say!(
            report,
            "load: {created} orders created{}",
            if failed.is_empty() {
                String::new()
            } else {
                format!(", failed: {}", failed.join(", "))
            }
        );
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The load stops with the incident, however it ends.
impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One incident staged for real, in short phases, on final's debug
    /// binary (`cargo nextest run --workspace` builds it before the tests):
    /// the error burst shows in the load, the metrics, the alert, the
    /// trace and the log lines, and stops when switched off.
    #[tokio::test]
    async fn an_error_burst_shows_in_every_pillar_and_stops_when_switched_off() {
        let root = crate::workspace_root();
        let binary = crate::target_dir(&root)
            .join("debug")
            .join(launch::binary_name("final"));
        assert!(binary.is_file(), "build final first: {}", binary.display());
        let args = Args {
            name: Some("error_burst".to_owned()),
            list: false,
            rate: 20,
            phase_seconds: 4,
            release: false,
            write: false,
        };
        let incident = INCIDENTS.iter().find(|i| i.name == "error_burst").unwrap();
        let report = Report::default();
        run_with(&root, &binary, incident, &args, &report)
            .await
            .unwrap();

        let text = report.text();
        let sections: Vec<&str> = text.split("\n== ").collect();
        let [_, baseline, on, off] = sections[..] else {
            panic!("three phases: {text}");
        };
        let load = |section: &str| {
            section
                .lines()
                .find(|l| l.starts_with("load: "))
                .unwrap_or_default()
                .to_owned()
        };
        assert!(!load(baseline).contains("failed"), "{baseline}");
        assert!(load(on).contains("503 Service Unavailable"), "{on}");
        for shown in [
            "OrdersAvailabilityBurnFast: pending",
            "logic orders.v1.OrderService/CreateOrder",
            "app.faults.active = error_burst=0.3",
            "order refused: fault error_burst",
        ] {
            assert!(on.contains(shown), "{shown:?} in:\n{on}");
        }
        let unavailable = on
            .lines()
            .find(|l| l.starts_with("  CreateOrder answered Unavailable"))
            .unwrap_or_default();
        assert!(!unavailable.ends_with(": 0"), "{on}");
        // At most the requests in flight at the switch fail once it is off.
        let failed_after: u64 = load(off)
            .split("failed: ")
            .nth(1)
            .map(|f| f.split(' ').next().unwrap().parse().unwrap())
            .unwrap_or(0);
        assert!(failed_after <= 2, "{off}");
    }

    /// Every incident is a fault final has, and every alert it cites is a
    /// rule of the stack.
    #[test]
    fn every_incident_names_a_fault_and_existing_alerts() {
        let root = crate::workspace_root();
        let faults = std::fs::read_to_string(root.join("final/src/faults.rs")).unwrap();
        let alerts =
            std::fs::read_to_string(root.join("config/prometheus/alerts.rules.yml")).unwrap();
        for incident in &INCIDENTS {
            assert!(
                faults.contains(&format!("=> \"{}\"", incident.name)),
                "{} is not a fault of final",
                incident.name
            );
            for alert in incident.alerts {
                assert!(
                    alerts.contains(&format!("alert: {alert}\n")),
                    "{}: no alert {alert}",
                    incident.name
                );
            }
            for (_, promql) in incident.metrics {
                promql_parser::parser::parse(promql)
                    .unwrap_or_else(|e| panic!("{}: {promql}: {e}", incident.name));
            }
        }
    }
}
