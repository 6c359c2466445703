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
