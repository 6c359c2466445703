//! Socket.IO v5 on top of the engine: namespaces, sockets, rooms, acks and
//! the cluster-wide operations used by hooks and the admin API.
//!
//! [`SocketIo`] is the node's Socket.IO server (cheap to clone). It creates
//! a [`client::Client`] for every Engine.IO session, encodes every emit once
//! whatever the number of recipients, serves this node's sockets directly
//! and hands the rest to the cluster adapter.

pub(crate) mod client;
pub(crate) mod hooks;
pub(crate) mod msgpack;
pub(crate) mod namespace;
mod ops;
pub(crate) mod payload;
pub(crate) mod socket;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crate::cluster::BusError;
pub use crate::cluster::Target;
use crate::cluster::adapter::{self, Adapter, ClusterError, Deliver};
use crate::cluster::message::{Answer, Broadcast, Request};
use crate::cluster::recovery::{
    AppendDone, Appended, LogSink, LoggedPacket, RecoveryLimits, RecoveryStore, StoredPacket,
};
use crate::cluster::{ClusterBus, NodeInfo, Sent};
use crate::config::{Config, ConfigError, Parser};
use crate::engine::{Connection, EngineHandler, Frame, Session};
use crate::ids::NodeId;
use crate::reason::DisconnectReason;
use crate::telemetry::{self, Metrics, RedisOp, TraceContext};
use hooks::Hooks;
use namespace::ChannelWatch;
pub(crate) use namespace::{Namespaces, Policy};
pub use ops::AckReport;
pub(crate) use ops::admin_socket_json;
pub use payload::{Payload, PayloadError};
pub use socket::{AckError, EmitError, PendingAck, Socket};
use tokio_util::task::TaskTracker;

/// Told of what happens to this node's sockets, beside the hooks (the
/// Socket.IO Admin UI): called outside the namespaces' locks; must not
/// block.
pub(crate) trait Observer: Send + Sync {
    /// The socket is connected (or recovered).
    fn connected(&self, socket: &Arc<Socket>);
    /// The socket left (its rooms were left first).
    fn disconnected(&self, socket: &Socket, reason: DisconnectReason);
    fn joined(&self, socket: &Socket, room: &str);
    fn left(&self, socket: &Socket, room: &str);
    /// The socket's connection moved from long-polling to WebSocket.
    fn upgraded(&self, socket: &Socket);
}

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
    node_id: NodeId,
    namespaces: Namespaces,
    hooks: Arc<dyn Hooks>,
    adapter: Arc<Adapter>,
    metrics: Arc<Metrics>,
    /// Connection state recovery's store, when a namespace has it on.
    recovery: Option<Arc<dyn RecoveryStore>>,
    connections: AtomicU64,
    sockets: AtomicU64,
    /// The node's in-flight work, which a drain waits for.
    tasks: TaskTracker,
    /// See [`Observer`]; shared with the namespaces.
    observer: Arc<std::sync::OnceLock<Arc<dyn Observer>>>,
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

/// A [`SocketIo`] that does not keep it alive (held by parts it owns).
#[derive(Clone)]
pub(crate) struct WeakSocketIo(Weak<Inner>);

