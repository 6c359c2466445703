//! The server side of the Socket.IO Admin UI (`@socket.io/admin-ui` 0.5),
//! cluster-wide: the UI, pointed at any node, lists every node (each under
//! its node id), every socket with its rooms, handshake and transport, and
//! acts on sockets of any node.
//!
//! The UI is a Socket.IO client of the admin namespace (`/admin` by
//! default). What it hears is emitted to that namespace like any broadcast,
//! so it reaches the UI on whichever node it is connected:
//!
//! - `server_stats`, every `stats_interval_ms`, from every node: its id,
//!   uptime, connection counts, sockets per namespace and the traffic since
//!   the last one (`aggregatedEvents`);
//! - `socket_connected`, `socket_updated` (moved to WebSocket),
//!   `socket_disconnected`, `room_joined`, `room_left`, from the node of the
//!   socket as it happens.
//!
//! A UI that connects gets `session` (an id it logs in with next time),
//! `config` (the features offered) and `all_sockets` (fetched from every
//! node). Its actions (`emit`, `join`, `leave`, `_disconnect`) are the
//! cluster-wide operations of the admin API.
//!
//! [`AdminUi`] wraps the node's hooks: it admits and serves the admin
//! namespace and hands every other namespace to them. It is the node's
//! [`Observer`] for the events above.

mod session;

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::cluster::registry::now_ms;
use crate::config::AdminUiConfig;
use crate::reason::DisconnectReason;
use crate::socketio::hooks::{ConnectDecision, ConnectRequest, Event, HookError, Hooks};
use crate::socketio::{Observer, Payload, Socket, SocketIo, Target, WeakSocketIo};
use crate::telemetry::{ErrorChain, Tally};
use session::{Admission, Sessions};

pub(crate) struct AdminUi {
    namespace: String,
    readonly: bool,
    stats_interval: Duration,
    max_sockets: u32,
    sessions: Sessions,
    hooks: Arc<dyn Hooks>,
    io: OnceLock<WeakSocketIo>,
    started: Instant,
    hostname: String,
    me: std::sync::Weak<AdminUi>,
}

