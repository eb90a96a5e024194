//! The full stack's configuration, read as data: `docker-compose.yml` and
//! `config/` (Prometheus, Grafana, Tempo, Loki, Alloy).
//!
//! No Docker engine runs where the tests run, so the stack is checked by
//! reading its files: the compose file parses, every file it mounts exists,
//! no host port is published twice, every image is pinned; every alert has
//! a summary, a runbook in the book and unit tests; the links between
//! Grafana's data sources join on the same keys. The checks that need the
//! running system use the two functions made for them:
//!
//! - [`metrics_used_by_config`]: every metric name that a dashboard, a rule
//!   or a data-source link queries and that our services must expose, so
//!   that an end-to-end test can scrape the services and fail the build on
//!   a renamed metric rather than leave a dashboard empty;
//! - [`loki_trace_id_regex`]: the regular expression Grafana applies to a
//!   Loki log line to find the trace to link to, to be tried on the lines
//!   the services really write.
//!
//! Everything here is a pure function of the files under a repository root
//! ([`repo_root`] for this checkout). The unit tests at the bottom run the
//! offline checks on the real files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use anyhow::{Context, Result, bail, ensure};
use orders::topology::Service;
use promql_parser::label::MatchOp;
use promql_parser::parser::{Expr, VectorSelector};
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

/// The compose file, at the repository's root.
pub const COMPOSE_FILE: &str = "docker-compose.yml";
/// Prometheus's configuration; the rule files sit next to it.
pub const PROMETHEUS_CONFIG: &str = "config/prometheus/prometheus.yml";
/// Where the rule files (`*.rules.yml`) are.
pub const RULES_DIR: &str = "config/prometheus";
/// Where the rules' unit tests for `promtool test rules` are.
pub const RULE_TESTS_DIR: &str = "config/prometheus/tests";
/// Grafana's provisioned data sources.
pub const DATASOURCES_FILE: &str = "config/grafana/provisioning/datasources/datasources.yml";
/// Grafana's dashboards, one JSON file each.
pub const DASHBOARDS_DIR: &str = "config/grafana/dashboards";
/// Alloy's pipeline from the containers' stdout to Loki.
pub const ALLOY_CONFIG: &str = "config/alloy/config.alloy";
/// Tempo's configuration.
pub const TEMPO_CONFIG: &str = "config/tempo/tempo.yml";
/// Loki's configuration.
pub const LOKI_CONFIG: &str = "config/loki/loki.yml";
/// The book page with a runbook section for every alert.
pub const RUNBOOK_PAGE: &str = "book/stack.md";

/// The repository this crate is part of: two levels above it.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .expect("testkit lives in crates/testkit")
        .to_owned()
}

/// The names of the three services: compose service, Prometheus `job`,
/// Tempo `service.name`, Loki `service` label.
pub fn service_names() -> BTreeSet<String> {
    Service::ALL.iter().map(|s| s.name().to_owned()).collect()
}

/// Parses a YAML file into `T`: a typed struct, or a [`serde_json::Value`]
/// (every key in these files is text). Duplicate keys are an error.
pub fn read_yaml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The files of `dir` whose names end with `suffix`, sorted.
fn files_ending(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let matches = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.ends_with(suffix));
        if matches && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A YAML or JSON scalar as text: `8080` and `"8080"` alike.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

// ------------------------------------------------------------------ compose

/// `docker-compose.yml`, parsed.
#[derive(Debug)]
pub struct Compose {
    /// Each service's definition, by name, as written.
    pub services: BTreeMap<String, Value>,
    /// The named volumes declared at the top level.
    pub volumes: BTreeSet<String>,
}

/// A port published on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPort {
    pub service: String,
    /// The host address it is bound to, if one is given (`127.0.0.1`).
    pub host_ip: Option<String>,
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// Where a mount comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A path on the host: relative paths are relative to the compose file.
    Bind(String),
    /// A named volume.
    Volume(String),
}

/// One mount of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub service: String,
    pub source: MountSource,
    pub target: String,
}

impl Compose {
    /// Reads and parses `docker-compose.yml` under `root`.
    pub fn load(root: &Path) -> Result<Self> {
        Self::parse(&root.join(COMPOSE_FILE))
    }

    /// Parses a compose file.
    pub fn parse(path: &Path) -> Result<Self> {
        let document: Value = read_yaml(path)?;
        let services = match document.get("services") {
            Some(Value::Object(services)) => services
                .iter()
                .map(|(name, service)| (name.clone(), service.clone()))
                .collect(),
            _ => bail!("{} has no `services` mapping", path.display()),
        };
        let volumes = match document.get("volumes") {
            Some(Value::Object(volumes)) => volumes.keys().cloned().collect(),
            None | Some(Value::Null) => BTreeSet::new(),
            Some(other) => bail!("`volumes` is not a mapping: {other}"),
        };
        Ok(Self { services, volumes })
    }

    /// `(service, image)` for every service that names an image. The
    /// services built from source (`build:`) have none.
    pub fn images(&self) -> Vec<(String, String)> {
        self.services
            .iter()
            .filter_map(|(name, service)| {
                let image = service.get("image").and_then(scalar)?;
                Some((name.clone(), image))
            })
            .collect()
    }

    /// The services that have the list `key` (`ports`, `volumes`), with it.
    fn lists(&self, key: &str) -> Result<Vec<(&String, &Vec<Value>)>> {
        let mut lists = Vec::new();
        for (name, service) in &self.services {
            if let Some(list) = service.get(key) {
                let list = list
                    .as_array()
                    .with_context(|| format!("{name}: `{key}` is not a list"))?;
                lists.push((name, list));
            }
        }
        Ok(lists)
    }

    /// Every port published on the host, in the short syntax
    /// (`[HOST_IP:]HOST:CONTAINER[/PROTO]`) or the long one.
    pub fn published_ports(&self) -> Result<Vec<PublishedPort>> {
        let mut ports = Vec::new();
        for (name, list) in self.lists("ports")? {
            for entry in list {
                let port = match entry {
                    Value::Object(long) => long_port(name, long)?,
                    short => {
                        let text = scalar(short)
                            .with_context(|| format!("{name}: a port that is not text"))?;
                        match short_port(name, &text)? {
                            Some(port) => port,
                            // A container port alone: Docker picks the host port.
                            None => continue,
                        }
                    }
                };
                ports.push(port);
            }
        }
        Ok(ports)
    }

    /// Every volume and bind mount of every service.
    pub fn mounts(&self) -> Result<Vec<Mount>> {
        let mut mounts = Vec::new();
        for (name, list) in self.lists("volumes")? {
            for entry in list {
                let (source, target) = match entry {
                    Value::String(short) => {
                        let mut parts = short.splitn(3, ':');
                        let first = parts.next().unwrap_or_default();
                        match parts.next() {
                            Some(target) => (first.to_owned(), target.to_owned()),
                            // An anonymous volume: nothing on the host.
                            None => continue,
                        }
                    }
                    Value::Object(long) => {
                        let field = |key: &str| long.get(key).and_then(scalar);
                        let target = field("target")
                            .with_context(|| format!("{name}: a mount without target"))?;
                        match (field("type").as_deref(), field("source")) {
                            (Some("bind"), Some(source)) => (source, target),
                            (Some("volume") | None, Some(source)) => (source, target),
                            _ => continue,
                        }
                    }
                    other => bail!("{name}: a mount that is neither text nor mapping: {other}"),
                };
                let source = if source.starts_with(['.', '/', '~']) {
                    MountSource::Bind(source)
                } else {
                    MountSource::Volume(source)
                };
                mounts.push(Mount {
                    service: name.clone(),
                    source,
                    target,
                });
            }
        }
        Ok(mounts)
    }

    /// `(service, dependency, condition)` for every `depends_on` entry; the
    /// list form means `service_started`.
    pub fn dependencies(&self) -> Vec<(String, String, String)> {
        let mut edges = Vec::new();
        for (name, service) in &self.services {
            match service.get("depends_on") {
                Some(Value::Array(list)) => {
                    for dependency in list.iter().filter_map(scalar) {
                        edges.push((name.clone(), dependency, "service_started".to_owned()));
                    }
                }
                Some(Value::Object(map)) => {
                    for (dependency, how) in map {
                        let condition = how
                            .get("condition")
                            .and_then(scalar)
                            .unwrap_or_else(|| "service_started".to_owned());
                        edges.push((name.clone(), dependency.clone(), condition));
                    }
                }
                _ => {}
            }
        }
        edges
    }

