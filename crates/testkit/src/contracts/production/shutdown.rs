//! Graceful shutdown under a steady load of orders: SIGTERM to one service
//! while orders keep coming. The service stops accepting, finishes what is
//! in flight, sends its last spans and exits 0; nothing accepted is lost.
//!
//! To be sure that work is in flight when the signal comes, a link with
//! 100 ms of latency sits in front of the service the one under test calls
//! (logic for the gateway and for logic itself, the gateway's callback for
//! task): each request or message then takes at least that long.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::contracts::traces::{CREATE_ORDER, sent, system, trace_response_ids};
use crate::logs::{self, str_field};
use crate::otlp::ReceivedSpan;
use crate::{Api, DEADLINE, Service, Subject, System, order_body, wait_for};

/// The latency of the link in front of the service called.
const LATENCY: Duration = Duration::from_millis(100);
/// Orders per second.
const RATE: u32 = 50;
/// A request sent this long before the signal was surely read by the
/// server before it stopped accepting; it must be answered.
const MARGIN: Duration = Duration::from_millis(50);

/// A TCP proxy that delays every byte from the client to the server by a
/// fixed latency, without limiting the throughput: a slow network link.
/// The answers come back at once.
struct LatencyProxy {
    addr: SocketAddr,
    upstream: Arc<OnceLock<SocketAddr>>,
    task: JoinHandle<()>,
}

