//! Configuration: one [`Config`] for every subcommand, from flags or the
//! environment (a flag wins over its variable, the variable over the
//! default). Every subcommand reads the whole configuration, as every
//! subcommand reads the whole topology: one set of variables describes the
//! system to whichever process reads it, the `all` launcher, one service in
//! a container, or a test.
//!
//! The OpenTelemetry SDK reads its own `OTEL_*` variables; they are not
//! flags here, so that nothing can disagree with the SDK about them, and
//! `--help` lists them ([`ENVIRONMENT`]).

use std::time::Duration;

use clap::{Parser, Subcommand};
use orders::Topology;
use orders::topology::Service;

use crate::faults::{self, Fault};
use crate::telemetry::{DEFAULT_FILTER, TraceRelation};

/// What `--help` says after the flags: the variables read by the
/// OpenTelemetry SDK rather than by a flag, and how to stop a service.
// ANCHOR: environment
pub const ENVIRONMENT: &str = "\
Environment:
  Every flag can be set by the variable in its [env: ...]; a flag wins.
  RUST_LOG sets --log-filter, as in every Rust program that uses tracing.

  The OpenTelemetry SDK reads its standard variables itself:
  OTEL_EXPORTER_OTLP_ENDPOINT         where spans are sent, OTLP/gRPC
                                      [default: http://localhost:4317]
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT  the same, for traces only; wins over the above
  OTEL_EXPORTER_OTLP_TIMEOUT          ms one export may take [default: 10000]
  OTEL_EXPORTER_OTLP_HEADERS          headers of every export, k1=v1,k2=v2
  OTEL_SERVICE_NAME                   the service's name: the spans' service.name
                                      and the log field `service` [default:
                                      service.name in OTEL_RESOURCE_ATTRIBUTES,
                                      else the subcommand]; scrape it under the
                                      same Prometheus job
  OTEL_RESOURCE_ATTRIBUTES            more resource attributes, k1=v1,k2=v2; they
                                      win over service.version and
                                      service.instance.id [default: a new id
                                      per process]
  OTEL_SDK_DISABLED                   true: no span is sent [default: false]
  OTEL_TRACES_EXPORTER                otlp or none (no span is sent) [default: otlp]
  OTEL_TRACES_SAMPLER                 [default: parentbased_always_on]; also
                                      parentbased_traceidratio, always_off, ...
  OTEL_TRACES_SAMPLER_ARG             the sampler's argument, as the ratio 0.1
  OTEL_BSP_SCHEDULE_DELAY             ms between two batches of spans [default: 5000]
  OTEL_BSP_MAX_QUEUE_SIZE             spans waiting at most; more are dropped
                                      [default: 2048]
  OTEL_BSP_MAX_EXPORT_BATCH_SIZE      spans per batch at most [default: 512]
  OTEL_BSP_EXPORT_TIMEOUT             ms one batch may take [default: 30000]

Health, on each service's admin port:
  /healthz  200 while the process runs
  /readyz   200 when the service can do its job, else 503 and the reason;
            503 from the moment a shutdown begins

Shutdown: SIGTERM or Ctrl-C stops accepting (after --shutdown-delay-ms),
drains in-flight HTTP and gRPC requests and NATS messages for at most
--shutdown-timeout-ms, sends the spans still queued and exits 0. A second
signal stops the draining at once.";
// ANCHOR_END: environment

#[derive(Parser, Debug)]
#[command(
    name = "final",
    version,
    about = "The order system: HTTP gateway, gRPC logic, NATS task, with metrics, logs, traces and profiles",
    after_help = ENVIRONMENT,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand, the flags of `all`.
    #[command(flatten)]
    all: Config,
}

impl Cli {
    /// The subcommand to run; `all` when none is given.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::All(self.all))
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// HTTP API for clients, gRPC callback server for task.
    #[command(after_help = ENVIRONMENT)]
    Gateway(Config),
    /// gRPC order service: stores orders in SQLite, publishes them to NATS.
    #[command(after_help = ENVIRONMENT)]
    Logic(Config),
    /// Consumes orders from NATS, handles them, reports back to the gateway.
    #[command(after_help = ENVIRONMENT)]
    Task(Config),
    /// All three services as child processes, plus a nats-server unless
    /// NATS_URL names one (default).
    #[command(after_help = ENVIRONMENT)]
    All(Config),
    /// Puts the orders task gave up on (the dead letters) back on
    /// orders.created, each once.
    #[command(after_help = ENVIRONMENT)]
    ReprocessDeadLetters(Config),
}

impl Command {
    /// The service this command runs; `None` for `all` and the one-off
    /// commands.
    pub fn service(&self) -> Option<Service> {
        match self {
            Command::Gateway(_) => Some(Service::Gateway),
            Command::Logic(_) => Some(Service::Logic),
            Command::Task(_) => Some(Service::Task),
            Command::All(_) | Command::ReprocessDeadLetters(_) => None,
        }
    }

