//! `loadtest table`: one side-by-side Markdown table, with ratios, from the
//! JSON reports of a comparison run (`<system>-<run>.json` in one folder,
//! as `compare.sh` writes them). The formatting is pure and unit-tested.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::Value;

#[derive(Debug, Clone, Args)]
pub struct TableArgs {
    /// Folder holding `<system>-<run>.json` reports.
    #[arg(long)]
    pub dir: PathBuf,
    /// Systems, in column order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "node,socketioxide,gateway"
    )]
    pub systems: Vec<String>,
    /// The system ratios are computed against.
    #[arg(long, default_value = "socketioxide")]
    pub baseline: String,
}

/// Whether a larger value of a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
    /// No ratio is shown (counts that should be zero).
    Neither,
}

struct Figure {
    run: &'static str,
    label: &'static str,
    /// JSON pointer into the report.
    pointer: &'static str,
    better: Better,
    decimals: usize,
}

const FIGURES: &[Figure] = &[
    Figure {
        run: "A",
        label: "A: deliveries per server CPU-second",
        pointer: "/server/deliveries_per_cpu_sec",
        better: Better::Higher,
        decimals: 0,
    },
    Figure {
        run: "A",
        label: "A: wire bytes per delivery",
        pointer: "/delivery/wire_bytes_per_delivery",
        better: Better::Lower,
        decimals: 0,
    },
    Figure {
        run: "A",
        label: "A: deliveries/s",
        pointer: "/delivery/deliveries_per_sec",
        better: Better::Higher,
        decimals: 0,
    },
    Figure {
        run: "A",
        label: "A: server CPU (cores busy)",
        pointer: "/server/cpu_cores",
        better: Better::Lower,
        decimals: 2,
    },
    Figure {
        run: "A",
        label: "A: p50 latency (ms)",
        pointer: "/delivery/latency_ms/p50",
        better: Better::Lower,
        decimals: 2,
    },
    Figure {
        run: "A",
        label: "A: p99 latency (ms)",
        pointer: "/delivery/latency_ms/p99",
        better: Better::Lower,
        decimals: 2,
    },
    Figure {
        run: "A",
        label: "A: p99.9 latency (ms)",
        pointer: "/delivery/latency_ms/p999",
        better: Better::Lower,
        decimals: 2,
    },
    Figure {
        run: "A",
        label: "A: lost",
        pointer: "/delivery/lost",
        better: Better::Neither,
        decimals: 0,
    },
    Figure {
        run: "A",
        label: "A: out of order",
        pointer: "/delivery/out_of_order",
        better: Better::Neither,
        decimals: 0,
    },
    Figure {
        run: "A",
        label: "A: other work on the machine (niced cores)",
        pointer: "/server/machine/nice_cores",
        better: Better::Neither,
        decimals: 2,
    },
    Figure {
        run: "A",
        label: "A: hypervisor steal (cores)",
        pointer: "/server/machine/steal_cores",
        better: Better::Neither,
        decimals: 2,
    },
    Figure {
        run: "A",
        label: "A: load generator CPU (cores)",
        pointer: "/server/generator_cores",
        better: Better::Neither,
        decimals: 2,
    },
    Figure {
        run: "Across",
        label: "Across: deliveries per server CPU-second",
        pointer: "/server/deliveries_per_cpu_sec",
        better: Better::Higher,
        decimals: 0,
    },
    Figure {
        run: "Across",
        label: "Across: p50 latency (ms)",
        pointer: "/delivery/latency_ms/p50",
        better: Better::Lower,
        decimals: 2,
    },
    Figure {
        run: "Across",
        label: "Across: p99 latency (ms)",
        pointer: "/delivery/latency_ms/p99",
        better: Better::Lower,
        decimals: 2,
    },
    Figure {
        run: "Across",
        label: "Across: lost",
        pointer: "/delivery/lost",
        better: Better::Neither,
        decimals: 0,
    },
    Figure {
        run: "C2",
        label: "C2: deliveries per server CPU-second",
        pointer: "/server/deliveries_per_cpu_sec",
        better: Better::Higher,
        decimals: 0,
    },
    Figure {
        run: "C2",
        label: "C2: p50 latency (ms)",
        pointer: "/delivery/latency_ms/p50",
        better: Better::Lower,
        decimals: 2,
    },
    Figure {
        run: "C2",
        label: "C2: p99 latency (ms)",
        pointer: "/delivery/latency_ms/p99",
        better: Better::Lower,
        decimals: 2,
    },
    Figure {
        run: "C2",
        label: "C2: lost",
        pointer: "/delivery/lost",
        better: Better::Neither,
        decimals: 0,
    },
    Figure {
        run: "C2",
        label: "C2: hypervisor steal (cores)",
        pointer: "/server/machine/steal_cores",
        better: Better::Neither,
        decimals: 2,
    },
    Figure {
        run: "B",
        label: "B: deliveries per server CPU-second",
        pointer: "/server/deliveries_per_cpu_sec",
        better: Better::Higher,
        decimals: 0,
    },
    Figure {
        run: "B",
        label: "B: wire bytes per delivery",
        pointer: "/delivery/wire_bytes_per_delivery",
        better: Better::Lower,
        decimals: 0,
    },
    Figure {
        run: "B",
        label: "B: deliveries/s",
        pointer: "/delivery/deliveries_per_sec",
        better: Better::Higher,
        decimals: 0,
    },
    Figure {
        run: "B",
        label: "B: server CPU (cores busy)",
        pointer: "/server/cpu_cores",
        better: Better::Lower,
        decimals: 2,
    },
    Figure {
        run: "B",
        label: "B: p99 latency (ms)",
        pointer: "/delivery/latency_ms/p99",
        better: Better::Lower,
        decimals: 2,
    },
    Figure {
        run: "B",
        label: "B: lost",
        pointer: "/delivery/lost",
        better: Better::Neither,
        decimals: 0,
    },
    Figure {
        run: "B",
        label: "B: out of order",
        pointer: "/delivery/out_of_order",
        better: Better::Neither,
        decimals: 0,
    },
    Figure {
        run: "B",
        label: "B: other work on the machine (niced cores)",
        pointer: "/server/machine/nice_cores",
        better: Better::Neither,
        decimals: 2,
    },
    Figure {
        run: "B",
        label: "B: hypervisor steal (cores)",
        pointer: "/server/machine/steal_cores",
        better: Better::Neither,
        decimals: 2,
    },
    Figure {
        run: "B",
        label: "B: load generator CPU (cores)",
        pointer: "/server/generator_cores",
        better: Better::Neither,
        decimals: 2,
    },
    Figure {
        run: "idle",
        label: "idle: RSS per connection (KiB)",
        pointer: "/server/rss_per_conn_kib",
        better: Better::Lower,
        decimals: 2,
    },
    Figure {
        run: "idle",
        label: "idle: connects/s",
        pointer: "/connections/connects_per_sec",
        better: Better::Higher,
        decimals: 0,
    },
    Figure {
        run: "churn",
        label: "churn: connects/s",
        pointer: "/churn/connects_per_sec",
        better: Better::Higher,
        decimals: 0,
    },
    Figure {
        run: "churn",
        label: "churn: connect p99 (ms)",
        pointer: "/connections/connect_ms/p99",
        better: Better::Lower,
        decimals: 2,
    },
    Figure {
        run: "churn",
        label: "churn: RSS drift per cycle (KiB)",
        pointer: "/server/rss_per_conn_kib",
        better: Better::Neither,
        decimals: 2,
    },
    Figure {
        run: "churn",
        label: "churn: failed cycles",
        pointer: "/churn/failed",
        better: Better::Neither,
        decimals: 0,
    },
];

