//! What the demo prints about each pillar the running chapter has: a few
//! metric figures after the orders, and the log lines of one order. A
//! pillar the chapter does not have yet is skipped with a word, so the
//! demo of any chapter shows exactly what that chapter adds.

use std::collections::BTreeMap;

use serde_json::Value;
use testkit::exposition::Sample;

/// The sum of the samples named `name` whose labels include `matching`.
pub fn sum(samples: &[Sample], name: &str, matching: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && matches(s, matching))
        .map(|s| s.value)
        .sum()
}

fn matches(sample: &Sample, matching: &[(&str, &str)]) -> bool {
    matching
        .iter()
        .all(|(k, v)| sample.labels.get(*k).is_some_and(|value| value == v))
}

/// The `q` quantile of histogram `name` (its `_bucket` series whose labels
/// include `matching`), interpolated inside the bucket as PromQL's
/// `histogram_quantile` does. `None` when there are no observations.
pub fn quantile(samples: &[Sample], name: &str, matching: &[(&str, &str)], q: f64) -> Option<f64> {
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new(); // bound bits -> (bound, count)
    for sample in samples
        .iter()
        .filter(|s| s.name == format!("{name}_bucket") && matches(s, matching))
    {
        let bound: f64 = match sample.labels.get("le")?.as_str() {
            "+Inf" => f64::INFINITY,
            le => le.parse().ok()?,
        };
        buckets.entry(bound.to_bits()).or_insert((bound, 0.0)).1 += sample.value;
    }
    let mut buckets: Vec<(f64, f64)> = buckets.into_values().collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower);
            }
            let share = if count > below {
                (rank - below) / (count - below)
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * share);
        }
        (lower, below) = (bound, count);
    }
    None
}

/// A log line as a person reads it: service, level, message, then trace_id
/// and the other fields. `None` for a line that is not a JSON object.
pub fn readable_log_line(line: &str) -> Option<String> {
    let Value::Object(fields) = serde_json::from_str::<Value>(line).ok()? else {
        return None;
    };
    let text = |key: &str| {
        fields
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_owned()
    };
    let mut out = format!(
        "{:<8} {:<5} {}",
        text("service"),
        text("level"),
        text("message")
    );
    for (key, value) in &fields {
        if [
            "timestamp",
            "service",
            "level",
            "message",
            "target",
            "span_id",
        ]
        .contains(&key.as_str())
        {
            continue;
        }
        match value {
            Value::String(s) => out.push_str(&format!("  {key}={s}")),
            other => out.push_str(&format!("  {key}={other}")),
        }
    }
    Some(out)
}

/// The JSON log lines that name `order_id`.
pub fn lines_of_order<'a>(lines: &'a [String], order_id: &str) -> Vec<&'a String> {
    lines
        .iter()
        .filter(|line| {
            serde_json::from_str::<Value>(line)
                .is_ok_and(|v| v.get("order_id").and_then(Value::as_str) == Some(order_id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP http_requests_total HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="GET",route="/orders/{order_id}",status="200"} 3
http_requests_total{method="POST",route="/orders",status="201"} 5
weird{path="a\"b}c"} 1
d_bucket{le="0.1"} 0
d_bucket{le="0.2"} 50
d_bucket{le="0.4"} 100
d_bucket{le="+Inf"} 100
"#;

    fn parse_samples(text: &str) -> Vec<Sample> {
        testkit::exposition::samples(text).unwrap()
    }

    #[test]
    fn parses_labels_with_braces_and_escaped_quotes() {
        let samples = parse_samples(TEXT);
        assert_eq!(samples.len(), 7);
        assert_eq!(samples[0].labels["route"], "/orders/{order_id}");
        assert_eq!(samples[2].labels["path"], "a\"b}c");
        assert_eq!(
            sum(&samples, "http_requests_total", &[("status", "201")]),
            5.0
        );
        assert_eq!(sum(&samples, "http_requests_total", &[]), 8.0);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let samples = parse_samples(TEXT);
        assert_eq!(quantile(&samples, "d", &[], 0.5), Some(0.2));
        let p75 = quantile(&samples, "d", &[], 0.75).unwrap();
        assert!((p75 - 0.3).abs() < 1e-9, "{p75}");
        assert_eq!(quantile(&samples, "nothing", &[], 0.5), None);
    }

    #[test]
    fn log_lines_read_as_text_and_filter_by_order() {
        let lines = vec![
            r#"{"timestamp":"t","level":"info","service":"logic","target":"x","message":"order created","trace_id":"abc","order_id":"o-1","quantity":2}"#.to_owned(),
            r#"{"level":"info","service":"task","message":"other","order_id":"o-2"}"#.to_owned(),
            "[all] plain text".to_owned(),
        ];
        let mine = lines_of_order(&lines, "o-1");
        assert_eq!(mine.len(), 1);
        assert_eq!(
            readable_log_line(mine[0]).unwrap(),
            "logic    info  order created  order_id=o-1  quantity=2  trace_id=abc"
        );
        assert_eq!(readable_log_line("[all] plain text"), None);
    }
}
