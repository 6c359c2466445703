//! Identifiers: Engine.IO session ids, node ids, Socket.IO socket ids, and
//! the one rule for room names and the one for event names (every path that
//! takes a room or an event name from a client, a backend or the admin API
//! checks it here).
//!
//! A socket id is the id of the node that holds it followed by random
//! characters, so any node can route a message for a socket id to the right
//! node without a per-socket subscription.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Length of a node id, the prefix of every socket id.
pub(crate) const NODE_ID_LEN: usize = 6;
/// Length of socket ids and Engine.IO session ids.
pub(crate) const ID_LEN: usize = 20;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn random_chars(out: &mut String, n: usize) {
    let mut rng = rand::rng();
    for _ in 0..n {
        out.push(ALPHABET[rng.random_range(0..64)] as char);
    }
}

/// A node's id: [`NODE_ID_LEN`] characters of the id alphabet, the prefix
/// of every socket id the node hands out. A type of its own so that a node
/// id is never taken for a socket id, a room or a namespace (all strings of
/// the same alphabet); on the bus and in the API it is its text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId([u8; NODE_ID_LEN]);

impl NodeId {
    /// A fresh random node id.
    pub fn random() -> Self {
        let mut rng = rand::rng();
        Self(std::array::from_fn(|_| ALPHABET[rng.random_range(0..64)]))
    }

    /// `s` as a node id, when it has the shape of one.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let bytes: [u8; NODE_ID_LEN] = s.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| ALPHABET.contains(b))
            .then_some(Self(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Only alphabet bytes (ASCII) are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeId({})", self.as_str())
    }
}

impl TryFrom<String> for NodeId {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("{s:?} is not a node id"))
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> String {
        id.as_str().to_owned()
    }
}

impl PartialEq<str> for NodeId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

/// A fresh Engine.IO session id of a session on node `node`: like a socket
/// id, it starts with its node's id (then 84 random bits), so that any node
/// can tell which node owns a session ([`node_of`]).
pub(crate) fn new_session_id(node: NodeId) -> String {
    new_socket_id(node)
}

/// A fresh private session id (`pid`) of connection state recovery: random
/// (120 bits), and never shown to anyone but its client.
pub(crate) fn new_pid() -> String {
    let mut s = String::with_capacity(ID_LEN);
    random_chars(&mut s, ID_LEN);
    s
}

/// A fresh socket id naming `node` as its holder.
pub(crate) fn new_socket_id(node: NodeId) -> String {
    let mut s = String::with_capacity(ID_LEN);
    s.push_str(node.as_str());
    random_chars(&mut s, ID_LEN - NODE_ID_LEN);
    s
}

/// Whether `s` has the shape of a socket id (such names are the sockets'
/// own rooms, so they cannot be joined as ordinary rooms).
pub(crate) fn is_socket_id_shape(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| ALPHABET.contains(&b))
}

/// The node that holds `socket_id` (or owns an Engine.IO session id), when
/// the id has the gateway's shape.
pub(crate) fn node_of(socket_id: &str) -> Option<NodeId> {
    if !is_socket_id_shape(socket_id) {
        return None;
    }
    NodeId::parse(socket_id.get(..NODE_ID_LEN)?)
}

/// Why a room name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RoomNameError {
    #[error("room name must not be empty")]
    Empty,
    #[error("room name is {len} bytes long, more than the limit of {max}")]
    TooLong { len: usize, max: usize },
    /// Such names are the sockets' own rooms, which cannot be joined.
    #[error("room name is reserved: it has the shape of a socket id")]
    SocketIdShape,
}

/// A room name as it may be targeted: 1 to `max` bytes
/// (`limits.max_room_name`). Socket ids qualify (each socket is in the
/// room named after its id).
pub(crate) fn check_room_name(name: &str, max: usize) -> Result<(), RoomNameError> {
    if name.is_empty() {
        return Err(RoomNameError::Empty);
    }
    if name.len() > max {
        return Err(RoomNameError::TooLong {
            len: name.len(),
            max,
        });
    }
    Ok(())
}

