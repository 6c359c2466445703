//! The scenarios, each a function from its options to a [`Report`]: the
//! coordinator side that plans clients, spreads them over shards and
//! nodes, moves the run through its phases, samples the servers and sums
//! up. The client tasks themselves are in [`clients`].

pub mod churn;
pub mod clients;
pub mod delivery;
#[cfg(feature = "grpc")]
mod grpc;
pub mod idle;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cli::Common;
use crate::report::{Connections, Report};
use crate::shards::{CounterTotals, Shards};
use crate::transport::TransportKind;

/// Prints a progress line on stderr every second until dropped.
pub struct Progress {
    phase: Arc<Mutex<&'static str>>,
    stop: CancellationToken,
}

impl Progress {
    pub fn start(shards: Arc<Shards>, quiet: bool) -> Self {
        let phase = Arc::new(Mutex::new("setup"));
        let stop = CancellationToken::new();
        if !quiet {
            let (phase, stop) = (phase.clone(), stop.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let mut last = CounterTotals::default();
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let t = shards.totals();
                    let name = *phase.lock().unwrap_or_else(|e| e.into_inner());
                    eprintln!(
                        "[{:>6.1}s] {:<8} conns {} (+{}) err {} dropped {} | joined {} | published {} (+{}/s) acked {} | delivered {} (+{}/s)",
                        started.elapsed().as_secs_f64(),
                        name,
                        t.connected.saturating_sub(t.closed + t.dropped),
                        t.connected - last.connected,
                        t.connect_errors + t.join_errors,
                        t.dropped,
                        t.joined,
                        t.published,
                        t.published - last.published,
                        t.publish_acks,
                        t.delivered,
                        t.delivered - last.delivered,
                    );
                    last = t;
                }
            });
        }
        Self { phase, stop }
    }

    pub fn phase(&self, name: &'static str) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = name;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Receives up to `n` messages, for at most `timeout`; returns them all.
pub async fn collect<T>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    n: usize,
    timeout: Duration,
) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    let deadline = Instant::now() + timeout;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(v)) => out.push(v),
            Ok(None) | Err(_) => break,
        }
    }
    out
}

/// Keeps at most this many distinct error messages in a report.
const MAX_ERRORS: usize = 5;

pub fn remember_error(errors: &mut Vec<String>, e: String) {
    if errors.len() < MAX_ERRORS && !errors.contains(&e) {
        errors.push(e);
    }
}

/// The report's skeleton: scenario name, nodes, settings, connection plan.
pub fn new_report<S: serde::Serialize>(
    scenario: &str,
    common: &Common,
    settings: &S,
    transports: impl Iterator<Item = TransportKind>,
) -> Result<Report> {
    let mut connections = Connections::default();
    for t in transports {
        connections.planned += 1;
        match t {
            TransportKind::Websocket => connections.websocket += 1,
            TransportKind::Polling => connections.polling += 1,
        }
    }
    Ok(Report {
        scenario: scenario.into(),
        nodes: common.nodes()?.into_iter().map(|n| n.url).collect(),
        settings: serde_json::to_value(settings)?,
        connections,
        ..Report::default()
    })
}

/// Copies the shard counters into the report's connection figures.
pub fn fill_connections(report: &mut Report, t: &CounterTotals) {
    let c = &mut report.connections;
    c.connected = t.connected;
    c.connect_errors = t.connect_errors;
    c.join_errors = t.join_errors;
    c.dropped = t.dropped;
}
