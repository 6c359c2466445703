//! Socket.IO v5 on top of the engine: namespaces, sockets, rooms, acks and
//! the cluster-wide operations used by hooks and the admin API.
//!
//! [`SocketIo`] is the node's Socket.IO server (cheap to clone). It creates
//! a [`client::Client`] for every Engine.IO session, encodes every emit once
//! whatever the number of recipients, serves this node's sockets directly
//! and hands the rest to the cluster adapter.

pub(crate) mod client;
pub(crate) mod hooks;
pub(crate) mod namespace;
pub(crate) mod payload;
pub(crate) mod socket;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

pub use crate::cluster::Target;
use crate::cluster::adapter::{self, Adapter, ClusterError, Deliver};
use crate::cluster::message::{Answer, Broadcast, Op, Request, SocketAck, SocketInfo};
use crate::cluster::{BusError, ClusterBus, Held, NodeInfo, Sent};
use crate::config::{Config, ConfigError};
use crate::engine::{Connection, EngineHandler, Frame, Session};
use crate::ids::RoomNameError;
use crate::telemetry::{ErrorChain, Metrics};
use hooks::Hooks;
use namespace::ChannelWatch;
pub(crate) use namespace::{Joined, Namespace, Namespaces, Policy};
pub use payload::{Payload, PayloadError};
pub use socket::{AckError, EmitError, PendingAck, Socket};
use tokio_util::task::TaskTracker;

/// How long a join waits for the node's subscription to the room channel
/// before answering (so a publish from another node right after the answer
/// is not missed); past it the join is undone and answered with an error.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

/// A cluster-wide operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("invalid argument: {0}")]
    Invalid(String),
}

struct Inner {
    config: Arc<Config>,
    node_id: String,
    namespaces: Namespaces,
    hooks: Arc<dyn Hooks>,
    adapter: Arc<Adapter>,
    metrics: Arc<Metrics>,
    connections: AtomicU64,
    sockets: AtomicU64,
    /// The node's in-flight work, which a drain waits for.
    tasks: TaskTracker,
}

/// The Socket.IO server of one node.
#[derive(Clone)]
pub struct SocketIo {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SocketIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketIo")
            .field("node_id", &self.inner.node_id)
            .finish_non_exhaustive()
    }
}

/// What a cluster-wide emit reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct EmitReport {
    /// Local sockets the packet was queued for.
    pub(crate) local: usize,
    /// Nodes the emit was handed to, this one included when it had a
    /// recipient: an upper bound (see [`Adapter::publish_broadcast`]); 0
    /// means that no socket anywhere could receive it.
    pub(crate) nodes_reached: u64,
}

/// The answers of a cluster-wide emit-with-ack.
#[derive(Debug, Default)]
pub struct AckReport {
    pub acks: Vec<SocketAck>,
    pub timed_out: Vec<String>,
    /// Nodes that did not answer.
    pub missing_nodes: Vec<String>,
}

fn socket_info(s: &Socket, node_id: &str) -> SocketInfo {
    SocketInfo {
        id: s.id().to_owned(),
        nsp: s.namespace().name.to_string(),
        rooms: s.rooms(),
        user_id: s.user_id().map(str::to_owned),
        node_id: node_id.to_owned(),
        transport: s.transport().as_str().to_owned(),
        connected_at_ms: s
            .connected_at()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        data: s.data().map(|d| d.to_string()),
    }
}

impl SocketIo {
    pub(crate) fn new(
        config: Arc<Config>,
        node_id: String,
        hooks: Arc<dyn Hooks>,
        bus: Arc<dyn ClusterBus>,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
    ) -> Result<Self, ConfigError> {
        let adapter = Arc::new(Adapter::new(
            node_id.clone(),
            bus,
            &config.cluster,
            metrics.clone(),
            tasks.clone(),
        ));
        let watch = Arc::new(ChannelWatch {
            subscriptions: adapter.subscriptions.clone(),
            channels: adapter.channels.clone(),
            metrics: metrics.clone(),
        });
        let namespaces = Namespaces::new(&config, watch)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                node_id,
                namespaces,
                hooks,
                adapter,
                metrics,
                connections: AtomicU64::new(0),
                sockets: AtomicU64::new(0),
                tasks,
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    pub fn namespaces(&self) -> &Namespaces {
        &self.inner.namespaces
    }

    pub(crate) fn hooks(&self) -> &Arc<dyn Hooks> {
        &self.inner.hooks
    }

    /// Spawns work a drain waits for (hook event workers and the like).
    pub(crate) fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.tasks.spawn(task);
    }