impl AdminUi {
    /// The Admin UI of `config` (enabled and validated), in front of the
    /// node's `hooks`.
    pub(crate) fn new(config: &AdminUiConfig, hooks: Arc<dyn Hooks>) -> Arc<Self> {
        let hostname = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "gateway".to_owned());
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            namespace: config.namespace.clone(),
            readonly: config.readonly,
            stats_interval: Duration::from_millis(config.stats_interval_ms),
            max_sockets: u32::try_from(config.max_sockets).unwrap_or(u32::MAX),
            sessions: Sessions::new(
                config.username.clone().unwrap_or_default(),
                config.password_hash.clone().unwrap_or_default(),
            ),
            hooks,
            io: OnceLock::new(),
            started: Instant::now(),
            hostname,
        })
    }

    /// Connects it to the node's server (once, after the server is made).
    pub(crate) fn attach(self: &Arc<Self>, io: &SocketIo) {
        let _ = self.io.set(io.downgrade());
        io.set_observer(self.clone());
    }

    fn io(&self) -> Option<SocketIo> {
        self.io.get()?.upgrade()
    }

    /// The features the UI may use (it hides what is not offered).
    fn features(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.readonly {
            out.extend([
                "EMIT",
                "JOIN",
                "LEAVE",
                "DISCONNECT",
                "MJOIN",
                "MLEAVE",
                "MDISCONNECT",
            ]);
        }
        // The sockets, rooms and their events are listed (Node's
        // "development" mode), and the traffic is counted.
        out.extend(["AGGREGATED_EVENTS", "ALL_EVENTS"]);
        out
    }

    /// Emits `event(...args)` to every UI of the cluster, without waiting.
    fn broadcast(&self, event: &str, args: &[Value]) {
        let Some(io) = self.io() else { return };
        let payload = Payload::from_values(args);
        if let Err(e) = io.emit_nowait(&self.namespace, &Target::default(), event, &payload, None) {
            tracing::debug!(event, error = %ErrorChain(&e), "admin UI event not sent");
        }
    }

    /// What a new UI hears first: its session id, the features, and every
    /// socket of the cluster.
    async fn greet(&self, socket: Arc<Socket>) {
        let Some(io) = self.io() else { return };
        let token = self.sessions.issue();
        let _ = socket.emit("session", &Payload::from_values(&[json!(token)]));
        let config = json!({ "supportedFeatures": self.features() });
        let _ = socket.emit("config", &Payload::from_values(&[config]));
        match io.fetch_admin_sockets(self.max_sockets).await {
            Ok((sockets, missing)) => {
                if !missing.is_empty() {
                    tracing::debug!(?missing, "admin UI: nodes did not list their sockets");
                }
                // One message, within half the connection's outbound bound:
                // a larger one fits only an empty queue, and otherwise cuts
                // the UI off as a slow consumer.
                let budget = io.config().limits.outbound_queue_bytes / 2;
                let mut used = 0;
                let listed: Vec<&str> = sockets
                    .iter()
                    .map(String::as_str)
                    .take_while(|s| {
                        used += s.len() + 1;
                        used <= budget
                    })
                    .collect();
                if listed.len() < sockets.len() {
                    tracing::info!(
                        listed = listed.len(),
                        sockets = sockets.len(),
                        "admin UI: socket list cut to fit the outbound queue"
                    );
                }
                // Each is JSON text already: the array is written as is.
                let args = format!("[[{}]]", listed.join(","));
                let payload = Payload {
                    args,
                    attachments: Vec::new(),
                };
                let _ = socket.emit("all_sockets", &payload);
            }
            Err(e) => tracing::warn!(error = %ErrorChain(&e), "admin UI: sockets not listed"),
        }
        // Every node's figures follow within `stats_interval_ms` (sending
        // this node's now would take its traffic counts from the other UIs).
    }

    /// Carries out an action of the UI.
    async fn act(&self, event: &Event) {
        if self.readonly {
            return;
        }
        let Some(io) = self.io() else { return };
        let Ok(args) = serde_json::from_str::<Vec<Value>>(&event.args.args) else {
            return;
        };
        let text = |i: usize| args.get(i).and_then(Value::as_str);
        let Some(nsp) = text(0) else { return };
        // The third argument of join, leave and _disconnect, the second of
        // emit: a room or a socket id; none means the whole namespace.
        let target = |filter: Option<&str>| match filter {
            None | Some("") => Target::default(),
            Some(id) if crate::ids::is_socket_id_shape(id) => Target::socket(id),
            Some(room) => Target::room(room),
        };
        let result = match event.name.as_str() {
            "emit" => {
                let Some(name) = text(2) else { return };
                let rest = Value::Array(args.get(3..).unwrap_or_default().to_vec());
                let payload = Payload {
                    args: rest.to_string(),
                    attachments: event.args.attachments.clone(),
                };
                io.emit(nsp, &target(text(1)), name, &payload)
                    .await
                    .map(drop)
            }
            "join" | "leave" => {
                let Some(room) = text(1) else { return };
                let (target, rooms) = (target(text(2)), vec![room.to_owned()]);
                if event.name == "join" {
                    io.join_rooms(nsp, &target, rooms).await.map(drop)
                } else {
                    io.leave_rooms(nsp, &target, rooms).await.map(drop)
                }
            }
            "_disconnect" => {
                let close = args.get(1).and_then(Value::as_bool).unwrap_or(false);
                io.disconnect_sockets(nsp, &target(text(2)), close)
                    .await
                    .map(drop)
            }
            _ => return,
        };
        match result {
            Ok(()) => tracing::info!(action = %event.name, nsp, "admin UI action"),
            Err(e) => tracing::warn!(
                action = %event.name,
                nsp,
                error = %ErrorChain(&e),
                "admin UI action failed"
            ),
        }
    }

    /// This node's `server_stats`, with the traffic since the last call.
    fn stats(&self, io: &SocketIo) -> Option<Value> {
        let tally = io.metrics().tally()?;
        let (connections, _) = io.counts();
        let namespaces: Vec<Value> = io
            .namespaces()
            .all()
            .iter()
            .map(|ns| json!({ "name": &*ns.name, "socketsCount": ns.len() }))
            .collect();
        Some(json!({
            "serverId": io.node_id().to_string(),
            "hostname": self.hostname,
            "pid": std::process::id(),
            "uptime": self.started.elapsed().as_secs_f64(),
            "clientsCount": connections,
            "pollingClientsCount": tally.polling.load(Ordering::Relaxed).max(0),
            "aggregatedEvents": aggregated(tally),
            "namespaces": namespaces,
        }))
    }

    /// Emits every node's statistics to the UIs until `stop`.
    pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(self.stats_interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let Some(io) = self.io() else { return };
            if let Some(stats) = self.stats(&io) {
                self.broadcast("server_stats", &[stats]);
            }
        }
    }
}

