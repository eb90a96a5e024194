//! The open-model runner: each request leaves at its scheduled instant,
//! whatever the earlier ones are doing, and its latency is counted from
//! that instant.
//!
//! A closed-model client (send, wait for the answer, send the next) slows
//! down with the system it measures: when the system stalls for a second,
//! the client sends nothing for a second, and the requests that would have
//! waited never exist. Its percentiles then describe a system that was
//! never overloaded ("coordinated omission"). Here a stall shows up in full:
//! the requests scheduled during it still leave on time (or late, and the
//! lateness counts), and each waits as long as a real user would have.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::schedule::Schedule;

/// The error kind counted for a request that was not sent because
/// `max_in_flight` requests were already waiting.
pub const DROPPED: &str = "dropped: too many in flight";

/// How often the runner reports progress and closes a timeline entry.
pub const TICK: Duration = Duration::from_secs(1);

/// A latency histogram in microseconds, from 1 µs to an hour, to three
/// significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Records `elapsed` into a microsecond histogram (an hour at most).
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.max(1));
}

/// What one tick saw: the target rate at its start, and what was sent,
/// answered and failed during it, with the p99 of the answers in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// Seconds from the start to the end of the tick.
    pub at: f64,
    pub target_rate: f64,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    /// Milliseconds; `None` when nothing was answered in the tick.
    pub p99_ms: Option<f64>,
    /// Totals so far, for the progress line.
    pub total_sent: u64,
    pub total_errors: u64,
    pub in_flight: usize,
}

/// Everything the runner counted.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub planned: u64,
    /// Requests that left (planned minus dropped).
    pub sent: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    /// From the scheduled instant to the answer (or the failure), for every
    /// request that left.
    pub latency: Histogram<u64>,
    pub timeline: Vec<Tick>,
    /// From the first scheduled instant until the last answer.
    pub elapsed: Duration,
}

#[derive(Debug)]
struct Counts {
    sent: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    error_total: u64,
    latency: Histogram<u64>,
    /// Since the last tick.
    window: Histogram<u64>,
    window_sent: u64,
    window_ok: u64,
    window_errors: u64,
}

impl Counts {
    fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_owned()).or_default() += 1;
        self.error_total += 1;
        self.window_errors += 1;
    }
}

