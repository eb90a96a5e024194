//! `all`, as `cargo run` starts it: everything up, everything down.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use testkit::{Api, Launched, Service, Topology, order_body, wait_for};

use crate::CHAPTER_BIN;

#[tokio::test(flavor = "multi_thread")]
async fn all_runs_the_system_and_sigterm_stops_every_process() {
    let topology = Topology::on_free_ports().unwrap();
    let binary = std::env::var_os("CHAPTER_BIN").unwrap_or_else(|| CHAPTER_BIN.into());
    // The banner, on stderr, tells where NATS runs and how to place an order.
    let mut launched =
        Launched::start(&binary, &topology, &[], &[("API_TOKEN", "launcher-token")]).await;
    let banner = launched.banner.clone();
    assert!(banner.contains("is ready"), "{banner}");
    assert!(
        banner.contains(&format!(
            "curl -s -X POST http://{}/orders",
            topology.gateway_http
        )),
        "{banner}"
    );
    assert!(banner.contains("Bearer launcher-token"), "{banner}");
    for service in Service::ALL {
        let scrape = format!("curl -s http://{}/metrics", topology.admin(service));
        assert!(banner.contains(&scrape), "{banner}");
    }
    // Where the spans go, and how to see a request's trace id.
    assert!(banner.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{banner}");
    assert!(banner.contains("| grep -i traceresponse"), "{banner}");
    // How to make each message a trace of its own.
    assert!(banner.contains("--trace-relation link"), "{banner}");
    assert!(banner.contains("TRACE_RELATION=link"), "{banner}");
    // stdout is the services' alone: every line one JSON object, so `jq`
    // reads it as it is, and each service has written its own.
    assert!(
        banner.contains("| jq -c 'select(.order_id != null)'"),
        "{banner}"
    );
    launched.stdout_is_json_lines_of_every_service().await;
    let nats_port: u16 = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("nats     nats://127.0.0.1:"))
        .expect("the banner names the NATS url")
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
