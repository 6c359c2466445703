//! Which nodes are alive: every node publishes a heartbeat; a node not heard
//! from within the node timeout is gone (or sooner, when it says goodbye).

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::message::Heartbeat;
use crate::ids::NodeId;

/// A live node as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub node_id: NodeId,
    pub version: String,
    pub connections: u64,
    pub sockets: u64,
    pub started_at_ms: u64,
    /// Milliseconds since the epoch of the last heartbeat.
    pub last_heartbeat_ms: u64,
}

pub(crate) struct Registry {
    timeout: Duration,
    nodes: Mutex<HashMap<NodeId, (NodeInfo, Instant)>>,
    /// Internal listeners' addresses, of the nodes that have one.
    internal: Mutex<HashMap<NodeId, String>>,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Registry {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            nodes: Mutex::new(HashMap::new()),
            internal: Mutex::new(HashMap::new()),
        }
    }

    /// Records a heartbeat; true when the node was not known.
    pub(crate) fn seen(&self, hb: &Heartbeat) -> bool {
        let info = NodeInfo {
            node_id: hb.node_id,
            version: hb.version.clone(),
            connections: hb.connections,
            sockets: hb.sockets,
            started_at_ms: hb.started_at_ms,
            last_heartbeat_ms: now_ms(),
        };
        self.nodes
            .lock()
            .insert(hb.node_id, (info, Instant::now()))
            .is_none()
    }

    pub(crate) fn forget(&self, node_id: NodeId) {
        self.nodes.lock().remove(&node_id);
        self.internal.lock().remove(&node_id);
    }

    /// Records where `node_id` serves forwarded requests.
    pub(crate) fn set_internal(&self, node_id: NodeId, addr: String) {
        let mut internal = self.internal.lock();
        if internal.get(&node_id) != Some(&addr) {
            // One address per node: a bounded map (the registry's nodes).
            internal.insert(node_id, addr);
        }
    }

    /// Where a live `node_id` serves forwarded requests, if it does.
    pub(crate) fn internal(&self, node_id: NodeId) -> Option<String> {
        if !self.is_alive(node_id) {
            self.internal.lock().remove(&node_id);
            return None;
        }
        self.internal.lock().get(&node_id).cloned()
    }

    /// Live peers (this node excluded), dropping the expired ones.
    pub(crate) fn alive(&self) -> Vec<NodeInfo> {
        let mut nodes = self.nodes.lock();
        let now = Instant::now();
        nodes.retain(|_, (_, seen)| now.duration_since(*seen) < self.timeout);
        nodes.values().map(|(n, _)| n.clone()).collect()
    }

    pub(crate) fn is_alive(&self, node_id: NodeId) -> bool {
        self.nodes
            .lock()
            .get(&node_id)
            .is_some_and(|(_, seen)| seen.elapsed() < self.timeout)
    }
}