    /// The healthcheck's command of `service`, as one line, if it has one.
    pub fn healthcheck(&self, service: &str) -> Option<String> {
        let test = self
            .services
            .get(service)?
            .get("healthcheck")?
            .get("test")?;
        match test {
            Value::Array(parts) => Some(
                parts
                    .iter()
                    .filter_map(scalar)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            other => scalar(other),
        }
    }

    /// The environment of `service`, in the mapping or the list form.
    pub fn environment(&self, service: &str) -> BTreeMap<String, String> {
        let mut environment = BTreeMap::new();
        match self
            .services
            .get(service)
            .and_then(|s| s.get("environment"))
        {
            Some(Value::Object(map)) => {
                for (key, value) in map {
                    environment.insert(key.clone(), scalar(value).unwrap_or_default());
                }
            }
            Some(Value::Array(list)) => {
                for entry in list.iter().filter_map(scalar) {
                    let (key, value) = entry.split_once('=').unwrap_or((&entry, ""));
                    environment.insert(key.to_owned(), value.to_owned());
                }
            }
            _ => {}
        }
        environment
    }
}

/// A port in the short syntax: `8080`, `8080:80`, `127.0.0.1:8080:80/udp`,
/// `[::1]:8080:80`. `None` when no host port is given.
fn short_port(service: &str, text: &str) -> Result<Option<PublishedPort>> {
    let (spec, protocol) = text.split_once('/').unwrap_or((text, "tcp"));
    // An IPv6 host address is in brackets; anything else splits on ':'.
    let (host_ip, rest) = match spec.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, rest) = bracketed
                .split_once("]:")
                .with_context(|| format!("{service}: bad port {text:?}"))?;
            (Some(ip.to_owned()), rest)
        }
        None => (None, spec),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (host_ip, host, container) = match (host_ip, parts.as_slice()) {
        (None, [_container]) => return Ok(None),
        (ip, [host, container]) => (ip, *host, *container),
        (None, [ip, host, container]) => (Some((*ip).to_owned()), *host, *container),
        _ => bail!("{service}: bad port {text:?}"),
    };
    let number = |part: &str| {
        part.parse::<u16>()
            .with_context(|| format!("{service}: port {text:?}: {part:?} is not one port"))
    };
    Ok(Some(PublishedPort {
        service: service.to_owned(),
        host_ip: host_ip.filter(|ip| !ip.is_empty()),
        host_port: number(host)?,
        container_port: number(container)?,
        protocol: protocol.to_owned(),
    }))
}

/// A port in the long syntax: `{target, published, host_ip, protocol}`.
fn long_port(service: &str, long: &serde_json::Map<String, Value>) -> Result<PublishedPort> {
    let field = |key: &str| long.get(key).and_then(scalar);
    let number = |key: &str| -> Result<u16> {
        field(key)
            .with_context(|| format!("{service}: a port without {key}"))?
            .parse()
            .with_context(|| format!("{service}: {key} is not one port"))
    };
    Ok(PublishedPort {
        service: service.to_owned(),
        host_ip: field("host_ip"),
        host_port: number("published")?,
        container_port: number("target")?,
        protocol: field("protocol").unwrap_or_else(|| "tcp".to_owned()),
    })
}

/// Whether `image` names one version: a digest, or a tag that is a full
/// version (`v3.5.0`, `2.11.6-alpine`), never `latest` nor a floating
/// `2.11`. The error says what is wrong.
pub fn image_is_pinned(image: &str) -> std::result::Result<(), String> {
    if image.contains("@sha256:") {
        return Ok(());
    }
    // A ':' before the last '/' is a registry's port, not a tag.
    let name_start = image.rfind('/').map_or(0, |slash| slash + 1);
    let Some((_, tag)) = image[name_start..].split_once(':') else {
        return Err(format!("{image}: no tag, which means `latest`"));
    };
    if tag.contains("latest") {
        return Err(format!("{image}: `{tag}` moves"));
    }
    let version = Regex::new(r"^v?\d+\.\d+\.\d+([-+.][0-9A-Za-z.-]+)?$").expect("a valid regex");
    if version.is_match(tag) {
        Ok(())
    } else {
        Err(format!(
            "{image}: `{tag}` is not a full version (major.minor.patch)"
        ))
    }
}

// --------------------------------------------------------------- Prometheus

/// The scrape jobs of Prometheus's configuration: job name -> targets,
/// `host:port`. A DNS-discovered job (`dns_sd_configs` of type A) counts
/// each name as the target `name:port`: whatever number of containers
/// answer it, they are that service on that port.
pub fn scrape_jobs(root: &Path) -> Result<BTreeMap<String, Vec<String>>> {
    #[derive(Deserialize)]
    struct Config {
        scrape_configs: Vec<ScrapeConfig>,
    }
    #[derive(Deserialize)]
    struct ScrapeConfig {
        job_name: String,
        #[serde(default)]
        static_configs: Vec<StaticConfig>,
        #[serde(default)]
        dns_sd_configs: Vec<DnsConfig>,
    }
    #[derive(Deserialize)]
    struct StaticConfig {
        targets: Vec<String>,
    }
    #[derive(Deserialize)]
    struct DnsConfig {
        names: Vec<String>,
        r#type: String,
        port: u16,
    }
    let config: Config = read_yaml(&root.join(PROMETHEUS_CONFIG))?;
    let mut jobs = BTreeMap::new();
    for scrape in config.scrape_configs {
        let mut targets: Vec<String> = scrape
            .static_configs
            .into_iter()
            .flat_map(|c| c.targets)
            .collect();
        for dns in scrape.dns_sd_configs {
            ensure!(
                dns.r#type == "A",
                "job {}: DNS discovery of type {} gives no port; use A",
                scrape.job_name,
                dns.r#type
            );
            targets.extend(dns.names.iter().map(|name| format!("{name}:{}", dns.port)));
        }
        ensure!(
            jobs.insert(scrape.job_name.clone(), targets).is_none(),
            "job {} is scraped twice",
            scrape.job_name
        );
    }
    Ok(jobs)
}

/// One rule of a Prometheus rule file: a recording rule (`record`) or an
/// alert (`alert`).
#[derive(Debug, Clone, Deserialize)]
pub struct Rule {
    #[serde(default)]
    pub record: Option<String>,
    #[serde(default)]
    pub alert: Option<String>,
    pub expr: String,
    #[serde(default, rename = "for")]
    pub for_: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// The rule files: `config/prometheus/*.rules.yml`.
pub fn rule_files(root: &Path) -> Result<Vec<PathBuf>> {
    files_ending(&root.join(RULES_DIR), ".rules.yml")
}

/// Every rule of every rule file.
pub fn rules(root: &Path) -> Result<Vec<Rule>> {
    #[derive(Deserialize)]
    struct File {
        groups: Vec<Group>,
    }
    #[derive(Deserialize)]
    struct Group {
        rules: Vec<Rule>,
    }
    let mut rules = Vec::new();
    for path in rule_files(root)? {
        let file: File = read_yaml(&path)?;
        rules.extend(file.groups.into_iter().flat_map(|group| group.rules));
    }
    Ok(rules)
}

/// The rules' unit test files: `config/prometheus/tests/*.yml`.
pub fn rule_test_files(root: &Path) -> Result<Vec<PathBuf>> {
    files_ending(&root.join(RULE_TESTS_DIR), ".yml")
}

/// For each alert the unit tests evaluate: how many cases expect it to
/// fire, and how many expect it to stay quiet.
pub fn alert_test_cases(root: &Path) -> Result<BTreeMap<String, (usize, usize)>> {
    #[derive(Deserialize)]
    struct File {
        tests: Vec<Test>,
    }
    #[derive(Deserialize)]
    struct Test {
        #[serde(default)]
        alert_rule_test: Vec<Case>,
    }
    #[derive(Deserialize)]
    struct Case {
        alertname: String,
        #[serde(default)]
        exp_alerts: Vec<Value>,
    }
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for path in rule_test_files(root)? {
        let file: File = read_yaml(&path)?;
        for case in file.tests.into_iter().flat_map(|test| test.alert_rule_test) {
            let counts = cases.entry(case.alertname).or_default();
            if case.exp_alerts.is_empty() {
                counts.1 += 1;
            } else {
                counts.0 += 1;
            }
        }
    }
    Ok(cases)
}

// -------------------------------------------------------------- metric names

/// Metric names that come from other programs than our services:
/// Prometheus itself (`up`, `ALERTS`, `scrape_*`), cAdvisor (`container_*`,
/// `machine_*`), the NATS exporter (`gnatsd_*`, `jetstream_*`), Tempo's
/// metrics generator (`traces_*`) and the stack's own components.
pub fn from_other_exporter(name: &str) -> bool {
    const NAMES: &[&str] = &["up", "ALERTS", "ALERTS_FOR_STATE"];
    const PREFIXES: &[&str] = &[
        "scrape_",
        "prometheus_",
        "container_",
        "machine_",
        "cadvisor_",
        "gnatsd_",
        "nats_",
        "jetstream_",
        "traces_",
        "tempo_",
        "loki_",
        "alloy_",
        "grafana_",
    ];
    NAMES.contains(&name) || PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// The metric names a PromQL expression reads, as written (a histogram's
/// `_bucket`, `_sum`, `_count` series by those names): the names of its
/// selectors, `up` or `{__name__="up"}`. The expression is parsed by
/// `promql-parser` once Grafana's variables are filled in as Grafana fills
/// them (`fill_grafana_variables`), so function names, keywords, label names,
/// strings, durations and comments are never taken for metric names.
///
/// Errors when the expression is not PromQL, with the parser's message.
pub fn metric_names_in(expr: &str) -> Result<BTreeSet<String>> {
    let promql = fill_grafana_variables(expr);
    let parsed = promql_parser::parser::parse(&promql)
        .map_err(|e| anyhow::anyhow!("not PromQL ({e}): {expr}"))?;
    let mut names = BTreeSet::new();
    selector_names(&parsed, &mut names);
    Ok(names)
}

/// `expr` with each Grafana variable (`$name`, `${name}`, `${name:format}`,
/// `[[name]]`; `$$`, the provisioning files' escape, too) replaced by a
/// value of its kind, as Grafana interpolates them before Prometheus sees
/// the query: `$__rate_interval`, `$__interval` and `$__range` by a
/// duration (`5m`), the tags of a link from a trace (`$__tags`) by one
/// label matcher (`tag="value"`), any other variable (`$service`) by `1`,
/// which is valid wherever a dashboard puts a variable (in a label
/// matcher's string, as a number). `$1` in a string (label_replace's
/// replacement) is not a variable.
fn fill_grafana_variables(expr: &str) -> String {
    static VARIABLE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"\$+(?:\{([A-Za-z_]\w*)(?::\w+)?\}|([A-Za-z_]\w*))|\[\[([A-Za-z_]\w*)(?::\w+)?\]\]",
        )
        .expect("a valid regex")
    });
    VARIABLE
        .replace_all(expr, |captures: &regex::Captures| {
            let name = (1..=3)
                .find_map(|group| captures.get(group))
                .map_or("", |name| name.as_str());
            match name {
                "__rate_interval" | "__interval" | "__range" => "5m",
                "__tags" => r#"tag="value""#,
                _ => "1",
            }
        })
        .into_owned()
}

