//! `/healthz` and `/readyz` on each service's admin port: what the
//! launcher, the tests and docker compose's healthchecks wait on.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use testkit::{DEADLINE, Service, System, order_body, wait_for};

use crate::FINAL_BIN;

/// `GET path` on `service`'s admin port: its status and JSON body.
async fn probe(system_admin: std::net::SocketAddr, path: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .get(format!("http://{system_admin}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("the admin port answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until `service`'s `/readyz` answers `status`; returns the body.
async fn wait_for_readyz(system: &System, service: Service, status: StatusCode) -> Value {
    let admin = system.topology.admin(service);
    wait_for(
        &format!("{service}'s /readyz to answer {status}"),
        DEADLINE,
        || async move {
            let (got, body) = probe(admin, "/readyz").await;
            (got == status).then_some(body)
        },
    )
    .await
}

/// Live and ready once started; logic and task, which need NATS, are not
/// ready while it is down and say so, and are again once it is back. The
/// gateway does not need NATS, and stays ready. Alive all along.
#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_nats_and_liveness_does_not() {
    let mut system = System::start(FINAL_BIN).await;
    for service in Service::ALL {
        let admin = system.topology.admin(service);
        assert_eq!(
            probe(admin, "/healthz").await,
            (StatusCode::OK, serde_json::json!({ "status": "ok" })),
            "{service}"
        );
        assert_eq!(
            probe(admin, "/readyz").await,
            (StatusCode::OK, serde_json::json!({ "status": "ready" })),
            "{service}"
        );
    }

    system.nats().stop().await.unwrap();
    for service in [Service::Logic, Service::Task] {
        let body = wait_for_readyz(&system, service, StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!(body["status"], "not ready", "{service}: {body}");
        assert_eq!(body["reason"], "not connected to NATS", "{service}: {body}");
    }
    for service in Service::ALL {
        let admin = system.topology.admin(service);
        assert_eq!(
            probe(admin, "/healthz").await.0,
            StatusCode::OK,
            "{service}"
        );
    }
    let admin = system.topology.admin(Service::Gateway);
    assert_eq!(probe(admin, "/readyz").await.0, StatusCode::OK);

    system.nats().restart().await.unwrap();
    for service in Service::ALL {
        wait_for_readyz(&system, service, StatusCode::OK).await;
    }
    let order_id = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&order_id).await;
}

/// From SIGTERM on, `/readyz` answers 503 "shutting down" while `/healthz`
/// stays 200; with `--shutdown-delay-ms` the service goes on serving
/// meanwhile (a load balancer has time to stop sending), then exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn readyz_answers_503_once_a_shutdown_begins() {
    let mut builder = System::builder(FINAL_BIN);
    for service in Service::ALL {
        builder = builder.arg(service, "--shutdown-delay-ms=1500");
    }
    let mut system = builder.start().await;
    let api = system.api.clone();

    for service in Service::ALL {
        let admin = system.topology.admin(service);
        let while_stopping = async {
            let body = wait_for(
                &format!("{service}'s /readyz to answer 503"),
                DEADLINE,
                || async move {
                    let (status, body) = probe(admin, "/readyz").await;
                    (status == StatusCode::SERVICE_UNAVAILABLE).then_some(body)
                },
            )
            .await;
            assert_eq!(body["reason"], "shutting down", "{service}: {body}");
            assert_eq!(probe(admin, "/healthz").await.0, StatusCode::OK);
            if service == Service::Gateway {
                // Still serving, until the delay is over.
                let (status, body) = api.post_order(&order_body("1001", "A001", 1)).await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
            }
        };
        let (status, ()) = tokio::join!(system.terminate(service), while_stopping);
        assert!(status.success(), "{service}: {status}");
    }
}