/// Reports by system, then by run name.
pub type Reports = BTreeMap<String, BTreeMap<String, Value>>;

pub fn load(dir: &Path, systems: &[String]) -> Result<Reports> {
    let mut reports = Reports::new();
    for system in systems {
        for run in ["A", "B", "Across", "C2", "idle", "churn"] {
            let path = dir.join(format!("{system}-{run}.json"));
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            let value: Value = serde_json::from_str(text.trim())
                .with_context(|| format!("{} is not a JSON report", path.display()))?;
            reports
                .entry(system.clone())
                .or_default()
                .insert(run.to_string(), value);
        }
    }
    Ok(reports)
}

fn figure(reports: &Reports, system: &str, f: &Figure) -> Option<f64> {
    reports
        .get(system)?
        .get(f.run)?
        .pointer(f.pointer)?
        .as_f64()
}

/// The Markdown table: one row per figure, one column per system, then
/// one ratio column per other system against the baseline (> 1 is better).
pub fn render(reports: &Reports, systems: &[String], baseline: &str) -> String {
    let others: Vec<&String> = systems.iter().filter(|s| *s != baseline).collect();
    let has_baseline = systems.iter().any(|s| s == baseline);
    let mut out = String::from("| figure |");
    for s in systems {
        out.push_str(&format!(" {s} |"));
    }
    if has_baseline {
        for s in &others {
            out.push_str(&format!(" {s} vs {baseline} |"));
        }
    }
    out.push_str("\n|---|");
    let columns = systems.len() + if has_baseline { others.len() } else { 0 };
    out.push_str(&"---:|".repeat(columns));
    out.push('\n');
    for f in FIGURES {
        if systems.iter().all(|s| figure(reports, s, f).is_none()) {
            continue;
        }
        out.push_str(&format!("| {} |", f.label));
        for s in systems {
            match figure(reports, s, f) {
                Some(v) => out.push_str(&format!(" {:.*} |", f.decimals, v)),
                None => out.push_str(" - |"),
            }
        }
        if has_baseline {
            let base = figure(reports, baseline, f);
            for s in &others {
                let ratio = match (f.better, figure(reports, s, f), base) {
                    (Better::Higher, Some(v), Some(b)) if b > 0.0 => Some(v / b),
                    (Better::Lower, Some(v), Some(b)) if v > 0.0 => Some(b / v),
                    _ => None,
                };
                match ratio {
                    Some(r) => out.push_str(&format!(" {r:.2}x |")),
                    None => out.push_str(" |"),
                }
            }
        }
        out.push('\n');
    }
    out
}