/// Adds the metric names of the selectors in `expr` to `names`.
fn selector_names(expr: &Expr, names: &mut BTreeSet<String>) {
    visit_selectors(expr, &[], &mut |selector, _| {
        names.extend(selector_metric(selector));
    });
}

/// The metric name of a selector: `up` or `{__name__="up"}`.
fn selector_metric(selector: &VectorSelector) -> Option<String> {
    selector.name.clone().or_else(|| {
        selector
            .matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__" && m.op == MatchOp::Equal)
            .map(|m| m.value.clone())
    })
}

/// Calls `visit` with every selector of `expr` and the labels that the
/// aggregations around it group by (`sum by (le, route) (...)`).
fn visit_selectors(
    expr: &Expr,
    grouping: &[String],
    visit: &mut impl FnMut(&VectorSelector, &[String]),
) {
    match expr {
        Expr::VectorSelector(vector) => visit(vector, grouping),
        Expr::MatrixSelector(matrix) => visit(&matrix.vs, grouping),
        Expr::Aggregate(aggregate) => {
            let mut inner = grouping.to_vec();
            if let Some(promql_parser::parser::LabelModifier::Include(by)) = &aggregate.modifier {
                inner.extend(by.labels.iter().cloned());
            }
            visit_selectors(&aggregate.expr, &inner, visit);
            if let Some(param) = &aggregate.param {
                visit_selectors(param, grouping, visit);
            }
        }
        Expr::Unary(unary) => visit_selectors(&unary.expr, grouping, visit),
        Expr::Binary(binary) => {
            visit_selectors(&binary.lhs, grouping, visit);
            visit_selectors(&binary.rhs, grouping, visit);
        }
        Expr::Paren(paren) => visit_selectors(&paren.expr, grouping, visit),
        Expr::Subquery(subquery) => visit_selectors(&subquery.expr, grouping, visit),
        Expr::Call(call) => call
            .args
            .args
            .iter()
            .for_each(|arg| visit_selectors(arg, grouping, visit)),
        Expr::Extension(extension) => extension
            .expr
            .children()
            .iter()
            .for_each(|child| visit_selectors(child, grouping, visit)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => {}
    }
}

/// One series selector of a PromQL expression: the metric it reads and the
/// labels the expression needs on that metric's series, those it matches
/// on (`{job="task"}`) and those the aggregations around it group by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorUse {
    /// The series name, as written (`..._bucket` for a histogram).
    pub metric: String,
    /// The label names it matches on or is grouped by, less `__name__`.
    pub labels: BTreeSet<String>,
}

/// Every selector of a PromQL expression with the labels it needs
/// ([`SelectorUse`]), once Grafana's variables are filled in as in
/// [`metric_names_in`].
///
/// Errors when the expression is not PromQL.
pub fn selector_uses(expr: &str) -> Result<Vec<SelectorUse>> {
    let promql = fill_grafana_variables(expr);
    let parsed = promql_parser::parser::parse(&promql)
        .map_err(|e| anyhow::anyhow!("not PromQL ({e}): {expr}"))?;
    let mut uses = Vec::new();
    visit_selectors(&parsed, &[], &mut |selector, grouping| {
        if let Some(metric) = selector_metric(selector) {
            let matched = selector.matchers.matchers.iter().map(|m| m.name.clone());
            let labels = matched
                .chain(grouping.iter().cloned())
                .filter(|label| label != "__name__")
                .collect();
            uses.push(SelectorUse { metric, labels });
        }
    });
    Ok(uses)
}

/// The metric names of a Grafana template variable's query:
/// `label_values(up{job="x"}, job)`, `label_values(job)`,
/// `query_result(expr)`, `metrics(regex)`, or plain PromQL.
///
/// Errors when the PromQL in it does not parse ([`metric_names_in`]).
pub fn metric_names_in_variable_query(query: &str) -> Result<BTreeSet<String>> {
    let query = query.trim();
    let inner = |prefix: &str| {
        query
            .strip_prefix(prefix)
            .and_then(|rest| rest.trim_start().strip_prefix('('))
            .and_then(|rest| rest.trim_end().strip_suffix(')'))
    };
    if let Some(args) = inner("label_values") {
        // The last argument is a label name; before it, if anything, a selector.
        return match args.rfind(',') {
            Some(comma) => metric_names_in(&args[..comma]),
            None => Ok(BTreeSet::new()),
        };
    }
    if let Some(expr) = inner("query_result") {
        return metric_names_in(expr);
    }
    if inner("metrics").is_some() || inner("label_names").is_some() {
        return Ok(BTreeSet::new());
    }
    metric_names_in(query)
}

/// Every metric name our services must expose for the stack's
/// configuration to work: the names read by every dashboard query and
/// template variable, every rule and every query of Grafana's links from
/// traces to metrics; less the names the recording rules define and those
/// that other exporters serve ([`from_other_exporter`]). Histograms appear
/// by the series the queries read (`..._bucket`, `..._count`).
///
/// Panics when the configuration cannot be read: the callers are tests.
pub fn metrics_used_by_config(root: &Path) -> BTreeSet<String> {
    used_metrics(root).unwrap_or_else(|e| panic!("reading the stack's configuration: {e:#}"))
}

fn used_metrics(root: &Path) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    let mut recorded = BTreeSet::new();
    for rule in rules(root)? {
        let what = rule.record.as_deref().or(rule.alert.as_deref());
        names.extend(
            metric_names_in(&rule.expr)
                .with_context(|| format!("rule {}", what.unwrap_or("without a name")))?,
        );
        recorded.extend(rule.record);
    }
    for (path, dashboard) in dashboards(root)? {
        for expr in dashboard_exprs(&dashboard) {
            names.extend(metric_names_in(&expr).with_context(|| path.display().to_string())?);
        }
        for query in variable_queries(&dashboard) {
            names.extend(
                metric_names_in_variable_query(&query)
                    .with_context(|| path.display().to_string())?,
            );
        }
    }
    for query in traces_to_metrics_queries(root)? {
        names.extend(metric_names_in(&query).context("the Tempo data source's tracesToMetrics")?);
    }
    Ok(names
        .into_iter()
        .filter(|name| !recorded.contains(name) && !from_other_exporter(name))
        .collect())
}

/// The names of the series in a Prometheus text exposition (`/metrics`):
/// a histogram shows as its `_bucket`, `_sum` and `_count` series.
///
/// Panics when the text is not the Prometheus text format: the callers are
/// tests.
pub fn exposed_series_names(exposition: &str) -> BTreeSet<String> {
    crate::exposition::samples(exposition)
        .unwrap_or_else(|e| panic!("not a Prometheus text exposition: {e:?}\n{exposition}"))
        .into_iter()
        .map(|sample| sample.name)
        .collect()
}

