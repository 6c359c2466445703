//! The in-process broker: the embedded default for a node that runs alone,
//! and a way to run several nodes in one process (tests) with the same
//! semantics as Redis pub/sub: a publish reaches every subscriber of the
//! channel, the publisher included, in publish order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;

use super::recovery::{LocalRecovery, RecoveryStore};
use super::{BusError, BusEvent, BusEvents, ClusterBus, Sent};

/// Messages a member may have waiting before further ones are dropped (as
/// Redis drops a subscriber whose output buffer overflows).
const MEMBER_QUEUE: usize = 65_536;

type Member = (u64, mpsc::Sender<BusEvent>);

#[derive(Default)]
struct Inner {
    channels: RwLock<HashMap<String, Vec<Member>>>,
    members: AtomicUsize,
    next_id: AtomicU64,
    /// Connection state recovery's store, shared by the broker's members.
    recovery: Arc<LocalRecovery>,
}

/// A broker shared by the nodes of one process.
#[derive(Clone, Default)]
pub struct LocalBroker {
    inner: Arc<Inner>,
}

impl LocalBroker {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new member (one per node).
    pub fn connect(&self) -> LocalBus {
        let (tx, rx) = mpsc::channel(MEMBER_QUEUE);
        self.inner.members.fetch_add(1, Ordering::AcqRel);
        LocalBus {
            inner: self.inner.clone(),
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            tx,
            rx: Mutex::new(Some(rx)),
            connected: AtomicBool::new(true),
        }
    }

    /// How many members subscribe to `channel` (for tests).
    pub fn subscribers(&self, channel: &str) -> usize {
        self.inner
            .channels
            .read()
            .get(channel)
            .map_or(0, |m| m.len())
    }
}

/// One node's connection to a [`LocalBroker`].
pub struct LocalBus {
    inner: Arc<Inner>,
    id: u64,
    tx: mpsc::Sender<BusEvent>,
    rx: Mutex<Option<mpsc::Receiver<BusEvent>>>,
    connected: AtomicBool,
}

impl LocalBus {
    /// Simulates losing (false) and regaining (true) the broker, as a Redis
    /// outage would: while down, publishes fail and nothing is received;
    /// coming back, every subscription is gone and must be made again.
    pub fn set_connected(&self, up: bool) {
        let was = self.connected.swap(up, Ordering::AcqRel);
        if was && !up {
            self.drop_subscriptions();
            let _ = self.tx.try_send(BusEvent::Disconnected);
        } else if !was && up {
            let _ = self.tx.try_send(BusEvent::Reconnected);
        }
    }

    fn drop_subscriptions(&self) {
        let mut channels = self.inner.channels.write();
        channels.retain(|_, members| {
            members.retain(|(id, _)| *id != self.id);
            !members.is_empty()
        });
    }

    /// Hands `payload` to every subscriber of `channel` now; returns how many.
    fn send_now(&self, channel: &str, payload: Bytes) -> Result<u64, BusError> {
        self.check()?;
        let channels = self.inner.channels.read();

        let receivers = channels.get(channel).map_or(0, |m| m.len() as u64);
        if let Some(members) = channels.get(channel) {
            for (_, tx) in members {
                let event = BusEvent::Message {
                    payload: payload.clone(),
                };
                if tx.try_send(event).is_err() {
                    tracing::warn!(channel, "in-process subscriber overflowed; message dropped");
                }
            }
        }
        Ok(receivers)
    }

    fn subscribe_now(&self, channels: &[String]) -> Result<(), BusError> {
        self.check()?;
        let mut map = self.inner.channels.write();
        for ch in channels {
            let members = map.entry(ch.clone()).or_default();
            if !members.iter().any(|(id, _)| *id == self.id) {
                members.push((self.id, self.tx.clone()));
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), BusError> {
        if self.connected.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(BusError::NotConnected { bus: self.kind() })
        }
    }
}

impl Drop for LocalBus {
    fn drop(&mut self) {
        self.drop_subscriptions();
        self.inner.members.fetch_sub(1, Ordering::AcqRel);
    }
}

#[async_trait::async_trait]
impl ClusterBus for LocalBus {
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<(), BusError> {
        self.publish_counted(channel, payload).await.map(|_| ())
    }

    async fn publish_counted(
        &self,
        channel: &str,
        payload: Bytes,
    ) -> Result<Option<u64>, BusError> {
        self.send_now(channel, payload).map(Some)
    }

    fn enqueue(&self, channel: String, payload: Bytes, sent: Option<Sent>) -> Result<(), BusError> {
        self.send_now(&channel, payload)?;
        if let Some(sent) = sent {
            sent(Ok(()));
        }
        Ok(())
    }

    async fn subscribe(&self, channels: &[String]) -> Result<(), BusError> {
        self.subscribe_now(channels)
    }

    async fn unsubscribe(&self, channels: &[String]) -> Result<(), BusError> {
        self.check()?;
        let mut map = self.inner.channels.write();
        for ch in channels {
            if let Some(members) = map.get_mut(ch) {
                members.retain(|(id, _)| *id != self.id);
                if members.is_empty() {
                    map.remove(ch);
                }
            }
        }
        Ok(())
    }

    fn take_events(&self) -> Option<BusEvents> {
        self.rx.lock().take().map(BusEvents::new)
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    fn may_have_peers(&self) -> bool {
        self.inner.members.load(Ordering::Acquire) > 1
    }

    fn kind(&self) -> &'static str {
        "local"
    }

    fn recovery_store(
        &self,
        _channels: &super::Channels,
        _cluster: &crate::config::ClusterConfig,
    ) -> Option<Arc<dyn RecoveryStore>> {
        Some(self.inner.recovery.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_to_subscribers_in_order_and_survives_outage() {
        let broker = LocalBroker::new();
        let a = broker.connect();
        let b = broker.connect();
        let mut rx = b.take_events().unwrap();
        assert!(a.may_have_peers());
        b.subscribe(&["c".into()]).await.unwrap();
        for i in 0..3u8 {
            a.publish("c", Bytes::from(vec![i])).await.unwrap();
        }
        a.publish("other", Bytes::new()).await.unwrap();
        for i in 0..3u8 {
            match rx.recv().await.unwrap() {
                BusEvent::Message { payload } => {
                    assert_eq!(&payload[..], &[i]);
                }
                e => panic!("unexpected {e:?}"),
            }
        }
        b.set_connected(false);
        assert!(matches!(rx.recv().await, Some(BusEvent::Disconnected)));
        let down = b.publish("c", Bytes::new()).await.unwrap_err();
        assert!(matches!(down, BusError::NotConnected { bus: "local" }));
        assert_eq!(
            down.to_string(),
            "cluster bus unavailable: the local bus is not connected"
        );
        assert_eq!(broker.subscribers("c"), 0);
        b.set_connected(true);
        assert!(matches!(rx.recv().await, Some(BusEvent::Reconnected)));
        drop(b);
        assert!(!a.may_have_peers());
    }
}
