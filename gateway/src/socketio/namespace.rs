//! Namespaces: their policies (from configuration), their sockets and their
//! rooms, and local delivery of an encoded packet to a target.
//!
//! Every socket is in the room named after its own id. That room is not
//! stored: a target room that is a local socket id resolves to that socket.
//! Names shaped like a socket id are reserved for those rooms (a join is
//! refused), so nobody can listen in on another socket's own room.

use std::collections::HashMap;
use std::sync::Arc;

use globset::{GlobSet, GlobSetBuilder};
use parking_lot::RwLock;

use super::socket::Socket;
use crate::auth::JwtVerifier;
use crate::cluster::recovery::{RecoveryLimits, RecoveryStore, Track};
use crate::cluster::target::Name;
use crate::cluster::{Channels, Subscriptions, Target};
use crate::config::{
    Config, ConfigError, NamespaceConfig, NamespaceMatcher, join_pattern, unusable,
};
use crate::engine::{Broadcast, Frame, PushError};
use crate::reason::DisconnectReason;
use crate::telemetry::{Metrics, NamespaceMetrics};

/// What clients of a namespace may do.
#[derive(Debug)]
pub(crate) struct Policy {
    /// The configured name or pattern (the metrics label).
    pub(crate) name: String,
    matcher: NamespaceMatcher,
    join: GlobSet,
    pub(crate) publish: bool,
    pub(crate) jwt: Option<JwtVerifier>,
    /// Connection state recovery's bounds, when it is enabled.
    pub(crate) recovery: Option<RecoveryLimits>,
}

impl Policy {
    pub(crate) fn new(cfg: &NamespaceConfig) -> Result<Self, ConfigError> {
        let in_namespace = |e: ConfigError| e.in_namespace(&cfg.name);
        let mut join = GlobSetBuilder::new();
        for p in &cfg.join {
            join.add(join_pattern(p).map_err(in_namespace)?);
        }
        Ok(Self {
            name: cfg.name.clone(),
            matcher: NamespaceMatcher::new(&cfg.name)?,
            join: join
                .build()
                .map_err(|e| in_namespace(unusable("join", "patterns cannot be compiled", e)))?,
            publish: cfg.publish,
            jwt: cfg
                .jwt
                .as_ref()
                .map(JwtVerifier::start)
                .transpose()
                .map_err(|e| in_namespace(e.into()))?,
            recovery: RecoveryLimits::from_config(&cfg.recovery),
        })
    }

    /// May a client join or leave `room` by itself?
    pub(crate) fn may_join(&self, room: &str) -> bool {
        self.join.is_match(room)
    }
}

/// Subscribes the node to the channels its local membership needs.
pub(crate) struct ChannelWatch {
    pub(crate) subscriptions: Arc<Subscriptions>,
    pub(crate) channels: Channels,
    pub(crate) metrics: Arc<Metrics>,
    /// Connection state recovery's store, when a namespace has it on.
    pub(crate) recovery: Option<Arc<dyn RecoveryStore>>,
    /// Told of rooms joined and left (see [`super::Observer`]).
    pub(crate) observer: Arc<std::sync::OnceLock<Arc<dyn super::Observer>>>,
}

impl ChannelWatch {
    /// The bus channels a namespace needs while the node has a socket in
    /// it: its own and, with recovery over a store that hands events over
    /// the bus, its log's.
    pub(crate) fn namespace_channels(&self, name: &str, policy: &Policy) -> Vec<String> {
        let mut out = vec![self.channels.namespace(name)];
        if policy.recovery.is_some()
            && let Some(log) = self.recovery.as_ref().and_then(|s| s.log_channel(name))
        {
            out.push(log);
        }
        out
    }

    /// Records a socket's rooms (`own`, as they are now) with the store,
    /// when it keeps records of connected sockets.
    fn track_rooms(&self, policy: &Policy, socket: &Socket, own: &[Arc<str>]) {
        if let (Some(store), Some(limits)) = (&self.recovery, &policy.recovery)
            && store.keeps_records()
            && let Some(record) = socket.record_with(own)
        {
            store.track(Track::Rooms(record), limits);
        }
    }
}