/// The names of `used` that none of `expositions` (the scrapes of the
/// services) shows.
pub fn missing_metrics<'a>(
    used: &BTreeSet<String>,
    expositions: impl IntoIterator<Item = &'a str>,
) -> BTreeSet<String> {
    let exposed: BTreeSet<String> = expositions
        .into_iter()
        .flat_map(exposed_series_names)
        .collect();
    used.difference(&exposed).cloned().collect()
}

// ------------------------------------------------------------------ Grafana

/// The provisioned data sources, as written.
pub fn datasources(root: &Path) -> Result<Vec<Value>> {
    let file: Value = read_yaml(&root.join(DATASOURCES_FILE))?;
    match file.get("datasources") {
        Some(Value::Array(list)) => Ok(list.clone()),
        _ => bail!("{DATASOURCES_FILE} has no `datasources` list"),
    }
}

/// The one data source of `kind` (`prometheus`, `tempo`, `loki`).
pub fn datasource(root: &Path, kind: &str) -> Result<Value> {
    let matching: Vec<Value> = datasources(root)?
        .into_iter()
        .filter(|d| d.get("type").and_then(Value::as_str) == Some(kind))
        .collect();
    match <[Value; 1]>::try_from(matching) {
        Ok([one]) => Ok(one),
        Err(all) => bail!("{} data sources of type {kind}, not one", all.len()),
    }
}

/// A data source's `uid`.
pub fn uid(datasource: &Value) -> Result<String> {
    datasource
        .get("uid")
        .and_then(scalar)
        .context("a data source without uid")
}

/// The PromQL of the Tempo data source's links to metrics
/// (`tracesToMetrics.queries`), with `$$` (the provisioning file's escape
/// for `$`) read as Grafana reads it.
pub fn traces_to_metrics_queries(root: &Path) -> Result<Vec<String>> {
    let tempo = datasource(root, "tempo")?;
    let queries = tempo
        .pointer("/jsonData/tracesToMetrics/queries")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Ok(queries
        .iter()
        .filter_map(|q| q.get("query").and_then(Value::as_str))
        .map(|q| q.replace("$$", "$"))
        .collect())
}

/// The regular expression of the Loki data source's derived field that
/// links a log line to its trace in Tempo. Its first group is the trace id.
///
/// Panics when there is no such field: the callers are tests.
pub fn loki_trace_id_regex(root: &Path) -> String {
    trace_link(root).unwrap_or_else(|e| panic!("the Loki -> Tempo link: {e:#}"))
}

fn trace_link(root: &Path) -> Result<String> {
    let tempo = uid(&datasource(root, "tempo")?)?;
    let loki = datasource(root, "loki")?;
    let fields = loki
        .pointer("/jsonData/derivedFields")
        .and_then(Value::as_array)
        .context("the Loki data source has no derivedFields")?;
    let links: Vec<&Value> = fields
        .iter()
        .filter(|field| field.get("datasourceUid").and_then(Value::as_str) == Some(&tempo))
        .collect();
    let [link] = links.as_slice() else {
        bail!("{} derived fields link to Tempo, not one", links.len());
    };
    link.get("matcherRegex")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .context("the derived field has no matcherRegex")
}

/// The dashboards: `(file, parsed JSON)`.
pub fn dashboards(root: &Path) -> Result<Vec<(PathBuf, Value)>> {
    let mut dashboards = Vec::new();
    for path in files_ending(&root.join(DASHBOARDS_DIR), ".json")? {
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let dashboard =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        dashboards.push((path, dashboard));
    }
    Ok(dashboards)
}

