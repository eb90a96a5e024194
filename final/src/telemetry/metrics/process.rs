//! The process's own numbers, as Prometheus metrics: CPU time, memory, file
//! descriptors, threads and start time, under the standard `process_*`
//! names the usual dashboards read.
//!
//! The `prometheus` crate's process collector reads them all from `/proc`,
//! but it counts CPU time in whole seconds (clock ticks divided by ticks per
//! second, in integers): a service that uses a tenth of a core shows a
//! counter that stands still for ten seconds and then jumps by one, and
//! `rate(process_cpu_seconds_total[1m])` reads 0 or steps of 1/60 of a core.
//! So [`ProcessCollector`] keeps the crate's collector for every other
//! family and counts CPU time itself, with `getrusage`, to the microsecond.

use std::sync::Mutex;

use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::TimeVal;
use prometheus::Counter;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

/// The family this collector counts itself, and the crate's collector does not.
const CPU_SECONDS: &str = "process_cpu_seconds_total";

/// `process_cpu_seconds_total` (user and system CPU time, in seconds, to the
/// microsecond), and on Linux the crate's other `process_*` families:
/// `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
/// `process_open_fds`, `process_max_fds`, `process_threads`,
/// `process_start_time_seconds`.
pub struct ProcessCollector {
    cpu_seconds: Counter,
    /// Reads `/proc/self`, which exists on Linux only.
    #[cfg(target_os = "linux")]
    others: prometheus::process_collector::ProcessCollector,
    /// Scrapes may overlap; one at a time brings the counter up to date.
    scrape: Mutex<()>,
}

impl ProcessCollector {
    /// Reads the process it runs in.
    pub fn for_self() -> Self {
        Self {
            cpu_seconds: Counter::new(
                CPU_SECONDS,
                "Total user and system CPU time spent in seconds.",
            )
            .expect("a valid counter"),
            #[cfg(target_os = "linux")]
            others: prometheus::process_collector::ProcessCollector::for_self(),
            scrape: Mutex::new(()),
        }
    }

    /// The crate's families, without its CPU counter.
    fn others(&self) -> Vec<&Desc> {
        #[cfg(target_os = "linux")]
        let descs = self.others.desc();
        #[cfg(not(target_os = "linux"))]
        let descs: Vec<&Desc> = Vec::new();
        descs
            .into_iter()
            .filter(|desc| desc.fq_name != CPU_SECONDS)
            .collect()
    }
}

/// User and system CPU time used so far by `who`, in seconds.
fn cpu_seconds(who: UsageWho) -> f64 {
    let seconds = |time: TimeVal| time.tv_sec() as f64 + time.tv_usec() as f64 / 1e6;
    // Of the calling process or thread, it cannot fail.
    getrusage(who)
        .map(|usage| seconds(usage.user_time()) + seconds(usage.system_time()))
        .unwrap_or_default()
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.cpu_seconds.desc();
        descs.extend(self.others());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one_at_a_time = self.scrape.lock().unwrap();
        // A Prometheus counter only goes up: add what is new since the last scrape.
        let new = cpu_seconds(UsageWho::RUSAGE_SELF) - self.cpu_seconds.get();
        self.cpu_seconds.inc_by(new.max(0.0));
        let mut families = self.cpu_seconds.collect();
        #[cfg(target_os = "linux")]
        families.extend(
            self.others
                .collect()
                .into_iter()
                .filter(|family| family.name() != CPU_SECONDS),
        );
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU time the calling thread has used, in seconds.
    fn thread_cpu_seconds() -> f64 {
        cpu_seconds(UsageWho::RUSAGE_THREAD)
    }

    /// The value of `process_cpu_seconds_total` after a collection, as a
    /// scrape would show it.
    fn counted(collector: &ProcessCollector) -> f64 {
        collector.collect();
        collector.cpu_seconds.get()
    }

    #[test]
    fn cpu_time_is_counted_to_a_fraction_of_a_second() {
        let collector = ProcessCollector::for_self();
        let process_before = cpu_seconds(UsageWho::RUSAGE_SELF);
        let before = counted(&collector);
        // A known amount of work: 0.2 s of this thread's CPU time, read from
        // the kernel's account of the thread, whatever the wall clock says.
        let started = thread_cpu_seconds();
        let mut spin = 0u64;
        while thread_cpu_seconds() - started < 0.2 {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let burned = thread_cpu_seconds() - started;
        let after = counted(&collector);
        let process_after = cpu_seconds(UsageWho::RUSAGE_SELF);

        // At least what this thread burned, at most what the whole process
        // used around the two scrapes (other threads of the test process may
        // run meanwhile). Counted in whole seconds, it would have moved by 0,
        // or by 1 across a second's boundary: outside both bounds.
        let counted = after - before;
        let used = process_after - process_before;
        assert!(
            counted >= burned - 0.001,
            "the counter moved by {counted} s while this thread alone burned {burned} s"
        );
        assert!(
            counted <= used + 0.001,
            "the counter moved by {counted} s while the process used {used} s"
        );
    }

    #[test]
    fn the_other_process_families_are_kept_and_cpu_is_counted_once() {
        let collector = ProcessCollector::for_self();
        let names: Vec<String> = (collector.collect().iter())
            .map(|family| family.name().to_owned())
            .collect();
        assert_eq!(names.iter().filter(|n| *n == CPU_SECONDS).count(), 1);
        #[cfg(target_os = "linux")]
        for family in [
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_threads",
        ] {
            assert!(
                names.iter().any(|n| n == family),
                "{family} missing: {names:?}"
            );
        }
        // A registry refuses two descriptions of one name.
        let registry = prometheus::Registry::new();
        registry.register(Box::new(collector)).unwrap();
    }
}