type Members = HashMap<Arc<str>, Arc<Socket>>;

/// A live namespace on this node.
pub struct Namespace {
    pub(crate) name: Arc<str>,
    pub(crate) policy: Arc<Policy>,
    /// The series of this namespace's policy.
    pub(crate) metrics: Arc<NamespaceMetrics>,
    watch: Arc<ChannelWatch>,
    sockets: RwLock<Members>,
    rooms: RwLock<HashMap<Arc<str>, Members>>,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Outcome of a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Joined {
    /// Newly joined; `first_local` when no other local socket was in the room.
    Yes {
        first_local: bool,
    },
    Already,
}

impl Namespace {
    fn new(name: &str, policy: Arc<Policy>, watch: Arc<ChannelWatch>) -> Self {
        Self {
            name: name.into(),
            metrics: watch.metrics.namespace(&policy.name),
            policy,
            watch,
            sockets: RwLock::new(HashMap::new()),
            rooms: RwLock::new(HashMap::new()),
        }
    }

    /// The node's metrics.
    pub(crate) fn node_metrics(&self) -> &Metrics {
        &self.watch.metrics
    }

    pub(crate) fn socket(&self, id: &str) -> Option<Arc<Socket>> {
        self.sockets.read().get(id).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.sockets.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn insert(&self, socket: Arc<Socket>) {
        self.sockets.write().insert(socket.id_arc(), socket);
    }

    /// Adds `socket` to `room`. Lock order: the room map, then the socket's
    /// own room list.
    pub(crate) fn join(
        &self,
        socket: &Arc<Socket>,
        room: &str,
        max_rooms: usize,
    ) -> Result<Joined, &'static str> {
        if room == socket.id() {
            return Ok(Joined::Already);
        }
        if crate::ids::is_socket_id_shape(room) {
            return Err("room name reserved: it has the shape of a socket id");
        }
        let joined = self.join_locked(socket, room, max_rooms)?;
        if let (Joined::Yes { .. }, Some(observer)) = (joined, self.watch.observer.get()) {
            observer.joined(socket, room);
        }
        Ok(joined)
    }

    fn join_locked(
        &self,
        socket: &Arc<Socket>,
        room: &str,
        max_rooms: usize,
    ) -> Result<Joined, &'static str> {
        let mut rooms = self.rooms.write();
        let mut own = socket.rooms_mut();
        if own.iter().any(|r| &**r == room) {
            return Ok(Joined::Already);
        }
        // The own-id room counts against the limit.
        if own.len() + 1 >= max_rooms {
            return Err("too many rooms");
        }
        let (key, members) = match rooms.get_key_value(room) {
            Some((k, _)) => (k.clone(), None),
            None => (Arc::<str>::from(room), Some(Members::new())),
        };
        let first_local = members.is_some();
        if first_local {
            self.watch
                .subscriptions
                .want(self.watch.channels.room(&self.name, room));
            self.metrics.rooms_added(1);
        }
        let entry = rooms
            .entry(key.clone())
            .or_insert_with(|| members.unwrap_or_default());
        entry.insert(socket.id_arc(), socket.clone());
        own.push(key);
        self.watch.track_rooms(&self.policy, socket, &own);
        Ok(Joined::Yes { first_local })
    }

    /// Removes `socket` from `room`; returns `Some(last_local)` when it was in it.
    pub(crate) fn leave(&self, socket: &Socket, room: &str) -> Option<bool> {
        let left = self.leave_locked(socket, room);
        if let (Some(_), Some(observer)) = (left, self.watch.observer.get()) {
            observer.left(socket, room);
        }
        left
    }

