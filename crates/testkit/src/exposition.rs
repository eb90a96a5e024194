//! A Prometheus text exposition (what `/metrics` serves) read as flat
//! samples, with the `prom_text_format_parser` crate: the one reader of
//! expositions for the stack's checks and for `cargo xtask demo`, `load`
//! and `bench`.

use std::collections::BTreeMap;

use prom_text_format_parser::{Scrape, Type, ValueType};

pub use prom_text_format_parser::ScrapeParseError;

/// One sample of an exposition: its series name as written (a histogram's
/// `_bucket`, `_sum` and `_count` series by those names), its labels with
/// their values unescaped, and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of `exposition`, in the order written; comments, `HELP` and
/// `TYPE` lines are not samples. An empty text has none. Label values may
/// hold any character: `}`, and `\"`, `\\` and `\n` as escaped.
///
/// Errors when the text is not the Prometheus text format: a malformed
/// line, or a family with a `HELP` or `TYPE` line and no sample.
pub fn samples(exposition: &str) -> Result<Vec<Sample>, ScrapeParseError> {
    if exposition.trim().is_empty() {
        return Ok(Vec::new());
    }
    let scrape = Scrape::parse(exposition)?;
    let mut samples = Vec::new();
    for family in scrape.metrics {
        for sample in family.samples {
            let suffix = match (family.kind, sample.value.value_type) {
                (Type::Histogram, ValueType::Sample) => "_bucket",
                (_, ValueType::Sum) => "_sum",
                (_, ValueType::Count) => "_count",
                _ => "",
            };
            // The parser has checked the number's syntax (Go's, which
            // Rust's `f64` parsing accepts: `1.5e3`, `+Inf`, `NaN`).
            let Ok(value) = sample.value.value.parse() else {
                continue;
            };
            samples.push(Sample {
                name: format!("{}{suffix}", family.name),
                labels: sample
                    .labels
                    .iter()
                    .map(|label| (label.key.clone(), unescape(&label.value)))
                    .collect(),
                value,
            });
        }
    }
    Ok(samples)
}

/// A label value as meant: the parser keeps the escapes as written.
fn unescape(written: &str) -> String {
    let mut value = String::with_capacity(written.len());
    let mut chars = written.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            value.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => value.push('\n'),
            Some(other) => value.push(other),
            None => value.push('\\'),
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP http_requests_total HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="GET",route="/orders/{order_id}",status="200"} 3
http_requests_total{method="POST",route="/orders",status="201"} 5
weird{path="a\"b}c\\d\ne"} 1
# HELP h Time.
# TYPE h histogram
h_bucket{le="0.1"} 1
h_bucket{le="+Inf"} 2
h_sum 0.25
h_count 2
# TYPE s summary
s{quantile="0.5"} 0.1
s_sum 1e-1
s_count 1
"#;

    #[test]
    fn samples_keep_their_series_names_and_unescaped_labels() {
        let samples = samples(TEXT).unwrap();
        let names: Vec<&str> = samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "http_requests_total",
                "http_requests_total",
                "weird",
                "h_bucket",
                "h_bucket",
                "h_sum",
                "h_count",
                "s",
                "s_sum",
                "s_count"
            ]
        );
        assert_eq!(samples[0].labels["route"], "/orders/{order_id}");
        assert_eq!(samples[1].value, 5.0);
        assert_eq!(samples[2].labels["path"], "a\"b}c\\d\ne");
        assert_eq!(samples[4].labels["le"], "+Inf");
        assert_eq!(samples[8].value, 0.1);
    }

    #[test]
    fn an_empty_exposition_has_no_samples_and_garbage_is_an_error() {
        assert_eq!(samples("").unwrap(), []);
        assert_eq!(samples("\n").unwrap(), []);
        assert!(samples("not prometheus {").is_err());
        assert!(samples("# TYPE lonely counter\n").is_err());
    }
}
