//! A chapter's three services, started from its real binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::api::Api;
use crate::{DEADLINE, NatsServer, OtlpReceiver, ReceivedSpan, Service, Topology};

/// The bearer token test systems run with: distinctive, so a test can
/// prove it never appears in any output.
pub const TEST_API_TOKEN: &str = "testkit-secret-7f3a9c";

/// The environment variable naming the binary under test. Unset, a test
/// runs the chapter it belongs to; set, the same tests check any build, such
/// as a learner's own copy of the chapter.
pub const CHAPTER_BIN_ENV: &str = "CHAPTER_BIN";

/// How to start a [`System`].
#[derive(Debug, Clone)]
pub struct SystemBuilder {
    binary: PathBuf,
    services: Vec<Service>,
    args: BTreeMap<Service, Vec<String>>,
    env: Vec<(String, String)>,
    logic_url: Option<String>,
}

impl SystemBuilder {
    /// `default_binary` is the chapter's own binary, usually
    /// `env!("CARGO_BIN_EXE_<name>")`; `$CHAPTER_BIN` replaces it.
    pub fn new(default_binary: impl AsRef<Path>) -> Self {
        let binary = std::env::var_os(CHAPTER_BIN_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| default_binary.as_ref().to_owned());
        Self {
            binary,
            services: Service::ALL.to_vec(),
            args: BTreeMap::new(),
            env: Vec::new(),
            logic_url: None,
        }
    }

    /// Starts only these services (the others can be started later).
    pub fn only(mut self, services: &[Service]) -> Self {
        self.services = services.to_vec();
        self
    }

    /// An extra command-line argument for one service.
    pub fn arg(mut self, service: Service, arg: impl Into<String>) -> Self {
        self.args.entry(service).or_default().push(arg.into());
        self
    }

    /// An environment variable for every service.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Points the gateway at another logic, such as a fake in the test.
    pub fn logic_url(mut self, url: impl Into<String>) -> Self {
        self.logic_url = Some(url.into());
        self
    }

    pub async fn start(self) -> System {
        self.try_start()
            .await
            .expect("starting the system under test")
    }

    async fn try_start(self) -> anyhow::Result<System> {
        let dir = tempfile::Builder::new().prefix("testkit-").tempdir()?;
        let nats = NatsServer::start(&dir.path().join("nats")).await?;
        let otlp = OtlpReceiver::start().await?;
        let mut topology = Topology::on_free_ports()?;
        topology.nats_url = Some(nats.url());
        topology.database = Some(dir.path().join("orders.db"));
        topology.logic_url = self.logic_url.clone();
        let api = Api::new(
            format!("http://{}", topology.gateway_http),
            TEST_API_TOKEN.to_owned(),
        );
        let mut system = System {
            binary: self.binary,
            topology,
            dir,
            nats,
            otlp,
            args: self.args,
            env: self.env,
            running: BTreeMap::new(),
            output: BTreeMap::new(),
            api,
        };
        for &service in &self.services {
            system.spawn(service)?;
        }
        for &service in &self.services {
            system.wait_ready(service).await;
        }
        Ok(system)
    }
}

/// Lines a service printed, kept across restarts.
#[derive(Debug, Clone, Default)]
struct Output {
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// A running system: a nats-server and the chapter's services, each a
/// child process whose stdout and stderr are captured separately. Dropping
/// it kills every process it started.
#[derive(Debug)]
pub struct System {
    binary: PathBuf,
    pub topology: Topology,
    dir: tempfile::TempDir,
    nats: NatsServer,
    otlp: OtlpReceiver,
    args: BTreeMap<Service, Vec<String>>,
    env: Vec<(String, String)>,
    running: BTreeMap<Service, Child>,
    output: BTreeMap<Service, Output>,
    /// The gateway's HTTP API, with the system's token.
    pub api: Api,
}

impl System {
    /// All three services of the chapter whose binary is `default_binary`.
    pub async fn start(default_binary: impl AsRef<Path>) -> System {
        SystemBuilder::new(default_binary).start().await
    }

    pub fn builder(default_binary: impl AsRef<Path>) -> SystemBuilder {
        SystemBuilder::new(default_binary)
    }

