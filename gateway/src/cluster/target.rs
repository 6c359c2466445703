//! Who an emit is for, as every layer that carries one (the Socket.IO
//! server, the cluster bus, the admin API) names it.

/// Who an emit is for: sockets in any of `rooms` or with one of
/// `socket_ids`, except those in any of `except_rooms` (room names or socket
/// ids). No rooms and no ids means the whole namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub rooms: Vec<String>,
    pub socket_ids: Vec<String>,
    pub except_rooms: Vec<String>,
    /// Drop rather than disconnect when a recipient's queue is full.
    pub volatile: bool,
}

impl Target {
    pub fn room(room: impl Into<String>) -> Self {
        Self {
            rooms: vec![room.into()],
            ..Self::default()
        }
    }

    pub fn socket(id: impl Into<String>) -> Self {
        Self {
            socket_ids: vec![id.into()],
            ..Self::default()
        }
    }

    pub fn except(mut self, name: impl Into<String>) -> Self {
        self.except_rooms.push(name.into());
        self
    }

    /// Whether it selects the whole namespace.
    pub(crate) fn is_namespace(&self) -> bool {
        self.rooms.is_empty() && self.socket_ids.is_empty()
    }

    /// Target name `i` of the ordered list `rooms ++ socket_ids`.
    pub(crate) fn name(&self, i: usize) -> Option<Name<'_>> {
        match self.rooms.get(i) {
            Some(r) => Some(Name::Room(r)),
            None => self
                .socket_ids
                .get(i - self.rooms.len())
                .map(|s| Name::Id(s)),
        }
    }

    pub(crate) fn names(&self) -> usize {
        self.rooms.len() + self.socket_ids.len()
    }
}

/// One name of a [`Target`]: a room or a socket id.
#[derive(Clone, Copy)]
pub(crate) enum Name<'a> {
    Room(&'a str),
    Id(&'a str),
}
