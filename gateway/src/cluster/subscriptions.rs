//! The channels a node should be subscribed to, and a reconciler that makes
//! the bus match: subscribe what is wanted, unsubscribe what is not, and
//! after a reconnection subscribe everything again.
//!
//! `want`/`unwant` are called while the Socket.IO layer holds its room
//! locks (so the wanted set always matches local membership); they only
//! touch a set and wake the reconciler, never await.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use super::ClusterBus;
use crate::telemetry::{Metrics, RedisOp};

#[derive(Default)]
struct State {
    wanted: HashSet<String>,
    active: HashSet<String>,
    waiters: HashMap<String, Vec<oneshot::Sender<()>>>,
}

#[derive(Default)]
pub struct Subscriptions {
    state: Mutex<State>,
    notify: Notify,
}

impl Subscriptions {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn want(&self, channel: String) {
        let mut st = self.state.lock();
        if st.wanted.insert(channel) {
            drop(st);
            self.notify.notify_one();
        }
    }

    pub fn unwant(&self, channel: &str) {
        let mut st = self.state.lock();
        if st.wanted.remove(channel) {
            drop(st);
            self.notify.notify_one();
        }
    }

    pub fn is_active(&self, channel: &str) -> bool {
        self.state.lock().active.contains(channel)
    }

    /// Channels subscribed on the bus now.
    pub fn active(&self) -> Vec<String> {
        self.state.lock().active.iter().cloned().collect()
    }

    pub fn wanted_len(&self) -> usize {
        self.state.lock().wanted.len()
    }

    /// Waits (at most `timeout`) until `channel` is subscribed; false when
    /// it is not wanted or the bus did not confirm in time.
    pub async fn wait_active(&self, channel: &str, timeout: Duration) -> bool {
        let rx = {
            let mut st = self.state.lock();
            if st.active.contains(channel) {
                return true;
            }
            if !st.wanted.contains(channel) {
                return false;
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.entry(channel.to_owned()).or_default().push(tx);
            rx
        };
        matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(())))
    }

    /// The bus reconnected: nothing is subscribed any more.
    pub fn reset(&self) {
        self.state.lock().active.clear();
        self.notify.notify_one();
    }

    /// Makes the bus match the wanted set until `stop`; retries failures.
    pub async fn reconcile(
        self: Arc<Self>,
        bus: Arc<dyn ClusterBus>,
        metrics: Option<Arc<Metrics>>,
        stop: CancellationToken,
    ) {
        let count = |op: Option<RedisOp>, active: usize| {
            if let Some(m) = &metrics {
                if let Some(op) = op {
                    m.redis_error(op);
                }
                m.set_redis_subscriptions(active);
            }
        };
        loop {
            let (add, remove) = {
                let st = self.state.lock();
                let add: Vec<String> = st.wanted.difference(&st.active).cloned().collect();
                let remove: Vec<String> = st.active.difference(&st.wanted).cloned().collect();
                (add, remove)
            };
            let mut failed = false;
            if !add.is_empty() {
                match bus.subscribe(&add).await {
                    Ok(()) => {
                        let mut st = self.state.lock();
                        for ch in add {
                            if let Some(ws) = st.waiters.remove(&ch) {
                                for w in ws {
                                    let _ = w.send(());
                                }
                            }
                            st.active.insert(ch);
                        }
                        count(None, st.active.len());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "subscribe failed");
                        count(Some(RedisOp::Subscribe), self.state.lock().active.len());
                        failed = true;
                    }
                }
            }
            if !remove.is_empty() {
                match bus.unsubscribe(&remove).await {
                    Ok(()) => {
                        let mut st = self.state.lock();
                        for ch in &remove {
                            st.active.remove(ch);
                        }
                        count(None, st.active.len());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "unsubscribe failed");
                        count(Some(RedisOp::Unsubscribe), self.state.lock().active.len());
                        failed = true;
                    }
                }
            }
            if failed {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.cancelled() => return,
                }
                continue;
            }
            // Wanted set changed while we worked? Go again; else wait.
            let dirty = {
                let st = self.state.lock();
                st.wanted != st.active
            };
            if dirty {
                continue;
            }
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}
