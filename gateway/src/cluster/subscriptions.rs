//! The channels a node should be subscribed to, and a reconciler that makes
//! the bus match: subscribe what is wanted, unsubscribe what is not, and
//! after a reconnection subscribe everything again.
//!
//! `want`/`unwant` are called while the Socket.IO layer holds its room
//! locks (so the wanted set always matches local membership); they only
//! touch a set and wake the reconciler, never await.
//!
//! A channel is *active* only once the bus confirmed the subscription on
//! its current connection (for Redis: Redis carried out the command, not
//! merely received it) and no unsubscribe of it is under way. Joins wait
//! for that (`wait_active`) before they are acknowledged, so a message
//! published after the acknowledgement reaches the node. Losing the bus
//! connection voids every confirmation (`reset`), including those still
//! under way.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use super::ClusterBus;
use crate::telemetry::{ErrorChain, Metrics, RedisOp};

/// Why a channel is not known to be subscribed (the source of
/// [`BusError::NotConfirmed`](super::BusError::NotConfirmed)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// Nobody holds the channel, so nothing subscribes it.
    #[error("channel not wanted")]
    NotWanted,
    #[error("no confirmation from the bus within {0:?}")]
    Timeout(Duration),
}

#[derive(Default)]
struct State {
    /// Channels wanted, each with how many holders want it.
    wanted: HashMap<String, usize>,
    /// Channels the bus confirmed on its current connection, and that no
    /// unsubscribe is under way for.
    active: HashSet<String>,
    /// Channels that may be on the bus without being confirmed: an
    /// unsubscribe in flight or failed, or a subscribe that failed or
    /// straddled a lost connection (and may take effect late). Those not
    /// wanted are unsubscribed.
    leaving: HashSet<String>,
    /// Bumped when the bus connection is lost or replaced: a confirmation
    /// that started before belongs to a connection that is gone.
    epoch: u64,
    waiters: HashMap<String, Vec<oneshot::Sender<()>>>,
}

#[derive(Default)]
pub(crate) struct Subscriptions {
    state: Mutex<State>,
    notify: Notify,
}

/// Keeps channels wanted while it lives (see [`Subscriptions::hold`]).
pub(crate) struct Held {
    subscriptions: Arc<Subscriptions>,
    channels: Vec<String>,
}

impl Drop for Held {
    fn drop(&mut self) {
        for ch in &self.channels {
            self.subscriptions.unwant(ch);
        }
    }
}

impl Subscriptions {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// One more holder wants `channel`.
    pub(crate) fn want(&self, channel: String) {
        let mut st = self.state.lock();
        let holders = st.wanted.entry(channel).or_insert(0);
        *holders += 1;
        if *holders == 1 {
            drop(st);
            self.notify.notify_one();
        }
    }

    /// One holder of `channel` no longer wants it.
    pub(crate) fn unwant(&self, channel: &str) {
        let mut st = self.state.lock();
        let Some(holders) = st.wanted.get_mut(channel) else {
            return;
        };
        *holders -= 1;
        if *holders == 0 {
            st.wanted.remove(channel);
            drop(st);
            self.notify.notify_one();
        }
    }

    /// Wants `channels` until the returned guard is dropped: a connecting
    /// socket holds its channels subscribed before it exists.
    pub(crate) fn hold(self: &Arc<Self>, channels: Vec<String>) -> Held {
        for ch in &channels {
            self.want(ch.clone());
        }
        Held {
            subscriptions: self.clone(),
            channels,
        }
    }

    pub(crate) fn is_active(&self, channel: &str) -> bool {
        self.state.lock().active.contains(channel)
    }

    #[cfg(test)]
    pub(crate) fn wanted_len(&self) -> usize {
        self.state.lock().wanted.len()
    }