    fn leave_locked(&self, socket: &Socket, room: &str) -> Option<bool> {
        let mut rooms = self.rooms.write();
        let mut own = socket.rooms_mut();
        let pos = own.iter().position(|r| &**r == room)?;
        own.swap_remove(pos);
        self.watch.track_rooms(&self.policy, socket, &own);
        let members = rooms.get_mut(room)?;
        members.remove(socket.id());
        let last = members.is_empty();
        if last {
            rooms.remove(room);
            self.unwatch_room(room);
        }
        Some(last)
    }

    /// Removes `socket` from the namespace and all its rooms; returns the
    /// rooms that no local socket is in any more.
    pub(crate) fn remove(&self, socket: &Socket) -> Vec<Arc<str>> {
        let mut emptied = Vec::new();
        let observer = self.watch.observer.get();
        let mut left = Vec::new();
        {
            let mut rooms = self.rooms.write();
            let mut own = socket.rooms_mut();
            if observer.is_some() {
                left.extend(own.iter().cloned());
            }
            for room in own.drain(..) {
                if let Some(members) = rooms.get_mut(&room) {
                    members.remove(socket.id());
                    if members.is_empty() {
                        rooms.remove(&room);
                        self.unwatch_room(&room);
                        emptied.push(room);
                    }
                }
            }
        }
        self.sockets.write().remove(socket.id());
        if let Some(observer) = observer {
            for room in left {
                observer.left(socket, &room);
            }
        }
        emptied
    }

    fn unwatch_room(&self, room: &str) {
        self.metrics.rooms_removed(1);
        self.watch
            .subscriptions
            .unwant(&self.watch.channels.room(&self.name, room));
    }

    /// The bus channel of `room` in this namespace.
    pub fn room_channel(&self, room: &str) -> String {
        self.watch.channels.room(&self.name, room)
    }

    /// Rooms with their local member counts (own-id rooms not included).
    pub fn room_counts(&self) -> Vec<(String, usize)> {
        self.rooms
            .read()
            .iter()
            .map(|(k, v)| (k.to_string(), v.len()))
            .collect()
    }

    /// Is local socket `id` in the room `name`, or is `name` its id?
    fn in_room(rooms: &HashMap<Arc<str>, Members>, name: &str, id: &str) -> bool {
        name == id || rooms.get(name).is_some_and(|m| m.contains_key(id))
    }

    fn selects(rooms: &HashMap<Arc<str>, Members>, name: Name<'_>, id: &str) -> bool {
        match name {
            Name::Room(r) => r == id || rooms.get(r).is_some_and(|m| m.contains_key(id)),
            Name::Id(s) => s == id,
        }
    }

    /// The local sockets `target` selects, each once.
    pub(crate) fn select(&self, target: &Target) -> Vec<Arc<Socket>> {
        let mut out = Vec::new();
        self.for_each_target(target, None, |s| out.push(s.clone()));
        out
    }

    /// Calls `f` once for every local socket `target` selects. With `only`,
    /// a socket is visited only when the first target name selecting it is
    /// one of `only` (the copy of a cluster emit responsible for it). Holds
    /// the namespace's read locks: `f` must not block or re-enter.
    pub(crate) fn for_each_target(
        &self,
        target: &Target,
        only: Option<&[u32]>,
        mut f: impl FnMut(&Arc<Socket>),
    ) {
        let rooms = self.rooms.read();
        let sockets = self.sockets.read();
        let excluded = |id: &str| {
            target
                .except_rooms
                .iter()
                .any(|r| Self::in_room(&rooms, r, id))
        };
        if target.is_namespace() {
            for s in sockets.values() {
                if !excluded(s.id()) {
                    f(s);
                }
            }
            return;
        }
        for i in 0..target.names() {
            if only.is_some_and(|o| !o.contains(&(i as u32))) {
                continue;
            }
            let Some(name) = target.name(i) else { break };
            let mut visit = |s: &Arc<Socket>| {
                // Exactly once: skip sockets an earlier target name selects.
                let seen = (0..i).any(|k| {
                    target
                        .name(k)
                        .is_some_and(|n| Self::selects(&rooms, n, s.id()))
                });
                if !seen && !excluded(s.id()) {
                    f(s);
                }
            };
            match name {
                Name::Id(id) => {
                    if let Some(s) = sockets.get(id) {
                        visit(s);
                    }
                }
                Name::Room(room) => {
                    if let Some(members) = rooms.get(room) {
                        members.values().for_each(&mut visit);
                    } else if let Some(s) = sockets.get(room) {
                        // The socket's own-id room.
                        visit(s);
                    }
                }
            }
        }
    }

