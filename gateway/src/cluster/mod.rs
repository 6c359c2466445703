//! The cluster: nodes that share nothing but a bus (Redis pub/sub, or an
//! in-process broker when a node runs alone or tests run several nodes in
//! one process).
//!
//! Channels (prefix `p`, default `sio-gw`):
//! - `p:ns:<len>:<nsp>`: whole-namespace emits; subscribed while the node
//!   has a socket in the namespace;
//! - `p:room:<len>:<nsp>:<room>`: emits to a room; subscribed while the node
//!   has a member in the room (so a node never receives traffic of rooms it
//!   has no member in);
//! - `p:node:<node id>`: emits to socket ids held by that node (a socket id
//!   starts with its node's id) and answers to that node's requests;
//! - `p:req`: cluster-wide requests (fetch sockets, join/leave, disconnect,
//!   room lists, emit-with-ack), answered by every node;
//! - `p:hb`: heartbeats, from which each node knows who is alive.

pub(crate) mod adapter;
pub(crate) mod local;
pub(crate) mod message;
pub(crate) mod recovery;
pub(crate) mod redis;
pub(crate) mod redis_recovery;
pub(crate) mod registry;
pub(crate) mod subscriptions;
pub(crate) mod target;

use bytes::Bytes;

use crate::ids::NodeId;
use tokio::sync::mpsc;

pub use local::{LocalBroker, LocalBus};
pub(crate) use registry::{NodeInfo, Registry};
pub use subscriptions::SubscribeError;
pub(crate) use subscriptions::{Held, Subscriptions};
pub use target::Target;

/// A bus failure. The message says what failed, and is what a client's
/// ack or an admin caller reads (`cluster bus unavailable: ...`); the error
/// beneath it, when there is one, is its [`source`](std::error::Error::source)
/// (logs show the whole chain).
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    /// Redis did not carry out `op` (`connect`, `publish`, `subscribe`,
    /// `unsubscribe`): the Redis client's error says why.
    #[error("cluster bus unavailable: redis {op} failed")]
    Redis {
        op: &'static str,
        #[source]
        source: fred::error::Error,
    },
    /// The connection to the bus (`bus`: its [`kind`](ClusterBus::kind),
    /// `redis` or `local`) is down: nothing was sent.
    #[error("cluster bus unavailable: the {bus} bus is not connected")]
    NotConnected { bus: &'static str },
    /// Messages wait for Redis faster than it takes them: this one was not
    /// queued.
    #[error("cluster bus unavailable: redis send queue full")]
    QueueFull,
    /// The bus did not confirm a subscription the node needs.
    #[error("cluster bus unavailable: subscription not confirmed")]
    NotConfirmed(#[source] SubscribeError),
    /// Another node could not do its part of a cluster-wide request;
    /// `reason` is its own account (it crossed the bus as text).
    #[error("cluster bus unavailable: node {node}: {reason}")]
    Peer { node: String, reason: String },
    /// A message this node made could not be encoded (a bug, logged and
    /// counted like a failed publish; nothing is sent).
    #[error("cluster message could not be encoded")]
    Encode(#[source] postcard::Error),
}

/// Told once what became of an enqueued message (see
/// [`ClusterBus::enqueue`]).
pub(crate) type Sent = Box<dyn FnOnce(Result<(), BusError>) + Send>;

/// What a bus hands the node.
#[derive(Debug)]
pub(crate) enum BusEvent {
    /// A message on a subscribed channel (including the node's own).
    Message { payload: Bytes },
    /// The connection came back: every subscription must be made again.
    Reconnected,
    /// The connection is lost.
    Disconnected,
}

/// The events of a bus, read by the cluster loop: the messages of a Redis
/// subscriber straight off its connection's channel (no task between the
/// connection and the loop: one wake-up per message, not two), and
/// everything else (the in-process broker's messages, connection events)
/// through a queue.
pub(crate) struct BusEvents {
    events: mpsc::Receiver<BusEvent>,
    messages: Option<redis::Messages>,
}

impl BusEvents {
    pub(crate) fn new(events: mpsc::Receiver<BusEvent>) -> Self {
        Self {
            events,
            messages: None,
        }
    }

    pub(crate) fn with_messages(
        events: mpsc::Receiver<BusEvent>,
        messages: redis::Messages,
    ) -> Self {
        Self {
            events,
            messages: Some(messages),
        }
    }

    /// The next event; `None` once the bus is gone. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> Option<BusEvent> {
        loop {
            let Some(messages) = &mut self.messages else {
                return self.events.recv().await;
            };
            tokio::select! {
                // A lost connection is heard before the messages after it.
                biased;
                event = self.events.recv() => return event,
                payload = messages.next() => match payload {
                    Some(payload) => return Some(BusEvent::Message { payload }),
                    None => self.messages = None,
                },
            }
        }
    }
}

/// A publish/subscribe transport between nodes.
#[async_trait::async_trait]
pub(crate) trait ClusterBus: Send + Sync + 'static {
    /// Publishes `payload` to every subscriber of `channel`.
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<(), BusError>;
    /// Publishes like [`ClusterBus::publish`] and says how many subscribers
    /// the message was handed to, when the bus can tell (Redis: the reply to
    /// `PUBLISH`; in-process: the subscriber count). The default cannot tell.
    async fn publish_counted(
        &self,
        channel: &str,
        payload: Bytes,
    ) -> Result<Option<u64>, BusError> {
        self.publish(channel, payload).await.map(|()| None)
    }
    /// Hands `payload` for `channel` to the bus without waiting for its
    /// answer: messages go out in the order of the calls (pipelined on one
    /// connection). Fails at once when the bus is known to be down or its
    /// send queue is full (and then `sent` is not called). Otherwise `sent`
    /// is called once with the message's fate: `Ok` once the bus accepted
    /// it (Redis replied to the publish), an error when it did not or its
    /// fate is unknown (the connection was lost with it in flight).
    fn enqueue(&self, channel: String, payload: Bytes, sent: Option<Sent>) -> Result<(), BusError>;
    async fn subscribe(&self, channels: &[String]) -> Result<(), BusError>;
    async fn unsubscribe(&self, channels: &[String]) -> Result<(), BusError>;
    /// The stream of incoming messages and connection events (taken once).
    fn take_events(&self) -> Option<BusEvents>;
    /// Whether the bus is connected now.
    fn is_connected(&self) -> bool;
    /// Whether other nodes may be listening (false for a lone in-process
    /// broker, which lets a single node skip encoding bus messages).
    fn may_have_peers(&self) -> bool {
        true
    }
    /// A short name for logs and metrics (`local`, `redis`).
    fn kind(&self) -> &'static str;
    /// Whether the bus is a server in another process (Redis), whose
    /// connection can be lost: readiness and the `gateway_redis_*` series
    /// follow it. An in-process broker is always there.
    fn is_remote(&self) -> bool {
        false
    }
    /// The connection state recovery store the nodes on this bus share
    /// (the in-process broker's, or one in Redis), made when first asked
    /// for; `channels` names its keys.
    fn recovery_store(
        &self,
        _channels: &Channels,
        _cluster: &crate::config::ClusterConfig,
    ) -> Option<std::sync::Arc<dyn recovery::RecoveryStore>> {
        None
    }
}

