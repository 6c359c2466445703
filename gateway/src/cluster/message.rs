//! What nodes say to each other over the bus, in a compact binary form
//! (postcard). Every message names the node that sent it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::BusError;
use crate::ids::NodeId;

pub(crate) use super::target::Target;

/// A message on a bus channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum BusMessage {
    Broadcast(Broadcast),
    Request(Request),
    Response(Response),
    Heartbeat(Heartbeat),
    /// The node is leaving (drain): forget it now rather than at timeout.
    Goodbye {
        node_id: NodeId,
    },
    /// Where node `node_id` serves the requests other nodes forward to it
    /// (its internal listener), sent with each heartbeat when it has one.
    Internal {
        node_id: NodeId,
        addr: String,
    },
    /// Sent to a node's channel: socket `sid` of `nsp`, which node
    /// `holder` still holds as connected, was recovered by node `by` (its
    /// client came back there): `holder` drops its copy without keeping a
    /// session for it. (A node's channel is also heard by nodes holding
    /// sockets moved from it, hence the addressee.)
    Taken {
        nsp: String,
        sid: String,
        holder: NodeId,
        by: NodeId,
    },
}

impl BusMessage {
    /// The message's bytes on the bus; a message that cannot be encoded is
    /// an error, never an empty payload.
    pub(crate) fn encode(&self) -> Result<Bytes, BusError> {
        postcard::to_stdvec(self)
            .map(Bytes::from)
            .map_err(BusError::Encode)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }

    /// Whether `bytes` is a broadcast `node` sent, read from the message's
    /// first field only. A node hears its own emits on every channel it is
    /// subscribed to, and skips them without decoding (and copying) the
    /// rest.
    pub(crate) fn is_broadcast_from(bytes: &[u8], node: NodeId) -> bool {
        /// The variant index and first field of [`BusMessage::Broadcast`]
        /// (postcard writes fields in order; other variants fail to read).
        #[derive(Deserialize)]
        enum Head<'a> {
            Broadcast { origin: &'a str },
        }
        matches!(
            postcard::take_from_bytes::<Head>(bytes),
            Ok((Head::Broadcast { origin }, _)) if origin == node.as_str()
        )
    }
}

/// An emit to be delivered by the nodes receiving it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Broadcast {
    pub(crate) origin: NodeId,
    pub(crate) nsp: String,
    pub(crate) target: Target,
    /// `target.rooms` then `target.socket_ids` form one ordered list of
    /// target names; these are the indices this copy is responsible for. A receiving node
    /// delivers to a local socket only when the first target name that
    /// selects the socket is one of these: each socket gets one copy.
    /// Empty for a whole-namespace emit.
    pub(crate) responsible: Vec<u32>,
    /// The Engine.IO text packet (`42...`), encoded once by the origin.
    pub(crate) text: String,
    pub(crate) attachments: Vec<Bytes>,
    /// Microseconds since the epoch when published (pub/sub lag).
    pub(crate) sent_at_us: u64,
    /// The W3C trace context of the emit (`traceparent`, `tracestate`
    /// pairs) when it was traced; empty otherwise. The receiving node
    /// delivers in a span of that trace.
    pub(crate) trace: Vec<(String, String)>,
}

/// A cluster-wide request; every node answers on the origin's node channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Request {
    pub(crate) id: u64,
    pub(crate) origin: NodeId,
    pub(crate) nsp: String,
    pub(crate) target: Target,
    pub(crate) op: Op,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Op {
    FetchSockets,
    Join(Vec<String>),
    Leave(Vec<String>),
    Disconnect {
        close: bool,
    },
    ListRooms,
    EmitWithAck {
        event: String,
        args: String,
        attachments: Vec<Bytes>,
        timeout_ms: u64,
    },
    /// Every socket of every namespace, at most `max`, as the Socket.IO
    /// Admin UI shows them (the request's namespace and target are not
    /// used).
    FetchAdminSockets {
        max: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Response {
    pub(crate) id: u64,
    pub(crate) node_id: NodeId,
    pub(crate) body: Answer,
}

/// One node's answer to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Answer {
    Sockets(Vec<SocketInfo>),
    Count(u64),
    Rooms(Vec<(String, u64)>),
    Acks {
        acks: Vec<SocketAck>,
        timed_out: Vec<String>,
    },
    /// The node could not do its part because the bus failed it (a join
    /// whose room subscription was not confirmed; the join is undone).
    Unavailable(String),
    /// Sockets in the Socket.IO Admin UI's shape, each as JSON text.
    AdminSockets(Vec<String>),
}

/// A socket as fetch-sockets reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketInfo {
    pub id: String,
    pub nsp: String,
    pub rooms: Vec<String>,
    pub user_id: Option<String>,
    pub node_id: NodeId,
    pub transport: String,
    pub connected_at_ms: u64,
    /// Attached data as JSON text.
    pub data: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketAck {
    pub socket_id: String,
    pub args: String,
    pub attachments: Vec<Bytes>,
}

/// A node announcing itself (every heartbeat interval).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Heartbeat {
    pub(crate) node_id: NodeId,
    pub(crate) version: String,
    pub(crate) connections: u64,
    pub(crate) sockets: u64,
    pub(crate) started_at_ms: u64,
    /// A new node asks everyone to announce themselves at once.
    pub(crate) hello: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let m = BusMessage::Broadcast(Broadcast {
            origin: NodeId::parse("node01").unwrap(),
            nsp: "/".into(),
            target: Target::room("a").except("x"),
            responsible: vec![0],
            text: "42[\"ev\",1]".into(),
            attachments: vec![Bytes::from_static(&[1, 2])],
            sent_at_us: 7,
            trace: vec![],
        });
        assert_eq!(BusMessage::decode(&m.encode().unwrap()).unwrap(), m);
        assert!(BusMessage::decode(&[0xff, 0xff, 0xff]).is_err());
        assert!(BusMessage::decode(&[]).is_err());
    }

    #[test]
    fn a_nodes_own_broadcast_is_told_from_its_first_field() {
        let (a, b) = (
            NodeId::parse("node0a").unwrap(),
            NodeId::parse("node0b").unwrap(),
        );
        let from_a = BusMessage::Broadcast(Broadcast {
            origin: a,
            nsp: "/".into(),
            target: Target::room("r"),
            responsible: vec![0],
            text: "42[\"ev\"]".into(),
            attachments: vec![],
            sent_at_us: 1,
            trace: vec![],
        })
        .encode()
        .unwrap();
        assert!(BusMessage::is_broadcast_from(&from_a, a));
        assert!(!BusMessage::is_broadcast_from(&from_a, b));
        // Other kinds of message from the node itself are read in full.
        let goodbye = BusMessage::Goodbye { node_id: a }.encode().unwrap();
        assert!(!BusMessage::is_broadcast_from(&goodbye, a));
        assert!(!BusMessage::is_broadcast_from(&[], a));
        assert!(!BusMessage::is_broadcast_from(&from_a[..3], a));
    }
}
