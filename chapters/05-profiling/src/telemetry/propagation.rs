//! Trace context, read strictly. A client, a caller or a message's
//! publisher sends its context as W3C Trace Context headers: `traceparent`
//! names the trace and the span the work continues, `tracestate` carries
//! vendors' entries along to the next hop. Those headers come from outside,
//! so they are checked before they are trusted: opentelemetry_sdk's
//! `TraceContextPropagator` parses `traceparent` leniently (`00-1-2-01`
//! continues the trace `000…01`) and forwards any `tracestate` as it came,
//! however long (a long one makes the next hop answer 431).
//!
//! [`W3cTraceContext`] is that propagator behind the rules of W3C Trace
//! Context level 1. A `traceparent` is used only when it is valid (§3.2:
//! exact field lengths, lowercase hex, no all-zero id, no version `ff`, a
//! later version read by the part this one knows) and sent once; otherwise
//! the work starts a new trace, and goes on. A `tracestate` is kept only
//! when it is valid and within W3C's limits (§3.3: 32 members, 512
//! characters); otherwise it is dropped, never forwarded. Installed once as
//! the global propagator, it is what every place that extracts a context
//! uses: an HTTP request, a gRPC call's metadata, a NATS message's headers.

use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
/// A `traceparent` of version `00`: `00-<32 hex>-<16 hex>-<2 hex>`.
const TRACEPARENT_CHARS: usize = 55;
/// The most members a `tracestate` has (§3.3.1.1).
const MAX_MEMBERS: usize = 32;
/// The longest `tracestate` kept, in characters (§3.3.1.5).
const MAX_TRACESTATE_CHARS: usize = 512;

/// W3C Trace Context, checked: `global::set_text_map_propagator(W3cTraceContext::default())`.
#[derive(Debug, Default)]
pub struct W3cTraceContext(TraceContextPropagator);

impl TextMapPropagator for W3cTraceContext {
    fn inject_context(&self, context: &Context, injector: &mut dyn Injector) {
        self.0.inject_context(context, injector);
    }

    /// The sender's context when its headers are valid; else `context`, in
    /// which the work starts a new trace.
    fn extract_with_context(&self, context: &Context, extractor: &dyn Extractor) -> Context {
        match checked(extractor) {
            Some(valid) => self.0.extract_with_context(context, &valid),
            None => context.clone(),
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        self.0.fields()
    }
}

/// The headers that passed the checks, for the SDK's parser to read.
struct Checked<'a> {
    traceparent: &'a str,
    tracestate: Option<String>,
}

impl Extractor for Checked<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.traceparent),
            TRACESTATE => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

// ANCHOR: checked
/// The headers `extractor` holds, if its `traceparent` is valid and sent
/// once (two cannot both be the parent); its `tracestate` only if valid.
/// Reads every value of a header: the extractor must give them all
/// (`get_all`), not just the first.
fn checked(extractor: &dyn Extractor) -> Option<Checked<'_>> {
    let sent = extractor.get_all(TRACEPARENT)?;
    let [traceparent] = sent[..] else {
        return None;
    };
    let tracestate = extractor
        .get_all(TRACESTATE)
        .map(|members| members.join(","))
        .filter(|tracestate| valid_tracestate(tracestate));
    Some(Checked {
        traceparent: valid_traceparent(traceparent)?,
        tracestate,
    })
}

/// The part of `value` this version reads, if it is a valid `traceparent`
/// (§3.2): `version-trace_id-parent_id-flags`, lowercase hex of exactly 2,
/// 32, 16 and 2 digits, neither id all zeros, version `ff` invalid. Version
/// `00` ends there; a later one may go on after a `-` (§4.3).
pub fn valid_traceparent(value: &str) -> Option<&str> {
    let known = value.get(..TRACEPARENT_CHARS)?;
    let rest = &value[TRACEPARENT_CHARS..];
    let fields: Vec<&str> = known.split('-').collect();
    let [version, trace_id, parent_id, flags] = fields[..] else {
        return None;
    };
    let hex = |field: &str, digits: usize| {
        field.len() == digits
            && field
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let zeros = |field: &str| field.bytes().all(|b| b == b'0');
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace_id, 32)
        && !zeros(trace_id)
        && hex(parent_id, 16)
        && !zeros(parent_id)
        && hex(flags, 2)
        && (rest.is_empty() || version != "00" && rest.starts_with('-'));
    valid.then_some(known)
}
// ANCHOR_END: checked

/// Is `value` a valid `tracestate` within the limits (§3.3): at most 512
/// characters, at most 32 comma-separated `key=value` members, no key
/// twice? Empty members and blanks around a member are allowed.
pub fn valid_tracestate(value: &str) -> bool {
    if value.len() > MAX_TRACESTATE_CHARS {
        return false;
    }
    let members: Vec<&str> = value
        .split(',')
        .map(|member| member.trim_matches([' ', '\t']))
        .filter(|member| !member.is_empty())
        .collect();
    let mut keys = Vec::with_capacity(members.len());
    for member in &members {
        let Some((key, value)) = member.split_once('=') else {
            return false;
        };
        if !valid_key(key) || !valid_value(value) || keys.contains(&key) {
            return false;
        }
        keys.push(key);
    }
    members.len() <= MAX_MEMBERS
}

