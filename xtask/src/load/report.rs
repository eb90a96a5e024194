//! What a load run found: the summary table printed at the end and the JSON
//! written under `bench/results/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::drive::{DROPPED, Outcome};

/// The usual percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// Of a microsecond histogram; `None` when it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Option<Self> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |micros: u64| micros as f64 / 1e3;
        Some(Self {
            count: histogram.len(),
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1e3,
        })
    }

    pub fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "p50": round(self.p50),
            "p90": round(self.p90),
            "p99": round(self.p99),
            "p999": round(self.p999),
            "max": round(self.max),
            "mean": round(self.mean),
        })
    }
}

/// Three decimals: microseconds, when the unit is milliseconds.
pub fn round(value: f64) -> f64 {
    (value * 1e3).round() / 1e3
}

/// A duration in milliseconds for people: `0.84 ms`, `12.3 ms`, `1.52 s`.
pub fn ms(value: f64) -> String {
    if value >= 1000.0 {
        format!("{:.2} s", value / 1e3)
    } else if value >= 10.0 {
        format!("{value:.1} ms")
    } else {
        format!("{value:.2} ms")
    }
}

/// The end-to-end side: a sample of accepted orders, polled with
/// `GET /orders/{id}` until they are no longer `created`.
#[derive(Debug, Clone)]
pub struct EndToEnd {
    /// From the `201` to the first poll that saw the final status.
    pub latency: Histogram<u64>,
    /// `completed`, `failed`, `unfinished` (still `created` at the
    /// deadline) and `poll errors`.
    pub outcomes: BTreeMap<String, u64>,
    pub sampled: u64,
    pub poll_interval: Duration,
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The schedule, described (`fixed 300/s for 30s`).
    pub profile: String,
    pub url: String,
    /// How long the schedule ran (shorter than planned when stopped).
    pub duration: Duration,
    pub outcome: Outcome,
    pub e2e: EndToEnd,
    /// The gateway's own `order_completion_seconds` over the run, when it
    /// has one and the runner could scrape it.
    pub gateway_completion: Option<BTreeMap<String, f64>>,
    pub started_at: String,
}

impl Report {
    pub fn error_total(&self) -> u64 {
        self.outcome.errors.values().sum()
    }

    /// Errors (dropped included) per request planned.
    pub fn error_rate(&self) -> f64 {
        if self.outcome.planned == 0 {
            0.0
        } else {
            self.error_total() as f64 / self.outcome.planned as f64
        }
    }

    fn seconds(&self) -> f64 {
        self.duration.as_secs_f64().max(1e-9)
    }

    /// Requests planned per second of the schedule.
    pub fn target_rate(&self) -> f64 {
        self.outcome.planned as f64 / self.seconds()
    }

    /// Successful requests per second of the schedule.
    pub fn achieved_rate(&self) -> f64 {
        self.outcome.ok as f64 / self.seconds()
    }

    pub fn http(&self) -> Option<Percentiles> {
        Percentiles::of(&self.outcome.latency)
    }

    pub fn end_to_end(&self) -> Option<Percentiles> {
        Percentiles::of(&self.e2e.latency)
    }

