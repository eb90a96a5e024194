//! Faults to switch on, for the book's incidents: each a failure that real
//! systems have, off by default, that one or more pillars reveal. Only
//! `final` has them; the chapters stay free of fault code.
//!
//! Each fault lives in one service and has one setting, a number, 0 when
//! off ([`Fault`] lists them with their units and ranges). They are set at
//! start by `--faults` (`FAULTS=slow_writes=200,error_burst=0.3`: every
//! process reads the list and takes its own faults), and at run time on the
//! service's admin port, never the public one:
//!
//! ```text
//! GET /admin/faults                  every fault of the service, with its setting
//! PUT /admin/faults/{name}  {"value": 200}   sets it; 0 switches it off
//! ```
//!
//! An unknown name, a fault of another service or a value out of range is
//! refused with 400 and a JSON error, and nothing changes. Every switch is
//! logged, counted in the metric `fault_setting{fault}` and marked on every
//! span the service makes from then on (`app.faults.active`), so that the
//! evidence of an incident says, honestly, that it was staged.

use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use orders::topology::Service;
use serde_json::{Value, json};

use crate::telemetry::Telemetry;

// ANCHOR: faults
/// A fault that can be switched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// logic: milliseconds added to each INSERT of an order, 0 to 10,000.
    SlowWrites,
    /// logic: the share of `CreateOrder` calls answered `Unavailable`
    /// before anything is stored, 0 to 1.
    ErrorBurst,
    /// logic: 1 publishes every order without its trace context (no
    /// `traceparent` in the message's headers), 0 with it.
    LostContext,
    /// task: the share of products whose packing costs
    /// [`HOG_FACTOR`] times more CPU, 0 to 1. The products are chosen by
    /// their id, so the same ones stay slow.
    CpuHog,
    /// gateway: KiB kept, and never freed while on, for each order
    /// accepted, 0 to 1,024. Switched off, it is freed.
    MemoryLeak,
    /// gateway: the share of orders whose results task reports and the
    /// gateway refuses with `Unavailable`, 0 to 1. Chosen by order id, so
    /// every delivery of such an order fails, until the dead letters.
    FailingCallbacks,
}

/// How much more the packing of a hogged product costs.
pub const HOG_FACTOR: u32 = 500;
// ANCHOR_END: faults

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::SlowWrites,
        Fault::ErrorBurst,
        Fault::LostContext,
        Fault::CpuHog,
        Fault::MemoryLeak,
        Fault::FailingCallbacks,
    ];

    /// Its name in `--faults`, the admin path and the metric's label.
    pub fn name(self) -> &'static str {
        match self {
            Fault::SlowWrites => "slow_writes",
            Fault::ErrorBurst => "error_burst",
            Fault::LostContext => "lost_context",
            Fault::CpuHog => "cpu_hog",
            Fault::MemoryLeak => "memory_leak",
            Fault::FailingCallbacks => "failing_callbacks",
        }
    }

    /// The service it acts in.
    pub fn service(self) -> Service {
        match self {
            Fault::SlowWrites | Fault::ErrorBurst | Fault::LostContext => Service::Logic,
            Fault::CpuHog => Service::Task,
            Fault::MemoryLeak | Fault::FailingCallbacks => Service::Gateway,
        }
    }

    /// What its value means, for errors and `GET /admin/faults`.
    pub fn unit(self) -> &'static str {
        match self {
            Fault::SlowWrites => "milliseconds added to each insert",
            Fault::ErrorBurst => "share of CreateOrder calls answered Unavailable",
            Fault::LostContext => "1: orders published without trace context",
            Fault::CpuHog => "share of products whose packing is slow",
            Fault::MemoryLeak => "KiB kept for each order accepted",
            Fault::FailingCallbacks => "share of orders whose callback is refused",
        }
    }

    /// The largest value it takes; the smallest is 0, off.
    fn max(self) -> f64 {
        match self {
            Fault::SlowWrites => 10_000.0,
            Fault::MemoryLeak => 1_024.0,
            Fault::ErrorBurst | Fault::LostContext | Fault::CpuHog | Fault::FailingCallbacks => 1.0,
        }
    }

    /// Checks `value` against the fault's range (and, for `lost_context`,
    /// that it is 0 or 1).
    pub fn check(self, value: f64) -> Result<f64, FaultError> {
        let in_range = value.is_finite() && (0.0..=self.max()).contains(&value);
        let whole = self != Fault::LostContext || value == 0.0 || value == 1.0;
        if in_range && whole {
            // -0 is off, and shown as 0.
            Ok(if value == 0.0 { 0.0 } else { value })
        } else {
            Err(FaultError::BadValue {
                fault: self,
                value: value.to_string().chars().take(64).collect(),
            })
        }
    }
}

impl FromStr for Fault {
    type Err = FaultError;

    fn from_str(name: &str) -> Result<Self, FaultError> {
        Fault::ALL
            .into_iter()
            .find(|fault| fault.name() == name)
            .ok_or_else(|| FaultError::Unknown(name.chars().take(64).collect()))
    }
}