/// The traffic counted since the last call, as the UI's `aggregatedEvents`
/// (one entry per kind, stamped with the current second).
fn aggregated(tally: &Tally) -> Vec<Value> {
    let second = now_ms() / 1000 * 1000;
    let mut out = Vec::new();
    let mut push = |kind: &str, sub: Option<&str>, count: u64| {
        if count > 0 {
            let mut e = Map::new();
            e.insert("timestamp".into(), second.into());
            e.insert("type".into(), kind.into());
            if let Some(sub) = sub {
                e.insert("subType".into(), sub.into());
            }
            e.insert("count".into(), count.into());
            out.push(Value::Object(e));
        }
    };
    let take = |a: &std::sync::atomic::AtomicU64| a.swap(0, Ordering::Relaxed);
    push("rawConnection", None, take(&tally.connections));
    for (reason, n) in DisconnectReason::ALL.iter().zip(&tally.disconnections) {
        push("rawDisconnection", Some(reason.as_str()), take(n));
    }
    push("packetsIn", None, take(&tally.packets_in));
    push("packetsOut", None, take(&tally.packets_out));
    push("bytesIn", None, take(&tally.bytes_in));
    push("bytesOut", None, take(&tally.bytes_out));
    out
}

fn now_iso() -> Value {
    Value::String(crate::clock::iso8601_ms(now_ms() as i64))
}

impl Observer for AdminUi {
    fn connected(&self, socket: &Arc<Socket>) {
        let Some(io) = self.io() else { return };
        self.broadcast(
            "socket_connected",
            &[
                crate::socketio::admin_socket_json(socket, io.config()),
                now_iso(),
            ],
        );
    }

    fn disconnected(&self, socket: &Socket, reason: DisconnectReason) {
        let nsp = &*socket.namespace().name;
        self.broadcast(
            "socket_disconnected",
            &[
                nsp.into(),
                socket.id().into(),
                reason.as_str().into(),
                now_iso(),
            ],
        );
    }

    fn joined(&self, socket: &Socket, room: &str) {
        let nsp = &*socket.namespace().name;
        self.broadcast(
            "room_joined",
            &[nsp.into(), room.into(), socket.id().into(), now_iso()],
        );
    }

    fn left(&self, socket: &Socket, room: &str) {
        let nsp = &*socket.namespace().name;
        self.broadcast(
            "room_left",
            &[nsp.into(), room.into(), socket.id().into(), now_iso()],
        );
    }

    fn upgraded(&self, socket: &Socket) {
        let nsp = &*socket.namespace().name;
        self.broadcast(
            "socket_updated",
            &[json!({ "id": socket.id(), "nsp": nsp, "transport": "websocket" })],
        );
    }
}

#[async_trait::async_trait]
impl Hooks for AdminUi {
    fn handles_connect(&self, namespace: &str) -> bool {
        namespace == self.namespace || self.hooks.handles_connect(namespace)
    }

    fn handles_events(&self, namespace: &str) -> bool {
        namespace == self.namespace || self.hooks.handles_events(namespace)
    }

    async fn on_connect(&self, req: ConnectRequest<'_>) -> Result<ConnectDecision, HookError> {
        if req.namespace != self.namespace {
            return self.hooks.on_connect(req).await;
        }
        let message = match self.sessions.admit(req.auth).await {
            Admission::Admitted => return Ok(ConnectDecision::allow()),
            Admission::Refused => "invalid credentials",
            Admission::Busy => "too many logins under way; try again",
        };
        tracing::info!(remote = %req.handshake.remote, reason = message, "admin UI login refused");
        Ok(ConnectDecision::Refuse {
            message: message.to_owned(),
            data: None,
        })
    }

    fn on_connected(&self, socket: &Arc<Socket>) {
        if *socket.namespace().name != *self.namespace {
            return self.hooks.on_connected(socket);
        }
        if let (Some(io), Some(ui)) = (self.io(), self.me.upgrade()) {
            let socket = socket.clone();
            io.spawn(async move { ui.greet(socket).await });
        }
    }

    async fn on_event(
        &self,
        socket: &Arc<Socket>,
        event: Event,
    ) -> Result<Option<Payload>, HookError> {
        if *socket.namespace().name != *self.namespace {
            return self.hooks.on_event(socket, event).await;
        }
        self.act(&event).await;
        Ok(None)
    }

    fn on_disconnect(&self, socket: &Arc<Socket>, reason: DisconnectReason) {
        if *socket.namespace().name != *self.namespace {
            self.hooks.on_disconnect(socket, reason);
        }
    }

    async fn drain(&self, grace: Duration) -> bool {
        self.hooks.drain(grace).await
    }
}
