//! The node's side of the cluster (Socket.IO calls this the adapter):
//! publishes emits on the right channels, delivers what other nodes
//! publish, answers and issues cluster-wide requests, and keeps the node
//! registry with heartbeats.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::message::{Answer, Broadcast, BusMessage, Heartbeat, Op, Request, Response, Target};
use super::redis_recovery::LOG_MARKER;
use super::registry::now_ms;
use super::{
    BusError, BusEvent, Channels, ClusterBus, Held, NodeInfo, Registry, Sent, Subscriptions,
};
use crate::config::ClusterConfig;
use crate::ids::NodeId;
use crate::telemetry::logs::Throttle;
use crate::telemetry::{ErrorChain, Metrics, RedisOp, TraceContext};

/// The shortest interval between two `cluster publish failed` warnings
/// (every failure is counted in the metrics).
const PUBLISH_WARNING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a join waits for the node's subscription to the room channel
/// before answering (so a publish from another node right after the answer
/// is not missed); past it the join is undone and answered with an error.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

/// A cluster operation that could not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// Answers of a cluster-wide request.
#[derive(Debug)]
pub(crate) struct Gathered {
    /// One answer per node that answered, this node's first.
    pub(crate) answers: Vec<(NodeId, Answer)>,
    /// Nodes that did not answer: silent until the timeout, or gone.
    pub(crate) missing: Vec<NodeId>,
}

pub struct Adapter {
    node_id: NodeId,
    bus: Arc<dyn ClusterBus>,
    pub(crate) channels: Channels,
    pub(crate) subscriptions: Arc<Subscriptions>,
    pub(crate) registry: Registry,
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<Response>>>,
    next_request: AtomicU64,
    request_timeout: Duration,
    heartbeat_interval: Duration,
    started_at_ms: u64,
    connected: AtomicBool,
    publish_errors: AtomicU64,
    /// One warning per interval while publishes fail (a bus outage).
    publish_warnings: Throttle,
    /// Bus counters are exported as the Redis series when the bus is Redis.
    metrics: Option<Arc<Metrics>>,
    /// The node's in-flight work (answers to other nodes' requests), which
    /// a drain waits for.
    tasks: TaskTracker,
    /// Where this node serves forwarded requests, when it does.
    internal: std::sync::OnceLock<String>,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("node_id", &self.node_id)
            .field("bus", &self.bus.kind())
            .finish_non_exhaustive()
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Adapter {
    pub(crate) fn new(
        node_id: NodeId,
        bus: Arc<dyn ClusterBus>,
        cfg: &ClusterConfig,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
    ) -> Self {
        let metrics = bus.is_remote().then_some(metrics);
        Self {
            metrics,
            node_id,
            connected: AtomicBool::new(bus.is_connected()),
            bus,
            channels: Channels::new(&cfg.channel_prefix),
            subscriptions: Arc::new(Subscriptions::new()),
            registry: Registry::new(Duration::from_millis(cfg.node_timeout_ms)),
            pending: Mutex::new(HashMap::new()),
            // Random: a node hearing another's channel (it holds sockets moved
            // from it) must not take that node's answers for its own.
            next_request: AtomicU64::new(rand::random::<u64>() >> 1),
            request_timeout: Duration::from_millis(cfg.request_timeout_ms),
            heartbeat_interval: Duration::from_millis(cfg.heartbeat_interval_ms),
            started_at_ms: now_ms(),
            publish_errors: AtomicU64::new(0),
            publish_warnings: Throttle::new(PUBLISH_WARNING_INTERVAL),
            tasks,
            internal: std::sync::OnceLock::new(),
        }
    }

    /// The cluster's channel names (a documented contract: see the module).
    pub fn channels(&self) -> &Channels {
        &self.channels
    }

    /// Whether this node is subscribed to `channel` (confirmed by the bus).
    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.subscriptions.is_active(channel)
    }

    pub(crate) fn bus(&self) -> &Arc<dyn ClusterBus> {
        &self.bus
    }