/// Runs `schedule`, calling `send(i)` for request `i` at its instant;
/// `send` answers `Ok` or the kind of error (`"http 503"`, `"timeout"`).
/// At most `max_in_flight` requests wait at once; one more is not sent and
/// counts as [`DROPPED`]. `on_tick` sees each tick as it closes. Returns
/// once the schedule has ended (or `stop` was set) and every request sent
/// has been answered.
///
/// The requests in flight are futures polled by this one, not tasks of
/// their own: on the generator's single thread that saves a task, its
/// join handle and its wake-ups per request, and the counts need no lock.
/// While it waits for the next instant it takes in the answers, so each
/// latency is read as its answer arrives.
pub async fn drive<S, F>(
    schedule: &Schedule,
    max_in_flight: usize,
    send: S,
    mut on_tick: impl FnMut(&Tick),
    stop: &AtomicBool,
) -> Outcome
where
    S: Fn(u64) -> F,
    F: Future<Output = Result<(), String>>,
{
    let counts = RefCell::new(Counts {
        sent: 0,
        ok: 0,
        errors: BTreeMap::new(),
        error_total: 0,
        latency: histogram(),
        window: histogram(),
        window_sent: 0,
        window_ok: 0,
        window_errors: 0,
    });
    let start = Instant::now();
    let mut timeline = Vec::new();
    let mut next_tick = start + TICK;
    let mut in_flight = FuturesUnordered::new();
    let mut planned = 0;

    let close_tick = |timeline: &mut Vec<Tick>, at: Instant, in_flight: usize| {
        let seconds = at.duration_since(start).as_secs_f64();
        let mut c = counts.borrow_mut();
        let tick = Tick {
            at: seconds,
            target_rate: schedule.rate_at(seconds - TICK.as_secs_f64()),
            sent: c.window_sent,
            ok: c.window_ok,
            errors: c.window_errors,
            p99_ms: (!c.window.is_empty()).then(|| c.window.value_at_quantile(0.99) as f64 / 1e3),
            total_sent: c.sent,
            total_errors: c.error_total,
            in_flight,
        };
        c.window.reset();
        (c.window_sent, c.window_ok, c.window_errors) = (0, 0, 0);
        timeline.push(tick);
    };

    for (i, offset) in schedule.send_times().enumerate() {
        let due = start + Duration::from_secs_f64(offset);
        while next_tick <= due && !stop.load(Ordering::Relaxed) {
            answer_until(&mut in_flight, next_tick).await;
            close_tick(&mut timeline, next_tick, in_flight.len());
            on_tick(timeline.last().expect("just pushed"));
            next_tick += TICK;
        }
        answer_until(&mut in_flight, due).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        planned += 1;
        if in_flight.len() >= max_in_flight {
            counts.borrow_mut().error(DROPPED);
            continue;
        }
        {
            let mut c = counts.borrow_mut();
            c.sent += 1;
            c.window_sent += 1;
        }
        let request = send(i as u64);
        let counts = &counts;
        in_flight.push(async move {
            let result = request.await;
            // From when it should have left, not from when it did.
            let latency = Instant::now().duration_since(due);
            let mut c = counts.borrow_mut();
            record(&mut c.latency, latency);
            record(&mut c.window, latency);
            match result {
                Ok(()) => {
                    c.ok += 1;
                    c.window_ok += 1;
                }
                Err(kind) => c.error(&kind),
            }
        });
    }

    // The schedule is over: wait for the answers, still ticking.
    let end = if stop.load(Ordering::Relaxed) {
        start
    } else {
        start + schedule.duration()
    };
    while !in_flight.is_empty() {
        let tick = tokio::time::sleep_until(next_tick);
        tokio::pin!(tick);
        loop {
            tokio::select! {
                answered = in_flight.next() => {
                    if answered.is_none() {
                        break;
                    }
                }
                () = &mut tick => {
                    close_tick(&mut timeline, next_tick, in_flight.len());
                    on_tick(timeline.last().expect("just pushed"));
                    next_tick += TICK;
                    break;
                }
            }
        }
    }
    drop(in_flight);
    let finished = Instant::now().max(end);
    // The last partial tick, so the timeline accounts for every request.
    let unreported = {
        let c = counts.borrow();
        c.window_sent + c.window_ok + c.window_errors > 0
    };
    if unreported || timeline.is_empty() {
        close_tick(&mut timeline, finished, 0);
        on_tick(timeline.last().expect("just pushed"));
    }

    let c = counts.into_inner();
    Outcome {
        planned,
        sent: c.sent,
        ok: c.ok,
        errors: c.errors,
        latency: c.latency,
        timeline,
        elapsed: finished.duration_since(start),
    }
}

