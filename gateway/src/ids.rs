//! Identifiers: Engine.IO session ids, node ids and Socket.IO socket ids.
//!
//! A socket id is the id of the node that holds it followed by random
//! characters, so any node can route a message for a socket id to the right
//! node without a per-socket subscription.

use rand::Rng;

/// Length of a node id, the prefix of every socket id.
pub const NODE_ID_LEN: usize = 6;
/// Length of socket ids and Engine.IO session ids.
pub const ID_LEN: usize = 20;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn random_chars(out: &mut String, n: usize) {
    let mut rng = rand::rng();
    for _ in 0..n {
        out.push(ALPHABET[rng.random_range(0..64)] as char);
    }
}

/// A fresh random node id.
pub fn new_node_id() -> String {
    let mut s = String::with_capacity(NODE_ID_LEN);
    random_chars(&mut s, NODE_ID_LEN);
    s
}

pub fn is_valid_node_id(id: &str) -> bool {
    id.len() == NODE_ID_LEN && id.bytes().all(|b| ALPHABET.contains(&b))
}

/// A fresh Engine.IO session id.
pub fn new_session_id() -> String {
    let mut s = String::with_capacity(ID_LEN);
    random_chars(&mut s, ID_LEN);
    s
}

/// A fresh socket id naming `node_id` as its holder.
pub fn new_socket_id(node_id: &str) -> String {
    let mut s = String::with_capacity(ID_LEN);
    s.push_str(node_id);
    random_chars(&mut s, ID_LEN - node_id.len());
    s
}

/// Whether `s` has the shape of a socket id (such names are the sockets'
/// own rooms, so they cannot be joined as ordinary rooms).
pub fn is_socket_id_shape(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| ALPHABET.contains(&b))
}

/// The node that holds `socket_id`, when the id has the gateway's shape.
pub fn node_of(socket_id: &str) -> Option<&str> {
    if !is_socket_id_shape(socket_id) {
        return None;
    }
    let node = socket_id.get(..NODE_ID_LEN)?;
    is_valid_node_id(node).then_some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_ids_name_their_node() {
        let node = new_node_id();
        assert!(is_valid_node_id(&node));
        let id = new_socket_id(&node);
        assert_eq!(id.len(), ID_LEN);
        assert_eq!(node_of(&id), Some(node.as_str()));
        assert_ne!(new_socket_id(&node), id);
        assert_eq!(node_of("short"), None);
        assert_eq!(node_of("ééééééééé0"), None);
    }
}