/// Channel names of one cluster.
#[derive(Debug, Clone)]
pub struct Channels {
    prefix: String,
}

impl Channels {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix every channel and key of the cluster starts with.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn namespace(&self, nsp: &str) -> String {
        format!("{}:ns:{}:{}", self.prefix, nsp.len(), nsp)
    }

    pub(crate) fn room(&self, nsp: &str, room: &str) -> String {
        format!("{}:room:{}:{}:{}", self.prefix, nsp.len(), nsp, room)
    }

    pub(crate) fn node(&self, node_id: NodeId) -> String {
        format!("{}:node:{}", self.prefix, node_id)
    }

    pub(crate) fn requests(&self) -> String {
        format!("{}:req", self.prefix)
    }

    pub(crate) fn heartbeats(&self) -> String {
        format!("{}:hb", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_unambiguous() {
        let c = Channels::new("p");
        assert_ne!(c.room("/a:b", "c"), c.room("/a", "b:c"));
        assert_eq!(c.room("/", "r"), "p:room:1:/:r");
        assert_eq!(c.namespace("/chat"), "p:ns:5:/chat");
        assert_eq!(c.node(NodeId::parse("abcdef").unwrap()), "p:node:abcdef");
    }

    #[test]
    fn bus_errors_say_what_failed_and_keep_why() {
        use std::error::Error as _;
        let e = BusError::NotConfirmed(SubscribeError::Timeout(std::time::Duration::from_secs(2)));
        assert_eq!(
            e.to_string(),
            "cluster bus unavailable: subscription not confirmed"
        );
        assert_eq!(
            e.source().unwrap().to_string(),
            "no confirmation from the bus within 2s"
        );
        let e = BusError::Encode(postcard::Error::SerializeSeqLengthUnknown);
        assert_eq!(e.to_string(), "cluster message could not be encoded");
        assert!(e.source().unwrap().is::<postcard::Error>());
        // Conditions of the bus itself have nothing beneath them.
        let e = BusError::NotConnected { bus: "redis" };
        assert_eq!(
            e.to_string(),
            "cluster bus unavailable: the redis bus is not connected"
        );
        assert!(e.source().is_none());
    }
}