/// A room name as it may be joined or left: [`check_room_name`], and not
/// of a socket id's shape.
pub(crate) fn check_joinable_room(name: &str, max: usize) -> Result<(), RoomNameError> {
    check_room_name(name, max)?;
    if is_socket_id_shape(name) {
        return Err(RoomNameError::SocketIdShape);
    }
    Ok(())
}

/// Why an event name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EventNameError {
    #[error("event must not be empty")]
    Empty,
    #[error("event is {len} bytes long, more than the limit of {max}")]
    TooLong { len: usize, max: usize },
    /// Socket.IO's own events (`connect`, `disconnect`, ...).
    #[error("event is reserved by Socket.IO")]
    Reserved,
    /// `$`-names are the gateway's client commands (`$join`, `$publish`).
    #[error("event names starting with `$` are the gateway's own")]
    Command,
}

/// An event name the server side may emit (a backend, the admin API): 1 to
/// `max` bytes (`limits.max_event_name`), not one of Socket.IO's reserved
/// events.
pub(crate) fn check_event_name(name: &str, max: usize) -> Result<(), EventNameError> {
    if name.is_empty() {
        return Err(EventNameError::Empty);
    }
    if crate::protocol::socketio::RESERVED_EVENTS.contains(&name) {
        return Err(EventNameError::Reserved);
    }
    if name.len() > max {
        return Err(EventNameError::TooLong {
            len: name.len(),
            max,
        });
    }
    Ok(())
}

/// An event name a client may `$publish`: [`check_event_name`], and not one
/// of the gateway's own `$`-commands.
pub(crate) fn check_publishable_event(name: &str, max: usize) -> Result<(), EventNameError> {
    check_event_name(name, max)?;
    if name.starts_with('$') {
        return Err(EventNameError::Command);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_checked_in_one_place() {
        assert_eq!(check_event_name("", 8), Err(EventNameError::Empty));
        assert_eq!(
            check_event_name("connect", 8),
            Err(EventNameError::Reserved)
        );
        assert_eq!(
            check_event_name("nine-byte", 8),
            Err(EventNameError::TooLong { len: 9, max: 8 })
        );
        assert_eq!(check_event_name("$own", 8), Ok(()), "a backend may");
        assert_eq!(
            check_publishable_event("$own", 8),
            Err(EventNameError::Command)
        );
        assert_eq!(
            check_publishable_event("disconnect", 16),
            Err(EventNameError::Reserved)
        );
        assert_eq!(check_publishable_event("chat", 8), Ok(()));
    }

    #[test]
    fn socket_ids_name_their_node() {
        let node = NodeId::random();
        assert_eq!(NodeId::parse(node.as_str()), Some(node));
        let id = new_socket_id(node);
        assert_eq!(id.len(), ID_LEN);
        assert_eq!(node_of(&id), Some(node));
        assert_ne!(new_socket_id(node), id);
        assert_eq!(node_of("short"), None);
        assert_eq!(node_of("ééééééééé0"), None);
        assert_eq!(NodeId::parse("toolongid"), None);
        assert_eq!(NodeId::parse("bad id"), None);
        let text: String = node.into();
        assert_eq!(NodeId::try_from(text), Ok(node));
    }

    #[test]
    fn room_names_are_checked_in_one_place() {
        assert_eq!(check_room_name("", 8), Err(RoomNameError::Empty));
        assert_eq!(
            check_room_name("nine-byte", 8),
            Err(RoomNameError::TooLong { len: 9, max: 8 })
        );
        assert_eq!(check_room_name("eight-ok", 8), Ok(()));
        let id = new_socket_id(NodeId::random());
        assert_eq!(check_room_name(&id, 256), Ok(()), "a socket's own room");
        assert_eq!(
            check_joinable_room(&id, 256),
            Err(RoomNameError::SocketIdShape)
        );
        assert_eq!(check_joinable_room("lobby", 256), Ok(()));
    }
}