pub fn run(args: &TableArgs) -> Result<String> {
    let reports = load(&args.dir, &args.systems)?;
    Ok(render(&reports, &args.systems, &args.baseline))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_ratios_against_the_baseline() {
        let mut reports = Reports::new();
        reports.entry("node".into()).or_default().insert(
            "A".into(),
            json!({"server": {"deliveries_per_cpu_sec": 100.0}, "delivery": {"latency_ms": {"p99": 50.0}, "lost": 0}}),
        );
        reports.entry("sx".into()).or_default().insert(
            "A".into(),
            json!({"server": {"deliveries_per_cpu_sec": 200.0}, "delivery": {"latency_ms": {"p99": 25.0}, "lost": 0}}),
        );
        let systems = vec!["node".to_string(), "sx".to_string(), "gw".to_string()];
        let table = render(&reports, &systems, "sx");
        assert!(
            table.starts_with("| figure | node | sx | gw | node vs sx | gw vs sx |"),
            "{table}"
        );
        assert!(
            table.contains("| A: deliveries per server CPU-second | 100 | 200 | - | 0.50x | |"),
            "{table}"
        );
        // Lower latency is better: node's 50 ms against 25 ms is 0.5x.
        assert!(
            table.contains("| A: p99 latency (ms) | 50.00 | 25.00 | - | 0.50x | |"),
            "{table}"
        );
        assert!(table.contains("| A: lost | 0 | 0 | - | | |"), "{table}");
        assert!(!table.contains("B:"), "{table}");
    }

    #[test]
    fn fewer_wire_bytes_are_better() {
        let mut reports = Reports::new();
        for (system, bytes) in [("plain", 2100.0), ("deflate", 700.0)] {
            reports.entry(system.into()).or_default().insert(
                "B".into(),
                json!({"delivery": {"wire_bytes_per_delivery": bytes}}),
            );
        }
        let systems = vec!["plain".to_string(), "deflate".to_string()];
        let table = render(&reports, &systems, "plain");
        assert!(
            table.contains("| B: wire bytes per delivery | 2100 | 700 | 3.00x |"),
            "{table}"
        );
    }
}
