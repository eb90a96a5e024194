//! What the kernel says each process used: CPU time from
//! `/proc/<pid>/stat`, peak resident memory from `/proc/<pid>/status`.

use std::collections::BTreeMap;

use anyhow::Context;

/// Clock ticks per second, the unit of `utime` and `stime`.
pub fn clock_ticks() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        _ => 100.0,
    }
}

/// The fields of `/proc/<pid>/stat` that matter here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub ppid: u32,
    /// User and system time, in clock ticks.
    pub utime: u64,
    pub stime: u64,
}

/// Parses a `stat` line. The command name, in parentheses, may hold spaces
/// and parentheses itself, so the fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state (3), ppid (4), ... utime (14), stime (15).
    Some(Stat {
        ppid: fields.get(1)?.parse().ok()?,
        utime: fields.get(11)?.parse().ok()?,
        stime: fields.get(12)?.parse().ok()?,
    })
}

/// `VmHWM`, the peak resident set size, in bytes.
pub fn parse_peak_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn stat(pid: u32) -> anyhow::Result<Stat> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat(&text).with_context(|| format!("parsing {path}"))
}

/// CPU seconds (user + system) the process has used so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = stat(pid)?;
    Ok((stat.utime + stat.stime) as f64 / clock_ticks())
}

/// CPU seconds (user + system) this process has used so far.
pub fn own_cpu_seconds() -> anyhow::Result<f64> {
    cpu_seconds(std::process::id())
}

/// CPU seconds the whole machine has spent in user and system mode so far
/// (all CPUs), from the `cpu` line of `/proc/stat`.
pub fn machine_busy_seconds() -> anyhow::Result<f64> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse_machine_busy(&text)
        .map(|ticks| ticks as f64 / clock_ticks())
        .context("no cpu line in /proc/stat")
}

/// user + nice + system of the `cpu` line, in clock ticks.
pub fn parse_machine_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(3)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    (fields.len() == 3).then(|| fields.iter().sum())
}

/// The peak resident set size of the process so far, in bytes.
pub fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_peak_rss(&text).with_context(|| format!("no VmHWM in {path}"))
}

/// The role of a child of the `all` launcher, from its command line: the
/// service subcommand (`gateway`, `logic`, `task`) or `nats-server`.
pub fn role(cmdline: &[u8]) -> Option<String> {
    let mut args = cmdline
        .split(|b| *b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned());
    let program = args.next()?;
    if program.rsplit('/').next() == Some("nats-server") {
        return Some("nats-server".to_owned());
    }
    let subcommand = args.next()?;
    ["gateway", "logic", "task"]
        .contains(&subcommand.as_str())
        .then_some(subcommand)
}

/// The launcher's children by role, found by scanning `/proc` for
/// processes whose parent it is.
pub fn children(launcher: u32) -> anyhow::Result<BTreeMap<String, u32>> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit between the listing and the read: skip it.
        let Ok(stat) = stat(pid) else { continue };
        if stat.ppid != launcher {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if let Some(role) = role(&cmdline) {
            found.insert(role, pid);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let line = "4242 (tokio (rt) x) S 4200 4242 4200 0 -1 4194560 1520 0 0 0 \
                    731 129 0 0 20 0 9 0 123456 1234567 890 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                ppid: 4200,
                utime: 731,
                stime: 129
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn peak_rss_is_vm_hwm_in_bytes() {
        let status =
            "Name:\tgateway\nVmPeak:\t  900000 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   18000 kB\n";
        assert_eq!(parse_peak_rss(status), Some(20480 * 1024));
        assert_eq!(parse_peak_rss("Name:\tx\n"), None);
    }

    #[test]
    fn machine_busy_time_is_user_nice_and_system() {
        let stat =
            "cpu  715304 167967 178398 484254 8301 0 5202 2640 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        assert_eq!(parse_machine_busy(stat), Some(715_304 + 167_967 + 178_398));
        assert_eq!(parse_machine_busy("intr 1\n"), None);
        assert!(machine_busy_seconds().unwrap() > 0.0);
    }

    #[test]
    fn roles_come_from_the_command_line() {
        assert_eq!(
            role(b"/t/release/orders-final\0gateway\0--gateway-http=127.0.0.1:1\0"),
            Some("gateway".to_owned())
        );
        assert_eq!(
            role(b"/x/.tools/bin/nats-server\0-js\0-p\0-1\0"),
            Some("nats-server".to_owned())
        );
        assert_eq!(role(b"/t/release/orders-final\0all\0"), None);
        assert_eq!(role(b""), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        assert!(own_cpu_seconds().unwrap() >= 0.0);
        assert!(peak_rss(std::process::id()).unwrap() > 0);
        assert!(clock_ticks() > 0.0);
    }
}