/// Why a fault could not be set. Nothing changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultError {
    #[error("no fault is named {0:?}; the faults are {names}", names = names())]
    Unknown(String),
    #[error(
        "{fault} takes a number from 0 to {max} ({unit}), not {value}",
        fault = fault.name(),
        max = fault.max(),
        unit = fault.unit()
    )]
    BadValue { fault: Fault, value: String },
    #[error(
        "{fault} is a fault of {owner}: set it on {owner}'s admin port",
        fault = fault.name(),
        owner = fault.service()
    )]
    OtherService { fault: Fault },
    #[error("expected name=value, as slow_writes=200, not {0:?}")]
    Malformed(String),
    #[error("expected a JSON body {{\"value\": <number>}}")]
    BadBody,
}

fn names() -> String {
    Fault::ALL.map(Fault::name).join(", ")
}

/// A list of settings, `name=value,name=value`, as `--faults` takes it.
/// Parsed and checked whole: one bad entry refuses the list.
pub fn parse_list(list: &str) -> Result<Vec<(Fault, f64)>, FaultError> {
    list.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (name, value) = entry
                .split_once('=')
                .ok_or_else(|| FaultError::Malformed(entry.chars().take(64).collect()))?;
            let fault: Fault = name.trim().parse()?;
            let value = value
                .trim()
                .parse::<f64>()
                .map_err(|_| FaultError::BadValue {
                    fault,
                    value: value.chars().take(64).collect(),
                })?;
            Ok((fault, fault.check(value)?))
        })
        .collect()
}

/// The faults of one service process, switched at run time. Cheap to
/// clone: every clone shares the settings.
#[derive(Clone)]
pub struct Faults {
    inner: Arc<Inner>,
}

struct Inner {
    service: Service,
    /// The setting of each fault of [`Fault::ALL`], as `f64` bits.
    values: [AtomicU64; Fault::ALL.len()],
    /// What `memory_leak` has kept.
    leaked: Mutex<Vec<Box<[u8]>>>,
    telemetry: Telemetry,
}

impl Faults {
    /// The faults of `service`, set from `settings` (every service's, as
    /// `--faults` lists them: this one takes its own). Reports each in
    /// `telemetry`, at 0 when off.
    pub fn new(service: Service, settings: &[(Fault, f64)], telemetry: Telemetry) -> Faults {
        let faults = Faults {
            inner: Arc::new(Inner {
                service,
                values: Default::default(),
                leaked: Mutex::default(),
                telemetry,
            }),
        };
        for fault in faults.own() {
            faults.inner.telemetry.fault_set(fault.name(), 0.0);
        }
        for &(fault, value) in settings {
            if fault.service() == service && value != 0.0 {
                let _ = faults.set(fault, value);
            }
        }
        faults
    }

    /// The faults that act in this service.
    fn own(&self) -> impl Iterator<Item = Fault> + '_ {
        Fault::ALL
            .into_iter()
            .filter(|fault| fault.service() == self.inner.service)
    }

    /// Its place in [`Fault::ALL`], which lists the faults in the order
    /// they are declared (a test checks it): no search on the hot path.
    fn slot(fault: Fault) -> usize {
        fault as usize
    }

    /// The setting of `fault`, 0 when off.
    pub fn value(&self, fault: Fault) -> f64 {
        f64::from_bits(self.inner.values[Self::slot(fault)].load(Ordering::Relaxed))
    }

    /// Sets `fault` to `value`, logs it and reports it in the telemetry.
    ///
    /// Errors: a fault of another service, or a value out of its range;
    /// nothing changes then.
    pub fn set(&self, fault: Fault, value: f64) -> Result<(), FaultError> {
        if fault.service() != self.inner.service {
            return Err(FaultError::OtherService { fault });
        }
        let value = fault.check(value)?;
        self.inner.values[Self::slot(fault)].store(value.to_bits(), Ordering::Relaxed);
        if fault == Fault::MemoryLeak && value == 0.0 {
            self.inner.leaked.lock().unwrap().clear();
        }
        let telemetry = &self.inner.telemetry;
        telemetry.fault_set(fault.name(), value);
        let active: Vec<String> = self
            .own()
            .filter(|f| self.value(*f) != 0.0)
            .map(|f| format!("{}={}", f.name(), self.value(f)))
            .collect();
        telemetry.faults_active(&active.join(","));
        tracing::info_span!("faults").in_scope(|| {
            if value == 0.0 {
                tracing::warn!(fault = fault.name(), "fault switched off");
            } else {
                tracing::warn!(
                    fault = fault.name(),
                    value,
                    unit = fault.unit(),
                    "fault switched on"
                );
            }
        });
        Ok(())
    }

    /// Every fault of this service with its setting, as JSON.
    fn describe(&self) -> Value {
        let faults: Vec<Value> = self
            .own()
            .map(|fault| {
                json!({ "name": fault.name(), "value": self.value(fault), "unit": fault.unit() })
            })
            .collect();
        json!({ "service": self.inner.service.name(), "faults": faults })
    }

    // The faults' effects, each called where its failure happens.

    /// `slow_writes`: waits its setting, in milliseconds.
    pub async fn slow_write(&self) {
        let millis = self.value(Fault::SlowWrites);
        if millis > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(millis / 1000.0)).await;
        }
    }

    /// `error_burst`: does this call fail? A fresh draw per call.
    pub fn burst_error(&self) -> bool {
        let share = self.value(Fault::ErrorBurst);
        share > 0.0 && rand::random::<f64>() < share
    }

    /// `lost_context`: is the trace context left out of messages?
    pub fn context_lost(&self) -> bool {
        self.value(Fault::LostContext) != 0.0
    }

    /// `cpu_hog`: how many times to pack an order of `product_id`, 1 unless
    /// the product is one the fault chose.
    pub fn packing_rounds(&self, product_id: &str) -> u32 {
        if chosen(product_id, self.value(Fault::CpuHog)) {
            HOG_FACTOR
        } else {
            1
        }
    }

    /// `memory_leak`: keeps its setting in KiB, for as long as it is on.
    pub fn leak(&self) {
        let kib = self.value(Fault::MemoryLeak) as usize;
        if kib > 0 {
            // Written, so that the pages are really resident.
            let kept = vec![0xA5u8; kib * 1024].into_boxed_slice();
            self.inner.leaked.lock().unwrap().push(kept);
        }
    }

    /// `failing_callbacks`: is the callback of `order_id` refused?
    pub fn callback_fails(&self, order_id: &str) -> bool {
        chosen(order_id, self.value(Fault::FailingCallbacks))
    }

    /// The admin routes: `GET /admin/faults`, `PUT /admin/faults/{name}`.
    pub fn admin_routes(&self) -> Router {
        Router::new()
            .route("/admin/faults", get(list))
            .route("/admin/faults/{name}", get(list).put(switch))
            .with_state(self.clone())
    }
}