    /// Queues the encoded `frames` for every selected local socket; returns
    /// how many got them. A full queue disconnects that socket's connection
    /// as a slow consumer (or, for a volatile emit, skips it).
    pub(crate) fn deliver(&self, target: &Target, only: Option<&[u32]>, frames: &[Frame]) -> usize {
        let mut delivered = 0;
        let mut broadcast = Broadcast::new(frames);
        self.for_each_target(target, only, |s| match broadcast.send(s.session()) {
            Ok(()) => delivered += 1,
            Err(PushError::Full) if target.volatile => self.watch.metrics.slow_consumer_drop(),
            Err(PushError::Full) => s.session().close(DisconnectReason::SlowConsumer),
            Err(PushError::Closed) => {}
        });
        drop(broadcast); // schedules the writes
        self.watch.metrics.broadcast(delivered);
        delivered
    }
}

/// The namespaces of a node: configured policies and the live namespaces.
pub struct Namespaces {
    policies: Vec<Arc<Policy>>,
    watch: Arc<ChannelWatch>,
    live: RwLock<HashMap<Arc<str>, Arc<Namespace>>>,
}

impl Namespaces {
    pub(crate) fn new(config: &Config, watch: Arc<ChannelWatch>) -> Result<Self, ConfigError> {
        let policies = config
            .effective_namespaces()
            .iter()
            .map(|n| Policy::new(n).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            policies,
            watch,
            live: RwLock::new(HashMap::new()),
        })
    }

    /// The policy of `name`: an exact declaration wins over a pattern.
    pub(crate) fn policy(&self, name: &str) -> Option<Arc<Policy>> {
        self.policies
            .iter()
            .find(|p| !p.matcher.is_pattern() && p.matcher.matches(name))
            .or_else(|| self.policies.iter().find(|p| p.matcher.matches(name)))
            .cloned()
    }

    pub(crate) fn policies(&self) -> &[Arc<Policy>] {
        &self.policies
    }

    pub fn get(&self, name: &str) -> Option<Arc<Namespace>> {
        self.live.read().get(name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Namespace>> {
        self.live.read().values().cloned().collect()
    }

    /// Creates a socket with `make` and registers it in namespace `name`
    /// (created on first use).
    pub(crate) fn insert_with(
        &self,
        name: &str,
        policy: &Arc<Policy>,
        make: impl FnOnce(Arc<Namespace>) -> Arc<Socket>,
    ) -> Arc<Socket> {
        {
            let live = self.live.read();
            if let Some(ns) = live.get(name) {
                // Inserted under the registry's read lock so that removal of
                // an empty namespace (under the write lock) cannot race it.
                let socket = make(ns.clone());
                ns.insert(socket.clone());
                return socket;
            }
        }
        let mut live = self.live.write();
        let ns = live
            .entry(Arc::from(name))
            .or_insert_with(|| {
                for channel in self.watch.namespace_channels(name, policy) {
                    self.watch.subscriptions.want(channel);
                }
                Arc::new(Namespace::new(name, policy.clone(), self.watch.clone()))
            })
            .clone();
        let socket = make(ns.clone());
        ns.insert(socket.clone());
        socket
    }

    /// Drops namespace `name` when it has no socket left.
    pub(crate) fn remove_if_empty(&self, name: &str) {
        let mut live = self.live.write();
        if let Some(ns) = live.get(name).filter(|ns| ns.is_empty()) {
            for channel in self.watch.namespace_channels(name, &ns.policy) {
                self.watch.subscriptions.unwant(&channel);
            }
            live.remove(name);
        }
    }
}
