//! Between the wire and the node: checks every request field (a bad one is
//! `INVALID_ARGUMENT` with a message naming it), turns requests into the
//! Socket.IO layer's types, answers into responses, and operation errors
//! into status codes.

use crate::ids::RoomNameError;
use std::time::Duration;

use bytes::Bytes;
use gateway_proto::admin::v1 as pb;
use gateway_proto::common::v1::Payload as PbPayload;
use prost_types::Timestamp;
use tonic::Status;

use crate::cluster::adapter::ClusterError;
use crate::cluster::message::{SocketAck, SocketInfo};
use crate::cluster::{BusError, NodeInfo};
use crate::ids::{EventNameError, NodeId};
use crate::protocol::socketio::RESERVED_EVENTS;
use crate::socketio::{OpError, Payload, PayloadError, SocketIo, Target, payload};
use crate::telemetry::ErrorChain;

/// Longest `EmitWithAck.timeout_ms`: 5 minutes.
pub(crate) const MAX_ACK_TIMEOUT_MS: u32 = 300_000;

/// Most names (rooms and socket ids, excepts included) in one target, and
/// most rooms in one join or leave.
pub(crate) const MAX_TARGET_NAMES: usize = 10_000;

fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

/// A request checked and converted, ready for the Socket.IO layer.
pub(crate) struct Selection {
    pub(crate) nsp: String,
    pub(crate) target: Target,
}

/// The namespace a request names: empty means `/`; it must start with `/`
/// and be allowed by one of the configured namespace policies.
pub(crate) fn namespace(io: &SocketIo, raw: &str) -> Result<String, Status> {
    let nsp = if raw.is_empty() { "/" } else { raw };
    if !nsp.starts_with('/') {
        return Err(invalid(format!("namespace {raw:?} must start with '/'")));
    }
    if io.namespaces().policy(nsp).is_none() {
        return Err(invalid(format!(
            "namespace {nsp:?} is not declared in the gateway's configuration"
        )));
    }
    Ok(nsp.to_owned())
}

fn check_names(io: &SocketIo, field: &str, names: &[String]) -> Result<(), Status> {
    let max = io.config().limits.max_room_name;
    for (i, name) in names.iter().enumerate() {
        crate::ids::check_room_name(name, max).map_err(|e| {
            invalid(match e {
                RoomNameError::TooLong { len, max } => {
                    format!("{field}[{i}] is {len} bytes long, more than the limit of {max}")
                }
                _ => format!("{field}[{i}] must not be empty"),
            })
        })?;
    }
    Ok(())
}

/// The sockets a target selects. `volatile` comes from the emit request.
pub(crate) fn target(
    io: &SocketIo,
    t: Option<pb::Target>,
    volatile: bool,
) -> Result<Selection, Status> {
    let t = t.unwrap_or_default();
    let nsp = namespace(io, &t.namespace)?;
    check_names(io, "target.rooms", &t.rooms)?;
    check_names(io, "target.socket_ids", &t.socket_ids)?;
    check_names(io, "target.except_rooms", &t.except_rooms)?;
    check_names(io, "target.except_socket_ids", &t.except_socket_ids)?;
    let names =
        t.rooms.len() + t.socket_ids.len() + t.except_rooms.len() + t.except_socket_ids.len();
    if names > MAX_TARGET_NAMES {
        return Err(invalid(format!(
            "the target names {names} rooms and socket ids, more than the limit of {MAX_TARGET_NAMES}"
        )));
    }
    // A socket is in the room named after its own id, so an excepted id is
    // an excepted room: the node's target keeps them in one list.
    let mut except_rooms = t.except_rooms;
    except_rooms.extend(t.except_socket_ids);
    Ok(Selection {
        nsp,
        target: Target {
            rooms: t.rooms,
            socket_ids: t.socket_ids,
            except_rooms,
            volatile,
        },
    })
}

/// An event name a backend may emit.
pub(crate) fn event(io: &SocketIo, event: &str) -> Result<(), Status> {
    let max = io.config().limits.max_event_name;
    crate::ids::check_event_name(event, max).map_err(|e| match e {
        EventNameError::Reserved => invalid(format!(
            "event {event:?} is reserved by Socket.IO ({})",
            RESERVED_EVENTS.join(", ")
        )),
        e => invalid(e.to_string()),
    })
}

/// The arguments of an emit: a JSON array (empty means `[]`) whose
/// placeholders match the attachments.
pub(crate) fn payload(io: &SocketIo, p: Option<PbPayload>) -> Result<Payload, Status> {
    let p = p.unwrap_or_default();
    let max = io.config().limits.max_attachments;
    if p.attachments.len() > max {
        return Err(invalid(format!(
            "payload has {} attachments, more than the limit of {max}",
            p.attachments.len()
        )));
    }
    let payload = Payload {
        args: if p.json_args.is_empty() {
            "[]".to_owned()
        } else {
            p.json_args
        },
        attachments: p.attachments.into_iter().map(Bytes::from).collect(),
    };
    payload::validate(&payload).map_err(|e| match e {
        PayloadError::NotAnArray => {
            invalid("payload.json_args must be the text of a JSON array, e.g. [\"hello\",1]")
        }
        PayloadError::Placeholders(n) => invalid(format!(
            "payload.json_args placeholders {{\"_placeholder\":true,\"num\":N}} must match \
             the {n} attachment(s): one per attachment, N from 0 to {}",
            n.saturating_sub(1)
        )),
    })?;
    Ok(payload)
}

