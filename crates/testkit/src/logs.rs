//! Log lines as tests read them: each line a service wrote to stdout,
//! parsed as one JSON object, and rendered for snapshots with what changes
//! on every run redacted.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// One log line: a JSON object.
pub type LogLine = Map<String, Value>;

/// The keys a line starts with, in the order the services write them.
pub const LINE_KEYS: [&str; 7] = [
    "timestamp",
    "level",
    "service",
    "target",
    "message",
    "trace_id",
    "span_id",
];

/// Parses one line, which must be exactly one JSON object.
pub fn parse(line: &str) -> Result<LogLine, String> {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(format!("not a JSON object: {other}")),
        Err(e) => Err(format!("not JSON ({e}): {line:?}")),
    }
}

/// Parses every line; panics at the first that is not one JSON object.
pub fn parse_all(lines: &[String]) -> Vec<LogLine> {
    lines
        .iter()
        .map(|line| parse(line).unwrap_or_else(|e| panic!("a log line is {e}")))
        .collect()
}

/// A W3C trace id as written: 32 lowercase hex digits, not all zero.
pub fn is_trace_id(value: &str) -> bool {
    is_hex_id(value, 32)
}

/// A W3C span id as written: 16 lowercase hex digits, not all zero.
pub fn is_span_id(value: &str) -> bool {
    is_hex_id(value, 16)
}

fn is_hex_id(value: &str, len: usize) -> bool {
    value.len() == len
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && value.bytes().any(|b| b != b'0')
}

/// The string value of `key` in `line`, if it has one.
pub fn str_field<'a>(line: &'a LogLine, key: &str) -> Option<&'a str> {
    line.get(key).and_then(Value::as_str)
}

/// The lines in the trace of the first line that `anchor` matches, in the
/// order they were written. Empty when no line matches or it has no trace.
pub fn trace_of(lines: &[LogLine], anchor: impl Fn(&LogLine) -> bool) -> Vec<&LogLine> {
    sharing("trace_id", lines, anchor)
}

/// The lines written in the span of the first line `anchor` matches, in
/// the order they were written: one unit of work, where [`trace_of`] gives
/// every unit of its trace.
pub fn span_of(lines: &[LogLine], anchor: impl Fn(&LogLine) -> bool) -> Vec<&LogLine> {
    sharing("span_id", lines, anchor)
}

/// The lines with the same `key` as the first line `anchor` matches.
fn sharing<'a>(
    key: &str,
    lines: &'a [LogLine],
    anchor: impl Fn(&LogLine) -> bool,
) -> Vec<&'a LogLine> {
    let Some(id) = lines
        .iter()
        .find(|line| anchor(line))
        .and_then(|line| str_field(line, key))
    else {
        return Vec::new();
    };
    lines
        .iter()
        .filter(|line| str_field(line, key) == Some(id))
        .collect()
}

/// The crate of the services' own code: the first path segment of the
/// `target` of the first line about an order (no library writes an
/// `order_id`). Tests compare targets with it, never with a crate name,
/// so that the chapter's package may be called anything.
pub fn own_crate(lines: &[LogLine]) -> Option<&str> {
    let line = lines.iter().find(|line| line.contains_key("order_id"))?;
    let target = str_field(line, "target")?;
    target.split("::").next()
}

/// Renders log lines for a snapshot, with what differs between runs
/// replaced:
///
/// - `timestamp` is dropped;
/// - `trace_id`, `span_id` and `order_id` values become `[trace-1]`,
///   `[span-1]`, `[order-1]`, numbered in order of first appearance, so the
///   snapshot still shows which lines share an id; a known id inside any
///   other string is replaced too;
/// - the value of a key containing `latency` or `duration` becomes
///   `[duration]`;
/// - with [`with_crate`](Self::with_crate), a `target` in that crate
///   starts with `[crate]` instead, as in `[crate]::gateway`.
///
/// A line is written as compact JSON: the line keys first, in the services'
/// order, then the other fields sorted by name.
#[derive(Debug, Default)]
pub struct Redactor {
    ids: HashMap<String, String>,
    counts: HashMap<&'static str, usize>,
    own_crate: Option<String>,
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Redacts the crate `name` in targets: see [`own_crate`].
    pub fn with_crate(mut self, name: &str) -> Self {
        self.own_crate = Some(name.to_owned());
        self
    }

    /// The placeholder of `value`, an id of `kind` (`trace`, `span`,
    /// `order`): the same value always gets the same placeholder.
    pub fn id(&mut self, kind: &'static str, value: &str) -> String {
        if let Some(known) = self.ids.get(value) {
            return known.clone();
        }
        let count = self.counts.entry(kind).or_default();
        *count += 1;
        let placeholder = format!("[{kind}-{count}]");
        self.ids.insert(value.to_owned(), placeholder.clone());
        placeholder
    }