    pub fn adapter(&self) -> &Arc<Adapter> {
        &self.inner.adapter
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Engine.IO connections and Socket.IO sockets on this node.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.inner.connections.load(Ordering::Relaxed),
            self.inner.sockets.load(Ordering::Relaxed),
        )
    }

    /// The local socket `id` of namespace `nsp`.
    pub fn socket(&self, nsp: &str, id: &str) -> Option<Arc<Socket>> {
        self.inner.namespaces.get(nsp)?.socket(id)
    }

    /// Emits `event(...args)` to the sockets of `nsp` that `target` selects,
    /// cluster-wide. The packet is encoded once; this node's sockets are
    /// served at once, the other nodes through the bus. Returns how many
    /// local sockets got it; a bus failure is an error after local delivery.
    pub async fn emit(
        &self,
        nsp: &str,
        target: &Target,
        event: &str,
        args: &Payload,
    ) -> Result<usize, OpError> {
        Ok(self.emit_counted(nsp, target, event, args).await?.local)
    }

    /// [`SocketIo::emit`], also telling how many nodes it reached.
    pub(crate) async fn emit_counted(
        &self,
        nsp: &str,
        target: &Target,
        event: &str,
        args: &Payload,
    ) -> Result<EmitReport, OpError> {
        let frames = payload::encode_event(nsp, event, args, None)?;
        let local = self.emit_local(nsp, target, &frames);
        let mut report = EmitReport {
            local,
            nodes_reached: u64::from(local > 0),
        };
        let Some(Frame::Text(text)) = frames.first() else {
            return Ok(report);
        };
        report.nodes_reached += self
            .inner
            .adapter
            .publish_broadcast(nsp, target.clone(), text.as_str(), &args.attachments)
            .await?;
        Ok(report)
    }

    /// [`SocketIo::emit`] without waiting for the bus's answer (clients'
    /// `$publish`: a publisher's messages stay in order and its reader never
    /// waits on Redis). A bus known to be down is an error, after local
    /// delivery. Otherwise `sent` is told once whether the bus accepted the
    /// copies for the other nodes (at once when there are none).
    pub(crate) fn emit_nowait(
        &self,
        nsp: &str,
        target: &Target,
        event: &str,
        args: &Payload,
        sent: Option<Sent>,
    ) -> Result<usize, OpError> {
        let frames = payload::encode_event(nsp, event, args, None)?;
        let local = self.emit_local(nsp, target, &frames);
        match frames.first() {
            Some(Frame::Text(text)) => self.inner.adapter.enqueue_broadcast(
                nsp,
                target.clone(),
                text.as_str(),
                &args.attachments,
                sent,
            )?,
            _ => {
                if let Some(sent) = sent {
                    sent(Ok(()));
                }
            }
        }
        Ok(local)
    }

    /// Delivers encoded frames to this node's selected sockets only.
    pub(crate) fn emit_local(&self, nsp: &str, target: &Target, frames: &[Frame]) -> usize {
        self.inner
            .namespaces
            .get(nsp)
            .map_or(0, |ns| ns.deliver(target, None, frames))
    }

    /// Waits until the node receives other nodes' emits to `room`: what
    /// must be true before a join is acknowledged. An error when the bus is
    /// down or does not confirm the subscription in time.
    pub(crate) async fn room_subscribed(&self, ns: &Namespace, room: &str) -> Result<(), BusError> {
        // A socket's own-id room reaches it through its node's channel.
        let channel = if crate::ids::is_socket_id_shape(room) {
            self.inner.adapter.channels.node(self.node_id())
        } else {
            ns.room_channel(room)
        };
        self.subscribed(&[channel]).await
    }

    /// Waits until the bus confirmed every one of `channels` (which must be
    /// wanted), at most [`SUBSCRIBE_WAIT`]; at once an error while the bus
    /// is known to be down.
    pub(crate) async fn subscribed(&self, channels: &[String]) -> Result<(), BusError> {
        let adapter = &self.inner.adapter;
        if !adapter.bus().may_have_peers() {
            return Ok(());
        }
        for channel in channels {
            if !adapter.subscriptions.is_active(channel) && !adapter.is_connected() {
                return Err(BusError::NotConnected {
                    bus: adapter.bus().kind(),
                });
            }
            if let Err(e) = adapter
                .subscriptions
                .wait_active(channel, SUBSCRIBE_WAIT)
                .await
            {
                tracing::warn!(channel, error = %e, "subscription not confirmed");
                return Err(BusError::NotConfirmed(e));
            }
        }
        Ok(())
    }

    /// Keeps `channels` subscribed while the guard lives.
    pub(crate) fn hold_channels(&self, channels: Vec<String>) -> Held {
        self.inner.adapter.subscriptions.hold(channels)
    }

    /// The bus channels a new socket of namespace `nsp` needs before its
    /// CONNECT is answered: the namespace's (whole-namespace emits), this
    /// node's (emits to the socket's own id) and its initial rooms'.
    pub(crate) fn connect_channels(&self, nsp: &str, rooms: &[String]) -> Vec<String> {
        let channels = &self.inner.adapter.channels;
        let mut out = vec![channels.namespace(nsp), channels.node(self.node_id())];
        out.extend(
            rooms
                .iter()
                .filter(|r| !crate::ids::is_socket_id_shape(r))
                .map(|r| channels.room(nsp, r)),
        );
        out
    }

    async fn request(
        &self,
        nsp: &str,
        target: &Target,
        op: Op,
        timeout: Duration,
    ) -> Result<adapter::Gathered, OpError> {
        let local = self.answer_local(nsp, target, &op);
        Ok(self
            .inner
            .adapter
            .request(nsp, target.clone(), op.clone(), timeout, local)
            .await?)
    }

    /// `fetchSockets()`: the selected sockets of every node.
    pub async fn fetch_sockets(
        &self,
        nsp: &str,
        target: &Target,
    ) -> Result<(Vec<SocketInfo>, Vec<String>), OpError> {
        let timeout = self.inner.adapter.request_timeout();
        let g = self.request(nsp, target, Op::FetchSockets, timeout).await?;
        let mut out = Vec::new();
        for (_, a) in g.answers {
            if let Answer::Sockets(s) = a {
                out.extend(s);
            }
        }
        Ok((out, g.missing))
    }

    /// `socketsJoin(rooms)` on every node; returns the sockets matched.
    pub async fn join_rooms(
        &self,
        nsp: &str,
        target: &Target,
        rooms: Vec<String>,
    ) -> Result<(u64, Vec<String>), OpError> {
        self.membership(nsp, target, rooms, Op::Join).await
    }

    /// `socketsLeave(rooms)` on every node; returns the sockets matched.
    pub async fn leave_rooms(
        &self,
        nsp: &str,
        target: &Target,
        rooms: Vec<String>,
    ) -> Result<(u64, Vec<String>), OpError> {
        self.membership(nsp, target, rooms, Op::Leave).await
    }

    async fn membership(
        &self,
        nsp: &str,
        target: &Target,
        rooms: Vec<String>,
        op: fn(Vec<String>) -> Op,
    ) -> Result<(u64, Vec<String>), OpError> {
        self.check_rooms(&rooms)?;
        let timeout = self.inner.adapter.request_timeout();
        let g = self.request(nsp, target, op(rooms), timeout).await?;
        // A node that could not confirm its part makes the call fail: its
        // sockets are not in the rooms, and the caller must hear it.
        if let Some((node, why)) = g.answers.iter().find_map(|(node, a)| match a {
            Answer::Unavailable(why) => Some((node, why)),
            _ => None,
        }) {
            let e = BusError::Peer {
                node: node.clone(),
                reason: why.clone(),
            };
            return Err(ClusterError::Bus(e).into());
        }
        Ok((sum_counts(&g.answers), g.missing))
    }

    /// `disconnectSockets(close)` on every node; returns the sockets matched.
    pub async fn disconnect_sockets(
        &self,
        nsp: &str,
        target: &Target,
        close: bool,
    ) -> Result<(u64, Vec<String>), OpError> {
        let timeout = self.inner.adapter.request_timeout();
        let g = self
            .request(nsp, target, Op::Disconnect { close }, timeout)
            .await?;
        Ok((sum_counts(&g.answers), g.missing))
    }

    /// Rooms of `nsp` with their cluster-wide member counts.
    pub async fn list_rooms(
        &self,
        nsp: &str,
    ) -> Result<(Vec<(String, u64)>, Vec<String>), OpError> {
        let timeout = self.inner.adapter.request_timeout();
        let g = self
            .request(nsp, &Target::default(), Op::ListRooms, timeout)
            .await?;
        let mut merged: std::collections::BTreeMap<String, u64> = Default::default();
        for (_, a) in g.answers {
            if let Answer::Rooms(rooms) = a {
                for (name, n) in rooms {
                    *merged.entry(name).or_default() += n;
                }
            }
        }
        Ok((merged.into_iter().collect(), g.missing))
    }

    /// `timeout(ms).emitWithAck(...)` across the cluster.
    pub async fn emit_with_ack(
        &self,
        nsp: &str,
        target: &Target,
        event: &str,
        args: &Payload,
        timeout: Duration,
    ) -> Result<AckReport, OpError> {
        payload::validate(args)?;
        let op = Op::EmitWithAck {
            event: event.to_owned(),
            args: args.args.clone(),
            attachments: args.attachments.clone(),
            timeout_ms: timeout.as_millis() as u64,
        };
        // Nodes answer after their sockets' timeout: leave room for transit.
        let wait = timeout + self.inner.adapter.request_timeout();
        let g = self.request(nsp, target, op, wait).await?;
        let mut report = AckReport {
            missing_nodes: g.missing,
            ..AckReport::default()
        };
        for (_, a) in g.answers {
            if let Answer::Acks { acks, timed_out } = a {
                report.acks.extend(acks);
                report.timed_out.extend(timed_out);
            }
        }
        Ok(report)
    }

    /// This node and the live peers.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let (c, s) = self.counts();
        self.inner.adapter.nodes(c, s)
    }

    fn check_rooms(&self, rooms: &[String]) -> Result<(), OpError> {
        let max = self.config().limits.max_room_name;
        if rooms.is_empty() {
            return Err(OpError::Invalid("no rooms given".into()));
        }
        for r in rooms {
            crate::ids::check_joinable_room(r, max).map_err(|e| {
                OpError::Invalid(match e {
                    RoomNameError::SocketIdShape => {
                        format!("room name {r:?} is reserved: it has the shape of a socket id")
                    }
                    _ => format!("room name {r:?} must be 1 to {max} bytes"),
                })
            })?;
        }
        Ok(())
    }

    /// This node's answer to a cluster-wide operation.
    async fn answer_local(&self, nsp: &str, target: &Target, op: &Op) -> Answer {
        let ns = self.inner.namespaces.get(nsp);
        let selected = ns.as_ref().map(|ns| ns.select(target)).unwrap_or_default();
        match op {
            Op::FetchSockets => Answer::Sockets(
                selected
                    .iter()
                    .map(|s| socket_info(s, self.node_id()))
                    .collect(),
            ),
            Op::Join(rooms) => {
                let max = self.config().limits.max_rooms_per_socket;
                let mut fresh = Vec::new();
                let mut member_rooms = std::collections::HashSet::new();
                // Sockets that joined every room (a socket at its room
                // limit is not counted).
                let mut joined = 0;
                for s in &selected {
                    let mut all = true;
                    for room in rooms {
                        match s.join(room, max) {
                            Ok(Joined::Yes { .. }) => {
                                fresh.push((s.clone(), room.clone()));
                                member_rooms.insert(room);
                            }
                            Ok(Joined::Already) => {
                                member_rooms.insert(room);
                            }
                            Err(_) => all = false,
                        }
                    }
                    joined += u64::from(all);
                }
                // Acknowledged only once this node receives every room; a
                // room it cannot confirm is undone here and reported.
                if let Some(ns) = &ns {
                    for room in member_rooms {
                        if let Err(e) = self.room_subscribed(ns, room).await {
                            for (s, r) in &fresh {
                                if r == room {
                                    s.leave(r);
                                }
                            }
                            // Only text crosses the bus: the whole chain.
                            return Answer::Unavailable(format!(
                                "room {room:?}: {}",
                                ErrorChain(&e)
                            ));
                        }
                    }
                }
                Answer::Count(joined)
            }
            Op::Leave(rooms) => {
                for s in &selected {
                    for room in rooms {
                        s.leave(room);
                    }
                }
                Answer::Count(selected.len() as u64)
            }
            Op::Disconnect { close } => {
                for s in &selected {
                    s.disconnect(*close);
                }
                Answer::Count(selected.len() as u64)
            }
            Op::ListRooms => Answer::Rooms(
                ns.map(|ns| {
                    ns.room_counts()
                        .into_iter()
                        .map(|(r, n)| (r, n as u64))
                        .collect()
                })
                .unwrap_or_default(),
            ),
            Op::EmitWithAck {
                event,
                args,
                attachments,
                timeout_ms,
            } => {
                let payload = Payload {
                    args: args.clone(),
                    attachments: attachments.clone(),
                };
                let timeout = Duration::from_millis(*timeout_ms);
                let waits = selected.iter().map(|s| {
                    let payload = &payload;
                    async move {
                        let r = s.emit_with_ack(event, payload, timeout).await;
                        (s.id().to_owned(), r)
                    }
                });
                let results = futures_util::future::join_all(waits).await;
                let mut acks = Vec::new();
                let mut timed_out = Vec::new();
                for (id, r) in results {
                    match r {
                        Ok(p) => acks.push(SocketAck {
                            socket_id: id,
                            args: p.args,
                            attachments: p.attachments,
                        }),
                        Err(_) => timed_out.push(id),
                    }
                }
                Answer::Acks { acks, timed_out }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn register_socket(
        &self,
        nsp: &str,
        policy: &Arc<Policy>,
        id: String,
        session: &Arc<Session>,
        client: Weak<client::Client>,
        user_id: Option<String>,
        data: Option<serde_json::Value>,
    ) -> Arc<Socket> {
        self.inner.sockets.fetch_add(1, Ordering::Relaxed);
        self.inner.namespaces.insert_with(nsp, policy, |ns| {
            Arc::new(Socket::new(id, ns, session.clone(), client, user_id, data))
        })
    }

    pub(crate) fn socket_gone(&self) {
        self.inner.sockets.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_gone(&self) {
        self.inner.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Runs the node's side of the cluster until `stop`.
    pub(crate) async fn run_cluster(&self, stop: tokio_util::sync::CancellationToken) {
        adapter::run(self.inner.adapter.clone(), Arc::new(self.clone()), stop).await;
    }
}

fn sum_counts(answers: &[(String, Answer)]) -> u64 {
    answers
        .iter()
        .map(|(_, a)| match a {
            Answer::Count(n) => *n,
            _ => 0,
        })
        .sum()
}

#[async_trait::async_trait]
impl Deliver for SocketIo {
    fn deliver(&self, b: Broadcast) {
        let Some(ns) = self.inner.namespaces.get(&b.nsp) else {
            return;
        };
        let mut frames = Vec::with_capacity(1 + b.attachments.len());
        frames.push(Frame::text(b.text));
        frames.extend(b.attachments.into_iter().map(Frame::Binary));
        let only = (!b.target.is_namespace()).then_some(b.responsible.as_slice());
        ns.deliver(&b.target, only, &frames);
    }

    async fn answer(&self, req: Request) -> Answer {
        self.answer_local(&req.nsp, &req.target, &req.op).await
    }

    fn counts(&self) -> (u64, u64) {
        SocketIo::counts(self)
    }
}

impl EngineHandler for SocketIo {
    fn on_open(&self, session: &Arc<Session>) -> Arc<dyn Connection> {
        self.inner.connections.fetch_add(1, Ordering::Relaxed);
        client::Client::new(self.clone(), session)
    }
}
