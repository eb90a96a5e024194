//! The full stack's configuration against the running system: a renamed
//! metric or a changed log line breaks this test, not a dashboard.

use testkit::stack::{loki_trace_id_regex, metrics_used_by_config, missing_metrics, repo_root};
use testkit::{Service, System, order_body};

use crate::FINAL_BIN;

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboards_and_rules_read_is_exposed() {
    let system = System::start(FINAL_BIN).await;
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

#[tokio::test(flavor = "multi_thread")]
async fn lokis_derived_field_finds_the_trace_id_of_real_log_lines() {
    let system = System::start(FINAL_BIN).await;
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

#[test]
fn the_compose_file_builds_the_services_from_this_dockerfile() {
    let root = repo_root();
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    assert!(root.join("final/Dockerfile").is_file());
    assert!(
        compose.contains("final/Dockerfile"),
        "compose builds final/Dockerfile"
    );
}