impl WeakSocketIo {
    pub(crate) fn upgrade(&self) -> Option<SocketIo> {
        self.0.upgrade().map(|inner| SocketIo { inner })
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

impl SocketIo {
    pub(crate) fn new(
        config: Arc<Config>,
        node_id: NodeId,
        hooks: Arc<dyn Hooks>,
        bus: Arc<dyn ClusterBus>,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
    ) -> Result<Self, ConfigError> {
        let adapter = Arc::new(Adapter::new(
            node_id,
            bus.clone(),
            &config.cluster,
            metrics.clone(),
            tasks.clone(),
        ));
        let recovery = config
            .effective_namespaces()
            .iter()
            .any(|n| n.recovery.enabled)
            .then(|| bus.recovery_store(&adapter.channels, &config.cluster))
            .flatten();
        let observer = Arc::new(std::sync::OnceLock::new());
        let watch = Arc::new(ChannelWatch {
            subscriptions: adapter.subscriptions.clone(),
            channels: adapter.channels.clone(),
            metrics: metrics.clone(),
            recovery: recovery.clone(),
            observer: observer.clone(),
        });
        let namespaces = Namespaces::new(&config, watch)?;
        let inner = Arc::new(Inner {
            config,
            node_id,
            namespaces,
            hooks,
            adapter,
            metrics,
            recovery,
            connections: AtomicU64::new(0),
            sockets: AtomicU64::new(0),
            tasks,
            observer,
        });
        if let Some(store) = &inner.recovery {
            let sink: Weak<dyn LogSink> = Arc::downgrade(&inner) as Weak<Inner>;
            store.register(inner.node_id, sink);
        }
        Ok(Self { inner })
    }

    /// Connection state recovery's store, when a namespace has it on.
    pub(crate) fn recovery(&self) -> Option<&Arc<dyn RecoveryStore>> {
        self.inner.recovery.as_ref()
    }

    /// Updates the store's gauges (after it changed).
    pub(crate) fn note_recovery_store(&self) {
        if let Some(store) = &self.inner.recovery {
            let s = store.stats();
            self.inner
                .metrics
                .recovery_store(s.sessions, s.packets, s.bytes);
        }
    }

    /// The bus channels a new socket of namespace `nsp` needs before its
    /// CONNECT is answered (see [`Adapter::connect_channels`]), and its
    /// namespace's recovery log's when the store hands events over the bus.
    pub(crate) fn connect_channels(
        &self,
        nsp: &str,
        policy: &Policy,
        rooms: &[String],
    ) -> Vec<String> {
        let mut out = self.inner.adapter.connect_channels(nsp, rooms);
        if policy.recovery.is_some()
            && let Some(log) = self
                .inner
                .recovery
                .as_ref()
                .and_then(|s| s.log_channel(nsp))
        {
            out.push(log);
        }
        out
    }

    /// The store and bounds under which an emit to `nsp` is stored: when
    /// the namespace has connection state recovery on and the emit is not
    /// volatile. Stored emits do not take the bus's path: the store gives
    /// each its offset (the last argument) and hands it to every node in
    /// log order.
    pub(crate) fn stored(
        &self,
        nsp: &str,
        target: &Target,
    ) -> Option<(Arc<dyn RecoveryStore>, RecoveryLimits)> {
        if target.volatile {
            return None;
        }
        let store = self.inner.recovery.as_ref()?;
        let limits = match self.inner.namespaces.get(nsp) {
            Some(ns) => ns.policy.recovery,
            None => self.inner.namespaces.policy(nsp)?.recovery,
        }?;
        Some((store.clone(), limits))
    }

    /// Stores an event (see [`SocketIo::stored`]): `text` is its packet
    /// (`payload::event_text`), `args` gives its attachments. `done` is
    /// told what became of it, unless the store refused it at once (an
    /// error).
    pub(crate) fn append_stored(
        &self,
        (store, limits): &(Arc<dyn RecoveryStore>, RecoveryLimits),
        nsp: &str,
        target: &Target,
        text: String,
        args: &Payload,
        done: Option<AppendDone>,
    ) -> Result<(), BusError> {
        let packet = StoredPacket {
            target: target.clone(),
            text,
            attachments: args.attachments.clone(),
        };
        // Over Redis an append is a publish: counted as one.
        let remote = self.inner.adapter.bus().is_remote();
        let done = match remote {
            true => {
                let metrics = self.inner.metrics.clone();
                Some(Box::new(move |result: Result<Appended, BusError>| {
                    match &result {
                        Ok(_) => metrics.redis_published(),
                        Err(_) => metrics.redis_error(RedisOp::Publish),
                    }
                    if let Some(done) = done {
                        done(result);
                    }
                }) as AppendDone)
            }
            false => done,
        };
        let appended = store.append(self.inner.node_id, nsp, packet, limits, done);
        if remote && appended.is_err() {
            self.inner.metrics.redis_error(RedisOp::Publish);
        }
        self.note_recovery_store();
        appended
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Sets the node's [`Observer`] (once).
    pub(crate) fn set_observer(&self, observer: Arc<dyn Observer>) {
        let _ = self.inner.observer.set(observer);
    }

    /// The node's [`Observer`], when it has one.
    pub(crate) fn observer(&self) -> Option<&Arc<dyn Observer>> {
        self.inner.observer.get()
    }

    /// A handle that does not keep the server alive.
    pub(crate) fn downgrade(&self) -> WeakSocketIo {
        WeakSocketIo(Arc::downgrade(&self.inner))
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
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
    /// An emit stored for connection state recovery is delivered in log
    /// order by the store: over Redis, when it comes back from Redis (after
    /// this returns, which then counts 0).
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
        if let Some(log) = self.stored(nsp, target) {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let done: AppendDone = Box::new(move |result| {
                let _ = tx.send(result);
            });
            let text = payload::event_text(nsp, event, args, None)?;
            self.append_stored(&log, nsp, target, text, args, Some(done))
                .map_err(|e| OpError::Cluster(e.into()))?;
            let appended = rx
                .await
                .unwrap_or(Err(BusError::NotConnected { bus: "redis" }))
                .map_err(|e| OpError::Cluster(e.into()))?;
            return Ok(EmitReport {
                local: appended.local,
                nodes_reached: appended.nodes_reached,
            });
        }
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
            .publish_broadcast(
                nsp,
                target.clone(),
                text.as_str(),
                &args.attachments,
                &|id| self.socket(nsp, id).is_some(),
            )
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
        if let Some(log) = self.stored(nsp, target) {
            let done = sent.map(|sent| {
                Box::new(move |result: Result<Appended, BusError>| sent(result.map(|_| ())))
                    as AppendDone
            });
            let text = payload::event_text(nsp, event, args, None)?;
            self.append_stored(&log, nsp, target, text, args, done)
                .map_err(|e| OpError::Cluster(e.into()))?;
            // Delivered to this node's sockets in log order, with every
            // node's (the in-process store: done already).
            return Ok(0);
        }
        let frames = payload::encode_event(nsp, event, args, None)?;
        let local = self.emit_local(nsp, target, &frames);
        match frames.first() {
            Some(Frame::Text(text)) => self.inner.adapter.enqueue_broadcast(
                nsp,
                target.clone(),
                text.as_str(),
                &args.attachments,
                sent,
                &|id| self.socket(nsp, id).is_some(),
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

    /// This node and the live peers.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let (c, s) = self.counts();
        self.inner.adapter.nodes(c, s)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn register_socket(
        &self,
        nsp: &str,
        policy: &Arc<Policy>,
        id: String,
        session: &Arc<Session>,
        client: Weak<client::Client>,
        pid: Option<String>,
        user_id: Option<String>,
        data: Option<serde_json::Value>,
    ) -> Arc<Socket> {
        self.inner.sockets.fetch_add(1, Ordering::Relaxed);
        self.inner.namespaces.insert_with(nsp, policy, |ns| {
            Arc::new(Socket::new(
                id,
                ns,
                session.clone(),
                client,
                pid,
                user_id,
                data,
            ))
        })
    }

    pub(crate) fn socket_gone(&self) {
        self.inner.sockets.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_gone(&self) {
        self.inner.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Waits until connection state recovery's store has every record
    /// change made so far (a draining node's lost sessions, before exit).
    pub(crate) async fn flush_recovery(&self) {
        if let Some(store) = &self.inner.recovery {
            store.flush().await;
        }
    }

    /// Drops this node's copy of socket `sid` of `nsp`, recovered elsewhere
    /// (or by another connection here): its client came back before this
    /// node noticed it was gone. No session is kept for it.
    pub(crate) fn drop_taken(&self, nsp: &str, sid: &str) {
        let Some(socket) = self.socket(nsp, sid) else {
            return;
        };
        socket.mark_taken();
        // Out of the namespace at once: the recovered socket has its id.
        if let Some(client) = socket.client() {
            client.remove_socket(nsp, DisconnectReason::TransportClose);
        }
        socket.session().close(DisconnectReason::TransportClose);
    }

    /// Makes node `holder` drop its copy of socket `sid` of `nsp`, which a
    /// recovery on this node took (see [`SocketIo::drop_taken`]).
    pub(crate) async fn release_taken(&self, holder: NodeId, nsp: &str, sid: &str) {
        if holder == self.inner.node_id {
            self.drop_taken(nsp, sid);
        } else {
            self.inner.adapter.publish_taken(holder, nsp, sid).await;
        }
    }

    /// After the bus reconnected: this node did not receive the stored
    /// events appended while it was away. Once its log channels are
    /// subscribed again, the connections of its sockets in each namespace
    /// whose log moved on meanwhile are closed, so that their clients come
    /// back and recover what they missed from their offsets (on this node
    /// or another): no client misses an event without knowing.
    async fn close_after_gap(&self) {
        let Some(store) = self.inner.recovery.clone() else {
            return;
        };
        for ns in self.inner.namespaces.all() {
            if ns.policy.recovery.is_none() {
                continue;
            }
            let Some(log) = store.log_channel(&ns.name) else {
                continue;
            };
            if self.inner.adapter.subscribed(&[log]).await.is_err() {
                // Not subscribed in time: the next reconnection tries again.
                continue;
            }
            if store.gap(&ns.name).await != Some(true) {
                continue;
            }
            let sockets = ns.select(&Target::default());
            tracing::warn!(
                nsp = %ns.name,
                sockets = sockets.len(),
                "stored events may have been missed while the bus was away: \
                 closing the namespace's connections so that their clients recover"
            );
            for socket in sockets {
                socket.session().close(DisconnectReason::TransportError);
            }
        }
    }

    /// Runs the node's side of the cluster until `stop`.
    pub(crate) async fn run_cluster(&self, stop: tokio_util::sync::CancellationToken) {
        adapter::run(self.inner.adapter.clone(), Arc::new(self.clone()), stop).await;
    }
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
        let Some(parent) = TraceContext::from_pairs(&b.trace) else {
            ns.deliver(&b.target, only, &frames);
            return;
        };
        // A traced emit: its delivery here continues the sender's trace.
        let span = telemetry::deliver_span(&b.nsp);
        parent.set_as_parent_of(&span);
        let _entered = span.enter();
        let recipients = ns.deliver(&b.target, only, &frames);
        span.record("recipients", recipients);
        tracing::debug!(recipients, "traced broadcast delivered");
    }

    async fn answer(&self, req: Request) -> Answer {
        self.answer_local(&req.nsp, &req.target, &req.op).await
    }

    fn counts(&self) -> (u64, u64) {
        SocketIo::counts(self)
    }

    fn logged(&self, payload: &[u8]) {
        self.inner.metrics.redis_received(None);
        if let Some(store) = &self.inner.recovery {
            store.received(payload);
        }
    }

    fn taken(&self, nsp: &str, sid: &str) {
        self.drop_taken(nsp, sid);
    }

    async fn beat(&self) {
        let Some(store) = &self.inner.recovery else {
            return;
        };
        for ns in self.inner.namespaces.all() {
            if let Some(limits) = ns.policy.recovery {
                store.keepalive(self.inner.node_id, &ns.name, &limits).await;
            }
        }
        self.note_recovery_store();
    }

    fn resubscribing(&self) {
        if self.inner.recovery.is_some() {
            let io = self.clone();
            self.spawn(async move { io.close_after_gap().await });
        }
    }
}

/// Stored events reach this node's sockets from the store, in log order.
impl LogSink for Inner {
    fn deliver_logged(&self, nsp: &str, packet: &LoggedPacket) -> usize {
        let Some(ns) = self.namespaces.get(nsp) else {
            return 0;
        };
        ns.deliver(&packet.packet.target, None, &payload::logged_frames(packet))
    }
}

impl EngineHandler for SocketIo {
    fn on_open(&self, session: &Arc<Session>) -> Arc<dyn Connection> {
        self.inner.connections.fetch_add(1, Ordering::Relaxed);
        if self.config().server.parser == Parser::Msgpack {
            session.set_encoding(msgpack::encode);
        }
        client::Client::new(self.clone(), session)
    }
}