/// Waits until `deadline`, taking in the answers of the requests in flight
/// meanwhile (first, so none waits behind the schedule to be counted).
async fn answer_until<F: Future<Output = ()>>(
    in_flight: &mut FuturesUnordered<F>,
    deadline: Instant,
) {
    let sleep = tokio::time::sleep_until(deadline);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            () = &mut sleep => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Under tokio's paused clock, time moves only when every task waits,
    /// so these runs are exact and take no real time.
    fn fixed(rate: f64, seconds: u64) -> Schedule {
        Schedule::fixed(rate, Duration::from_secs(seconds))
    }

    #[tokio::test(start_paused = true)]
    async fn every_request_leaves_on_schedule_and_is_counted() {
        let schedule = fixed(50.0, 2);
        let outcome = drive(
            &schedule,
            1000,
            |_| async {
                tokio::time::sleep(Duration::from_millis(30)).await;
                Ok(())
            },
            |_| {},
            &AtomicBool::new(false),
        )
        .await;
        assert_eq!(outcome.planned, 100);
        assert_eq!(outcome.sent, 100);
        assert_eq!(outcome.ok, 100);
        assert!(outcome.errors.is_empty());
        assert_eq!(outcome.latency.len(), 100);
        let p50 = outcome.latency.value_at_quantile(0.5);
        assert!((29_900..=30_100).contains(&p50), "{p50} µs");
        // Two full ticks plus the last answers' 30 ms.
        assert_eq!(outcome.timeline.len(), 3);
        let sent: u64 = outcome.timeline.iter().map(|t| t.sent).sum();
        assert_eq!(sent, 100);
        assert_eq!(outcome.timeline[0].target_rate, 50.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_system_does_not_slow_the_sender_and_its_queue_is_measured() {
        // The system serves one request at a time in 100 ms: 10/s, while
        // 20/s arrive for 2 s. A closed-model client would report 100 ms
        // for everything; here the queue shows.
        let server = Arc::new(tokio::sync::Semaphore::new(1));
        let sent_at = Arc::new(Mutex::new(Vec::new()));
        let schedule = fixed(20.0, 2);
        let outcome = drive(
            &schedule,
            1000,
            |_| {
                let server = server.clone();
                sent_at.lock().unwrap().push(Instant::now());
                async move {
                    let _permit = server.acquire().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(())
                }
            },
            |_| {},
            &AtomicBool::new(false),
        )
        .await;
        assert_eq!(outcome.sent, 40);
        let sent_at = sent_at.lock().unwrap();
        let first = sent_at[0];
        for (i, at) in sent_at.iter().enumerate() {
            let offset = at.duration_since(first).as_secs_f64();
            assert!(
                (offset - i as f64 / 20.0).abs() < 0.002,
                "request {i} left at {offset} s"
            );
        }
        // The last request arrives at 1.95 s and is served after the 39
        // before it: at 4.0 s, so it waited 2.05 s.
        let max = outcome.latency.max();
        assert!((2_040_000..=2_060_000).contains(&max), "{max} µs");
        let min = outcome.latency.min();
        assert!((99_000..=101_000).contains(&min), "{min} µs");
        assert!(outcome.elapsed >= Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn over_the_in_flight_cap_requests_are_dropped_not_delayed() {
        // Each answer takes 0.95 s; 10/s for 2 s with at most 5 waiting:
        // the first 5 of each second leave, the other 5 are dropped.
        let schedule = fixed(10.0, 2);
        let outcome = drive(
            &schedule,
            5,
            |_| async {
                tokio::time::sleep(Duration::from_millis(950)).await;
                Err("http 503".to_owned())
            },
            |_| {},
            &AtomicBool::new(false),
        )
        .await;
        assert_eq!(outcome.planned, 20);
        assert_eq!(outcome.sent, 10);
        assert_eq!(outcome.ok, 0);
        assert_eq!(outcome.errors[DROPPED], 10);
        assert_eq!(outcome.errors["http 503"], 10);
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_report_progress_as_the_run_goes() {
        let schedule = Schedule::wave(
            10.0,
            30.0,
            1,
            Duration::from_secs(2),
            Duration::from_secs(1),
        );
        let mut seen = Vec::new();
        let outcome = drive(
            &schedule,
            100,
            |_| async { Ok(()) },
            |tick| seen.push(tick.clone()),
            &AtomicBool::new(false),
        )
        .await;
        assert_eq!(outcome.planned, schedule.planned());
        assert_eq!(outcome.ok, outcome.planned);
        assert!(seen.len() >= 5, "{seen:?}");
        let targets: Vec<f64> = seen.iter().take(6).map(|t| t.target_rate).collect();
        assert_eq!(targets, vec![10.0, 20.0, 30.0, 30.0, 20.0, 10.0]);
        let total: u64 = outcome.timeline.iter().map(|t| t.sent).sum();
        assert_eq!(total, outcome.planned);
    }
}