/// Every `expr` of a dashboard, at any depth (panels, rows' panels).
pub fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner) {
                        ("expr", Value::String(expr)) => out.push(expr.clone()),
                        _ => walk(inner, out),
                    }
                }
            }
            Value::Array(list) => list.iter().for_each(|inner| walk(inner, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(panels) = dashboard.get("panels") {
        walk(panels, &mut out);
    }
    out
}

/// The template variables of a dashboard.
pub fn variables(dashboard: &Value) -> Vec<Value> {
    dashboard
        .pointer("/templating/list")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The queries of a dashboard's query variables (text, or `{query: ...}`).
pub fn variable_queries(dashboard: &Value) -> Vec<String> {
    variables(dashboard)
        .iter()
        .filter(|v| v.get("type").and_then(Value::as_str) == Some("query"))
        .filter_map(|v| match v.get("query") {
            Some(Value::String(query)) => Some(query.clone()),
            Some(object) => object.get("query").and_then(scalar),
            None => None,
        })
        .collect()
}

// -------------------------------------------------------------------- Alloy

/// The values the Alloy pipeline gives the Loki label `service`: the rule
/// that copies a source label to `service`, limited by the `keep` rule on
/// that same source label. Fails when nothing bounds the values.
pub fn alloy_service_labels(root: &Path) -> Result<BTreeSet<String>> {
    let path = root.join(ALLOY_CONFIG);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let rules = alloy_relabel_rules(&text)?;
    let copies: Vec<&BTreeMap<String, AlloyValue>> = rules
        .iter()
        .filter(|rule| rule.get("target_label") == Some(&AlloyValue::Text("service".into())))
        .collect();
    let [copy] = copies.as_slice() else {
        bail!("{} rules set the label service, not one", copies.len());
    };
    ensure!(
        !copy.contains_key("regex") && !copy.contains_key("replacement"),
        "the rule that sets service rewrites its value"
    );
    let source = copy
        .get("source_labels")
        .context("the rule that sets service has no source_labels")?;
    let keep = rules
        .iter()
        .find(|rule| {
            rule.get("action") == Some(&AlloyValue::Text("keep".into()))
                && rule.get("source_labels") == Some(source)
        })
        .context("no keep rule bounds the values of service")?;
    let Some(AlloyValue::Text(regex)) = keep.get("regex") else {
        bail!("the keep rule has no regex");
    };
    let values: BTreeSet<String> = regex.split('|').map(str::to_owned).collect();
    ensure!(
        values.iter().all(|v| v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')),
        "the keep rule's regex {regex:?} is not a plain list of names"
    );
    Ok(values)
}

/// A value of an Alloy attribute: text or a list of texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlloyValue {
    Text(String),
    List(Vec<String>),
}

/// The attributes of every `rule { ... }` block of an Alloy configuration.
pub fn alloy_relabel_rules(config: &str) -> Result<Vec<BTreeMap<String, AlloyValue>>> {
    let text = strip_alloy_comments(config);
    let block = Regex::new(r"\brule\s*\{").expect("a valid regex");
    let attribute =
        Regex::new(r#"(?m)^\s*(\w+)\s*=\s*("(?:[^"\\]|\\.)*"|\[[^\]]*\])"#).expect("a valid regex");
    let string = Regex::new(r#""((?:[^"\\]|\\.)*)""#).expect("a valid regex");
    let chars: Vec<char> = text.chars().collect();
    let mut rules = Vec::new();
    for found in block.find_iter(&text) {
        // Character index of the opening brace.
        let open = text[..found.end() - 1].chars().count();
        let close = closing(&chars, open, '{', '}');
        ensure!(close < chars.len(), "a rule block is not closed");
        let body: String = chars[open + 1..close].iter().collect();
        let mut rule = BTreeMap::new();
        for captures in attribute.captures_iter(&body) {
            let raw = &captures[2];
            let value = if raw.starts_with('[') {
                AlloyValue::List(string.captures_iter(raw).map(|c| unescape(&c[1])).collect())
            } else {
                AlloyValue::Text(unescape(&raw[1..raw.len() - 1]))
            };
            rule.insert(captures[1].to_owned(), value);
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// The index just past the string that starts at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    chars.len()
}

/// The index of the bracket closing the one at `start` (strings skipped),
/// or the end of the text.
fn closing(chars: &[char], start: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    chars.len()
}

/// The text without `//` and `/* */` comments, strings left whole.
fn strip_alloy_comments(config: &str) -> String {
    let chars: Vec<char> = config.chars().collect();
    let mut out = String::with_capacity(config.len());
    let mut i = 0;
    while i < chars.len() {
        match (chars[i], chars.get(i + 1)) {
            ('"', _) => {
                let end = skip_string(&chars, i);
                out.extend(&chars[i..end]);
                i = end;
            }
            ('/', Some('/')) => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    i += 1;
                }
                i += 2;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn unescape(text: &str) -> String {
    text.replace("\\\"", "\"").replace("\\\\", "\\")
}

// --------------------------------------------------------------------- book

/// The anchors mdbook gives the headings of a Markdown page: the heading's
/// text, lower-cased, spaces as `-`, other punctuation dropped.
pub fn heading_anchors(markdown: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        if let Some(heading) = line.strip_prefix('#') {
            let text = heading.trim_start_matches('#').trim();
            anchors.insert(anchor_of(text));
        }
    }
    anchors
}

/// The anchor mdbook makes of a heading's text.
pub fn anchor_of(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_ascii_lowercase())
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        repo_root()
    }

    fn compose() -> Compose {
        Compose::load(&root()).expect("docker-compose.yml parses")
    }

    // ------------------------------------------------------------ compose

    #[test]
    fn compose_has_the_system_and_the_stack() {
        let compose = compose();
        let names: BTreeSet<&str> = compose.services.keys().map(String::as_str).collect();
        for expected in [
            "gateway",
            "logic",
            "task",
            "nats",
            "nats-exporter",
            "prometheus",
            "grafana",
            "tempo",
            "loki",
            "alloy",
            "cadvisor",
        ] {
            assert!(
                names.contains(expected),
                "no service {expected} in {names:?}"
            );
        }
        for service in service_names() {
            let definition = &compose.services[&service];
            assert_eq!(
                definition
                    .pointer("/build/dockerfile")
                    .and_then(Value::as_str),
                Some("final/Dockerfile"),
                "{service} is built from final/"
            );
            assert_eq!(
                definition.get("command"),
                Some(&serde_json::json!([service])),
                "{service} runs its own subcommand"
            );
        }
    }

    #[test]
    fn every_image_is_pinned_to_a_version() {
        let compose = compose();
        let images = compose.images();
        assert!(images.len() >= 8, "images: {images:?}");
        let unpinned: Vec<String> = images
            .iter()
            .filter_map(|(service, image)| {
                image_is_pinned(image)
                    .err()
                    .map(|e| format!("{service}: {e}"))
            })
            .collect();
        assert!(unpinned.is_empty(), "{unpinned:#?}");
        // A service with neither an image nor a build would not start.
        for (name, service) in &compose.services {
            assert!(
                service.get("image").is_some() || service.get("build").is_some(),
                "{name} has no image and no build"
            );
        }
    }

    #[test]
    fn what_counts_as_pinned() {
        for pinned in [
            "prom/prometheus:v3.5.0",
            "nats:2.11.6-alpine",
            "localhost:5000/team/app:1.2.3",
            "grafana/tempo@sha256:0123abcd",
        ] {
            assert_eq!(image_is_pinned(pinned), Ok(()), "{pinned}");
        }
        for moving in [
            "grafana/grafana",
            "grafana/grafana:latest",
            "nats:2.11-alpine",
            "nats:alpine",
            "localhost:5000/app",
            "busybox:1",
        ] {
            assert!(image_is_pinned(moving).is_err(), "{moving} passed");
        }
    }

    #[test]
    fn every_mounted_file_exists() {
        let compose = compose();
        let root = root();
        // What cAdvisor and Alloy read of the Docker host itself.
        let host_paths = [
            "/",
            "/var/run",
            "/var/run/docker.sock",
            "/sys",
            "/var/lib/docker/",
            "/dev/disk/",
        ];
        let mounts = compose.mounts().unwrap();
        let mut config_files = 0;
        for mount in &mounts {
            match &mount.source {
                MountSource::Bind(path) if path.starts_with('/') => assert!(
                    host_paths.contains(&path.as_str()),
                    "{}: {path} is a host path the stack does not need",
                    mount.service
                ),
                MountSource::Bind(path) => {
                    let on_disk = root.join(path);
                    assert!(
                        on_disk.exists(),
                        "{} mounts {path}, which does not exist",
                        mount.service
                    );
                    config_files += 1;
                }
                MountSource::Volume(name) => assert!(
                    compose.volumes.contains(name),
                    "{} mounts the undeclared volume {name}",
                    mount.service
                ),
            }
        }
        assert!(config_files >= 6, "mounts: {mounts:#?}");
        // Every declared volume is used.
        for volume in &compose.volumes {
            assert!(
                mounts
                    .iter()
                    .any(|m| m.source == MountSource::Volume(volume.clone())),
                "volume {volume} is declared and never mounted"
            );
        }
    }

    #[test]
    fn every_published_port_is_unique_and_local() {
        let ports = compose().published_ports().unwrap();
        let mut seen: BTreeMap<(u16, String), String> = BTreeMap::new();
        for port in &ports {
            if let Some(other) = seen.insert(
                (port.host_port, port.protocol.clone()),
                port.service.clone(),
            ) {
                panic!(
                    "host port {}/{} is published by {other} and {}",
                    port.host_port, port.protocol, port.service
                );
            }
            assert_eq!(
                port.host_ip.as_deref(),
                Some("127.0.0.1"),
                "{} publishes {} beyond this machine",
                port.service,
                port.host_port
            );
        }
        // DESIGN.md's ports, the same inside and outside.
        for (service, port) in [
            ("gateway", 8080),
            ("gateway", 9091),
            ("gateway", 9101),
            ("logic", 9092),
            ("logic", 9102),
            ("nats", 4222),
            ("prometheus", 9090),
            ("grafana", 3000),
            ("tempo", 3200),
            ("tempo", 4317),
            ("loki", 3100),
        ] {
            assert!(
                ports.iter().any(|p| p.service == service
                    && p.host_port == port
                    && p.container_port == port),
                "{service} does not publish {port}"
            );
        }
    }

    /// `docker compose up --scale task=3` needs a task that publishes no
    /// fixed host port (a second container could not bind it), and a
    /// Prometheus that finds every replica (DNS discovery, not one static
    /// target).
    #[test]
    fn task_scales_and_prometheus_finds_every_replica() {
        let ports = compose().published_ports().unwrap();
        let task: Vec<_> = ports.iter().filter(|p| p.service == "task").collect();
        assert!(task.is_empty(), "task publishes {task:?}");
        let config: Value = read_yaml(&root().join(PROMETHEUS_CONFIG)).unwrap();
        let jobs = config["scrape_configs"].as_array().unwrap();
        let job = jobs.iter().find(|j| j["job_name"] == "task").unwrap();
        assert_eq!(job["dns_sd_configs"][0]["names"][0], "task", "{job:?}");
        assert!(job.get("static_configs").is_none(), "{job:?}");
    }

    #[test]
    fn ports_in_both_syntaxes() {
        let port = short_port("s", "127.0.0.1:8081:8080").unwrap().unwrap();
        assert_eq!(
            (port.host_ip.as_deref(), port.host_port, port.container_port),
            (Some("127.0.0.1"), 8081, 8080)
        );
        let port = short_port("s", "[::1]:53:53/udp").unwrap().unwrap();
        assert_eq!(
            (port.host_ip.as_deref(), port.protocol.as_str()),
            (Some("::1"), "udp")
        );
        assert_eq!(short_port("s", "9000").unwrap(), None);
        assert!(short_port("s", "8000-8010:8000-8010").is_err());
        let long = serde_json::json!({"target": 80, "published": "8080", "host_ip": "127.0.0.1"});
        let port = long_port("s", long.as_object().unwrap()).unwrap();
        assert_eq!((port.host_port, port.container_port), (8080, 80));
    }

    #[test]
    fn services_start_in_order_on_health() {
        let compose = compose();
        let dependencies = compose.dependencies();
        assert!(!dependencies.is_empty());
        for (service, dependency, condition) in &dependencies {
            assert!(
                compose.services.contains_key(dependency),
                "{service} depends on {dependency}, which is not a service"
            );
            match condition.as_str() {
                "service_healthy" => assert!(
                    compose.healthcheck(dependency).is_some(),
                    "{service} waits for {dependency} to be healthy, which has no healthcheck"
                ),
                "service_started" | "service_completed_successfully" => {}
                other => panic!("{service} -> {dependency}: unknown condition {other}"),
            }
        }
        let waits = |service: &str, on: &str| {
            dependencies
                .iter()
                .any(|(s, d, c)| s == service && d == on && c == "service_healthy")
        };
        assert!(waits("logic", "nats") && waits("task", "nats"));
        assert!(waits("gateway", "logic") && waits("task", "gateway"));
        // Each service is healthy when its admin port says it is ready.
        for (service, port) in [("gateway", 9101), ("logic", 9102), ("task", 9103)] {
            let check = compose.healthcheck(service).expect("a healthcheck");
            assert!(
                check.contains(&format!(":{port}/readyz")),
                "{service}: {check}"
            );
        }
    }

    #[test]
    fn the_services_get_the_topology_of_the_stack() {
        let compose = compose();
        let jobs = scrape_jobs(&root()).unwrap();
        for service in service_names() {
            let environment = compose.environment(&service);
            let expect = [
                ("GATEWAY_HTTP_ADDR", "0.0.0.0:8080"),
                ("GATEWAY_GRPC_ADDR", "0.0.0.0:9091"),
                ("LOGIC_GRPC_ADDR", "0.0.0.0:9092"),
                ("GATEWAY_ADMIN_ADDR", "0.0.0.0:9101"),
                ("LOGIC_ADMIN_ADDR", "0.0.0.0:9102"),
                ("TASK_ADMIN_ADDR", "0.0.0.0:9103"),
                ("LOGIC_URL", "http://logic:9092"),
                ("GATEWAY_CALLBACK_URL", "http://gateway:9091"),
                ("NATS_URL", "nats://nats:4222"),
                ("ORDERS_DB", "/data/orders.db"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://tempo:4317"),
            ];
            for (key, value) in expect {
                assert_eq!(
                    environment.get(key).map(String::as_str),
                    Some(value),
                    "{service}: {key}"
                );
            }
            // Prometheus scrapes the job of the same name on the admin port.
            let admin_key = format!("{}_ADMIN_ADDR", service.to_ascii_uppercase());
            let admin_port = environment[&admin_key]
                .rsplit(':')
                .next()
                .unwrap()
                .to_owned();
            assert_eq!(
                jobs.get(&service),
                Some(&vec![format!("{service}:{admin_port}")]),
                "the Prometheus job {service}"
            );
        }
        assert!(jobs.contains_key("nats") && jobs.contains_key("cadvisor"));
        // The NATS job scrapes the exporter, and the exporter reads NATS's
        // monitoring port.
        assert_eq!(jobs["nats"], ["nats-exporter:7777"]);
        let exporter = &compose.services["nats-exporter"];
        assert!(exporter["command"].to_string().contains("http://nats:8222"));
    }

    // ------------------------------------------------------- rules and alerts

    #[test]
    fn every_alert_has_a_summary_and_a_runbook_in_the_book() {
        let rules = rules(&root()).unwrap();
        let alerts: Vec<&Rule> = rules.iter().filter(|r| r.alert.is_some()).collect();
        assert!(alerts.len() >= 7, "alerts: {alerts:#?}");
        let book = fs::read_to_string(root().join(RUNBOOK_PAGE)).expect("the runbook page");
        let anchors = heading_anchors(&book);
        let page = Path::new(RUNBOOK_PAGE).with_extension("html");
        let page = page.file_name().unwrap().to_str().unwrap();
        for alert in alerts {
            let name = alert.alert.as_deref().unwrap();
            let summary = alert.annotations.get("summary").map(String::as_str);
            assert!(
                summary.is_some_and(|s| !s.trim().is_empty()),
                "{name}: no summary"
            );
            assert!(alert.labels.contains_key("severity"), "{name}: no severity");
            let url = alert
                .annotations
                .get("runbook_url")
                .unwrap_or_else(|| panic!("{name}: no runbook_url"));
            let (path, anchor) = url
                .split_once('#')
                .unwrap_or_else(|| panic!("{name}: {url} has no anchor"));
            assert!(path.ends_with(page), "{name}: {url} is not {page}");
            assert!(
                anchors.contains(anchor),
                "{name}: {RUNBOOK_PAGE} has no heading with anchor #{anchor}"
            );
            assert_eq!(
                anchor,
                anchor_of(name),
                "{name}: the runbook is titled by the alert"
            );
        }
    }

    #[test]
    fn every_alert_has_unit_tests_that_fire_and_stay_quiet() {
        let rules = rules(&root()).unwrap();
        let cases = alert_test_cases(&root()).unwrap();
        for alert in rules.iter().filter_map(|r| r.alert.as_deref()) {
            let (fire, quiet) = cases.get(alert).copied().unwrap_or_default();
            assert!(fire > 0, "no test makes {alert} fire");
            assert!(quiet > 0, "no test keeps {alert} quiet");
        }
        for tested in cases.keys() {
            assert!(
                rules.iter().any(|r| r.alert.as_deref() == Some(tested)),
                "the tests name {tested}, which is no alert"
            );
        }
    }

    #[test]
    fn prometheus_starts_with_what_the_stack_needs() {
        let compose = compose();
        let command = compose.services["prometheus"]["command"].to_string();
        for flag in [
            "--web.enable-remote-write-receiver",
            "--enable-feature=exemplar-storage",
            "--config.file=/etc/prometheus/prometheus.yml",
        ] {
            assert!(command.contains(flag), "prometheus runs without {flag}");
        }
        // The rule files are found next to the configuration, in the
        // container as on disk.
        let config: Value = read_yaml(&root().join(PROMETHEUS_CONFIG)).unwrap();
        let listed: BTreeSet<String> = config["rule_files"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(scalar)
            .collect();
        let on_disk: BTreeSet<String> = rule_files(&root())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(listed, on_disk);
    }

    // ----------------------------------------------------------- metrics

    /// The metric families of the services the stack runs, `final`'s, from
    /// its end-to-end snapshots (`contracts::metrics`): chapter 01's, which
    /// every later chapter keeps, and the gauge of final's faults.
    fn snapshot_families() -> BTreeMap<String, String> {
        let dir = root().join("final/tests/e2e/snapshots");
        let mut families = BTreeMap::new();
        for path in files_ending(&dir, "_families.snap").unwrap() {
            let text = fs::read_to_string(&path).unwrap();
            // After the insta header: `name type [labels]`, then help lines.
            let body = text.splitn(3, "---\n").nth(2).unwrap_or_default();
            for line in body.lines().filter(|l| !l.starts_with(' ')) {
                let mut words = line.split_whitespace();
                if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                    families.insert(name.to_owned(), kind.to_owned());
                }
            }
        }
        assert!(
            families.len() > 20,
            "families in {}: {families:?}",
            dir.display()
        );
        families
    }

    #[test]
    fn the_config_uses_only_metrics_the_services_expose() {
        let families = snapshot_families();
        let used = metrics_used_by_config(&root());
        assert!(used.len() > 20, "used: {used:?}");
        let unknown: Vec<&String> = used
            .iter()
            .filter(|name| {
                let histogram = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
                    let family = name.strip_suffix(suffix)?;
                    (families.get(family)? == "histogram").then_some(family)
                });
                match histogram {
                    Some(_) => false,
                    None => families
                        .get(name.as_str())
                        .is_none_or(|kind| kind == "histogram"),
                }
            })
            .collect();
        assert!(
            unknown.is_empty(),
            "the dashboards or rules query metrics no service exposes: {unknown:?}"
        );
        // And every family of the telemetry contract shows somewhere.
        for family in [
            "http_requests_total",
            "http_request_duration_seconds",
            "grpc_server_handled_total",
            "grpc_server_handling_seconds",
            "grpc_client_handled_total",
            "grpc_client_handling_seconds",
            "mq_published_total",
            "mq_publish_duration_seconds",
            "mq_consumed_total",
            "mq_handle_duration_seconds",
            "mq_queue_delay_seconds",
            "mq_redeliveries_total",
            "db_query_duration_seconds",
            "orders_created_total",
            "orders_completed_total",
            "order_completion_seconds",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "tokio_busy_seconds_total",
        ] {
            assert!(
                used.iter().any(|name| name == family
                    || name
                        .strip_prefix(family)
                        .is_some_and(|rest| ["_bucket", "_count", "_sum"].contains(&rest))),
                "no dashboard or rule shows {family}"
            );
        }
    }

    #[test]
    fn metric_names_are_found_in_promql() {
        let names = |expr| {
            metric_names_in(expr)
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(
                r#"histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket{job=~"$service",route!="/x"}[$__rate_interval])))"#
            ),
            ["http_request_duration_seconds_bucket"]
        );
        assert_eq!(
            names(
                "sum(rate(a_total[5m] offset 1h)) / on(job) group_left(instance) b_info > bool 0.5 and c unless d or vector(0) * 1e-3"
            ),
            ["a_total", "b_info", "c", "d"]
        );
        assert_eq!(
            names(
                r#"label_replace(up, "dst", "$1", "job", "(.*)") + {__name__="named_by_matcher"} + sum without (x) (rate(e[5m:1m])) + topk(scalar(k), f)"#
            ),
            ["e", "f", "k", "named_by_matcher", "up"]
        );
        assert_eq!(
            names(
                "rate(process_cpu_seconds_total{$$__tags}[1m]) + ${var} + [[old]] + x:recorded:ratio_rate5m # a comment with words"
            ),
            ["process_cpu_seconds_total", "x:recorded:ratio_rate5m"]
        );
        assert_eq!(
            metric_names_in_variable_query(r#"label_values(up{job=~"gateway|logic|task"}, job)"#)
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            ["up"]
        );
        assert!(
            metric_names_in_variable_query("label_values(job)")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn what_is_not_promql_is_an_error() {
        for expr in [
            "sum(rate(a[5m])",
            "rate(a)",
            "sum(a[5m])",
            "a{b=}",
            "no_such_function(a)",
        ] {
            let error = metric_names_in(expr).unwrap_err().to_string();
            assert!(
                error.starts_with("not PromQL") && error.ends_with(expr),
                "{error}"
            );
        }
    }

    #[test]
    fn a_scrape_shows_histograms_by_their_series() {
        let exposition = "# HELP h Time.\n# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_sum 0.05\nh_count 1\nc_total{a=\"b\"} 3\ng 1\n";
        let used: BTreeSet<String> = ["h_bucket", "c_total", "g", "gone_total"]
            .map(String::from)
            .into();
        assert_eq!(
            missing_metrics(&used, [exposition]),
            BTreeSet::from(["gone_total".to_owned()])
        );
    }

    // ------------------------------------------------------ links, labels

    #[test]
    fn alloy_labels_the_lines_with_the_service_names() {
        assert_eq!(alloy_service_labels(&root()).unwrap(), service_names());
        // And those are the compose services whose stdout it reads.
        let compose = compose();
        assert!(
            service_names()
                .iter()
                .all(|s| compose.services.contains_key(s))
        );
        // trace_id stays out of the labels: one stream per request otherwise.
        let config = strip_alloy_comments(&fs::read_to_string(root().join(ALLOY_CONFIG)).unwrap());
        let labels = Regex::new(r"stage\.labels\s*\{\s*values\s*=\s*\{([^}]*)\}").unwrap();
        let labelled = &labels.captures(&config).expect("a stage.labels")[1];
        assert!(!labelled.contains("trace_id") && !labelled.contains("span_id"));
    }

    #[test]
    fn alloy_rules_are_read_with_comments_and_strings() {
        let config = r#"
            discovery.relabel "x" {
              // rule { target_label = "commented" }
              rule {
                source_labels = ["__a", "__b"] /* two */
                regex         = "x\"y|z"
                target_label  = "service"
              }
              host = "unix:///var/run/docker.sock"
            }"#;
        let rules = alloy_relabel_rules(config).unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0]["source_labels"],
            AlloyValue::List(vec!["__a".into(), "__b".into()])
        );
        assert_eq!(rules[0]["regex"], AlloyValue::Text("x\"y|z".into()));
    }

    /// Two lines as the services write them (from chapter 03's log
    /// snapshot, with the timestamp and real ids the snapshot redacts).
    const LOG_LINES: [&str; 2] = [
        r#"{"timestamp":"2026-03-14T09:26:53.589793Z","level":"info","service":"gateway","target":"ch03_grpc_tracing::gateway","message":"order accepted","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","method":"POST","order_id":"0c5b2e36-8f0e-4a51-9a3c-2f1d1e6b7a90","route":"/orders"}"#,
        r#"{"timestamp":"2026-03-14T09:26:53.596012Z","level":"info","service":"task","target":"ch03_grpc_tracing::task","message":"order handled","trace_id":"a3ce929d0e0e47364bf92f3577b34da6","span_id":"b7ad6b7169203331","delivery":1,"order_id":"0c5b2e36-8f0e-4a51-9a3c-2f1d1e6b7a90","outcome":"Completed"}"#,
    ];

    #[test]
    fn the_loki_link_finds_the_trace_id_in_a_log_line() {
        let regex = Regex::new(&loki_trace_id_regex(&root())).expect("a valid regex");
        for line in LOG_LINES {
            let parsed: Value = serde_json::from_str(line).unwrap();
            let found = regex.captures(line).map(|c| c[1].to_owned());
            assert_eq!(found.as_deref(), parsed["trace_id"].as_str(), "{line}");
        }
        // Not the span id, and nothing on a line written outside a span.
        let outside = r#"{"timestamp":"2026-03-14T09:26:50.000001Z","level":"warn","service":"task","target":"async_nats","message":"reconnecting"}"#;
        assert!(regex.captures(outside).is_none());
    }

    #[test]
    fn grafana_links_join_on_the_same_keys() {
        let root = root();
        let prometheus = datasource(&root, "prometheus").unwrap();
        let tempo = datasource(&root, "tempo").unwrap();
        let loki = datasource(&root, "loki").unwrap();
        let (prometheus_uid, tempo_uid, loki_uid) = (
            uid(&prometheus).unwrap(),
            uid(&tempo).unwrap(),
            uid(&loki).unwrap(),
        );
        let at =
            |value: &Value, pointer: &str| value.pointer(pointer).cloned().unwrap_or(Value::Null);

        // Prometheus exemplar -> Tempo. Only Tempo's span metrics carry
        // exemplars, as traceID: the services serve the text format 0.0.4,
        // which has none, so a link on any other label would never match.
        let exemplars = at(&prometheus, "/jsonData/exemplarTraceIdDestinations");
        let exemplars = exemplars.as_array().expect("exemplar links");
        let labels: Vec<&Value> = exemplars.iter().map(|e| &e["name"]).collect();
        assert_eq!(labels, ["traceID"], "exemplar labels that nothing sends");
        assert!(
            exemplars
                .iter()
                .all(|e| e["datasourceUid"] == tempo_uid.as_str())
        );
        let tempo_config: Value = read_yaml(&root.join(TEMPO_CONFIG)).unwrap();
        assert_eq!(
            tempo_config.pointer("/metrics_generator/storage/remote_write/0/send_exemplars"),
            Some(&Value::Bool(true)),
            "Tempo sends its span metrics' exemplars to Prometheus"
        );

        // Tempo span -> Loki: the lines of that service and that trace.
        let logs = at(&tempo, "/jsonData/tracesToLogsV2");
        assert_eq!(logs["datasourceUid"], loki_uid.as_str());
        assert_eq!(logs["filterByTraceID"], true);
        assert_eq!(
            logs["tags"],
            serde_json::json!([{"key": "service.name", "value": "service"}])
        );

        // Tempo span -> Prometheus: the service's job.
        let metrics = at(&tempo, "/jsonData/tracesToMetrics");
        assert_eq!(metrics["datasourceUid"], prometheus_uid.as_str());
        assert_eq!(
            metrics["tags"],
            serde_json::json!([{"key": "service.name", "value": "job"}])
        );
        for query in traces_to_metrics_queries(&root).unwrap() {
            assert!(
                query.contains("{$__tags}"),
                "{query} is not filtered by service"
            );
        }
        // The service graph reads Tempo's generated metrics in Prometheus.
        assert_eq!(
            at(&tempo, "/jsonData/serviceMap/datasourceUid"),
            prometheus_uid.as_str()
        );

        // Loki line -> Tempo trace.
        let derived = at(&loki, "/jsonData/derivedFields/0");
        assert_eq!(derived["datasourceUid"], tempo_uid.as_str());
        assert_eq!(
            derived["url"], "$${__value.raw}",
            "the trace id, escaped for provisioning"
        );

        // The labels those links use are the ones the pipelines produce:
        // `service` from Alloy, `job` from Prometheus's job names.
        assert_eq!(alloy_service_labels(&root).unwrap(), service_names());
        let jobs = scrape_jobs(&root).unwrap();
        assert!(service_names().iter().all(|s| jobs.contains_key(s)));
    }

    // ------------------------------------------------------- Tempo, Loki

    #[test]
    fn tempo_keeps_every_span_for_traceql_metrics_and_reports_nothing() {
        let root = root();
        let tempo: Value = read_yaml(&root.join(TEMPO_CONFIG)).unwrap();
        let at = |pointer: &str| tempo.pointer(pointer).cloned().unwrap_or(Value::Null);
        // TraceQL metrics read the local-blocks processor, which by default
        // keeps only server and root spans: task's consumer, internal and
        // client spans, every client call and query would be missing.
        let processors = at("/overrides/defaults/metrics_generator/processors");
        let processors: Vec<&str> = processors
            .as_array()
            .expect("the metrics generator's processors")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for processor in ["service-graphs", "span-metrics", "local-blocks"] {
            assert!(processors.contains(&processor), "{processor} is off");
        }
        assert_eq!(
            at("/metrics_generator/processor/local_blocks/filter_server_spans"),
            Value::Bool(false),
            "local-blocks keeps only server and root spans"
        );
        // Tempo 2.8 reads its file strictly: an unknown key stops it. These
        // are the keys of its config structs, by their paths.
        assert_eq!(at("/usage_report/reporting_enabled"), Value::Bool(false));
        let loki: Value = read_yaml(&root.join(LOKI_CONFIG)).unwrap();
        assert_eq!(
            loki.pointer("/analytics/reporting_enabled"),
            Some(&Value::Bool(false))
        );
        // And Grafana's own.
        let compose = compose();
        assert_eq!(
            compose
                .environment("grafana")
                .get("GF_ANALYTICS_REPORTING_ENABLED"),
            Some(&"false".to_owned())
        );
    }

    /// A service's metric families from `final`'s end-to-end snapshot (the
    /// stack runs final): name -> (type, label names).
    fn service_families(service: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
        let path = root().join(format!(
            "final/tests/e2e/snapshots/e2e__metrics__{service}_families.snap"
        ));
        let text =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let body = text.splitn(3, "---\n").nth(2).unwrap_or_default();
        let mut families = BTreeMap::new();
        for line in body
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with(' '))
        {
            let (head, labels) = line.split_once(" [").unwrap_or((line, "]"));
            let mut words = head.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                panic!("not `name type [labels]` in {}: {line}", path.display());
            };
            let labels = labels
                .trim_end_matches(']')
                .split(", ")
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            families.insert(name.to_owned(), (kind.to_owned(), labels));
        }
        assert!(!families.is_empty(), "no families in {}", path.display());
        families
    }

    /// The labels of the series `metric` in `families`, with `job` (which
    /// Prometheus adds to every scraped series) and `le` on a histogram's
    /// buckets; `None` when the service has no such series.
    fn series_labels(
        families: &BTreeMap<String, (String, BTreeSet<String>)>,
        metric: &str,
    ) -> Option<BTreeSet<String>> {
        let (mut labels, le) = match families.get(metric) {
            Some((kind, labels)) if kind != "histogram" => (labels.clone(), false),
            _ => ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
                let (kind, labels) = families.get(metric.strip_suffix(suffix)?)?;
                (kind == "histogram").then(|| (labels.clone(), *suffix == "_bucket"))
            })?,
        };
        labels.insert("job".to_owned());
        if le {
            labels.insert("le".to_owned());
        }
        Some(labels)
    }

    /// What is wrong with one link from a span to metrics (a query of
    /// `tracesToMetrics`), Grafana offering it on the spans of every
    /// service: a service for which no selector reads a series it exposes,
    /// a selector that reads a label its series lack or that is not
    /// filtered by the span's service, a selector no service answers.
    fn link_gaps(
        query: &str,
        services: &BTreeMap<String, BTreeMap<String, (String, BTreeSet<String>)>>,
    ) -> Vec<String> {
        let mut gaps = Vec::new();
        let mut answered = BTreeSet::new();
        for (service, families) in services {
            // Grafana writes the span's service.name as job="<service>".
            let filled = query.replace("$__tags", &format!(r#"job="{service}""#));
            let uses = selector_uses(&filled).unwrap_or_else(|e| panic!("{e:#}"));
            let mut found = false;
            for used in &uses {
                if !used.labels.contains("job") {
                    gaps.push(format!(
                        "{} is not filtered by the span's service",
                        used.metric
                    ));
                }
                let Some(labels) = series_labels(families, &used.metric) else {
                    continue;
                };
                let missing: Vec<&String> = used.labels.difference(&labels).collect();
                if missing.is_empty() {
                    found = true;
                    answered.insert(used.metric.clone());
                } else {
                    gaps.push(format!(
                        "{service}'s {} has no label {missing:?}",
                        used.metric
                    ));
                }
            }
            if !found {
                gaps.push(format!("no data for {service}'s spans"));
            }
        }
        let all = selector_uses(query).unwrap_or_else(|e| panic!("{e:#}"));
        for used in all.iter().filter(|u| !answered.contains(&u.metric)) {
            gaps.push(format!("{} answers for no service", used.metric));
        }
        gaps.sort();
        gaps.dedup();
        gaps
    }

    #[test]
    fn every_link_from_a_span_to_metrics_finds_data_for_every_service() {
        let services: BTreeMap<_, _> = service_names()
            .into_iter()
            .map(|service| {
                let families = service_families(&service);
                (service, families)
            })
            .collect();
        let queries = traces_to_metrics_queries(&root()).unwrap();
        assert!(queries.len() >= 3, "{queries:?}");
        for query in &queries {
            assert_eq!(link_gaps(query, &services), Vec::<String>::new(), "{query}");
        }

        // The check sees what was wrong before: HTTP only on the gateway,
        // gRPC served by no task, a label no family has.
        let gaps = |query: &str| link_gaps(query, &services);
        assert_eq!(
            gaps("sum by (route, status) (rate(http_requests_total{$__tags}[1m]))"),
            ["no data for logic's spans", "no data for task's spans"]
        );
        assert_eq!(
            gaps("sum by (method) (rate(grpc_server_handled_total{$__tags}[1m]))"),
            ["no data for task's spans"]
        );
        assert_eq!(
            gaps(
                "sum by (path) (rate(http_requests_total{$__tags}[1m])) or rate(mq_consumed_total{$__tags}[1m])"
            ),
            [
                "gateway's http_requests_total has no label [\"path\"]",
                "http_requests_total answers for no service",
                "no data for gateway's spans",
                "no data for logic's spans",
            ]
        );
        assert_eq!(
            gaps("rate(process_cpu_seconds_total[1m])"),
            ["process_cpu_seconds_total is not filtered by the span's service"]
        );
    }

    #[test]
    fn selectors_are_read_with_their_labels() {
        let uses = selector_uses(
            r#"histogram_quantile(0.95, sum by (le, route) (rate(http_request_duration_seconds_bucket{job="gateway"}[1m])) or sum by (le) (rate({__name__="mq_handle_duration_seconds_bucket", $__tags}[1m])))"#,
        )
        .unwrap();
        let labels = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            uses,
            [
                SelectorUse {
                    metric: "http_request_duration_seconds_bucket".into(),
                    labels: labels(&["job", "le", "route"]),
                },
                SelectorUse {
                    metric: "mq_handle_duration_seconds_bucket".into(),
                    labels: labels(&["le", "tag"]),
                },
            ]
        );
    }

    #[test]
    fn dashboards_are_valid_with_stable_uids() {
        let root = root();
        let dashboards = dashboards(&root).unwrap();
        let provisioned: BTreeSet<String> = datasources(&root)
            .unwrap()
            .iter()
            .map(|d| uid(d).unwrap())
            .collect();
        let reference = Regex::new(r#""uid":"([^"]+)""#).unwrap();
        let mut uids = BTreeSet::new();
        for (path, dashboard) in &dashboards {
            let file = path.file_name().unwrap().to_string_lossy();
            let dashboard_uid = dashboard["uid"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: no uid"));
            assert!(
                uids.insert(dashboard_uid.to_owned()),
                "{file}: uid {dashboard_uid} twice"
            );
            assert_eq!(
                format!("{dashboard_uid}.json"),
                file,
                "a dashboard's file is named by its uid"
            );
            assert!(
                dashboard["title"].as_str().is_some_and(|t| !t.is_empty()),
                "{file}: no title"
            );
            assert!(!dashboard_exprs(dashboard).is_empty(), "{file}: no queries");
            // Every data source a panel names is provisioned.
            let text = dashboard.to_string();
            for captures in reference.captures_iter(&text) {
                let referenced = &captures[1];
                assert!(
                    referenced == dashboard_uid
                        || referenced == "-- Grafana --"
                        || provisioned.contains(referenced),
                    "{file}: data source {referenced} is not provisioned"
                );
            }
        }
        for expected in [
            "orders-red",
            "orders-messaging",
            "orders-runtime",
            "orders-slo",
        ] {
            assert!(uids.contains(expected), "no dashboard {expected}");
        }
        // The per-service views choose services by `job`.
        for (path, dashboard) in &dashboards {
            let uid = dashboard["uid"].as_str().unwrap();
            if !["orders-red", "orders-runtime"].contains(&uid) {
                continue;
            }
            let variables = variables(dashboard);
            let service = variables
                .iter()
                .find(|v| v["name"] == "service")
                .unwrap_or_else(|| panic!("{}: no service variable", path.display()));
            assert!(
                service
                    .to_string()
                    .contains("label_values(up{job=~\\\"gateway|logic|task\\\"}, job)"),
                "{uid}: {service}"
            );
            assert!(
                dashboard_exprs(dashboard)
                    .iter()
                    .any(|e| e.contains("$service")),
                "{uid}: no query uses $service"
            );
        }
        // Grafana opens on the RED view.
        let compose = compose();
        let grafana = compose.environment("grafana");
        assert_eq!(
            grafana["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"],
            "/etc/grafana/dashboards/orders-red.json"
        );
    }

    #[test]
    fn anchors_are_made_as_mdbook_makes_them() {
        assert_eq!(anchor_of("TargetDown"), "targetdown");
        assert_eq!(
            anchor_of("The full stack: alerts & runbooks"),
            "the-full-stack-alerts--runbooks"
        );
        let page = "# Title\n```sh\n# not a heading\n```\n### `QueueDelayGrowing`\n";
        assert_eq!(
            heading_anchors(page),
            BTreeSet::from(["title".to_owned(), "queuedelaygrowing".to_owned()])
        );
    }
}
