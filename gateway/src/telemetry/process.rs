//! The process's own metrics, read from `/proc/self` at each scrape (Linux;
//! elsewhere none), under the names every Prometheus client library uses:
//! `process_cpu_seconds_total`, `process_open_fds`, `process_max_fds`,
//! `process_resident_memory_bytes`, `process_virtual_memory_bytes`. One
//! connection holds one descriptor, so `process_open_fds` against
//! `process_max_fds` is how near a node is to refusing connections.

use std::fmt::Write as _;

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`,
/// fixed at 100 in Linux's user-space ABI).
#[cfg(target_os = "linux")]
const USER_HZ: f64 = 100.0;

/// The process's metrics, as Prometheus text, appended to `out`.
pub(crate) fn render(out: &mut String) {
    #[cfg(target_os = "linux")]
    for (name, kind, help, value) in linux::read() {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = out;
}

#[cfg(target_os = "linux")]
mod linux {
    use super::USER_HZ;

    /// Each metric that could be read: name, type, help, value.
    pub(super) fn read() -> Vec<(&'static str, &'static str, &'static str, f64)> {
        let mut metrics = Vec::with_capacity(5);
        if let Some(cpu) = cpu_seconds() {
            metrics.push((
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time spent, seconds",
                cpu,
            ));
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            // The directory's own descriptor is among the entries.
            let open = fds.count().saturating_sub(1);
            metrics.push((
                "process_open_fds",
                "gauge",
                "Open file descriptors",
                open as f64,
            ));
        }
        if let Some(max) = max_fds() {
            metrics.push((
                "process_max_fds",
                "gauge",
                "Limit of open file descriptors (soft limit)",
                max,
            ));
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        for (field, name, help) in [
            (
                "VmRSS:",
                "process_resident_memory_bytes",
                "Resident memory, bytes",
            ),
            (
                "VmSize:",
                "process_virtual_memory_bytes",
                "Virtual memory, bytes",
            ),
        ] {
            if let Some(kib) = kib_field(&status, field) {
                metrics.push((name, "gauge", help, kib * 1024.0));
            }
        }
        metrics
    }

    /// utime + stime of `/proc/self/stat`, seconds.
    fn cpu_seconds() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) is in parentheses and may hold spaces:
        // the fields after its closing parenthesis start at field 3 (state).
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace();
        // utime and stime are fields 14 and 15: the 12th and 13th after it.
        let utime: f64 = fields.nth(11)?.parse().ok()?;
        let stime: f64 = fields.next()?.parse().ok()?;
        Some((utime + stime) / USER_HZ)
    }

    /// The soft limit of `Max open files` in `/proc/self/limits`.
    fn max_fds() -> Option<f64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        let soft = line["Max open files".len()..].split_whitespace().next()?;
        soft.parse().ok()
    }

    /// The value of `field` (`VmRSS:`) in `/proc/self/status`, in KiB.
    fn kib_field(status: &str, field: &str) -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(field))?;
        line[field.len()..].split_whitespace().next()?.parse().ok()
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn reads_the_process() {
            let metrics = super::read();
            let value = |name: &str| {
                metrics
                    .iter()
                    .find(|m| m.0 == name)
                    .unwrap_or_else(|| panic!("{name} missing"))
                    .3
            };
            assert!(value("process_open_fds") >= 3.0);
            assert!(value("process_max_fds") >= value("process_open_fds"));
            assert!(value("process_resident_memory_bytes") > 1_000_000.0);
            assert!(
                value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes")
            );
            assert!(value("process_cpu_seconds_total") >= 0.0);
        }
    }
}
