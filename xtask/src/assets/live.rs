//! The pictures that need the system running: the waterfalls of one
//! order's traces (chapters 03 and 04, from the spans the services
//! exported) and chapter 05's flame graph of task under load.
//!
//! They reuse the demo's and the bench's ways of running a system: the
//! demo's start, orders and stop ([`crate::demo`]) with an OTLP receiver
//! that keeps the spans, and the launcher of `load`/`bench`
//! ([`crate::launch::System`]) with the open-model load of
//! [`crate::load`].

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, ensure};
use orders::topology::{Service, Topology};
use testkit::{Api, OtlpReceiver, ReceivedSpan};

use crate::demo;
use crate::launch::{self, Output, System};
use crate::load::schedule::Schedule;
use crate::load::{Options, run_schedule};

use super::waterfall::text_attribute;

/// Orders placed, and handled, before the one drawn: the first order of a
/// fresh system also pays for opening connections and preparing
/// statements, which the book's pictures should not show as the norm.
const WARM_UP_ORDERS: usize = 2;

/// One order of a real run and the spans the run exported.
#[derive(Debug)]
pub struct OrderTraces {
    pub order_id: String,
    /// Every span received during the run.
    pub spans: Vec<ReceivedSpan>,
    /// The order's traces, as OTLP carries their ids: first the one the
    /// gateway named in `traceresponse`, then any other trace that has a
    /// span naming the order (`order_id` or `messaging.message.id`).
    pub traces: Vec<Vec<u8>>,
}

/// Runs `binary` (the chapter `package`) with `envs` on free ports and an
/// OTLP receiver of its own, places [`WARM_UP_ORDERS`] orders and then
/// one more, each after the one before was handled, stops the system (which
/// makes every service send the spans it holds) and returns the last
/// order's traces.
///
/// Errors: the system does not start or stop cleanly, an order is refused
/// or not handled within the demo's deadline, or the gateway named no
/// trace, or no span of it arrived.
pub async fn one_order(
    package: &str,
    binary: &Path,
    nats_server: &Path,
    envs: &[(&str, &str)],
) -> anyhow::Result<OrderTraces> {
    let topology = Topology::on_free_ports()?;
    let collector = OtlpReceiver::start().await?;
    let mut system = demo::start(package, binary, nats_server, &topology, &collector, envs)?;
    let _logs = demo::capture_logs(&mut system);
    let outcome = async {
        let api = Api::with_timeout(
            format!("http://{}", topology.gateway_http),
            launch::api_token(),
            demo::REQUEST_TIMEOUT,
        );
        demo::wait_until_ready(&api, &topology, &mut system).await?;
        let mut last = None;
        for _ in 0..=WARM_UP_ORDERS {
            let mut placed = [demo::place(&api, "A001", 2).await?];
            demo::wait_until_handled(&api, &mut system, &mut placed).await?;
            let [order] = placed;
            let status = order.outcome.as_ref().map(|o| o.status.as_str());
            ensure!(
                status == Some("completed"),
                "order {} ended {status:?}, not completed",
                order.id
            );
            last = Some(order);
        }
        anyhow::Ok(last.expect("at least one order"))
    }
    .await;
    let stopped = demo::stop(&mut system).await;
    let order = outcome?;
    stopped?;

    let spans = collector.spans();
    let named = order
        .trace_id
        .as_deref()
        .context("the gateway sent no traceresponse header")?;
    let first = testkit::otlp::trace_id_bytes(named)
        .with_context(|| format!("traceresponse named {named}, not a trace id"))?
        .to_vec();
    ensure!(
        spans.iter().any(|s| s.span.trace_id == first),
        "no span of trace {named} reached the receiver"
    );
    let mut traces = vec![first];
    for span in &spans {
        let names_it = ["order_id", "messaging.message.id"]
            .iter()
            .any(|key| text_attribute(&span.span, key) == Some(order.id.as_str()));
        if names_it && !traces.contains(&span.span.trace_id) {
            traces.push(span.span.trace_id.clone());
        }
    }
    Ok(OrderTraces {
        order_id: order.id,
        spans,
        traces,
    })
}

/// How the flame graph is made: the chapter's release build loaded at
/// `rate` orders per second while task's CPU is sampled for `seconds`.
#[derive(Debug, Clone, Copy)]
pub struct FlameGraphRun {
    pub rate: f64,
    pub seconds: u64,
}

/// A flame graph of task's CPU (the SVG the service draws, from
/// `/debug/pprof/flamegraph?seconds=N` on its admin port), taken while
/// `package`'s release `binary` takes an open-model load. The system's
/// logs go to `log`.
///
/// Errors: the system does not start, the load fails, or task serves no
/// flame graph.
pub async fn task_flamegraph(
    package: &str,
    binary: &Path,
    nats_server: &Path,
    log: &Path,
    run: FlameGraphRun,
) -> anyhow::Result<Vec<u8>> {
    let system = System::start(package, binary, nats_server, Output::File(log.to_owned())).await?;
    let outcome = async {
        let target = crate::bench::target(&system);
        let mut warm = Options::new("warm-up");
        warm.progress = false;
        warm.e2e_samples = 0.0;
        run_schedule(
            &Schedule::fixed(100.0, Duration::from_secs(2)),
            &target,
            &warm,
        )
        .await?;
        // The load outlasts the sampling by a second at each end.
        let schedule = Schedule::fixed(run.rate, Duration::from_secs(run.seconds + 2));
        let options = Options::new(format!("{package} under load, task profiled"));
        let load = run_schedule(&schedule, &target, &options);
        let sample = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            system
                .admin_get(
                    Service::Task,
                    &format!("/debug/pprof/flamegraph?seconds={}", run.seconds),
                    Duration::from_secs(run.seconds + 30),
                )
                .await
        };
        let (report, svg) = tokio::join!(load, sample);
        let report = report?;
        println!(
            "[book-assets] load: {:.0} orders/s accepted, {} errors",
            report.achieved_rate(),
            report.error_total()
        );
        svg
    }
    .await;
    let stopped = system.stop().await;
    let svg = outcome?;
    stopped?;
    Ok(svg)
}
