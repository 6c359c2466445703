//! The result of a run: one serializable struct, printed as a table for
//! people or as one JSON object (`--json`) for scripts.

use std::fmt::Write as _;

use serde::Serialize;

use crate::procfs::{MachineLoad, Snapshot};
use crate::stats::{DeliveryTotals, Percentiles};

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub nodes: Vec<String>,
    /// The scenario's options as given.
    pub settings: serde_json::Value,
    pub connections: Connections,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<Churn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<Server>,
    /// Notes about the run (limits, caveats), not failures.
    pub notes: Vec<String>,
    /// Why the run counts as failed under `--assert-zero-loss`.
    pub failures: Vec<String>,
    pub ok: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Connections {
    pub planned: u64,
    pub websocket: u64,
    pub polling: u64,
    pub connected: u64,
    pub connect_errors: u64,
    pub join_errors: u64,
    /// Connections the server ended before the scenario closed them.
    pub dropped: u64,
    /// Seconds from the first connect to the last ready client.
    pub setup_secs: f64,
    pub connects_per_sec: f64,
    pub connect_ms: Percentiles,
    /// Round trip of acked requests ($join, $publish).
    pub ack_ms: Percentiles,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub first_errors: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Delivery {
    pub publishers: u64,
    pub published: u64,
    pub publish_acks: u64,
    pub publish_errors: u64,
    pub publish_unacked: u64,
    #[serde(flatten)]
    pub totals: DeliveryTotals,
    /// Seconds from the start of publishing to the last delivery.
    pub window_secs: f64,
    pub deliveries_per_sec: f64,
    pub latency_ms: Percentiles,
    /// Bytes the receivers read from TCP over the window: WebSocket frames
    /// as sent (compressed or not), polling responses with their HTTP
    /// heads, heartbeats. Not the publishers' (their acks).
    pub wire_bytes_received: u64,
    /// `wire_bytes_received` / deliveries received over the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wire_bytes_per_delivery: Option<f64>,
    /// WebSocket messages that arrived compressed (permessage-deflate,
    /// `--ws-deflate`) over the window.
    pub compressed_messages: u64,
}

impl Delivery {
    /// Sets the wire figures from what was read over the window and the
    /// deliveries received in it.
    pub fn set_wire(&mut self, bytes: u64, compressed_messages: u64, deliveries: u64) {
        self.wire_bytes_received = bytes;
        self.compressed_messages = compressed_messages;
        self.wire_bytes_per_delivery = (deliveries > 0).then(|| bytes as f64 / deliveries as f64);
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Churn {
    pub planned_cycles: u64,
    pub started: u64,
    pub completed: u64,
    pub failed: u64,
    pub window_secs: f64,
    pub connects_per_sec: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Server {
    pub pids: Vec<u32>,
    /// Seconds between the two samples.
    pub window_secs: f64,
    pub cpu_secs: f64,
    /// Average cores busy over the window.
    pub cpu_cores: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries_per_cpu_sec: Option<f64>,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub rss_delta_kib: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_per_conn_kib: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_after_close_kib: Option<u64>,
    /// The whole machine over the window: the load generator, the servers,
    /// and anything else (niced time is mostly other people's builds).
    pub machine: MachineLoad,
    /// Cores the load generator itself used over the window.
    pub generator_cores: f64,
    pub before: Snapshot,
    pub after: Snapshot,
}

impl Server {
    pub fn between(before: Snapshot, after: Snapshot, window_secs: f64) -> Self {
        let cpu_secs = after.cpu_secs_since(&before);
        Self {
            pids: before.processes.iter().map(|p| p.pid).collect(),
            window_secs,
            cpu_secs,
            cpu_cores: if window_secs > 0.0 {
                cpu_secs / window_secs
            } else {
                0.0
            },
            deliveries_per_cpu_sec: None,
            rss_before_kib: before.rss_kib(),
            rss_after_kib: after.rss_kib(),
            rss_delta_kib: after.rss_delta_kib(&before),
            rss_per_conn_kib: None,
            rss_after_close_kib: None,
            machine: after.machine_load_since(&before, window_secs),
            generator_cores: after.generator_cores_since(&before, window_secs),
            before,
            after,
        }
    }
}

fn pct(p: &Percentiles) -> String {
    if p.count == 0 {
        return "-".into();
    }
    format!(
        "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n={})",
        p.p50, p.p90, p.p99, p.p999, p.max, p.count
    )
}

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut rows: Vec<(&str, String)> = vec![
            ("scenario", self.scenario.clone()),
            ("nodes", self.nodes.join(", ")),
        ];
        let c = &self.connections;
        rows.push((
            "connections",
            format!(
                "{} planned ({} ws, {} polling), {} connected, {} connect errors, {} join errors, {} dropped",
                c.planned, c.websocket, c.polling, c.connected, c.connect_errors, c.join_errors, c.dropped
            ),
        ));
        rows.push((
            "connect rate",
            format!("{:.0}/s over {:.1}s", c.connects_per_sec, c.setup_secs),
        ));
        rows.push(("connect ms", pct(&c.connect_ms)));
        rows.push(("ack ms", pct(&c.ack_ms)));
        if let Some(d) = &self.delivery {
            rows.push((
                "published",
                format!(
                    "{} by {} publishers, {} acked ok, {} refused, {} unacked",
                    d.published, d.publishers, d.publish_acks, d.publish_errors, d.publish_unacked
                ),
            ));
            let t = &d.totals;
            rows.push((
                "deliveries",
                format!(
                    "{} expected, {} received, {} lost, {} duplicates, {} out of order, {} misrouted",
                    t.expected, t.received, t.lost, t.duplicates, t.out_of_order, t.misrouted
                ),
            ));
            rows.push((
                "deliveries/s",
                format!("{:.0} over {:.1}s", d.deliveries_per_sec, d.window_secs),
            ));
            rows.push(("latency ms", pct(&d.latency_ms)));
            let per = d
                .wire_bytes_per_delivery
                .map_or("-".into(), |b| format!("{b:.0}"));
            rows.push((
                "wire bytes",
                format!(
                    "{} received, {per} per delivery, {} messages compressed",
                    d.wire_bytes_received, d.compressed_messages
                ),
            ));
        }
        if let Some(ch) = &self.churn {
            rows.push((
                "churn",
                format!(
                    "{} planned, {} started, {} completed, {} failed, {:.1} connects/s over {:.1}s",
                    ch.planned_cycles,
                    ch.started,
                    ch.completed,
                    ch.failed,
                    ch.connects_per_sec,
                    ch.window_secs
                ),
            ));
        }
        if let Some(s) = &self.server {
            rows.push((
                "server cpu",
                format!(
                    "{:.2} s over {:.1}s ({:.2} cores), pids {:?}",
                    s.cpu_secs, s.window_secs, s.cpu_cores, s.pids
                ),
            ));
            rows.push((
                "machine cpu",
                format!(
                    "{:.2} cores busy ({:.2} by this load generator, {:.2} stolen by the hypervisor), \
                     {:.2} niced (other work), {:.2} idle",
                    s.machine.busy_cores,
                    s.generator_cores,
                    s.machine.steal_cores,
                    s.machine.nice_cores,
                    s.machine.idle_cores
                ),
            ));
            if let Some(d) = s.deliveries_per_cpu_sec {
                rows.push(("deliveries/cpu-s", format!("{d:.0}")));
            }
            rows.push((
                "server rss",
                format!(
                    "{} KiB -> {} KiB ({:+} KiB)",
                    s.rss_before_kib, s.rss_after_kib, s.rss_delta_kib
                ),
            ));
            if let Some(per) = s.rss_per_conn_kib {
                rows.push(("rss/connection", format!("{per:.2} KiB")));
            }
            if let Some(k) = s.rss_after_close_kib {
                rows.push(("rss after close", format!("{k} KiB")));
            }
        }
        for e in &c.first_errors {
            rows.push(("error", e.clone()));
        }
        for n in &self.notes {
            rows.push(("note", n.clone()));
        }
        for f in &self.failures {
            rows.push(("FAILED", f.clone()));
        }
        rows.push((
            "result",
            if self.ok {
                "ok".into()
            } else {
                "FAILED".into()
            },
        ));
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        out
    }

    /// Fills `failures` from the counts and sets `ok`.
    pub fn judge(&mut self) {
        let c = &self.connections;
        let mut f = Vec::new();
        if c.connect_errors > 0 {
            f.push(format!("{} connections failed", c.connect_errors));
        }
        if c.join_errors > 0 {
            f.push(format!("{} joins failed", c.join_errors));
        }
        if c.dropped > 0 {
            f.push(format!("{} connections dropped by the server", c.dropped));
        }
        if let Some(d) = &self.delivery {
            let t = &d.totals;
            if t.lost > 0 {
                f.push(format!("{} of {} deliveries lost", t.lost, t.expected));
            }
            if t.duplicates > 0 {
                f.push(format!("{} duplicate deliveries", t.duplicates));
            }
            if t.misrouted > 0 {
                f.push(format!("{} misrouted deliveries", t.misrouted));
            }
            if d.publish_errors > 0 {
                f.push(format!("{} publishes refused", d.publish_errors));
            }
            if d.published == 0 {
                f.push("nothing was published".into());
            }
        }
        if let Some(ch) = &self.churn
            && ch.failed > 0
        {
            f.push(format!("{} churn cycles failed", ch.failed));
        }
        self.ok = f.is_empty();
        self.failures = f;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_loss_and_prints() {
        let mut r = Report {
            scenario: "fanout".into(),
            delivery: Some(Delivery {
                published: 10,
                totals: DeliveryTotals {
                    expected: 100,
                    lost: 2,
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        r.judge();
        assert!(!r.ok);
        assert_eq!(r.failures, vec!["2 of 100 deliveries lost".to_string()]);
        let table = r.table();
        assert!(table.contains("FAILED"), "{table}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["delivery"]["lost"], 2);
        assert_eq!(json["ok"], false);

        r.delivery.as_mut().unwrap().totals.lost = 0;
        r.judge();
        assert!(r.ok);
    }

    #[test]
    fn wire_bytes_are_per_delivery_received() {
        let mut d = Delivery::default();
        d.set_wire(10_000, 3, 40);
        assert_eq!(d.wire_bytes_per_delivery, Some(250.0));
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["wire_bytes_received"], 10_000);
        assert_eq!(json["wire_bytes_per_delivery"], 250.0);
        assert_eq!(json["compressed_messages"], 3);
        d.set_wire(10, 0, 0);
        assert_eq!(d.wire_bytes_per_delivery, None);
    }
}