    pub fn config(&self) -> &Config {
        match self {
            Command::Gateway(config)
            | Command::Logic(config)
            | Command::Task(config)
            | Command::All(config)
            | Command::ReprocessDeadLetters(config) => config,
        }
    }
}

/// Everything a service can be told.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    #[command(flatten, next_help_heading = "Topology")]
    pub topology: Topology,

    /// Bearer token clients must send to the gateway's API.
    #[arg(
        long,
        env = "API_TOKEN",
        default_value = orders::DEFAULT_API_TOKEN,
        hide_env_values = true,
        help_heading = "Gateway"
    )]
    pub api_token: String,
    /// How long the gateway waits for logic before answering 504.
    #[arg(
        long,
        env = "LOGIC_TIMEOUT_MS",
        default_value_t = 2000,
        help_heading = "Gateway"
    )]
    pub logic_timeout_ms: u64,

    /// How long logic waits for JetStream's ack of a publish; an order whose
    /// publish fails is stored all the same and republished by the outbox.
    #[arg(
        long,
        env = "PUBLISH_TIMEOUT_MS",
        default_value_t = 1000,
        help_heading = "Logic"
    )]
    pub publish_timeout_ms: u64,
    /// How often logic republishes orders whose publish failed (the outbox).
    #[arg(
        long,
        env = "OUTBOX_INTERVAL_MS",
        default_value_t = 1000,
        help_heading = "Logic"
    )]
    pub outbox_interval_ms: u64,

    /// How many messages task handles at the same time.
    #[arg(
        long,
        alias = "concurrency",
        env = "TASK_CONCURRENCY",
        default_value_t = 16,
        value_parser = clap::value_parser!(u16).range(1..),
        help_heading = "Task"
    )]
    pub task_concurrency: u16,
    /// How long task waits for the gateway's answer to a callback before the
    /// message is redelivered.
    #[arg(
        long,
        env = "CALLBACK_TIMEOUT_MS",
        default_value_t = 2000,
        help_heading = "Task"
    )]
    pub callback_timeout_ms: u64,
    /// How the span of each message relates to the trace that published it:
    /// `parent`, one trace per order; `link`, a new trace per message.
    #[arg(
        long,
        env = "TRACE_RELATION",
        value_enum,
        default_value_t,
        help_heading = "Task"
    )]
    pub trace_relation: TraceRelation,

    // ANCHOR: log_filter
    /// Which log lines are written: tracing's `EnvFilter` directives, such
    /// as `warn` or `info,orders_final=debug`. Spans exist whatever it says.
    #[arg(
        long,
        env = "RUST_LOG",
        default_value = DEFAULT_FILTER,
        help_heading = "Telemetry"
    )]
    pub log_filter: String,
    // ANCHOR_END: log_filter

    // ANCHOR: shutdown_flags
    /// After SIGTERM, how long in-flight requests and messages may take
    /// before the service exits anyway.
    #[arg(
        long,
        env = "SHUTDOWN_TIMEOUT_MS",
        default_value_t = 10_000,
        help_heading = "Shutdown"
    )]
    pub shutdown_timeout_ms: u64,
    /// After SIGTERM, how long the service keeps serving with /readyz at
    /// 503 before it stops accepting, so that a load balancer stops sending
    /// first (Kubernetes: a few seconds).
    #[arg(
        long,
        env = "SHUTDOWN_DELAY_MS",
        default_value_t = 0,
        help_heading = "Shutdown"
    )]
    pub shutdown_delay_ms: u64,
    // ANCHOR_END: shutdown_flags
    /// Faults to switch on from the start, for the book's incidents:
    /// `name=value,...`, such as `slow_writes=200,error_burst=0.3`; each
    /// service takes its own. Off by default. At run time:
    /// `PUT /admin/faults/{name}` on the service's admin port. Faults:
    /// slow_writes, error_burst, lost_context (logic), cpu_hog (task),
    /// memory_leak, failing_callbacks (gateway).
    #[arg(
        long,
        env = "FAULTS",
        default_value = "",
        value_parser = FaultSettings::parse,
        help_heading = "Incidents"
    )]
    pub faults: FaultSettings,
}

/// The faults `--faults` switches on, each with its setting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultSettings(pub Vec<(Fault, f64)>);

impl FaultSettings {
    fn parse(list: &str) -> Result<Self, faults::FaultError> {
        faults::parse_list(list).map(FaultSettings)
    }
}

impl std::fmt::Display for FaultSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries: Vec<String> = self
            .0
            .iter()
            .map(|(fault, value)| format!("{}={value}", fault.name()))
            .collect();
        f.write_str(&entries.join(","))
    }
}