/// Is `key` among the `share` of keys the fault picks? The same key is
/// always picked or always not, for a given share.
fn chosen(key: &str, share: f64) -> bool {
    if share <= 0.0 {
        return false;
    }
    if share >= 1.0 {
        return true;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() as f64 / u64::MAX as f64) < share
}

async fn list(State(faults): State<Faults>) -> Response {
    axum::Json(faults.describe()).into_response()
}

async fn switch(State(faults): State<Faults>, Path(name): Path<String>, body: Bytes) -> Response {
    let set = || -> Result<(), FaultError> {
        let fault: Fault = name.parse()?;
        let value = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|body| body.get("value").cloned())
            .ok_or(FaultError::BadBody)?;
        let value = value.as_f64().ok_or_else(|| FaultError::BadValue {
            fault,
            value: value.to_string().chars().take(64).collect(),
        })?;
        faults.set(fault, value)
    };
    match set() {
        Ok(()) => axum::Json(faults.describe()).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_parsed_whole_and_checked() {
        assert_eq!(
            parse_list("slow_writes=200, error_burst=0.3").unwrap(),
            vec![(Fault::SlowWrites, 200.0), (Fault::ErrorBurst, 0.3)]
        );
        assert_eq!(parse_list("").unwrap(), vec![]);
        let off = parse_list("slow_writes=-0").unwrap();
        assert!(off[0].1 == 0.0 && off[0].1.is_sign_positive(), "{off:?}");
        let huge = parse_list("slow_writes=1e308").unwrap_err().to_string();
        assert!(huge.len() < 200, "{huge}");
        let refused = [
            ("slow_writes=200,nope=1", "no fault is named \"nope\""),
            ("slow_writes", "expected name=value"),
            ("error_burst=1.5", "error_burst takes a number from 0 to 1"),
            ("error_burst=-0.1", "from 0 to 1"),
            ("slow_writes=NaN", "from 0 to 10000"),
            ("slow_writes=inf", "from 0 to 10000"),
            (
                "lost_context=0.5",
                "lost_context takes a number from 0 to 1",
            ),
            ("memory_leak=lots", "memory_leak takes a number"),
        ];
        for (list, error) in refused {
            let e = parse_list(list).unwrap_err().to_string();
            assert!(e.contains(error), "{list}: {e}");
        }
    }

    #[test]
    fn every_fault_is_found_by_its_name() {
        for fault in Fault::ALL {
            assert_eq!(fault.name().parse::<Fault>(), Ok(fault));
        }
    }

    #[test]
    fn every_fault_sits_at_its_slot() {
        for (slot, fault) in Fault::ALL.into_iter().enumerate() {
            assert_eq!(Faults::slot(fault), slot, "{fault:?}");
        }
    }

    #[test]
    fn a_share_picks_the_same_keys_and_about_its_share() {
        let keys: Vec<String> = (0..10_000).map(|i| format!("order-{i}")).collect();
        let picked = keys.iter().filter(|k| chosen(k, 0.3)).count();
        assert!((2_700..=3_300).contains(&picked), "{picked}");
        assert!(keys.iter().all(|k| chosen(k, 0.3) == chosen(k, 0.3)));
        assert!(!keys.iter().any(|k| chosen(k, 0.0)));
        assert!(keys.iter().all(|k| chosen(k, 1.0)));
    }
}