impl LatencyProxy {
    /// A proxy whose server is named later, by [`LatencyProxy::connect_to`]
    /// (a system's ports are chosen when it starts).
    async fn start(latency: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = Arc::new(OnceLock::<SocketAddr>::new());
        let target = upstream.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Some(&server) = target.get() else {
                    continue; // dropped: nothing is called before it is set
                };
                tokio::spawn(relay(client, server, latency));
            }
        });
        Self {
            addr,
            upstream,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn connect_to(&self, server: SocketAddr) {
        self.upstream.set(server).unwrap();
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection through the proxy.
async fn relay(client: TcpStream, server: SocketAddr, latency: Duration) {
    let Ok(server) = TcpStream::connect(server).await else {
        return; // the client sees its connection closed
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let (delayed, mut due) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = from_client.read(&mut buffer).await {
            if delayed
                .send((Instant::now() + latency, buffer[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    };
    let write = async move {
        while let Some((at, bytes)) = due.recv().await {
            tokio::time::sleep_until(at.into()).await;
            if to_server.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to_server.shutdown().await;
    };
    let back = async move {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    tokio::join!(read, write, back);
}

/// One `POST /orders` of the load.
#[derive(Debug)]
struct Shot {
    sent: Instant,
    answered: Instant,
    /// The answer, or why there was none (a refused connection, say).
    outcome: Result<Answer, String>,
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    /// The trace the `traceresponse` header names.
    trace: Option<String>,
    order_id: Option<String>,
}

impl Shot {
    fn status(&self) -> Option<StatusCode> {
        self.outcome.as_ref().ok().map(|answer| answer.status)
    }

    fn created(&self) -> Option<&Answer> {
        self.outcome
            .as_ref()
            .ok()
            .filter(|answer| answer.status == StatusCode::CREATED)
    }
}

/// A steady load: [`RATE`] orders a second, each sent on time whether or
/// not the ones before were answered, as independent clients would.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    task: JoinHandle<Vec<Shot>>,
}

impl Load {
    fn start(api: Api) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let (stopped, counted, answers) = (stop.clone(), sent.clone(), answered.clone());
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1) / RATE);
            let mut shots = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                ticks.tick().await;
                let n = counted.fetch_add(1, Ordering::Relaxed);
                let (api, answers) = (api.clone(), answers.clone());
                shots.push(tokio::spawn(async move {
                    let shot = shoot(&api, n).await;
                    if shot.outcome.is_ok() {
                        answers.fetch_add(1, Ordering::Relaxed);
                    }
                    shot
                }));
            }
            let mut done = Vec::new();
            for shot in shots {
                done.push(shot.await.unwrap());
            }
            done
        });
        Self {
            stop,
            sent,
            answered,
            task,
        }
    }

    /// Waits until `more` orders beyond those already answered are answered.
    async fn wait_for_answers(&self, more: usize) {
        let target = self.answered.load(Ordering::Relaxed) + more;
        wait_for(&format!("{more} more answers"), DEADLINE, || async {
            (self.answered.load(Ordering::Relaxed) >= target).then_some(())
        })
        .await;
    }

    /// Waits until `more` orders beyond those already sent are sent.
    async fn wait_for_sent(&self, more: usize) {
        let target = self.sent.load(Ordering::Relaxed) + more;
        wait_for(&format!("{more} more orders sent"), DEADLINE, || async {
            (self.sent.load(Ordering::Relaxed) >= target).then_some(())
        })
        .await;
    }

    /// Stops sending, and returns every order sent, once each has ended.
    async fn stop(self) -> Vec<Shot> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

async fn shoot(api: &Api, n: usize) -> Shot {
    let sent = Instant::now();
    let request =
        api.request(Method::POST, "/orders")
            .json(&order_body(&format!("load-{n}"), "A001", 1));
    let outcome = match request.send().await {
        Ok(response) => {
            let status = response.status();
            let trace = trace_response_ids(&response).map(|(trace, _, _)| trace);
            match response.json::<Value>().await {
                Ok(body) => Ok(Answer {
                    status,
                    trace,
                    order_id: body["order_id"].as_str().map(str::to_owned),
                }),
                Err(e) => Err(format!("{status}, then reading the body: {e}")),
            }
        }
        Err(e) => Err(format!("{e:?}")),
    };
    Shot {
        sent,
        answered: Instant::now(),
        outcome,
    }
}

/// What happened to the orders, for the failure messages and the log.
fn summary(shots: &[Shot], signal: Instant) -> String {
    let count = |f: &dyn Fn(&Shot) -> bool| shots.iter().filter(|s| f(s)).count();
    format!(
        "{} orders sent: {} answered 201, {} answered otherwise, {} not answered \
         (a refused connection); {} were in flight at the signal, {} of them \
         answered 201 after it",
        shots.len(),
        count(&|s| s.created().is_some()),
        count(&|s| s.outcome.is_ok() && s.created().is_none()),
        count(&|s| s.outcome.is_err()),
        count(&|s| s.sent < signal && s.answered > signal),
        count(&|s| s.sent < signal && s.answered > signal && s.created().is_some()),
    )
}

/// Waits until the spans `wanted` (service and name) of every order
/// answered 201 have arrived; fails naming the traces that lack some.
async fn wait_for_the_spans_of_every_201(system: &System, shots: &[Shot], wanted: &[(&str, &str)]) {
    let traces = created_traces(shots);
    let done = |spans: &[ReceivedSpan], trace: &str| {
        wanted
            .iter()
            .all(|(service, name)| sent(spans, service, name, trace))
    };
    let give_up = Instant::now() + DEADLINE;
    loop {
        let spans = system.spans();
        let missing: Vec<&String> = traces.iter().filter(|trace| !done(&spans, trace)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < give_up,
            "{} of {} orders answered 201 lack one of {wanted:?}: {missing:?}",
            missing.len(),
            traces.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The traces of the orders answered 201.
fn created_traces(shots: &[Shot]) -> Vec<String> {
    shots
        .iter()
        .filter_map(Shot::created)
        .map(|answer| answer.trace.clone().expect("a traceresponse header"))
        .collect()
}

/// A system under load, logic behind the slow link, whose gateway or
/// logic got SIGTERM after 20 answers and exited 0, while the load went on
/// for 10 more orders: the link (to keep while the gateway calls logic),
/// the system, every order sent, when the signal came, and a summary.
async fn sigterm_under_load(
    subject: &Subject,
    service: Service,
) -> (LatencyProxy, System, Vec<Shot>, Instant, String) {
    let link = LatencyProxy::start(LATENCY).await;
    let mut system = system(subject).logic_url(link.url()).start().await;
    link.connect_to(system.topology.logic_grpc);
    let load = Load::start(system.api.clone());
    load.wait_for_answers(20).await;

    let signal = Instant::now();
    let status = system.terminate(service).await;
    load.wait_for_sent(10).await; // and on, against what is left
    let shots = load.stop().await;
    let summary = summary(&shots, signal);
    eprintln!(
        "{service}: {summary}; exited {status} after {:?}",
        signal.elapsed()
    );
    assert!(status.success(), "{status}; {summary}");
    (link, system, shots, signal, summary)
}

/// SIGTERM to the gateway under load: every request it had read is
/// answered, none with a 5xx; it exits 0; and the spans of every order it
/// answered 201 reach the collector, its own sent on the way out.
pub async fn sigterm_on_the_gateway_under_load_drains_without_a_5xx(subject: &Subject) {
    let (_link, system, shots, signal, summary) =
        sigterm_under_load(subject, Service::Gateway).await;
    let failed: Vec<&Shot> = shots
        .iter()
        .filter(|s| s.status().is_some_and(|status| status.is_server_error()))
        .collect();
    assert!(failed.is_empty(), "5xx answers: {failed:#?}; {summary}");
    // Read before the listener closed: answered, not cut off.
    let dropped: Vec<&Shot> = shots
        .iter()
        .filter(|s| s.sent + MARGIN < signal && s.created().is_none())
        .collect();
    assert!(dropped.is_empty(), "in flight, not answered: {dropped:#?}");
    assert!(
        shots
            .iter()
            .any(|s| s.sent < signal && s.answered > signal && s.created().is_some()),
        "no request was in flight at the signal: {summary}"
    );

    let wanted = [
        ("gateway", "POST /orders"),
        ("gateway", CREATE_ORDER),
        ("logic", CREATE_ORDER),
    ];
    wait_for_the_spans_of_every_201(&system, &shots, &wanted).await;
}

/// SIGTERM to logic under load: every call sent before the signal is
/// answered and its order created; logic exits 0; every order answered 201
/// has its spans, and once logic is back every one of them completes.
pub async fn sigterm_on_logic_under_load_loses_no_accepted_order(subject: &Subject) {
    let (_link, mut system, shots, signal, summary) =
        sigterm_under_load(subject, Service::Logic).await;
    // Sent before the signal: received by logic, or on their way through
    // the link and still let in before its final GOAWAY, and answered.
    let dropped: Vec<&Shot> = shots
        .iter()
        .filter(|s| s.sent < signal && s.created().is_none())
        .collect();
    assert!(dropped.is_empty(), "in flight, not answered: {dropped:#?}");
    assert!(
        shots.iter().any(|s| s.sent < signal && s.answered > signal),
        "no call was in flight at the signal: {summary}"
    );
    // Sent after it: logic is going or gone, and the gateway says so. With
    // no other logic to turn to, that is a 5xx: 503 when the connection is
    // refused; here the link accepts and then closes it, which the gateway
    // answers as chapter 05's does, 502 or 504. Never a 500, never unanswered.
    let unexpected: Vec<&Shot> = shots
        .iter()
        .filter(|s| {
            !s.status()
                .is_some_and(|status| [201, 502, 503, 504].contains(&status.as_u16()))
        })
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:#?}; {summary}");

    let wanted = [
        ("gateway", "POST /orders"),
        ("logic", CREATE_ORDER),
        ("logic", "INSERT orders"),
    ];
    wait_for_the_spans_of_every_201(&system, &shots, &wanted).await;

    system.restart(Service::Logic).await;
    for shot in &shots {
        if let Some(answer) = shot.created() {
            let order_id = answer.order_id.as_deref().expect("an order id");
            let order = system.api.wait_until_handled(order_id).await;
            assert_eq!(order["status"], "completed", "{order}");
        }
    }
}

/// SIGTERM to task while it handles messages: it pulls no new one,
/// finishes (and acks) those in hand, and exits 0; meanwhile the API goes
/// on accepting orders. Once task is back, every order accepted completes,
/// and none of those it finished while stopping is delivered again.
pub async fn sigterm_on_task_finishes_the_messages_in_hand_and_loses_none(subject: &Subject) {
    let link = LatencyProxy::start(LATENCY).await;
    let mut system = system(subject)
        .arg(
            Service::Task,
            format!("--gateway-callback-url={}", link.url()),
        )
        .start()
        .await;
    link.connect_to(system.topology.gateway_grpc);
    let load = Load::start(system.api.clone());
    let handled = |system: &System| {
        logs::parse_all(&system.stdout(Service::Task))
            .into_iter()
            .filter(|line| str_field(line, "message") == Some("order handled"))
            .count()
    };
    wait_for("task to handle 10 orders", DEADLINE, || async {
        (handled(&system) >= 10).then_some(())
    })
    .await;

    let signal = Instant::now();
    let status = system.terminate(Service::Task).await;
    load.wait_for_sent(10).await;
    let shots = load.stop().await;
    let summary = summary(&shots, signal);
    assert!(status.success(), "{status}; {summary}");
    let refused: Vec<&Shot> = shots.iter().filter(|s| s.created().is_none()).collect();
    assert!(
        refused.is_empty(),
        "task's shutdown is no concern of the API: {refused:#?}"
    );

    // The orders task finished between the signal and its exit.
    let lines = logs::parse_all(&system.stdout(Service::Task));
    let message = |line: &logs::LogLine| str_field(line, "message").map(str::to_owned);
    let begun = lines
        .iter()
        .position(|line| message(line).as_deref() == Some("shutting down"))
        .expect("task logs the start of its shutdown");
    let stopped = lines
        .iter()
        .position(|line| message(line).as_deref() == Some("stopped"))
        .expect("task logs its exit");
    let drained: Vec<String> = lines[begun..stopped]
        .iter()
        .filter(|line| message(line).as_deref() == Some("order handled"))
        .filter_map(|line| str_field(line, "order_id").map(str::to_owned))
        .collect();
    eprintln!(
        "task: {summary}; {} messages finished while stopping; exited {status} after {:?}",
        drained.len(),
        signal.elapsed()
    );
    assert!(!drained.is_empty(), "no message was in hand at the signal");

    system.restart(Service::Task).await;
    for shot in &shots {
        let order_id = shot.created().unwrap().order_id.as_deref().unwrap();
        let order = system.api.wait_until_handled(order_id).await;
        assert_eq!(order["status"], "completed", "{order}");
    }
    // Acked before the exit, so never delivered again: one result each.
    let results = logs::parse_all(&system.stdout(Service::Gateway));
    for order_id in &drained {
        let received: Vec<_> = results
            .iter()
            .filter(|line| {
                str_field(line, "message") == Some("result received")
                    && str_field(line, "order_id") == Some(order_id)
            })
            .collect();
        assert_eq!(received.len(), 1, "{order_id}: {received:#?}");
    }
}

/// The shutdown log lines are in a span, as every line is: a collector of
/// logs that joins on `trace_id` finds them too.
pub async fn the_shutdown_is_logged_with_trace_ids(subject: &Subject) {
    let mut system = subject.start().await;
    for service in Service::ALL {
        assert!(system.terminate(service).await.success(), "{service}");
        let lines = logs::parse_all(&system.stdout(service));
        let messages: Vec<&str> = lines
            .iter()
            .filter_map(|line| str_field(line, "message"))
            .collect();
        for expected in ["shutting down", "stopped"] {
            assert!(messages.contains(&expected), "{service}: {messages:?}");
        }
        for line in &lines {
            assert!(
                str_field(line, "trace_id").is_some_and(logs::is_trace_id),
                "{service}: {line:?}"
            );
        }
    }
}