    /// One line, redacted, as compact JSON.
    pub fn line(&mut self, line: &LogLine) -> String {
        // Ids first, in the order a reader meets them.
        for (key, kind) in [
            ("trace_id", "trace"),
            ("span_id", "span"),
            ("order_id", "order"),
        ] {
            if let Some(id) = str_field(line, key) {
                self.id(kind, id);
            }
        }
        let mut keys: Vec<&String> = line
            .keys()
            .filter(|key| !LINE_KEYS.contains(&key.as_str()))
            .collect();
        keys.sort();
        let ordered = LINE_KEYS
            .iter()
            .filter(|key| **key != "timestamp")
            .filter_map(|key| line.get_key_value(*key))
            .chain(keys.into_iter().map(|key| (key, &line[key])));

        let mut out = String::from("{");
        for (key, value) in ordered {
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(&Value::from(key.as_str()).to_string());
            out.push(':');
            out.push_str(&self.value(key, value).to_string());
        }
        out.push('}');
        out
    }

    /// Lines, one per line of text.
    pub fn lines<'a>(&mut self, lines: impl IntoIterator<Item = &'a LogLine>) -> String {
        lines
            .into_iter()
            .map(|line| self.line(line) + "\n")
            .collect()
    }

    fn value(&self, key: &str, value: &Value) -> Value {
        if key.contains("latency") || key.contains("duration") {
            return Value::from("[duration]");
        }
        match value {
            Value::String(text) if key == "target" => Value::from(self.target(text)),
            Value::String(text) => Value::from(self.replace_known_ids(text)),
            other => other.clone(),
        }
    }

    fn target(&self, target: &str) -> String {
        let own = self.own_crate.as_deref();
        match target.split_once("::") {
            Some((krate, modules)) if Some(krate) == own => format!("[crate]::{modules}"),
            None if Some(target) == own => "[crate]".to_owned(),
            _ => target.to_owned(),
        }
    }

    fn replace_known_ids(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (id, placeholder) in &self.ids {
            if text.contains(id.as_str()) {
                text = text.replace(id.as_str(), placeholder);
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_numbered_in_order_of_first_appearance() {
        let lines = parse_all(&[
            r#"{"timestamp":"t","level":"info","service":"gateway","target":"x","message":"accepted","trace_id":"aa","span_id":"01","order_id":"o1","latency_ms":3.2}"#.to_owned(),
            r#"{"timestamp":"t","level":"info","service":"logic","target":"y","message":"created o1","trace_id":"bb","span_id":"02","order_id":"o1","b":1,"a":true}"#.to_owned(),
            r#"{"timestamp":"t","level":"info","service":"gateway","target":"x","message":"done","trace_id":"aa","span_id":"01"}"#.to_owned(),
        ]);
        let text = Redactor::new().lines(&lines);
        assert_eq!(
            text,
            concat!(
                r#"{"level":"info","service":"gateway","target":"x","message":"accepted","trace_id":"[trace-1]","span_id":"[span-1]","latency_ms":"[duration]","order_id":"[order-1]"}"#,
                "\n",
                r#"{"level":"info","service":"logic","target":"y","message":"created [order-1]","trace_id":"[trace-2]","span_id":"[span-2]","a":true,"b":1,"order_id":"[order-1]"}"#,
                "\n",
                r#"{"level":"info","service":"gateway","target":"x","message":"done","trace_id":"[trace-1]","span_id":"[span-1]"}"#,
                "\n",
            )
        );
    }

    #[test]
    fn the_own_crate_is_redacted_in_targets_and_libraries_stay() {
        let lines = parse_all(&[
            r#"{"target":"h2::codec","message":"frame"}"#.to_owned(),
            r#"{"target":"my_shop::gateway","message":"accepted","order_id":"o1"}"#.to_owned(),
            r#"{"target":"my_shop","message":"up"}"#.to_owned(),
        ]);
        let own = own_crate(&lines).unwrap();
        assert_eq!(own, "my_shop");
        let text = Redactor::new().with_crate(own).lines(&lines);
        assert_eq!(
            text,
            concat!(
                r#"{"target":"h2::codec","message":"frame"}"#,
                "\n",
                r#"{"target":"[crate]::gateway","message":"accepted","order_id":"[order-1]"}"#,
                "\n",
                r#"{"target":"[crate]","message":"up"}"#,
                "\n",
            )
        );
    }

    #[test]
    fn ids_are_checked_for_form() {
        assert!(is_trace_id("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(!is_trace_id("4BF92F3577B34DA6A3CE929D0E0E4736"));
        assert!(!is_trace_id("00000000000000000000000000000000"));
        assert!(is_span_id("00f067aa0ba902b7"));
        assert!(!is_span_id("00f067aa0ba902b"));
    }

    #[test]
    fn a_line_must_be_one_object() {
        assert!(parse(r#"{"a":1}"#).is_ok());
        assert!(parse(r#"{"a":1}{"b":2}"#).is_err());
        assert!(parse("[all] ready").is_err());
        assert!(parse("42").is_err());
    }
}
