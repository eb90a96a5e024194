//! What only `final` does, the production lesson: `--help` documents
//! every setting; `/healthz` and `/readyz` on each admin port; graceful
//! shutdown under load (in [`shutdown`]); and the full stack's
//! configuration against the running system. Everything else `final` shows
//! is chapter 05's, checked by chapter 05's contracts and snapshots.

mod incidents;
mod shutdown;

use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::stack::{loki_trace_id_regex, metrics_used_by_config, missing_metrics, repo_root};
use crate::{DEADLINE, Service, Subject, System, order_body, wait_for};

pub use incidents::{
    a_cpu_hog_slows_the_packing_until_switched_off,
    a_lost_context_splits_the_trace_until_switched_off,
    a_memory_leak_grows_the_gateway_until_switched_off,
    an_error_burst_refuses_orders_until_switched_off,
    failing_callbacks_redeliver_until_switched_off,
    faults_switch_on_the_admin_port_only_and_refuse_bad_input,
    slow_writes_show_in_the_insert_span_until_switched_off,
};
pub use shutdown::{
    sigterm_on_logic_under_load_loses_no_accepted_order,
    sigterm_on_task_finishes_the_messages_in_hand_and_loses_none,
    sigterm_on_the_gateway_under_load_drains_without_a_5xx, the_shutdown_is_logged_with_trace_ids,
};

// `--help` documents every setting: the flags with their variables, the
// `OTEL_*` variables the OpenTelemetry SDK reads itself, `RUST_LOG`, the
// health endpoints and the shutdown; and never shows the API token.

/// What every `--help` must mention.
const DOCUMENTED: &[&str] = &[
    // The logs' filter, as every Rust program names it.
    "RUST_LOG",
    "--log-filter",
    // Read by the SDK, listed with what they do.
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_EXPORT_TIMEOUT",
    // The flags, each with its variable.
    "--api-token",
    "API_TOKEN",
    "--logic-timeout-ms",
    "LOGIC_TIMEOUT_MS",
    "--publish-timeout-ms",
    "--outbox-interval-ms",
    "OUTBOX_INTERVAL_MS",
    "--task-concurrency",
    "TASK_CONCURRENCY",
    "--callback-timeout-ms",
    "--trace-relation",
    "TRACE_RELATION",
    "--shutdown-timeout-ms",
    "SHUTDOWN_TIMEOUT_MS",
    "--faults",
    "FAULTS",
    "--shutdown-delay-ms",
    "SHUTDOWN_DELAY_MS",
    // The topology.
    "--gateway-http",
    "GATEWAY_HTTP_ADDR",
    "NATS_URL",
    "ORDERS_DB",
    // Health and shutdown.
    "/healthz",
    "/readyz",
    "SIGTERM",
];

pub async fn help_documents_every_setting_and_the_otel_variables(subject: &Subject) {
    let token = "help-must-not-show-this";
    for args in [
        &["--help"][..],
        &["gateway", "--help"],
        &["logic", "--help"],
        &["task", "--help"],
        &["all", "--help"],
    ] {
        let output = Command::new(&subject.binary)
            .args(args)
            .env("API_TOKEN", token)
            .output()
            .expect("running final --help");
        assert!(output.status.success(), "{args:?}: {output:?}");
        let help = String::from_utf8(output.stdout).unwrap();
        let missing: Vec<&str> = DOCUMENTED
            .iter()
            .copied()
            .filter(|word| !help.contains(word))
            .collect();
        assert!(missing.is_empty(), "{args:?} lacks {missing:?}:\n{help}");
        assert!(!help.contains(token), "{args:?} shows the token:\n{help}");
    }
}

pub async fn the_top_level_help_lists_the_subcommands(subject: &Subject) {
    let output = Command::new(&subject.binary)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for subcommand in ["gateway", "logic", "task", "all"] {
        assert!(help.contains(&format!("  {subcommand} ")), "{help}");
    }
}

pub async fn a_bad_flag_is_refused_with_the_usage(subject: &Subject) {
    let output = Command::new(&subject.binary)
        .args(["task", "--task-concurrency=0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("--task-concurrency"), "{stderr}");
}

// `/healthz` and `/readyz` on each service's admin port: what the
// launcher, the tests and docker compose's healthchecks wait on.

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
pub async fn readiness_follows_nats_and_liveness_does_not(subject: &Subject) {
    let mut system = subject.start().await;
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
pub async fn readyz_answers_503_once_a_shutdown_begins(subject: &Subject) {
    let mut builder = subject.system();
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

// The full stack's configuration against the running system: a renamed
// metric or a changed log line breaks a contract, not a dashboard.

pub async fn every_metric_the_dashboards_and_rules_read_is_exposed(subject: &Subject) {
    let system = subject.start().await;
    // Some families appear only once an order went all the way through.
    let order = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&order).await;

    let mut scrapes = Vec::new();
    for service in Service::ALL {
        let url = format!("http://{}/metrics", system.topology.admin(service));
        scrapes.push(reqwest::get(url).await.unwrap().text().await.unwrap());
    }
    let used = metrics_used_by_config(&repo_root());
    assert!(
        used.len() > 10,
        "the configuration reads our metrics: {used:?}"
    );
    let missing = missing_metrics(&used, scrapes.iter().map(String::as_str));
    assert!(
        missing.is_empty(),
        "read by the stack's config but exposed by no service: {missing:?}"
    );
}

pub async fn lokis_derived_field_finds_the_trace_id_of_real_log_lines(subject: &Subject) {
    let system = subject.start().await;
    let order = system.api.place_order(&order_body("1001", "A001", 1)).await;
    system.api.wait_until_handled(&order).await;

    let regex = regex::Regex::new(&loki_trace_id_regex(&repo_root())).unwrap();
    let mut checked = 0;
    for service in Service::ALL {
        for line in system.stdout(service) {
            let json: serde_json::Value = serde_json::from_str(&line).unwrap();
            let Some(trace_id) = json["trace_id"].as_str() else {
                continue;
            };
            let found = regex
                .captures(&line)
                .and_then(|c| c.get(1))
                .map(|m| m.as_str());
            assert_eq!(found, Some(trace_id), "{line}");
            checked += 1;
        }
    }
    assert!(checked >= 3, "log lines with a trace id from every service");
}

pub async fn the_compose_file_builds_the_services_from_this_dockerfile(_: &Subject) {
    let root = repo_root();
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    assert!(root.join("final/Dockerfile").is_file());
    assert!(
        compose.contains("final/Dockerfile"),
        "compose builds final/Dockerfile"
    );
}
