//! Samples the server processes under test from `/proc`: CPU time
//! (utime + stime from `/proc/<pid>/stat`) and resident memory (`VmRSS`
//! from `/proc/<pid>/status`); and the whole machine's CPU time
//! (`/proc/stat`), to tell whether other work competed with the run. The
//! parsers are pure and unit-tested.

use std::fs;

use anyhow::{Context, Result, bail};
use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat` times. Linux reports them
/// in USER_HZ, which is 100 on every architecture it exports to user space.
const TICKS_PER_SEC: f64 = 100.0;

/// One reading of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProcSample {
    pub pid: u32,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_kib: u64,
}

/// Parses utime + stime out of the text of `/proc/<pid>/stat`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: the
    // fields we want are counted from after its closing parenthesis.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_ascii_whitespace();
    // After ")": state is field 3, so utime (14) and stime (15) are the
    // 12th and 13th fields here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The machine's CPU time by kind, in clock ticks (first line of `/proc/stat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MachineCpu {
    /// user + system + irq + softirq + steal, without niced time.
    pub busy: u64,
    /// Time of niced processes (on a shared machine: other people's builds).
    pub nice: u64,
    /// idle + iowait.
    pub idle: u64,
    /// Time the hypervisor ran something else while this machine's CPUs
    /// wanted to run (included in `busy`): on a shared host it makes runs
    /// of one comparison noisier than their CPU times show.
    pub steal: u64,
}

/// Parses the aggregate `cpu` line of `/proc/stat`.
pub fn parse_proc_stat(stat: &str) -> Option<MachineCpu> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    if v.len() < 4 {
        return None;
    }
    Some(MachineCpu {
        busy: at(0) + at(2) + at(5) + at(6) + at(7),
        nice: at(1),
        idle: at(3) + at(4),
        steal: at(7),
    })
}

/// Parses `VmRSS` (KiB) out of the text of `/proc/<pid>/status`.
pub fn parse_status_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn sample(pid: u32) -> Result<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("server process {pid} is not running"))?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("server process {pid} is not running"))?;
    let Some(cpu_ticks) = parse_stat_cpu_ticks(&stat) else {
        bail!("cannot read CPU times of process {pid}");
    };
    let Some(rss_kib) = parse_status_rss_kib(&status) else {
        bail!("cannot read VmRSS of process {pid}");
    };
    Ok(ProcSample {
        pid,
        cpu_ticks,
        rss_kib,
    })
}

/// Samples every process of the set at once.
#[derive(Debug, Clone, Default)]
pub struct Sampler {
    pids: Vec<u32>,
}

/// A reading of the whole set.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    pub processes: Vec<ProcSample>,
    /// This load generator.
    pub generator: Option<ProcSample>,
    pub machine: MachineCpu,
}

/// Average cores spent per kind of CPU time over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct MachineLoad {
    pub busy_cores: f64,
    pub nice_cores: f64,
    pub idle_cores: f64,
    pub steal_cores: f64,
}

impl Snapshot {
    /// How the machine's CPUs were used between `earlier` and now.
    pub fn machine_load_since(&self, earlier: &Snapshot, window_secs: f64) -> MachineLoad {
        let cores = |a: u64, b: u64| {
            if window_secs > 0.0 {
                a.saturating_sub(b) as f64 / TICKS_PER_SEC / window_secs
            } else {
                0.0
            }
        };
        MachineLoad {
            busy_cores: cores(self.machine.busy, earlier.machine.busy),
            nice_cores: cores(self.machine.nice, earlier.machine.nice),
            idle_cores: cores(self.machine.idle, earlier.machine.idle),
            steal_cores: cores(self.machine.steal, earlier.machine.steal),
        }
    }

    pub fn cpu_ticks(&self) -> u64 {
        self.processes.iter().map(|p| p.cpu_ticks).sum()
    }

    pub fn rss_kib(&self) -> u64 {
        self.processes.iter().map(|p| p.rss_kib).sum()
    }

    /// CPU seconds used between `earlier` and this snapshot.
    pub fn cpu_secs_since(&self, earlier: &Snapshot) -> f64 {
        self.cpu_ticks().saturating_sub(earlier.cpu_ticks()) as f64 / TICKS_PER_SEC
    }

    /// Cores this load generator kept busy between `earlier` and now.
    pub fn generator_cores_since(&self, earlier: &Snapshot, window_secs: f64) -> f64 {
        match (self.generator, earlier.generator) {
            (Some(a), Some(b)) if window_secs > 0.0 => {
                a.cpu_ticks.saturating_sub(b.cpu_ticks) as f64 / TICKS_PER_SEC / window_secs
            }
            _ => 0.0,
        }
    }

    /// RSS change since `earlier`, in KiB (negative when memory was freed).
    pub fn rss_delta_kib(&self, earlier: &Snapshot) -> i64 {
        self.rss_kib() as i64 - earlier.rss_kib() as i64
    }
}

impl Sampler {
    /// Checks every pid is readable now, so a typo fails before the run.
    pub fn new(pids: Vec<u32>) -> Result<Self> {
        for &pid in &pids {
            sample(pid)?;
        }
        Ok(Self { pids })
    }

    /// A snapshot, or `None` when no pid was given. A process that died is
    /// an error: its figures would be meaningless.
    pub fn snapshot(&self) -> Result<Option<Snapshot>> {
        if self.pids.is_empty() {
            return Ok(None);
        }
        let processes = self
            .pids
            .iter()
            .map(|&p| sample(p))
            .collect::<Result<_>>()?;
        let machine = fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse_proc_stat(&s))
            .unwrap_or_default();
        Ok(Some(Snapshot {
            processes,
            generator: sample(std::process::id()).ok(),
            machine,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "4242 (node server (x)) S 1 4242 4242 0 -1 4194304 1500 0 0 0 \
                    250 75 0 0 20 0 11 0 123456 1073741824 12000 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn parses_machine_cpu() {
        let stat = "cpu  100 50 20 1000 5 1 2 3 0 0\ncpu0 50 25 10 500 2 0 1 1 0 0\n";
        assert_eq!(
            parse_proc_stat(stat),
            Some(MachineCpu {
                busy: 100 + 20 + 1 + 2 + 3,
                nice: 50,
                idle: 1005,
                steal: 3,
            })
        );
        assert_eq!(parse_proc_stat("intr 1 2"), None);
        let a = Snapshot::default();
        let b = Snapshot {
            machine: MachineCpu {
                busy: 200,
                nice: 100,
                idle: 0,
                steal: 50,
            },
            ..Snapshot::default()
        };
        let load = b.machine_load_since(&a, 2.0);
        assert_eq!(
            (load.busy_cores, load.nice_cores, load.steal_cores),
            (1.0, 0.5, 0.25)
        );
    }

    #[test]
    fn parses_status_rss() {
        let status = "Name:\tnode\nVmPeak:\t  999 kB\nVmRSS:\t   51234 kB\nThreads:\t11\n";
        assert_eq!(parse_status_rss_kib(status), Some(51234));
        assert_eq!(parse_status_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn samples_this_process() {
        let me = std::process::id();
        let s = sample(me).unwrap();
        assert_eq!(s.pid, me);
        assert!(s.rss_kib > 0);
        let sampler = Sampler::new(vec![me]).unwrap();
        let a = sampler.snapshot().unwrap().unwrap();
        let b = sampler.snapshot().unwrap().unwrap();
        assert!(b.cpu_secs_since(&a) >= 0.0);
        assert!(Sampler::default().snapshot().unwrap().is_none());
        assert!(Sampler::new(vec![u32::MAX]).is_err());
    }
}