/// `EmitWithAck.timeout_ms`: required and bounded.
pub(crate) fn ack_timeout(ms: u32) -> Result<Duration, Status> {
    if ms == 0 || ms > MAX_ACK_TIMEOUT_MS {
        return Err(invalid(format!(
            "timeout_ms must be between 1 and {MAX_ACK_TIMEOUT_MS} (got {ms})"
        )));
    }
    Ok(Duration::from_millis(u64::from(ms)))
}

/// The rooms of a join or a leave: at least one, none empty.
pub(crate) fn rooms(io: &SocketIo, rooms: &[String]) -> Result<(), Status> {
    if rooms.is_empty() {
        return Err(invalid("rooms must name at least one room"));
    }
    if rooms.len() > MAX_TARGET_NAMES {
        return Err(invalid(format!(
            "rooms names {} rooms, more than the limit of {MAX_TARGET_NAMES}",
            rooms.len()
        )));
    }
    check_names(io, "rooms", rooms)
}

/// The rooms of a join: names shaped like a socket id are reserved for the
/// sockets' own-id rooms, which every socket is in already.
pub(crate) fn rooms_to_join(io: &SocketIo, rooms: &[String]) -> Result<(), Status> {
    self::rooms(io, rooms)?;
    if let Some((i, room)) = rooms
        .iter()
        .enumerate()
        .find(|(_, r)| crate::ids::is_socket_id_shape(r))
    {
        return Err(invalid(format!(
            "rooms[{i}] {room:?} has the shape of a socket id: such names are reserved \
             for the room every socket is in, named after its own id"
        )));
    }
    Ok(())
}

/// The rooms of a leave, without the names shaped like a socket id: nobody
/// can join such a room, and a socket never leaves its own-id room, so
/// asking for one is ignored.
pub(crate) fn rooms_to_leave(io: &SocketIo, rooms: Vec<String>) -> Result<Vec<String>, Status> {
    self::rooms(io, &rooms)?;
    Ok(rooms
        .into_iter()
        .filter(|r| !crate::ids::is_socket_id_shape(r))
        .collect())
}

/// The status of a failed operation. `partial` says what the node may have
/// done on its own before the bus failed.
pub(crate) fn op_status(e: OpError, partial: &str) -> Status {
    match e {
        OpError::Payload(e) => invalid(format!("payload: {e}")),
        OpError::Invalid(m) | OpError::Cluster(ClusterError::Invalid(m)) => invalid(m),
        OpError::Cluster(ClusterError::Bus(e @ BusError::Encode(_))) => {
            Status::internal(format!("{}; {partial}", ErrorChain(&e)))
        }
        OpError::Cluster(ClusterError::Bus(e)) => {
            Status::unavailable(format!("{}; {partial}", ErrorChain(&e)))
        }
    }
}

pub(crate) fn timestamp_ms(ms: u64) -> Timestamp {
    Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

pub(crate) fn socket_info(s: SocketInfo) -> pb::SocketInfo {
    pb::SocketInfo {
        id: s.id,
        namespace: s.nsp,
        rooms: s.rooms,
        user_id: s.user_id.unwrap_or_default(),
        node_id: s.node_id.into(),
        transport: s.transport,
        connected_at: Some(timestamp_ms(s.connected_at_ms)),
        data: s.data.unwrap_or_default(),
    }
}

pub(crate) fn socket_ack(a: SocketAck) -> pb::SocketAck {
    pb::SocketAck {
        socket_id: a.socket_id,
        payload: Some(PbPayload {
            json_args: a.args,
            attachments: a.attachments.into_iter().map(Vec::from).collect(),
        }),
    }
}

pub(crate) fn node_info(n: NodeInfo) -> pb::NodeInfo {
    pb::NodeInfo {
        node_id: n.node_id.into(),
        version: n.version,
        connections: saturate(n.connections),
        sockets: saturate(n.sockets),
        started_at: Some(timestamp_ms(n.started_at_ms)),
        last_heartbeat: Some(timestamp_ms(n.last_heartbeat_ms)),
    }
}

pub(crate) fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Sorted, without duplicates.
pub(crate) fn node_ids(mut ids: Vec<NodeId>) -> Vec<String> {
    ids.sort();
    ids.dedup();
    ids.into_iter().map(String::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_from_milliseconds() {
        let t = timestamp_ms(1_700_000_000_123);
        assert_eq!(t.seconds, 1_700_000_000);
        assert_eq!(t.nanos, 123_000_000);
    }

    #[test]
    fn ack_timeouts_are_bounded() {
        assert!(ack_timeout(0).is_err());
        assert!(ack_timeout(MAX_ACK_TIMEOUT_MS + 1).is_err());
        assert_eq!(ack_timeout(250).unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn node_ids_are_sorted_once() {
        assert_eq!(
            node_ids(
                ["b", "a", "b"]
                    .map(|n| NodeId::parse(&n.repeat(6)).unwrap())
                    .to_vec()
            ),
            vec!["aaaaaa".to_owned(), "bbbbbb".to_owned()]
        );
    }
}