/// A `tracestate` key: `lcalpha 0*255(lcalpha / DIGIT / "_" / "-" / "*" /
/// "/")`, or `tenant@system` with a tenant of up to 241 characters that
/// may start with a digit, and a system of up to 14.
fn valid_key(key: &str) -> bool {
    let rest = |s: &str| {
        s.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/'))
    };
    let starts = |s: &str, digit: bool| {
        s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || digit && b.is_ascii_digit())
    };
    match key.split_once('@') {
        None => key.len() <= 256 && starts(key, false) && rest(key),
        Some((tenant, system)) => {
            tenant.len() <= 241
                && starts(tenant, true)
                && rest(tenant)
                && system.len() <= 14
                && starts(system, false)
                && rest(system)
        }
    }
}

/// A `tracestate` value: 1 to 256 printable ASCII characters but `,` and
/// `=`, not ending in a space.
fn valid_value(value: &str) -> bool {
    (1..=256).contains(&value.len())
        && !value.ends_with(' ')
        && value
            .bytes()
            .all(|b| matches!(b, b' '..=b'~') && b != b',' && b != b'=')
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderName};
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_http::HeaderExtractor;

    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    /// The trace id and the tracestate `headers` continue, if any.
    fn extract(headers: &[(&str, &str)]) -> Option<(String, String)> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            map.append(name, value.parse().unwrap());
        }
        let context = W3cTraceContext::default().extract(&HeaderExtractor(&map));
        let span = context.span();
        let ids = span.span_context();
        ids.is_valid()
            .then(|| (ids.trace_id().to_string(), ids.trace_state().header()))
    }

    #[test]
    fn only_a_valid_traceparent_sent_once_is_continued() {
        let valid = format!("00-{TRACE}-{SPAN}-01");
        let cases: Vec<(&str, Vec<String>, bool)> = vec![
            ("valid", vec![valid.clone()], true),
            ("not sampled", vec![format!("00-{TRACE}-{SPAN}-00")], true),
            ("short ids", vec!["00-1-2-01".into()], false),
            ("signed", vec![format!("+0-{TRACE}-{SPAN}-01")], false),
            (
                "signed id",
                vec![format!("00-+{}-{SPAN}-01", &TRACE[1..])],
                false,
            ),
            (
                "1-digit version",
                vec![format!("0-{TRACE}-{SPAN}-01")],
                false,
            ),
            ("1-digit flags", vec![format!("00-{TRACE}-{SPAN}-1")], false),
            ("trailing dash", vec![format!("{valid}-")], false),
            ("version 00, more", vec![format!("{valid}-extra")], false),
            ("uppercase", vec![valid.to_uppercase()], false),
            (
                "uppercase id",
                vec![format!("00-{TRACE}-00F067AA0BA902B7-01")],
                false,
            ),
            (
                "zero trace id",
                vec![format!("00-{}-{SPAN}-01", "0".repeat(32))],
                false,
            ),
            (
                "zero span id",
                vec![format!("00-{TRACE}-{}-01", "0".repeat(16))],
                false,
            ),
            ("version ff", vec![format!("ff-{TRACE}-{SPAN}-01")], false),
            ("sent twice", vec![valid.clone(), valid.clone()], false),
            ("padded", vec![format!(" {valid}")], false),
            ("garbage", vec!["garbage".into()], false),
            (
                "future version",
                vec![format!("01-{TRACE}-{SPAN}-01-extra")],
                true,
            ),
            (
                "future version",
                vec![format!("cc-{TRACE}-{SPAN}-01")],
                true,
            ),
            (
                "future, no dash",
                vec![format!("01-{TRACE}-{SPAN}-01extra")],
                false,
            ),
        ];
        for (case, values, continued) in cases {
            let headers: Vec<(&str, &str)> =
                values.iter().map(|v| ("traceparent", v.as_str())).collect();
            let trace = extract(&headers).map(|(trace, _)| trace);
            let expected = continued.then(|| TRACE.to_owned());
            assert_eq!(trace, expected, "{case}: {values:?}");
        }
    }

    #[test]
    fn a_tracestate_is_kept_only_when_valid_and_within_limits() {
        let traceparent = format!("00-{TRACE}-{SPAN}-01");
        let member = |i: usize| format!("k{i}=v{i}");
        let members = |n: usize| (0..n).map(member).collect::<Vec<_>>().join(",");
        let huge = |n: usize| {
            let big = |i: usize| format!("{}{i:03}={}", "k".repeat(253), "v".repeat(256));
            (0..n).map(big).collect::<Vec<_>>().join(",")
        };
        let thirty_two = members(32);
        let cases: Vec<(&str, Vec<String>, &str)> = vec![
            ("one", vec!["congo=t61rcWkgMzE".into()], "congo=t61rcWkgMzE"),
            ("two headers", vec!["a=1".into(), "b=2".into()], "a=1,b=2"),
            ("tenant", vec!["t@sys=1, b=2".into()], "t@sys=1,b=2"),
            ("32 members", vec![thirty_two.clone()], &thirty_two),
            ("33 members", vec![members(33)], ""),
            ("513 chars", vec![format!("a={}", "v".repeat(511))], ""),
            ("31 of 512", vec![huge(31)], ""),
            ("a key twice", vec!["a=1,a=2".into()], ""),
            ("uppercase key", vec!["A=1".into()], ""),
            ("no value", vec!["a=".into()], ""),
            ("no equals", vec!["a".into()], ""),
        ];
        for (case, values, kept) in cases {
            let mut headers = vec![("traceparent", traceparent.as_str())];
            headers.extend(values.iter().map(|v| ("tracestate", v.as_str())));
            let (trace, state) = extract(&headers).expect("the traceparent is valid");
            assert_eq!(trace, TRACE, "{case}");
            assert_eq!(state, kept, "{case}");
        }
    }
}