    /// The bus is connected (readiness).
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire) && self.bus.is_connected()
    }

    /// Waits until the node receives other nodes' emits to `room` of `nsp`:
    /// what must be true before a join is acknowledged. An error when the
    /// bus is down or does not confirm the subscription in time.
    pub(crate) async fn room_subscribed(&self, nsp: &str, room: &str) -> Result<(), BusError> {
        // A socket's own-id room reaches it through its node's channel.
        let channel = if crate::ids::is_socket_id_shape(room) {
            self.channels.node(self.node_id)
        } else {
            self.channels.room(nsp, room)
        };
        self.subscribed(&[channel]).await
    }

    /// Waits until the bus confirmed every one of `channels` (which must be
    /// wanted), at most [`SUBSCRIBE_WAIT`]; at once an error while the bus
    /// is known to be down.
    pub(crate) async fn subscribed(&self, channels: &[String]) -> Result<(), BusError> {
        if !self.bus.may_have_peers() {
            return Ok(());
        }
        for channel in channels {
            if !self.subscriptions.is_active(channel) && !self.is_connected() {
                return Err(BusError::NotConnected {
                    bus: self.bus.kind(),
                });
            }
            if let Err(e) = self
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
    pub(crate) fn hold(&self, channels: Vec<String>) -> Held {
        self.subscriptions.hold(channels)
    }

    /// The bus channels a new socket of namespace `nsp` needs before its
    /// CONNECT is answered: the namespace's (whole-namespace emits), this
    /// node's (emits to the socket's own id) and its initial rooms'.
    pub(crate) fn connect_channels(&self, nsp: &str, rooms: &[String]) -> Vec<String> {
        let channels = &self.channels;
        let mut out = vec![channels.namespace(nsp), channels.node(self.node_id)];
        out.extend(
            rooms
                .iter()
                .filter(|r| !crate::ids::is_socket_id_shape(r))
                .map(|r| channels.room(nsp, r)),
        );
        out
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    async fn publish(&self, channel: &str, msg: &BusMessage) -> Result<(), BusError> {
        self.publish_counted(channel, msg).await.map(|_| ())
    }

    /// Counts a publish (or its failure) in the metrics and the log.
    fn note_publish(&self, channel: &str, error: Option<&BusError>) {
        match error {
            None => {
                if let Some(m) = &self.metrics {
                    m.redis_published();
                }
            }
            Some(e) => {
                self.publish_errors.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &self.metrics {
                    m.redis_error(RedisOp::Publish);
                }
                if let Some(held_back) = self.publish_warnings.admit() {
                    tracing::warn!(channel, error = %ErrorChain(e), held_back, "cluster publish failed");
                }
            }
        }
    }

    /// The message of an emit, before its copies are told apart.
    fn broadcast(&self, nsp: &str, target: Target, text: &str, attachments: &[Bytes]) -> Broadcast {
        Broadcast {
            origin: self.node_id,
            nsp: nsp.to_owned(),
            target,
            responsible: Vec::new(),
            text: text.to_owned(),
            attachments: attachments.to_vec(),
            sent_at_us: now_us(),
            // Untraced (no exporter, or no span): nothing to carry.
            trace: TraceContext::current()
                .map(TraceContext::into_pairs)
                .unwrap_or_default(),
        }
    }

    /// Publishes and returns the receiver count, when the bus tells it.
    async fn publish_counted(
        &self,
        channel: &str,
        msg: &BusMessage,
    ) -> Result<Option<u64>, BusError> {
        let result = match msg.encode() {
            Ok(bytes) => self.bus.publish_counted(channel, bytes).await,
            Err(e) => Err(e),
        };
        self.note_publish(channel, result.as_ref().err());
        result
    }

    /// Sends an emit to the other nodes that need it: one copy per target
    /// room channel, one per node holding targeted socket ids, or one on
    /// the namespace channel for a whole-namespace emit. This node's own
    /// sockets were served by the caller.
    ///
    /// Returns how many other nodes the copies were handed to, as far as
    /// the bus can tell (an upper bound: a node subscribed through several
    /// targeted rooms counts once per room; when the bus cannot count, every
    /// live peer counts). 0 means no other node can hold a recipient.
    pub(crate) async fn publish_broadcast(
        &self,
        nsp: &str,
        target: Target,
        text: &str,
        attachments: &[Bytes],
        here: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<u64, ClusterError> {
        if !self.bus.may_have_peers() {
            return Ok(0);
        }
        let copies = self.copies(nsp, &target, here);
        let mut msg = self.broadcast(nsp, target, text, attachments);
        let mut first_error = None;
        let mut reached = 0u64;
        for (channel, responsible) in copies {
            msg.responsible = responsible;
            let wrapped = BusMessage::Broadcast(msg);
            // This node gets its own publishes on the channels it is
            // subscribed to (and ignores them): not a node reached.
            let own = u64::from(self.subscriptions.is_active(&channel));
            match self.publish_counted(&channel, &wrapped).await {
                Ok(Some(receivers)) => reached += receivers.saturating_sub(own),
                Ok(None) => reached += self.registry.alive().len() as u64,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
            let BusMessage::Broadcast(m) = wrapped else {
                unreachable!("wrapped a broadcast")
            };
            msg = m;
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(reached),
        }
    }

    /// The channels an emit to `target` goes out on, each with the target
    /// indices its copy is responsible for. `here` tells whether a socket
    /// id of this node's is held here: one that is not was recovered on
    /// another node, which hears this node's channel (a copy goes there).
    fn copies(
        &self,
        nsp: &str,
        target: &Target,
        here: &(dyn Fn(&str) -> bool + Sync),
    ) -> Vec<(String, Vec<u32>)> {
        let mut copies: Vec<(String, Vec<u32>)> = Vec::new();
        if target.is_namespace() {
            copies.push((self.channels.namespace(nsp), Vec::new()));
        } else {
            let mut by_node: HashMap<NodeId, Vec<u32>> = HashMap::new();
            for (i, room) in target.rooms.iter().enumerate() {
                match crate::ids::node_of(room) {
                    // A socket's own-id room lives on the socket's node.
                    Some(node) if node == self.node_id && here(room) => {}
                    Some(node) => by_node.entry(node).or_default().push(i as u32),
                    None => copies.push((self.channels.room(nsp, room), vec![i as u32])),
                }
            }
            let base = target.rooms.len();
            for (j, id) in target.socket_ids.iter().enumerate() {
                match crate::ids::node_of(id) {
                    Some(node) if node != self.node_id || !here(id) => {
                        by_node.entry(node).or_default().push((base + j) as u32)
                    }
                    _ => {}
                }
            }
            for (node, idx) in by_node {
                copies.push((self.channels.node(node), idx));
            }
        }
        copies
    }

    /// [`Adapter::publish_broadcast`] without waiting for the bus: the
    /// copies are handed over in order (per room and publisher, order is
    /// kept) and this returns at once. A bus known to be down is an error
    /// (and `sent` is not called); otherwise `sent` is told once, when the
    /// bus has accepted every copy or failed one.
    pub(crate) fn enqueue_broadcast(
        &self,
        nsp: &str,
        target: Target,
        text: &str,
        attachments: &[Bytes],
        sent: Option<Sent>,
        here: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<(), ClusterError> {
        let copies = if self.bus.may_have_peers() {
            self.copies(nsp, &target, here)
        } else {
            Vec::new()
        };
        let sent = AllSent::new(copies.len(), sent);
        if copies.is_empty() {
            return Ok(());
        }
        let mut msg = self.broadcast(nsp, target, text, attachments);
        for (channel, responsible) in copies {
            msg.responsible = responsible;
            let wrapped = BusMessage::Broadcast(msg);
            let result = wrapped
                .encode()
                .and_then(|bytes| self.bus.enqueue(channel.clone(), bytes, sent.part()));
            self.note_publish(&channel, result.as_ref().err());
            if let Err(e) = result {
                // The caller hears it now, and only now.
                sent.cancel();
                return Err(e.into());
            }
            let BusMessage::Broadcast(m) = wrapped else {
                unreachable!("wrapped a broadcast")
            };
            msg = m;
        }
        Ok(())
    }

    /// Sends `op` to every live node and gathers the answers, this node's
    /// included (computed by `local`). Finishes at the last expected answer
    /// or at the timeout; a node that dies meanwhile is reported missing.
    pub(crate) async fn request<F>(
        &self,
        nsp: &str,
        target: Target,
        op: Op,
        timeout: Duration,
        local: F,
    ) -> Result<Gathered, ClusterError>
    where
        F: std::future::Future<Output = Answer>,
    {
        // Without the bus the peers are unknown, not absent (their
        // heartbeats stop arriving too): answering for this node alone would
        // pass for the whole cluster.
        if self.bus.may_have_peers() && !self.bus.is_connected() {
            return Err(BusError::NotConnected {
                bus: self.bus.kind(),
            }
            .into());
        }
        let peers: HashSet<NodeId> = self
            .registry
            .alive()
            .into_iter()
            .map(|n| n.node_id)
            .collect();
        if peers.is_empty() {
            return Ok(Gathered {
                answers: vec![(self.node_id, local.await)],
                missing: Vec::new(),
            });
        }
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.pending.lock().insert(id, tx);
        let _guard = PendingGuard { adapter: self, id };
        let msg = BusMessage::Request(Request {
            id,
            origin: self.node_id,
            nsp: nsp.to_owned(),
            target,
            op,
        });
        self.publish(&self.channels.requests(), &msg).await?;
        let remote = async {
            let mut waiting = peers;
            let mut answers = Vec::new();
            let mut dead = Vec::new();
            let deadline = tokio::time::Instant::now() + timeout;
            let mut check = tokio::time::interval(Duration::from_millis(250));
            while !waiting.is_empty() {
                tokio::select! {
                    r = rx.recv() => match r {
                        Some(resp) => {
                            if waiting.remove(&resp.node_id) {
                                answers.push((resp.node_id, resp.body));
                            }
                        }
                        None => break,
                    },
                    _ = check.tick() => {
                        // Nodes that died mid-request are not waited for.
                        waiting.retain(|n| {
                            let alive = self.registry.is_alive(*n);
                            if !alive {
                                dead.push(*n);
                            }
                            alive
                        });
                    }
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            dead.extend(waiting);
            (answers, dead)
        };
        let (mine, (mut answers, missing)) = tokio::join!(local, remote);
        answers.insert(0, (self.node_id, mine));
        Ok(Gathered { answers, missing })
    }

    /// Publishes this node's heartbeat.
    pub(crate) async fn heartbeat(&self, connections: u64, sockets: u64, hello: bool) {
        let msg = BusMessage::Heartbeat(Heartbeat {
            node_id: self.node_id,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            connections,
            sockets,
            started_at_ms: self.started_at_ms,
            hello,
        });
        let published = match msg.encode() {
            Ok(bytes) => self.bus.publish(&self.channels.heartbeats(), bytes).await,
            Err(e) => Err(e),
        };
        if let Some(addr) = self.internal.get() {
            let msg = BusMessage::Internal {
                node_id: self.node_id,
                addr: addr.clone(),
            };
            if let Ok(bytes) = msg.encode() {
                let _ = self.bus.publish(&self.channels.heartbeats(), bytes).await;
            }
        }
        if published.is_err()
            && let Some(m) = &self.metrics
        {
            m.redis_error(RedisOp::Heartbeat);
        }
    }

    /// This node serves forwarded requests at `addr` (its internal
    /// listener): announced with every heartbeat from now on.
    pub(crate) fn set_internal(&self, addr: String) {
        let _ = self.internal.set(addr);
    }

    /// Where to forward a request for Engine.IO session `sid`: its owning
    /// node's internal listener, when that is another live node with one.
    pub(crate) fn forward_target(&self, sid: &str) -> Option<String> {
        let owner = crate::ids::node_of(sid).filter(|n| *n != self.node_id)?;
        self.registry.internal(owner)
    }

    /// Tells node `holder` that socket `sid` of `nsp` was recovered here.
    pub(crate) async fn publish_taken(&self, holder: NodeId, nsp: &str, sid: &str) {
        let msg = BusMessage::Taken {
            nsp: nsp.to_owned(),
            sid: sid.to_owned(),
            holder,
            by: self.node_id,
        };
        if let Err(e) = self.publish(&self.channels.node(holder), &msg).await {
            tracing::warn!(node = %holder, error = %ErrorChain(&e), "taken socket not released");
        }
    }

    /// Tells the others this node leaves (drain).
    pub(crate) async fn goodbye(&self) {
        let msg = BusMessage::Goodbye {
            node_id: self.node_id,
        };
        if let Ok(bytes) = msg.encode() {
            let _ = self.bus.publish(&self.channels.heartbeats(), bytes).await;
        }
    }

    /// This node and every live peer.
    pub(crate) fn nodes(&self, connections: u64, sockets: u64) -> Vec<NodeInfo> {
        let mut nodes = vec![NodeInfo {
            node_id: self.node_id,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            connections,
            sockets,
            started_at_ms: self.started_at_ms,
            last_heartbeat_ms: now_ms(),
        }];
        nodes.extend(self.registry.alive());
        nodes
    }

    pub(crate) async fn respond(&self, origin: NodeId, id: u64, body: Answer) {
        let msg = BusMessage::Response(Response {
            id,
            node_id: self.node_id,
            body,
        });
        let _ = self.publish(&self.channels.node(origin), &msg).await;
    }

    fn on_response(&self, resp: Response) {
        if let Some(tx) = self.pending.lock().get(&resp.id) {
            let _ = tx.send(resp);
        }
    }
}

/// Tells a [`Sent`] once every part of a message is sent (or the first
/// failure); with no parts, at once.
struct AllSent(Option<Arc<Mutex<AllSentState>>>);

struct AllSentState {
    left: usize,
    error: Option<BusError>,
    sent: Option<Sent>,
}

impl AllSent {
    fn new(parts: usize, sent: Option<Sent>) -> Self {
        match sent {
            None => AllSent(None),
            Some(sent) if parts == 0 => {
                sent(Ok(()));
                AllSent(None)
            }
            Some(sent) => AllSent(Some(Arc::new(Mutex::new(AllSentState {
                left: parts,
                error: None,
                sent: Some(sent),
            })))),
        }
    }

    /// The callback of one part.
    fn part(&self) -> Option<Sent> {
        let state = self.0.clone()?;
        Some(Box::new(move |result: Result<(), BusError>| {
            let done = {
                let mut st = state.lock();
                st.left -= 1;
                if let Err(e) = result {
                    st.error.get_or_insert(e);
                }
                if st.left == 0 {
                    st.sent.take().map(|s| (s, st.error.take()))
                } else {
                    None
                }
            };
            if let Some((sent, error)) = done {
                sent(error.map_or(Ok(()), Err));
            }
        }))
    }

    /// Nobody is to be told any more (the caller got an error at once).
    fn cancel(&self) {
        if let Some(state) = &self.0 {
            state.lock().sent = None;
        }
    }
}

struct PendingGuard<'a> {
    adapter: &'a Adapter,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.adapter.pending.lock().remove(&self.id);
    }
}

/// What the node does with messages from other nodes.
#[async_trait::async_trait]
pub(crate) trait Deliver: Send + Sync + 'static {
    /// Delivers a broadcast from another node to local sockets.
    fn deliver(&self, b: Broadcast);
    /// Answers a request from another node.
    async fn answer(&self, req: Request) -> Answer;
    /// Connections and sockets of this node (heartbeats).
    fn counts(&self) -> (u64, u64);
    /// A stored event off a recovery log channel.
    fn logged(&self, payload: &[u8]);
    /// Socket `sid` of `nsp` was recovered by another node.
    fn taken(&self, nsp: &str, sid: &str);
    /// Called at every heartbeat.
    async fn beat(&self);
    /// The bus reconnected and its subscriptions are being made again.
    fn resubscribing(&self);
}

/// Runs the node's side of the cluster until `stop`: the bus events, the
/// subscription reconciler and the heartbeat.
pub(crate) async fn run(adapter: Arc<Adapter>, node: Arc<dyn Deliver>, stop: CancellationToken) {
    let Some(mut events) = adapter.bus.take_events() else {
        tracing::error!("cluster bus events already taken");
        return;
    };
    let fixed = vec![
        adapter.channels.node(adapter.node_id),
        adapter.channels.requests(),
        adapter.channels.heartbeats(),
    ];
    for ch in fixed {
        adapter.subscriptions.want(ch);
    }
    let reconciler = tokio::spawn(adapter.subscriptions.clone().reconcile(
        adapter.bus.clone(),
        adapter.metrics.clone(),
        stop.clone(),
    ));
    let beat = {
        let adapter = adapter.clone();
        let node = node.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            // Wait for the heartbeat channel so the hello's answers arrive.
            let hb = adapter.channels.heartbeats();
            adapter
                .subscriptions
                .wait_active(&hb, Duration::from_secs(5))
                .await
                .ok();
            let mut hello = true;
            let mut tick = tokio::time::interval(adapter.heartbeat_interval);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let (c, s) = node.counts();
                adapter.heartbeat(c, s, hello).await;
                hello = false;
                node.beat().await;
            }
        })
    };
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = stop.cancelled() => break,
        };
        let Some(event) = event else { break };
        match event {
            BusEvent::Message { payload, .. } => {
                if payload.first() == Some(&LOG_MARKER) {
                    node.logged(&payload);
                    continue;
                }
                if BusMessage::is_broadcast_from(&payload, adapter.node_id) {
                    continue;
                }
                let msg = match BusMessage::decode(&payload) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable bus message");
                        continue;
                    }
                };
                handle(&adapter, &node, msg).await;
            }
            BusEvent::Reconnected => {
                adapter.connected.store(true, Ordering::Release);
                adapter.subscriptions.reset();
                node.resubscribing();
            }
            BusEvent::Disconnected => {
                // An error on the subscriber's connection: the connection
                // may be gone (then its subscriptions are), so joins from
                // now on wait for the resubscription (or fail) instead of
                // being acknowledged against a subscription that may be
                // gone; subscribing again what still exists costs nothing.
                adapter.subscriptions.reset();
                // Not every error is a lost connection (Redis Cluster
                // reports topology changes and redirections here too): the
                // node is not connected only when the bus says so, and is
                // again at the next reconnection.
                if !adapter.bus.is_connected() {
                    adapter.connected.store(false, Ordering::Release);
                }
            }
        }
    }
    adapter.goodbye().await;
    beat.abort();
    reconciler.abort();
}