impl Config {
    pub fn logic_timeout(&self) -> Duration {
        Duration::from_millis(self.logic_timeout_ms)
    }

    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }

    pub fn outbox_interval(&self) -> Duration {
        Duration::from_millis(self.outbox_interval_ms)
    }

    pub fn callback_timeout(&self) -> Duration {
        Duration::from_millis(self.callback_timeout_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    pub fn shutdown_delay(&self) -> Duration {
        Duration::from_millis(self.shutdown_delay_ms)
    }

    /// The settings other than the topology, as the variables that set
    /// them: what `all` hands its services, which it starts with the
    /// topology's flags only.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        let relation = match self.trace_relation {
            TraceRelation::Parent => "parent",
            TraceRelation::Link => "link",
        };
        vec![
            ("API_TOKEN", self.api_token.clone()),
            ("LOGIC_TIMEOUT_MS", self.logic_timeout_ms.to_string()),
            ("PUBLISH_TIMEOUT_MS", self.publish_timeout_ms.to_string()),
            ("OUTBOX_INTERVAL_MS", self.outbox_interval_ms.to_string()),
            ("TASK_CONCURRENCY", self.task_concurrency.to_string()),
            ("CALLBACK_TIMEOUT_MS", self.callback_timeout_ms.to_string()),
            ("TRACE_RELATION", relation.to_owned()),
            ("RUST_LOG", self.log_filter.clone()),
            ("SHUTDOWN_TIMEOUT_MS", self.shutdown_timeout_ms.to_string()),
            ("SHUTDOWN_DELAY_MS", self.shutdown_delay_ms.to_string()),
            ("FAULTS", self.faults.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_is_consistent() {
        <Cli as CommandFactory>::command().debug_assert();
    }

    #[test]
    fn no_subcommand_is_all_with_its_flags() {
        let cli = Cli::try_parse_from(["final", "--task-concurrency", "3"]).unwrap();
        let command = cli.into_command();
        assert!(command.service().is_none());
        assert_eq!(command.config().task_concurrency, 3);
    }

    #[test]
    fn every_subcommand_takes_the_whole_configuration() {
        for service in Service::ALL {
            let cli = Cli::try_parse_from([
                "final",
                service.name(),
                "--gateway-http=127.0.0.1:1",
                "--concurrency=2",
                "--trace-relation=link",
                "--logic-timeout-ms=300",
            ])
            .unwrap();
            let command = cli.into_command();
            assert_eq!(command.service(), Some(service));
            let config = command.config();
            assert_eq!(config.topology.gateway_http.port(), 1);
            assert_eq!(
                config.task_concurrency, 2,
                "`--concurrency`, as in the chapters"
            );
            assert_eq!(config.trace_relation, TraceRelation::Link);
            assert_eq!(config.logic_timeout(), Duration::from_millis(300));
        }
    }

    #[test]
    fn faults_are_off_by_default_and_a_bad_list_is_refused() {
        let cli = Cli::try_parse_from(["final", "logic"]).unwrap();
        assert_eq!(cli.into_command().config().faults, FaultSettings::default());
        for bad in ["nope=1", "error_burst=2", "slow_writes"] {
            let refused = Cli::try_parse_from(["final", "logic", "--faults", bad]);
            assert!(refused.is_err(), "{bad}");
        }
    }

    #[test]
    fn a_concurrency_of_zero_is_refused() {
        assert!(Cli::try_parse_from(["final", "task", "--task-concurrency=0"]).is_err());
    }

    /// What `all` hands its services parses back to the same settings.
    #[test]
    fn the_environment_of_all_round_trips() {
        let cli = Cli::try_parse_from([
            "final",
            "--api-token=secret",
            "--trace-relation=link",
            "--task-concurrency=5",
            "--shutdown-delay-ms=7",
            "--faults=slow_writes=200, cpu_hog=0.5",
        ])
        .unwrap();
        let config = cli.into_command().config().clone();
        let mut args = vec!["final".to_owned(), "task".to_owned()];
        for (name, value) in config.environment() {
            let flag = match name {
                "RUST_LOG" => "log-filter".to_owned(),
                "TASK_CONCURRENCY" => "task-concurrency".to_owned(),
                _ => name.to_ascii_lowercase().replace('_', "-"),
            };
            args.push(format!("--{flag}={value}"));
        }
        let parsed = Cli::try_parse_from(args).unwrap().into_command();
        let parsed = parsed.config();
        assert_eq!(parsed.api_token, "secret");
        assert_eq!(parsed.trace_relation, TraceRelation::Link);
        assert_eq!(parsed.task_concurrency, 5);
        assert_eq!(parsed.shutdown_delay_ms, 7);
        assert_eq!(
            parsed.faults.0,
            vec![(Fault::SlowWrites, 200.0), (Fault::CpuHog, 0.5)]
        );
        assert_eq!(parsed.log_filter, config.log_filter);
    }
}