    /// Starts one service (again); it keeps its ports and its output.
    pub fn spawn(&mut self, service: Service) -> anyhow::Result<()> {
        let output = self.output.entry(service).or_default().clone();
        let child = self.launch(service, &self.topology, &output)?;
        self.running.insert(service, child);
        Ok(())
    }

    /// Starts `service` of this system's binary listening as `topology`
    /// says, with the system's token, OTLP endpoint, arguments and
    /// variables, its stdout and stderr copied into `output`.
    fn launch(
        &self,
        service: Service,
        topology: &Topology,
        output: &Output,
    ) -> anyhow::Result<Child> {
        let mut command = Command::new(&self.binary);
        command
            .arg(service.name())
            .args(topology.to_args())
            .args(self.args.get(&service).into_iter().flatten())
            .env("API_TOKEN", TEST_API_TOKEN)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", self.otlp.endpoint())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        orders::launcher::die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {} {service}", self.binary.display()))?;
        capture(
            child.stdout.take().expect("piped stdout"),
            output.stdout.clone(),
        );
        capture(
            child.stderr.take().expect("piped stderr"),
            output.stderr.clone(),
        );
        Ok(child)
    }

    /// Waits until the service's `/readyz` answers 200.
    pub async fn wait_ready(&mut self, service: Service) {
        let admin = self.topology.admin(service);
        let stderr = self.output.entry(service).or_default().stderr.clone();
        until_ready(service, admin, self.running.get_mut(&service), &stderr).await;
    }

    /// Kills a service with SIGKILL, as a crash would, and waits for it.
    pub async fn kill(&mut self, service: Service) {
        if let Some(mut child) = self.running.remove(&service) {
            child.kill().await.expect("killing a service");
        }
    }

    /// Stops a service with SIGTERM and waits for it to exit.
    pub async fn stop(&mut self, service: Service) {
        if let Some(mut child) = self.running.remove(&service) {
            orders::launcher::terminate(&mut child, Duration::from_secs(10)).await;
        }
    }

    /// Starts a stopped service again and waits until it is ready.
    pub async fn restart(&mut self, service: Service) {
        self.spawn(service).expect("restarting a service");
        self.wait_ready(service).await;
    }

    /// Sends SIGTERM to a service and returns its exit status.
    pub async fn terminate(&mut self, service: Service) -> std::process::ExitStatus {
        let mut child = self.running.remove(&service).expect("a running service");
        let pid = child.id().expect("a pid") as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("sending SIGTERM");
        tokio::time::timeout(DEADLINE, child.wait())
            .await
            .expect("the service exits after SIGTERM")
            .expect("waiting for the service")
    }

    /// This system's topology with fresh ports for the listeners of
    /// `service` (the gateway's HTTP, gRPC and admin ports, logic's gRPC and
    /// admin ports, task's admin port): where another instance of it can run
    /// beside the first, sharing everything else.
    pub fn topology_for_another(&self, service: Service) -> Topology {
        let free = || {
            let port = orders::ports::reserve().expect("reserving a loopback port");
            std::net::SocketAddr::from(([127, 0, 0, 1], port))
        };
        let mut topology = self.topology.clone();
        match service {
            Service::Gateway => {
                topology.gateway_http = free();
                topology.gateway_grpc = free();
                topology.gateway_admin = free();
            }
            Service::Logic => {
                topology.logic_grpc = free();
                topology.logic_admin = free();
            }
            Service::Task => topology.task_admin = free(),
        }
        topology
    }

    /// Starts another instance of `service` on `topology` (usually from
    /// [`topology_for_another`](Self::topology_for_another)), with the
    /// system's token, OTLP endpoint, arguments and variables, and waits
    /// until it is ready. Dropping the [`Replica`] kills it.
    pub async fn start_another(&self, service: Service, topology: Topology) -> Replica {
        let output = Output::default();
        let mut child = self
            .launch(service, &topology, &output)
            .unwrap_or_else(|e| panic!("starting another {service}: {e:#}"));
        until_ready(
            service,
            topology.admin(service),
            Some(&mut child),
            &output.stderr,
        )
        .await;
        let api = Api::new(
            format!("http://{}", topology.gateway_http),
            TEST_API_TOKEN.to_owned(),
        );
        Replica {
            topology,
            api,
            child,
            output,
        }
    }

    /// Every span the system exported to the test's OTLP receiver.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.otlp.spans()
    }

    /// Waits until the spans received satisfy `done`, and returns them all.
    pub async fn wait_for_spans(
        &self,
        what: &str,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        crate::wait_for(what, DEADLINE, || {
            let spans = self.otlp.spans();
            let ready = done(&spans);
            async move { ready.then_some(spans) }
        })
        .await
    }

    pub fn nats(&mut self) -> &mut NatsServer {
        &mut self.nats
    }

    /// A NATS client connected to the system's server.
    pub async fn nats_client(&self) -> async_nats::Client {
        async_nats::connect(self.nats.url())
            .await
            .expect("connecting to the test nats-server")
    }

    /// Runs one of the binary's one-off commands (such as
    /// `reprocess-dead-letters`) against this system, with its topology, to
    /// its end within [`DEADLINE`]; returns its stdout. Panics when it
    /// fails, with its stderr.
    pub async fn run_command(&self, command: &str) -> String {
        let mut run = Command::new(&self.binary);
        run.arg(command)
            .args(self.topology.to_args())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(DEADLINE, run.output())
            .await
            .unwrap_or_else(|_| panic!("`{command}` did not end within {DEADLINE:?}"))
            .unwrap_or_else(|e| panic!("running `{command}`: {e}"));
        assert!(
            output.status.success(),
            "`{command}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The SQLite file of logic.
    pub fn database(&self) -> PathBuf {
        self.topology.database()
    }

    /// How many orders logic has stored.
    pub async fn stored_orders(&self) -> u64 {
        let store = orders::store::Store::open(&self.database())
            .await
            .expect("opening the orders database");
        store.count().await.expect("counting orders")
    }

    /// A temporary directory owned by this system, removed with it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every line the service wrote to stdout so far.
    pub fn stdout(&self, service: Service) -> Vec<String> {
        self.lines(service, |o| &o.stdout)
    }

    /// Every line the service wrote to stderr so far.
    pub fn stderr(&self, service: Service) -> Vec<String> {
        self.lines(service, |o| &o.stderr)
    }

    fn lines(
        &self,
        service: Service,
        pick: impl Fn(&Output) -> &Arc<Mutex<Vec<String>>>,
    ) -> Vec<String> {
        self.output
            .get(&service)
            .map(|o| pick(o).lock().unwrap().clone())
            .unwrap_or_default()
    }
}

/// Another instance of a service of a [`System`], on ports of its own.
/// Dropping it kills the process.
#[derive(Debug)]
pub struct Replica {
    pub topology: Topology,
    /// Its HTTP API, when it is a gateway.
    pub api: Api,
    child: Child,
    output: Output,
}

impl Replica {
    /// Stops it with SIGTERM and waits for it to exit.
    pub async fn stop(mut self) {
        orders::launcher::terminate(&mut self.child, Duration::from_secs(10)).await;
    }

    /// Every line it wrote to stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.output.stdout.lock().unwrap().clone()
    }
}

/// Waits until `service`, its admin port at `admin`, answers `/readyz`
/// with 200. Panics, with what it wrote to `stderr`, when `child` exits
/// first or [`DEADLINE`] passes.
async fn until_ready(
    service: Service,
    admin: std::net::SocketAddr,
    mut child: Option<&mut Child>,
    stderr: &Mutex<Vec<String>>,
) {
    let client = reqwest::Client::new();
    let give_up = tokio::time::Instant::now() + DEADLINE;
    let said = || stderr.lock().unwrap().join("\n");
    loop {
        if orders::admin::is_ready(&client, admin).await {
            return;
        }
        if let Some(child) = child.as_deref_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!(
                "{service} exited with {status} while starting; stderr:\n{}",
                said()
            );
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "{service} not ready within {DEADLINE:?}; stderr:\n{}",
            said()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Copies a child's output into `lines`, one entry per line. Bytes that are
/// not UTF-8 are kept visible as U+FFFD rather than dropping the line.
fn capture(stream: impl AsyncRead + Unpin + Send + 'static, lines: Arc<Mutex<Vec<String>>>) {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    lines
                        .lock()
                        .unwrap()
                        .push(text.trim_end_matches(['\n', '\r']).to_owned());
                }
            }
        }
    });
}