async fn handle(adapter: &Arc<Adapter>, node: &Arc<dyn Deliver>, msg: BusMessage) {
    match msg {
        // The node's own broadcasts were dropped unread (see `run`).
        BusMessage::Broadcast(b) => {
            if let Some(m) = &adapter.metrics {
                m.redis_received(Some(Metrics::lag_since_unix_micros(b.sent_at_us)));
            }
            node.deliver(b);
        }
        BusMessage::Request(req) => {
            if req.origin == adapter.node_id {
                return;
            }
            let adapter = adapter.clone();
            let node = node.clone();
            // Requests may wait (emit-with-ack): answer off the event loop.
            let tasks = adapter.tasks.clone();
            tasks.spawn(async move {
                let (origin, id) = (req.origin, req.id);
                let body = node.answer(req).await;
                adapter.respond(origin, id, body).await;
            });
        }
        BusMessage::Response(resp) => adapter.on_response(resp),
        BusMessage::Heartbeat(hb) => {
            if hb.node_id == adapter.node_id {
                return;
            }
            let new = adapter.registry.seen(&hb);
            if hb.hello || new {
                let (c, s) = node.counts();
                adapter.heartbeat(c, s, false).await;
            }
        }
        BusMessage::Goodbye { node_id } => adapter.registry.forget(node_id),
        BusMessage::Internal { node_id, addr } => {
            if node_id != adapter.node_id {
                adapter.registry.set_internal(node_id, addr);
            }
        }
        BusMessage::Taken {
            nsp,
            sid,
            holder,
            by,
        } => {
            if holder != adapter.node_id {
                return;
            }
            tracing::debug!(socket = sid, nsp, node = %by, "socket recovered elsewhere");
            node.taken(&nsp, &sid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::LocalBroker;
    use crate::cluster::target::Name;
    use crate::config::ClusterConfig;
    use crate::ids::new_socket_id;

    fn adapter(node_id: NodeId) -> Adapter {
        Adapter::new(
            node_id,
            Arc::new(LocalBroker::new().connect()),
            &ClusterConfig::default(),
            Arc::new(Metrics::new(["/"])),
            TaskTracker::new(),
        )
    }

    /// The copies sorted by channel, for comparisons that do not depend on
    /// the order of a map.
    fn sorted(mut copies: Vec<(String, Vec<u32>)>) -> Vec<(String, Vec<u32>)> {
        copies.sort();
        copies
    }

    #[test]
    fn a_whole_namespace_emit_is_one_copy_on_the_namespace_channel() {
        let a = adapter(NodeId::random());
        let copies = a.copies("/chat", &Target::default(), &|_| true);
        assert_eq!(copies, vec![(a.channels.namespace("/chat"), vec![])]);
    }

    #[test]
    fn each_room_is_its_own_copy_responsible_for_its_index() {
        let a = adapter(NodeId::random());
        let target = Target {
            rooms: vec!["r1".into(), "r2".into()],
            except_rooms: vec!["muted".into()],
            ..Target::default()
        };
        assert_eq!(
            sorted(a.copies("/", &target, &|_| true)),
            sorted(vec![
                (a.channels.room("/", "r1"), vec![0]),
                (a.channels.room("/", "r2"), vec![1]),
            ])
        );
    }

    /// Socket ids (given as ids, or as their own-id rooms) go to their
    /// node's channel, one copy per node carrying every index it answers
    /// for; this node's own ids were served locally and make no copy.
    #[test]
    fn socket_ids_make_one_copy_per_other_node() {
        let (me, n1, n2) = (NodeId::random(), NodeId::random(), NodeId::random());
        let a = adapter(me);
        let target = Target {
            rooms: vec![
                "lobby".into(),
                new_socket_id(n1), // own-id room of a socket on n1
                new_socket_id(me), // a local socket's own-id room
            ],
            socket_ids: vec![new_socket_id(n2), new_socket_id(n1), new_socket_id(me)],
            ..Target::default()
        };
        assert_eq!(
            sorted(a.copies("/", &target, &|_| true)),
            sorted(vec![
                (a.channels.room("/", "lobby"), vec![0]),
                (a.channels.node(n1), vec![1, 4]),
                (a.channels.node(n2), vec![3]),
            ])
        );
    }

    /// Every index of a target is the responsibility of exactly one copy
    /// (or of this node, for its own sockets): a receiving node delivers a
    /// socket only for the copy responsible for the first target name the
    /// socket matches, so no socket gets the same emit twice.
    #[test]
    fn every_remote_target_name_has_exactly_one_responsible_copy() {
        let me = NodeId::random();
        let others: Vec<NodeId> = (0..3).map(|_| NodeId::random()).collect();
        let a = adapter(me);
        let mut target = Target::default();
        for i in 0..6 {
            target.rooms.push(format!("room-{i}"));
        }
        for node in others.iter().chain([&me]) {
            target.rooms.push(new_socket_id(*node));
            target.socket_ids.push(new_socket_id(*node));
        }
        let copies = a.copies("/", &target, &|_| true);
        let mut owners = vec![0u32; target.names()];
        for (_, responsible) in &copies {
            for &i in responsible {
                owners[i as usize] += 1;
            }
        }
        for (i, count) in owners.iter().enumerate() {
            let name = match target.name(i).expect("index within the target") {
                Name::Room(r) | Name::Id(r) => r,
            };
            let local = crate::ids::node_of(name) == Some(me);
            let expected = u32::from(!local);
            assert_eq!(*count, expected, "target name {i}");
        }
    }
}