    pub fn to_json(&self) -> Value {
        let optional = |p: Option<Percentiles>| p.map_or(Value::Null, |p| p.to_json());
        json!({
            "kind": "load",
            "started_at": self.started_at,
            "profile": self.profile,
            "url": self.url,
            "duration_s": round(self.duration.as_secs_f64()),
            "elapsed_s": round(self.outcome.elapsed.as_secs_f64()),
            "planned": self.outcome.planned,
            "sent": self.outcome.sent,
            "ok": self.outcome.ok,
            "errors": self.outcome.errors,
            "error_total": self.error_total(),
            "error_rate": self.error_rate(),
            "target_rate": round(self.target_rate()),
            "achieved_rate": round(self.achieved_rate()),
            "http_ms": optional(self.http()),
            "e2e_ms": optional(self.end_to_end()),
            "e2e": {
                "what": "accepted (201) to the first GET /orders/{id} that saw the final status",
                "sampled": self.e2e.sampled,
                "outcomes": self.e2e.outcomes,
                "poll_interval_ms": self.e2e.poll_interval.as_secs_f64() * 1e3,
            },
            "gateway_order_completion_ms": self.gateway_completion,
            "timeline": self.outcome.timeline.iter().map(|t| json!({
                "t": round(t.at),
                "target_rate": round(t.target_rate),
                "sent": t.sent,
                "ok": t.ok,
                "errors": t.errors,
                "p99_ms": t.p99_ms.map(round),
            })).collect::<Vec<_>>(),
        })
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let o = &self.outcome;
        let row = |out: &mut String, what: &str, value: String| {
            let _ = writeln!(out, "  {what:<22} {value}");
        };
        let _ = writeln!(out, "[load] {} against {}", self.profile, self.url);
        row(&mut out, "requests planned", o.planned.to_string());
        row(&mut out, "requests sent", o.sent.to_string());
        row(&mut out, "ok (201)", o.ok.to_string());
        row(
            &mut out,
            "rate",
            format!(
                "{:.1}/s achieved of {:.1}/s planned",
                self.achieved_rate(),
                self.target_rate()
            ),
        );
        row(
            &mut out,
            "errors",
            format!("{} ({:.2}%)", self.error_total(), self.error_rate() * 100.0),
        );
        for (kind, count) in &o.errors {
            row(&mut out, &format!("  {kind}"), count.to_string());
        }
        let _ = writeln!(
            out,
            "  {:<22} {:>9} {:>9} {:>9} {:>9}",
            "latency", "p50", "p90", "p99", "max"
        );
        let line = |out: &mut String, what: &str, p: Option<Percentiles>, note: String| match p {
            Some(p) => {
                let _ = writeln!(
                    out,
                    "  {what:<22} {:>9} {:>9} {:>9} {:>9}  {note}",
                    ms(p.p50),
                    ms(p.p90),
                    ms(p.p99),
                    ms(p.max)
                );
            }
            None => {
                let _ = writeln!(out, "  {what:<22} {:>9}  {note}", "-");
            }
        };
        line(
            &mut out,
            "POST /orders",
            self.http(),
            format!(
                "{} answers, from the scheduled send",
                self.http().map_or(0, |p| p.count)
            ),
        );
        let outcomes: Vec<String> = self
            .e2e
            .outcomes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        line(
            &mut out,
            "accepted -> completed",
            self.end_to_end(),
            format!(
                "{} orders sampled, polled from every {} ms: {}",
                self.e2e.sampled,
                self.e2e.poll_interval.as_millis(),
                if outcomes.is_empty() {
                    "none".to_owned()
                } else {
                    outcomes.join(", ")
                }
            ),
        );
        if let Some(histogram) = &self.gateway_completion {
            let get = |k: &str| histogram.get(k).copied().unwrap_or(f64::NAN);
            let _ = writeln!(
                out,
                "  {:<22} {:>9} {:>9} {:>9} {:>9}  the gateway's order_completion_seconds over the run ({} orders)",
                "gateway histogram",
                ms(get("p50")),
                ms(get("p90")),
                ms(get("p99")),
                "-",
                get("count")
            );
        }
        if o.errors.contains_key(DROPPED) {
            let _ = writeln!(
                out,
                "  (dropped: the in-flight cap was reached; raise --max-in-flight / LOAD_MAX_VUS, or the system is overloaded)"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::drive::{Tick, histogram, record};

    #[test]
    fn percentiles_of_a_known_distribution() {
        // 1 ms, 2 ms, ... 1000 ms, once each.
        let mut h = histogram();
        for i in 1..=1000u64 {
            record(&mut h, Duration::from_millis(i));
        }
        let p = Percentiles::of(&h).unwrap();
        let close = |got: f64, want: f64| {
            assert!(
                (got - want).abs() <= want * 0.001 + 1e-9,
                "{got} is not {want}"
            )
        };
        assert_eq!(p.count, 1000);
        close(p.p50, 500.0);
        close(p.p90, 900.0);
        close(p.p99, 990.0);
        close(p.p999, 999.0);
        close(p.max, 1000.0);
        close(p.mean, 500.5);
        assert_eq!(Percentiles::of(&histogram()), None);
    }

    #[test]
    fn a_few_slow_requests_move_the_p99_not_the_median() {
        let mut h = histogram();
        for _ in 0..985 {
            record(&mut h, Duration::from_millis(2));
        }
        for _ in 0..15 {
            record(&mut h, Duration::from_secs(3));
        }
        let p = Percentiles::of(&h).unwrap();
        assert!((p.p50 - 2.0).abs() < 0.01, "{p:?}");
        assert!((p.p90 - 2.0).abs() < 0.01, "{p:?}");
        assert!((p.p99 - 3000.0).abs() < 3.0, "{p:?}");
    }

    fn report(planned: u64, ok: u64, errors: &[(&str, u64)]) -> Report {
        let mut latency = histogram();
        for i in 0..ok {
            record(&mut latency, Duration::from_micros(1000 + i));
        }
        Report {
            profile: "fixed 10/s for 10s".into(),
            url: "http://127.0.0.1:1/orders".into(),
            duration: Duration::from_secs(10),
            outcome: Outcome {
                planned,
                sent: planned
                    - errors
                        .iter()
                        .filter(|(k, _)| *k == DROPPED)
                        .map(|(_, v)| v)
                        .sum::<u64>(),
                ok,
                errors: errors.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
                latency,
                timeline: vec![Tick {
                    at: 1.0,
                    target_rate: 10.0,
                    sent: 10,
                    ok: 10,
                    errors: 0,
                    p99_ms: Some(1.0),
                    total_sent: 10,
                    total_errors: 0,
                    in_flight: 0,
                }],
                elapsed: Duration::from_secs(10),
            },
            e2e: EndToEnd {
                latency: histogram(),
                outcomes: BTreeMap::new(),
                sampled: 0,
                poll_interval: Duration::from_millis(2),
            },
            gateway_completion: None,
            started_at: "20250101T000000Z".into(),
        }
    }

    #[test]
    fn the_summary_counts_errors_by_kind_and_rates_per_second_of_schedule() {
        let r = report(100, 90, &[("http 503", 6), (DROPPED, 4)]);
        assert_eq!(r.error_total(), 10);
        assert!((r.error_rate() - 0.1).abs() < 1e-12);
        assert!((r.target_rate() - 10.0).abs() < 1e-12);
        assert!((r.achieved_rate() - 9.0).abs() < 1e-12);
        let table = r.table();
        assert!(table.contains("http 503"), "{table}");
        assert!(table.contains("dropped: too many in flight"), "{table}");
        assert!(table.contains("10 (10.00%)"), "{table}");
        let json = r.to_json();
        assert_eq!(json["errors"]["http 503"], 6);
        assert_eq!(json["sent"], 96);
        assert_eq!(json["http_ms"]["count"], 90);
        assert_eq!(json["e2e_ms"], Value::Null);
        assert_eq!(json["timeline"][0]["target_rate"], 10.0);
    }
}
