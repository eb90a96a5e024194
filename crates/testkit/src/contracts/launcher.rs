//! `all`, as `cargo run` starts it: everything up, a banner that says how
//! to use what the chapter has added so far, everything down.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{Api, Launched, Service, Subject, Topology, order_body, wait_for};

pub async fn all_runs_the_system_and_sigterm_stops_every_process(subject: &Subject) {
    let topology = Topology::on_free_ports().unwrap();
    let token = ("API_TOKEN", "launcher-token");
    let mut launched = Launched::start(subject.binary.as_os_str(), &topology, &[], &[token]).await;
    let banner = launched.banner.clone();
    let says = |what: &str, why: &str| {
        assert!(
            banner.contains(what),
            "the banner does not say {why} ({what:?}):\n{banner}"
        );
    };
    // On stderr: how to place an order, and what each lesson added.
    says(
        &format!("http://{}/orders", topology.gateway_http),
        "where to place an order",
    );
    says("Bearer launcher-token", "the token to place it with");
    if subject.has(1) {
        for service in Service::ALL {
            let scrape = format!("http://{}/metrics", topology.admin(service));
            says(&scrape, "where each service's metrics are");
        }
    }
    if subject.has(3) {
        says("OTEL_EXPORTER_OTLP_ENDPOINT", "where the spans go");
        says("traceresponse", "how to see a request's trace id");
    }
    if subject.has(4) {
        says("--trace-relation link", "how to make each message a trace");
        says("TRACE_RELATION=link", "how to make each message a trace");
    }
    if subject.has(2) {
        says("jq", "how to read the logs with jq");
        // stdout is the services' alone: every line one JSON object, so
        // `jq` reads it as it is, and each service has written its own.
        launched.stdout_is_json_lines_of_every_service().await;
    }
    let nats = regex::Regex::new(r"nats://127\.0\.0\.1:(\d+)").unwrap();
    let nats_port: u16 = nats
        .captures(&banner)
        .unwrap_or_else(|| panic!("the banner does not say where NATS runs:\n{banner}"))[1]
        .parse()
        .unwrap();

    let api = Api::new(
        format!("http://{}", topology.gateway_http),
        "launcher-token".into(),
    );
    let order_id = api.place_order(&order_body("1001", "A001", 1)).await;
    assert_eq!(
        api.wait_until_handled(&order_id).await["status"],
        "completed"
    );

    kill(
        Pid::from_raw(launched.child.id().unwrap() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), launched.child.wait())
        .await
        .expect("the launcher exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");

    // Nothing it started is left listening.
    let mut ports: Vec<u16> = Service::ALL.map(|s| topology.admin(s).port()).to_vec();
    ports.extend([
        topology.gateway_http.port(),
        topology.gateway_grpc.port(),
        topology.logic_grpc.port(),
        nats_port,
    ]);
    for port in ports {
        wait_for(
            &format!("port {port} to close"),
            Duration::from_secs(10),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_err()
                    .then_some(())
            },
        )
        .await;
    }
}
