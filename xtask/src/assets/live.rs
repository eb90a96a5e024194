//! The pictures that need the system running: the waterfalls of one
//! order's traces (chapters 03 and 04, from the spans the services
//! exported).
//!
//! They reuse the demo's way of running a system: its start, orders and
//! stop ([`crate::demo`]), with an OTLP receiver that keeps the spans.

use std::path::Path;

use anyhow::{Context, ensure};
use orders::topology::Topology;
use testkit::{Api, OtlpReceiver, ReceivedSpan};

use crate::demo;
use crate::launch;

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
