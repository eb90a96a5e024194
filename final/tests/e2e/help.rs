//! `--help` documents every setting: the flags with their variables, the
//! `OTEL_*` variables the OpenTelemetry SDK reads itself, `RUST_LOG`, the
//! health endpoints and the shutdown; and never shows the API token.

use std::process::Command;

use crate::FINAL_BIN;

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

#[test]
fn help_documents_every_setting_and_the_otel_variables() {
    let token = "help-must-not-show-this";
    for args in [
        &["--help"][..],
        &["gateway", "--help"],
        &["logic", "--help"],
        &["task", "--help"],
        &["all", "--help"],
    ] {
        let output = Command::new(FINAL_BIN)
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

#[test]
fn the_top_level_help_lists_the_subcommands() {
    let output = Command::new(FINAL_BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for subcommand in ["gateway", "logic", "task", "all"] {
        assert!(help.contains(&format!("  {subcommand} ")), "{help}");
    }
}

#[test]
fn a_bad_flag_is_refused_with_the_usage() {
    let output = Command::new(FINAL_BIN)
        .args(["task", "--task-concurrency=0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("--task-concurrency"), "{stderr}");
}