    /// Waits (at most `timeout`) until the bus confirmed `channel` on its
    /// current connection: from then on, every message published on it
    /// reaches this node while that connection lasts.
    pub(crate) async fn wait_active(
        &self,
        channel: &str,
        timeout: Duration,
    ) -> Result<(), SubscribeError> {
        let rx = {
            let mut st = self.state.lock();
            if st.active.contains(channel) {
                return Ok(());
            }
            if !st.wanted.contains_key(channel) {
                return Err(SubscribeError::NotWanted);
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.entry(channel.to_owned()).or_default().push(tx);
            rx
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(SubscribeError::Timeout(timeout)),
        }
    }

    /// The bus connection was lost or replaced: nothing is subscribed any
    /// more, and confirmations under way are void.
    pub(crate) fn reset(&self) {
        let mut st = self.state.lock();
        st.active.clear();
        // `leaving` stays: an unsubscribe that failed with the connection
        // is sent again (harmless when the channel is not subscribed).
        st.epoch += 1;
        drop(st);
        self.notify.notify_one();
    }

    /// Drops waiters whose callers gave up (timed out).
    fn prune_waiters(st: &mut State) {
        st.waiters.retain(|_, ws| {
            ws.retain(|w| !w.is_closed());
            !ws.is_empty()
        });
    }

    /// Makes the bus match the wanted set until `stop`; retries failures.
    pub(crate) async fn reconcile(
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
            // Nothing to try while the bus is down: the reconnection resets
            // (and wakes) this loop; no failure to log every round.
            if !bus.is_connected() {
                tokio::select! {
                    _ = self.notify.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.cancelled() => return,
                }
                continue;
            }
            let (epoch, add, remove) = {
                let mut st = self.state.lock();
                Self::prune_waiters(&mut st);
                let add: Vec<String> = st
                    .wanted
                    .keys()
                    .filter(|ch| !st.active.contains(*ch))
                    .cloned()
                    .collect();
                let remove: Vec<String> = st
                    .active
                    .iter()
                    .chain(st.leaving.iter())
                    .filter(|ch| !st.wanted.contains_key(*ch))
                    .cloned()
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .collect();
                // Not active from the moment the unsubscribe may be sent:
                // a join meanwhile waits for the next subscribe.
                for ch in &remove {
                    st.active.remove(ch);
                    st.leaving.insert(ch.clone());
                }
                (st.epoch, add, remove)
            };
            let mut failed = false;
            if !add.is_empty() {
                let result = bus.subscribe(&add).await;
                let mut st = self.state.lock();
                if result.is_ok() && st.epoch == epoch {
                    for ch in add {
                        st.leaving.remove(&ch);
                        if let Some(ws) = st.waiters.remove(&ch) {
                            for w in ws {
                                let _ = w.send(());
                            }
                        }
                        st.active.insert(ch);
                    }
                } else {
                    // A subscribe that failed, or straddled a lost
                    // connection, may still take effect (sent late on the
                    // new connection): what is not wanted by then is
                    // unsubscribed, what is wanted is subscribed again.
                    st.leaving.extend(add);
                }
                count(
                    result.as_ref().err().map(|_| RedisOp::Subscribe),
                    st.active.len(),
                );
                drop(st);
                if let Err(e) = result {
                    tracing::warn!(error = %ErrorChain(&e), "subscribe failed");
                    failed = true;
                }
            }
            if !remove.is_empty() {
                match bus.unsubscribe(&remove).await {
                    Ok(()) => {
                        let mut st = self.state.lock();
                        if st.epoch == epoch {
                            for ch in &remove {
                                st.leaving.remove(ch);
                            }
                        }
                        count(None, st.active.len());
                    }
                    Err(e) => {
                        tracing::warn!(error = %ErrorChain(&e), "unsubscribe failed");
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
                st.wanted.len() != st.active.len()
                    || !st.leaving.is_empty()
                    || st.wanted.keys().any(|ch| !st.active.contains(ch))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{BusError, BusEvents, Sent};
    use bytes::Bytes;
    use tokio::sync::Semaphore;

    /// A bus whose (un)subscribe calls each wait for a permit, so a test
    /// decides when the bus confirms; it records what it was asked.
    struct GatedBus {
        gate: Semaphore,
        log: Mutex<Vec<String>>,
    }

    impl GatedBus {
        async fn pass(&self, what: String) {
            self.gate.acquire().await.unwrap().forget();
            self.log.lock().push(what);
        }
    }

    #[async_trait::async_trait]
    impl ClusterBus for GatedBus {
        async fn publish(&self, _: &str, _: Bytes) -> Result<(), BusError> {
            Ok(())
        }
        fn enqueue(&self, _: String, _: Bytes, _: Option<Sent>) -> Result<(), BusError> {
            Ok(())
        }
        async fn subscribe(&self, channels: &[String]) -> Result<(), BusError> {
            self.pass(format!("sub {}", channels.join(","))).await;
            Ok(())
        }
        async fn unsubscribe(&self, channels: &[String]) -> Result<(), BusError> {
            self.pass(format!("unsub {}", channels.join(","))).await;
            Ok(())
        }
        fn take_events(&self) -> Option<BusEvents> {
            None
        }
        fn is_connected(&self) -> bool {
            true
        }
        fn kind(&self) -> &'static str {
            "gated"
        }
    }

    const SHORT: Duration = Duration::from_millis(50);

    fn start() -> (Arc<Subscriptions>, Arc<GatedBus>, CancellationToken) {
        let subs = Arc::new(Subscriptions::new());
        let bus = Arc::new(GatedBus {
            gate: Semaphore::new(0),
            log: Mutex::new(Vec::new()),
        });
        let stop = CancellationToken::new();
        tokio::spawn(subs.clone().reconcile(bus.clone(), None, stop.clone()));
        (subs, bus, stop)
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn active_only_after_the_bus_confirms() {
        let (subs, bus, _stop) = start();
        subs.want("r".into());
        settle().await;
        assert_eq!(
            subs.wait_active("r", SHORT).await,
            Err(SubscribeError::Timeout(SHORT))
        );
        bus.gate.add_permits(1);
        assert_eq!(subs.wait_active("r", SHORT * 20).await, Ok(()));
        assert_eq!(
            subs.wait_active("other", SHORT).await,
            Err(SubscribeError::NotWanted)
        );
    }

    /// Left and joined again while the unsubscribe is under way: the join
    /// must wait for the subscription made after it, not count the one
    /// being taken down.
    #[tokio::test]
    async fn rejoin_during_unsubscribe_waits_for_the_new_subscription() {
        let (subs, bus, _stop) = start();
        subs.want("r".into());
        bus.gate.add_permits(1);
        subs.wait_active("r", SHORT * 20).await.unwrap();
        subs.unwant("r");
        settle().await; // the unsubscribe is sent and waits at the gate
        subs.want("r".into());
        assert_eq!(
            subs.wait_active("r", SHORT).await,
            Err(SubscribeError::Timeout(SHORT)),
            "active while its unsubscribe is under way"
        );
        bus.gate.add_permits(2);
        assert_eq!(subs.wait_active("r", SHORT * 20).await, Ok(()));
        assert_eq!(*bus.log.lock(), ["sub r", "unsub r", "sub r"]);
    }

    /// A confirmation that started before the connection was lost belongs
    /// to the old connection: the channel is subscribed again first.
    #[tokio::test]
    async fn reset_voids_confirmations_under_way() {
        let (subs, bus, _stop) = start();
        subs.want("r".into());
        settle().await; // the subscribe waits at the gate
        subs.reset();
        bus.gate.add_permits(1);
        settle().await;
        assert!(!subs.is_active("r"), "confirmed on a connection now gone");
        bus.gate.add_permits(1);
        assert_eq!(subs.wait_active("r", SHORT * 20).await, Ok(()));
        assert_eq!(*bus.log.lock(), ["sub r", "sub r"]);
    }

    /// A subscribe under way when the connection is lost may still take
    /// effect on the new one: a channel no longer wanted by then is
    /// unsubscribed, not left behind.
    #[tokio::test]
    async fn a_subscribe_straddling_a_reset_is_undone_when_not_wanted() {
        let (subs, bus, _stop) = start();
        subs.want("r".into());
        settle().await; // the subscribe waits at the gate
        subs.reset();
        subs.unwant("r");
        bus.gate.add_permits(2);
        for _ in 0..100 {
            if bus.log.lock().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(*bus.log.lock(), ["sub r", "unsub r"]);
        assert!(!subs.is_active("r"));
    }

    /// Held channels stay wanted under their holders' balance.
    #[tokio::test]
    async fn holds_count_with_members() {
        let (subs, bus, _stop) = start();
        bus.gate.add_permits(10);
        let held = subs.hold(vec!["r".into()]);
        subs.want("r".into()); // a member joins
        drop(held);
        subs.wait_active("r", SHORT * 20).await.unwrap();
        assert_eq!(subs.wanted_len(), 1);
        subs.unwant("r"); // the member leaves
        assert_eq!(subs.wanted_len(), 0);
    }
}
