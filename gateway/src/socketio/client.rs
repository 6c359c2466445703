//! The Socket.IO side of one Engine.IO session: decodes packets in order,
//! assembles binary packets, multiplexes namespaces, runs admission (policy,
//! JWT, hooks), the reserved `$join`/`$leave`/`$publish` events, and hands
//! application events to the hooks through the socket's ordered queue.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::SocketIo;
use super::hooks::{ConnectDecision, ConnectRequest, Event};
use super::namespace::Joined;
use super::payload::{self, Payload};
use super::socket::{Inbound, InboundEvent, Socket};
use crate::cluster::Target;
use crate::cluster::recovery::{Refusal, SessionRecord, Taken, Track};
use crate::cluster::{BusError, Sent};
use crate::config::Parser;
use crate::engine::{Connection, Session};
use crate::protocol::socketio::{self, DecodeLimits, PacketKind};
use crate::reason::DisconnectReason;
use crate::socketio::Policy;
use crate::socketio::msgpack;
use crate::telemetry::{ConnectErrorReason, RecoveryResult};

/// A binary packet waiting for its attachments.
struct Partial {
    kind: PacketKind,
    nsp: String,
    id: Option<u64>,
    data: String,
    expected: usize,
    attachments: Vec<Bytes>,
}

pub(crate) struct Client {
    io: SocketIo,
    session: Weak<Session>,
    me: Weak<Client>,
    sockets: Mutex<Vec<Arc<Socket>>>,
    /// A CONNECT was received: before it, any other packet is an error.
    greeted: std::sync::atomic::AtomicBool,
    partial: Mutex<Option<Partial>>,
    limits: DecodeLimits,
    /// The client speaks the msgpack parser: every packet is one binary
    /// message.
    msgpack: bool,
}

type Flow = Result<(), DisconnectReason>;

fn ok_ack() -> Payload {
    Payload {
        args: r#"[{"ok":true}]"#.to_owned(),
        attachments: Vec::new(),
    }
}

fn err_ack(error: &str) -> Payload {
    Payload::from_values(&[serde_json::json!({ "ok": false, "error": error })])
}

/// The arguments of a reserved event (`$join`, `$leave`, `$publish`) and
/// the room they start with, or the error answer.
fn room_args(args: &Payload, max_room_name: usize) -> Result<(Vec<&RawValue>, String), Payload> {
    let Ok(list) = serde_json::from_str::<Vec<&RawValue>>(&args.args) else {
        return Err(err_ack("invalid arguments"));
    };
    match string_arg(&list, 0).filter(|r| crate::ids::check_room_name(r, max_room_name).is_ok()) {
        Some(room) => Ok((list, room)),
        None => Err(err_ack("room must be a non-empty string")),
    }
}

/// The `pid` and `offset` of a CONNECT's auth, when both are strings (as
/// Node requires: a client that never received an event sends no offset).
fn recovery_claim(auth: Option<&serde_json::Value>) -> Option<(&str, &str)> {
    let auth = auth?;
    Some((auth.get("pid")?.as_str()?, auth.get("offset")?.as_str()?))
}

/// The CONNECT reply's data: `{"sid":S}`, with `"pid":P` when the
/// namespace has connection state recovery on.
fn connect_reply(sid: &str, pid: Option<&str>) -> String {
    match pid {
        Some(pid) => format!("{{\"sid\":\"{sid}\",\"pid\":\"{pid}\"}}"),
        None => format!("{{\"sid\":\"{sid}\"}}"),
    }
}

/// Argument `i` when it is a JSON string.
fn string_arg(list: &[&RawValue], i: usize) -> Option<String> {
    list.get(i)
        .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
}

impl Client {
    /// The node's Socket.IO server.
    pub(crate) fn io(&self) -> &SocketIo {
        &self.io
    }

    pub(crate) fn new(io: SocketIo, session: &Arc<Session>) -> Arc<Self> {
        let limits = &io.config().limits;
        let decode = DecodeLimits {
            max_attachments: limits.max_attachments,
        };
        let msgpack = io.config().server.parser == Parser::Msgpack;
        Arc::new_cyclic(|me| Self {
            io,
            session: Arc::downgrade(session),
            me: me.clone(),
            sockets: Mutex::new(Vec::new()),
            greeted: std::sync::atomic::AtomicBool::new(false),
            partial: Mutex::new(None),
            limits: decode,
            msgpack,
        })
    }

    /// A packet of the msgpack parser: in its JSON form, it is decoded,
    /// bounded and checked like a JSON client's, then handled the same way.
    async fn on_msgpack(&self, message: &[u8]) -> Flow {
        let decoded = msgpack::decode(message).map_err(|e| {
            tracing::debug!(error = %e, "invalid msgpack packet");
            DisconnectReason::ProtocolError
        })?;
        let packet = socketio::decode(&decoded.text, &self.limits).map_err(|e| {
            tracing::debug!(error = %e, "invalid socket.io packet");
            DisconnectReason::ProtocolError
        })?;
        if packet.kind.is_binary() {
            socketio::check_placeholders(packet.data.unwrap_or(""), packet.attachments)
                .map_err(|_| DisconnectReason::ProtocolError)?;
        }
        self.dispatch(
            packet.kind,
            packet.nsp,
            packet.id,
            packet.data,
            decoded.attachments,
        )
        .await
    }

    fn socket(&self, nsp: &str) -> Option<Arc<Socket>> {
        self.sockets
            .lock()
            .iter()
            .find(|s| &*s.namespace().name == nsp)
            .cloned()
    }

    fn session(&self) -> Result<Arc<Session>, DisconnectReason> {
        self.session
            .upgrade()
            .ok_or(DisconnectReason::TransportClose)
    }

    /// Removes the socket of `nsp` (if connected) and tells everyone.
    pub(crate) fn remove_socket(&self, nsp: &str, reason: DisconnectReason) {
        let socket = {
            let mut sockets = self.sockets.lock();
            let Some(pos) = sockets.iter().position(|s| &*s.namespace().name == nsp) else {
                return;
            };
            sockets.swap_remove(pos)
        };
        self.finish(&socket, reason);
    }

    fn finish(&self, socket: &Arc<Socket>, reason: DisconnectReason) {
        let events = socket.mark_disconnected();
        let ns = socket.namespace().clone();
        // Kept before its rooms are left, so they include everything.
        self.persist(socket, reason);
        socket.release_moved();
        ns.remove(socket);
        self.io.namespaces().remove_if_empty(&ns.name);
        self.io.socket_gone();
        self.io.metrics().socket_disconnected(&ns.metrics, reason);
        if let Some(observer) = self.io.observer() {
            observer.disconnected(socket, reason);
        }
        match events {
            // Events still queued for the hooks go first: the queue reports
            // the departure once it has handed them over.
            Some(queue) => report_left(&self.io, socket, queue, reason),
            None => self.io.hooks().on_disconnect(socket, reason),
        }
        tracing::debug!(socket = socket.id(), nsp = %ns.name, %reason, "socket disconnected");
    }

    /// Tells connection state recovery's store how a socket ended: a
    /// socket lost by accident keeps its session; one that left for good is
    /// forgotten (when the store keeps records of connected sockets).
    fn persist(&self, socket: &Socket, reason: DisconnectReason) {
        let (Some(limits), Some(store)) = (socket.namespace().policy.recovery, self.io.recovery())
        else {
            return;
        };
        if socket.is_taken() {
            // Its session lives on elsewhere.
            return;
        }
        let Some(mut record) = socket.record() else {
            return;
        };
        if reason.is_recoverable() {
            record.disconnected_at_ms = crate::cluster::registry::now_ms();
            store.track(Track::Lost(record), &limits);
        } else if store.keeps_records() {
            store.track(
                Track::Closed {
                    nsp: record.nsp,
                    pid: record.pid,
                },
                &limits,
            );
        }
        self.io.note_recovery_store();
    }

    /// Connection state recovery: takes the session `pid` and, when it is
    /// valid, brings the socket back with its id, rooms and data, sends the
    /// events it missed after `offset`, then the CONNECT reply; live events
    /// follow. Admission (JWT, the connect hook) is not run again, as Node's
    /// default `skipMiddlewares`. An error says why the client gets a new
    /// session instead.
    async fn recover(
        &self,
        session: &Arc<Session>,
        policy: &Arc<Policy>,
        nsp: &str,
        (pid, offset): (&str, &str),
    ) -> Result<(), RecoveryResult> {
        let (Some(store), Some(limits)) = (self.io.recovery(), policy.recovery) else {
            return Err(RecoveryResult::NoSession);
        };
        let taken = store
            .take(self.io.node_id(), pid, nsp, offset, &limits)
            .await;
        self.io.note_recovery_store();
        let Taken {
            mut record,
            missed,
            held_by,
        } = taken.map_err(|r| match r {
            Refusal::NoSession => RecoveryResult::NoSession,
            Refusal::BadOffset => RecoveryResult::BadOffset,
            Refusal::Unavailable => RecoveryResult::Failed,
        })?;
        // The node that still held the socket as connected drops its copy
        // (its connection is the client's previous one, gone).
        if let Some(node) = held_by {
            self.io.release_taken(node, nsp, &record.sid).await;
        }
        // Not used, from here on, puts the session back as lost.
        let put_back = |mut record: SessionRecord| {
            record.disconnected_at_ms = crate::cluster::registry::now_ms();
            store.track(Track::Lost(record), &limits);
            self.io.note_recovery_store();
        };
        // Its rooms' channels, held and confirmed as for a new socket.
        let rooms: Vec<String> = record
            .rooms
            .iter()
            .filter(|r| **r != record.sid)
            .cloned()
            .collect();
        let mut channels = self.io.connect_channels(nsp, policy, &rooms);
        // Recovered away from the node its id names: emits to its id go to
        // that node's channel, which this node then hears too.
        let moved = crate::ids::node_of(&record.sid)
            .filter(|origin| *origin != self.io.node_id())
            .map(|origin| self.io.adapter().channels().node(origin));
        channels.extend(moved.clone());
        let _held = self.io.adapter().hold(channels.clone());
        let confirmed = !self.io.adapter().is_connected()
            || self.io.adapter().subscribed(&channels).await.is_ok();
        if !confirmed || session.is_closed() {
            // Not used: the client may try again.
            put_back(record);
            return Err(RecoveryResult::Failed);
        }
        let last = missed
            .last()
            .map_or_else(|| offset.to_owned(), |p| p.offset.clone());
        let max_rooms = self.io.config().limits.max_rooms_per_socket;
        let reply = payload::encode_control(
            PacketKind::Connect,
            nsp,
            Some(&connect_reply(&record.sid, Some(&record.pid))),
        );
        let mut restored = None;
        let sid = std::mem::take(&mut record.sid);
        let (user_id, data) = (record.user_id.clone(), record.data.clone());
        // Under the log's order: the missed events (those taken with the
        // session, and any appended since), the CONNECT reply, and the
        // socket registered before the next event is delivered.
        let attached = store
            .attach(nsp, &sid, &last, &record.rooms, &mut |since| {
                let mut frames: Vec<_> = missed
                    .iter()
                    .chain(since)
                    .flat_map(|p| payload::logged_frames(p))
                    .collect();
                frames.push(reply.clone());
                if session.send(&frames).is_err() {
                    // The replay does not fit in the outbound queue (nothing
                    // of it was queued), or the connection is gone.
                    return;
                }
                let socket = self.io.register_socket(
                    nsp,
                    policy,
                    sid.clone(),
                    session,
                    self.me.clone(),
                    Some(record.pid.clone()),
                    user_id.clone(),
                    data.clone(),
                );
                for room in &rooms {
                    if let Err(e) = socket.join(room, max_rooms) {
                        tracing::debug!(room, error = e, "recovered room refused");
                    }
                }
                restored = Some(socket);
            })
            .await;
        record.sid = sid;
        let socket = match (attached, restored) {
            (Ok(()), Some(socket)) => {
                if let Some(channel) = moved {
                    socket.hold_moved(self.io.adapter().hold(vec![channel]));
                }
                socket
            }
            (Err(refusal), _) => {
                put_back(record);
                return Err(match refusal {
                    Refusal::Unavailable => RecoveryResult::Failed,
                    _ => RecoveryResult::BadOffset,
                });
            }
            (Ok(()), None) => {
                // Not used (the connection went, or the replay did not fit).
                put_back(record);
                return Err(RecoveryResult::Failed);
            }
        };
        self.sockets.lock().push(socket.clone());
        session.mark_connected();
        socket.namespace().metrics.connected();
        self.io.hooks().on_connected(&socket);
        if let Some(observer) = self.io.observer() {
            observer.connected(&socket);
        }
        tracing::debug!(socket = socket.id(), nsp, "socket recovered");
        Ok(())
    }

    async fn dispatch(
        &self,
        kind: PacketKind,
        nsp: &str,
        id: Option<u64>,
        data: Option<&str>,
        attachments: Vec<Bytes>,
    ) -> Flow {
        use std::sync::atomic::Ordering;
        if kind == PacketKind::Connect {
            self.greeted.store(true, Ordering::Release);
        } else if !self.greeted.load(Ordering::Acquire) {
            // The protocol: the first packet must be a CONNECT.
            return Err(DisconnectReason::ProtocolError);
        }
        match kind {
            PacketKind::Connect => self.connect(nsp, data).await,
            PacketKind::Disconnect => {
                self.remove_socket(nsp, DisconnectReason::ClientDisconnect);
                Ok(())
            }
            PacketKind::Event | PacketKind::BinaryEvent => {
                let Some(socket) = self.socket(nsp) else {
                    // A late packet for a namespace that just left: ignored.
                    tracing::debug!(nsp, "event for a namespace not connected");
                    return Ok(());
                };
                let data = data.ok_or(DisconnectReason::ProtocolError)?;
                let (event, args) =
                    socketio::split_event(data).map_err(|_| DisconnectReason::ProtocolError)?;
                let args = Payload { args, attachments };
                self.on_event(&socket, event, args, id).await
            }
            PacketKind::Ack | PacketKind::BinaryAck => {
                let (Some(socket), Some(id), Some(data)) = (self.socket(nsp), id, data) else {
                    return Ok(());
                };
                socket.resolve_ack(
                    id,
                    Payload {
                        args: data.to_owned(),
                        attachments,
                    },
                );
                Ok(())
            }
            PacketKind::ConnectError => Err(DisconnectReason::ProtocolError),
        }
    }

    fn refuse(
        &self,
        session: &Session,
        nsp: &str,
        why: (Option<&Policy>, ConnectErrorReason),
        message: &str,
        data: Option<serde_json::Value>,
    ) {
        let metrics = self.io.metrics();
        match why.0 {
            Some(policy) => metrics.namespace(&policy.name).connect_error(why.1),
            None => metrics.unknown_namespace().connect_error(why.1),
        }
        let mut body = serde_json::Map::new();
        body.insert("message".into(), message.into());
        if let Some(d) = data {
            body.insert("data".into(), d);
        }
        let text = serde_json::Value::Object(body).to_string();
        // The namespace is the client's input: echo a bounded prefix.
        let frame =
            payload::encode_control(PacketKind::ConnectError, payload::echoed(nsp), Some(&text));
        if session.send(&[frame]) == Err(crate::engine::PushError::Full) {
            // Refusals it does not read: a slow consumer like any other.
            session.close(DisconnectReason::SlowConsumer);
        }
    }

    async fn connect(&self, nsp: &str, data: Option<&str>) -> Flow {
        let session = self.session()?;
        if self.socket(nsp).is_some() {
            tracing::debug!(nsp, "namespace already connected");
            return Ok(());
        }
        let Some(policy) = self.io.namespaces().policy(nsp) else {
            self.refuse(
                &session,
                nsp,
                (None, ConnectErrorReason::InvalidNamespace),
                "Invalid namespace",
                None,
            );
            return Ok(());
        };
        if self.sockets.lock().len() >= self.io.config().limits.max_namespaces_per_connection {
            self.refuse(
                &session,
                nsp,
                (Some(&policy), ConnectErrorReason::TooManyNamespaces),
                "Too many namespaces on this connection",
                None,
            );
            return Ok(());
        }
        let auth: Option<serde_json::Value> = match data {
            Some(d) => Some(serde_json::from_str(d).map_err(|_| DisconnectReason::ProtocolError)?),
            None => None,
        };
        if policy.recovery.is_some()
            && let Some(claim) = recovery_claim(auth.as_ref())
        {
            let result = match self.recover(&session, &policy, nsp, claim).await {
                Ok(()) => RecoveryResult::Recovered,
                Err(why) => why,
            };
            self.io.metrics().namespace(&policy.name).recovery(result);
            if result == RecoveryResult::Recovered {
                return Ok(());
            }
            if session.is_closed() {
                return Ok(());
            }
        }
        let mut user_id = None;
        let mut rooms = Vec::new();
        if let Some(jwt) = &policy.jwt {
            match jwt.verify_auth(auth.as_ref()).await {
                Ok(grant) => {
                    user_id = grant.user_id;
                    rooms = grant.rooms;
                }
                Err(e) => {
                    let why = (Some(&*policy), ConnectErrorReason::Unauthorized);
                    self.refuse(&session, nsp, why, &e.to_string(), None);
                    return Ok(());
                }
            }
        }
        let socket_id = crate::ids::new_socket_id(self.io.node_id());
        let mut attached = None;
        let hooks = self.io.hooks();
        if hooks.handles_connect(nsp) {
            let req = ConnectRequest {
                socket_id: &socket_id,
                namespace: nsp,
                auth: auth.as_ref(),
                handshake: &session.info,
                user_id: user_id.as_deref(),
            };
            match hooks.on_connect(req).await {
                Ok(ConnectDecision::Allow {
                    user_id: uid,
                    rooms: extra,
                    data,
                }) => {
                    if uid.is_some() {
                        user_id = uid;
                    }
                    rooms.extend(extra);
                    attached = data;
                }
                Ok(ConnectDecision::Refuse { message, data }) => {
                    let why = (Some(&*policy), ConnectErrorReason::Refused);
                    self.refuse(&session, nsp, why, &message, data);
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(
                        nsp,
                        kind = e.kind(),
                        error = e.reason(),
                        "connect hook failed"
                    );
                    let why = (Some(&*policy), ConnectErrorReason::HookError);
                    self.refuse(&session, nsp, why, &e.to_string(), None);
                    return Ok(());
                }
            }
        }
        // The socket's channels (its namespace's, its node's for its own id,
        // its initial rooms') are held and confirmed by the bus before the
        // CONNECT reply: once the client knows it is connected, an emit to
        // it from any node reaches it. While the bus is down the node
        // serves its own clients (it reports not ready) and they connect
        // without that promise; a bus that is up but does not confirm in
        // time is a refusal the client hears.
        let max_rooms = self.io.config().limits.max_rooms_per_socket;
        rooms.truncate(max_rooms);
        let channels = self.io.connect_channels(nsp, &policy, &rooms);
        let _held = self.io.adapter().hold(channels.clone());
        if self.io.adapter().is_connected()
            && let Err(e) = self.io.adapter().subscribed(&channels).await
        {
            let why = (Some(&*policy), ConnectErrorReason::ClusterUnavailable);
            self.refuse(&session, nsp, why, &e.to_string(), None);
            return Ok(());
        }
        if session.is_closed() {
            return Ok(());
        }
        // The CONNECT reply goes first, so that nothing reaches the client
        // for this namespace before it knows it is connected.
        let pid = policy.recovery.map(|_| crate::ids::new_pid());
        let reply = connect_reply(&socket_id, pid.as_deref());
        session
            .send(&[payload::encode_control(
                PacketKind::Connect,
                nsp,
                Some(&reply),
            )])
            .map_err(|_| DisconnectReason::SlowConsumer)?;
        let io = &self.io;
        let socket = io.register_socket(
            nsp,
            &policy,
            socket_id,
            &session,
            self.me.clone(),
            pid,
            user_id,
            attached,
        );
        // Their channels are held confirmed: joining waits for nothing.
        for room in rooms {
            if let Err(e) = socket.join(&room, max_rooms) {
                tracing::debug!(room, error = e, "initial room refused");
            }
        }
        // Recorded from its CONNECT where the store keeps connected
        // sockets' records: a client recovers even when this node dies.
        if let (Some(store), Some(limits)) = (io.recovery(), policy.recovery)
            && store.keeps_records()
            && let Some(record) = socket.record()
        {
            store.track(Track::Opened(record), &limits);
        }
        self.sockets.lock().push(socket.clone());
        session.mark_connected();
        socket.namespace().metrics.connected();
        hooks.on_connected(&socket);
        if let Some(observer) = io.observer() {
            observer.connected(&socket);
        }
        Ok(())
    }

    async fn on_event(
        &self,
        socket: &Arc<Socket>,
        event: String,
        args: Payload,
        ack: Option<u64>,
    ) -> Flow {
        if event.len() > self.io.config().limits.max_event_name {
            return Err(DisconnectReason::ProtocolError);
        }
        if event.starts_with('$') {
            if event == "$publish" {
                self.publish(socket, &args, ack);
                return Ok(());
            }
            let reply = self.reserved(socket, &event, &args).await;
            if let Some(id) = ack {
                let _ = socket.ack(id, &reply);
            }
            return Ok(());
        }
        let nsp = &socket.namespace().name;
        if !self.io.hooks().handles_events(nsp) {
            if let Some(id) = ack {
                let _ = socket.ack(id, &err_ack("no handler for application events"));
            }
            return Ok(());
        }
        let tx = {
            let mut slot = socket.events.lock();
            if !socket.is_connected() {
                return Ok(());
            }
            slot.get_or_insert_with(|| {
                spawn_event_worker(
                    self.io.clone(),
                    socket.clone(),
                    self.io.config().limits.hook_queue,
                )
            })
            .clone()
        };
        let sequence = socket
            .next_event
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let item = Inbound::Event(InboundEvent {
            event,
            args,
            ack,
            sequence,
        });
        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(item) {
            tracing::debug!(socket = socket.id(), "hook queue full; event dropped");
            if let Some(id) = ack {
                let busy = Payload::from_values(&[serde_json::json!({ "error": "backend busy" })]);
                let _ = socket.ack(id, &busy);
            }
        }
        Ok(())
    }

    /// `$publish`, room, event, ...args: answered once the other nodes'
    /// copies were accepted by the bus (or at once with an error), without
    /// the reader waiting for it: the answer is sent when Redis replies.
    fn publish(&self, socket: &Arc<Socket>, args: &Payload, ack: Option<u64>) {
        let answer = |reply: Payload| {
            if let Some(id) = ack {
                let _ = socket.ack(id, &reply);
            }
        };
        let limits = &self.io.config().limits;
        let policy = &socket.namespace().policy;
        let (list, room) = match room_args(args, limits.max_room_name) {
            Ok(parsed) => parsed,
            Err(reply) => return answer(reply),
        };
        let string_at = |i: usize| string_arg(&list, i);
        if !policy.publish {
            return answer(err_ack("publishing is not allowed in this namespace"));
        }
        if !socket.in_room(&room) || room == socket.id() {
            return answer(err_ack("not a member of this room"));
        }
        let Some(name) = string_at(1) else {
            return answer(err_ack("event must be a string"));
        };
        if crate::ids::check_publishable_event(&name, limits.max_event_name).is_err() {
            return answer(err_ack("this event name cannot be published"));
        }
        let rest: Vec<&str> = list.iter().skip(2).map(|v| v.get()).collect();
        let payload = Payload {
            args: format!("[{}]", rest.join(",")),
            attachments: args.attachments.clone(),
        };
        let target = Target::room(room).except(socket.id());
        let sent: Option<Sent> = ack.map(|id| {
            let socket = socket.clone();
            Box::new(move |result: Result<(), BusError>| {
                let reply = match result {
                    Ok(()) => ok_ack(),
                    Err(e) => err_ack(&e.to_string()),
                };
                let _ = socket.ack(id, &reply);
            }) as Sent
        });
        let nsp = &socket.namespace().name;
        if let Err(e) = self.io.emit_nowait(nsp, &target, &name, &payload, sent) {
            answer(err_ack(&e.to_string()));
        }
    }

    /// `$join`, `$leave`: the answer for the client's ack.
    async fn reserved(&self, socket: &Arc<Socket>, event: &str, args: &Payload) -> Payload {
        let limits = &self.io.config().limits;
        let policy = &socket.namespace().policy;
        let room = match room_args(args, limits.max_room_name) {
            Ok((_, room)) => room,
            Err(reply) => return reply,
        };
        match event {
            "$join" => {
                if !policy.may_join(&room) {
                    return err_ack("not allowed to join this room");
                }
                // Acknowledged only once the node receives the room from
                // every other node, whether or not it was the node's first
                // member (another member's subscription may be under way).
                let fresh = match socket.join(&room, limits.max_rooms_per_socket) {
                    Ok(Joined::Yes { .. }) => true,
                    Ok(Joined::Already) => false,
                    Err(e) => return err_ack(e),
                };
                match self
                    .io
                    .adapter()
                    .room_subscribed(&socket.namespace().name, &room)
                    .await
                {
                    Ok(()) => ok_ack(),
                    Err(e) => {
                        if fresh {
                            socket.namespace().leave(socket, &room);
                        }
                        err_ack(&e.to_string())
                    }
                }
            }
            "$leave" => {
                if !policy.may_join(&room) {
                    return err_ack("not allowed to leave this room");
                }
                socket.namespace().leave(socket, &room);
                ok_ack()
            }
            _ => err_ack("unknown reserved event"),
        }
    }
}

/// Puts the departure of `socket` at the end of its hook queue.
fn report_left(
    io: &SocketIo,
    socket: &Arc<Socket>,
    queue: mpsc::Sender<Inbound>,
    reason: DisconnectReason,
) {
    match queue.try_send(Inbound::Left(reason)) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(left)) => {
            io.spawn(async move {
                let _ = queue.send(left).await;
            });
        }
        // The worker is gone (it outlives every sender unless it panicked).
        Err(mpsc::error::TrySendError::Closed(_)) => io.hooks().on_disconnect(socket, reason),
    }
}

/// The socket's ordered queue to the hooks (`limits.hook_queue` long). Past
/// it, an event is dropped and a client asking for an ack gets
/// `{"error":"backend busy"}`: the reader never waits on a backend, so
/// heartbeats keep flowing.
fn spawn_event_worker(io: SocketIo, socket: Arc<Socket>, bound: usize) -> mpsc::Sender<Inbound> {
    let (tx, mut rx) = mpsc::channel::<Inbound>(bound);
    let worker = io.clone();
    worker.spawn(async move {
        while let Some(item) = rx.recv().await {
            let ev = match item {
                Inbound::Event(ev) => ev,
                Inbound::Left(reason) => {
                    io.hooks().on_disconnect(&socket, reason);
                    break;
                }
            };
            let event = Event {
                name: ev.event,
                args: ev.args,
                wants_ack: ev.ack.is_some(),
                sequence: ev.sequence,
            };
            let result = io.hooks().on_event(&socket, event).await;
            match ev.ack {
                // An event forwarded after its socket left is not acked:
                // the client may have reconnected with new ack ids.
                Some(id) if socket.is_connected() => {
                    let reply = match result {
                        Ok(Some(p)) => p,
                        Ok(None) => Payload::empty(),
                        Err(e) => {
                            Payload::from_values(&[serde_json::json!({ "error": e.to_string() })])
                        }
                    };
                    let _ = socket.ack(id, &reply);
                }
                _ => {
                    if let Err(e) = result {
                        tracing::debug!(
                            socket = socket.id(),
                            kind = e.kind(),
                            error = e.reason(),
                            "event hook failed"
                        );
                    }
                }
            }
        }
    });
    tx
}

#[async_trait::async_trait]
impl Connection for Client {
    async fn on_message(&self, text: &str) -> Flow {
        if self.msgpack || self.partial.lock().is_some() {
            // Attachments must follow their packet directly.
            return Err(DisconnectReason::ProtocolError);
        }
        let packet = socketio::decode(text, &self.limits).map_err(|e| {
            tracing::debug!(error = %e, "invalid socket.io packet");
            DisconnectReason::ProtocolError
        })?;
        if packet.kind.is_binary() {
            let data = packet.data.unwrap_or("");
            socketio::check_placeholders(data, packet.attachments)
                .map_err(|_| DisconnectReason::ProtocolError)?;
            if packet.attachments > 0 {
                *self.partial.lock() = Some(Partial {
                    kind: packet.kind,
                    nsp: packet.nsp.to_owned(),
                    id: packet.id,
                    data: data.to_owned(),
                    expected: packet.attachments,
                    attachments: Vec::with_capacity(packet.attachments),
                });
                return Ok(());
            }
        }
        self.dispatch(packet.kind, packet.nsp, packet.id, packet.data, Vec::new())
            .await
    }

    async fn on_binary(&self, data: Bytes) -> Flow {
        if self.msgpack {
            return self.on_msgpack(&data).await;
        }
        let complete = {
            let mut slot = self.partial.lock();
            let Some(partial) = slot.as_mut() else {
                return Err(DisconnectReason::ProtocolError);
            };
            partial.attachments.push(data);
            if partial.attachments.len() == partial.expected {
                slot.take()
            } else {
                None
            }
        };
        match complete {
            Some(p) => {
                self.dispatch(p.kind, &p.nsp, p.id, Some(&p.data), p.attachments)
                    .await
            }
            None => Ok(()),
        }
    }

    fn on_upgrade(&self) {
        if let Some(observer) = self.io.observer() {
            let sockets = self.sockets.lock().clone();
            for socket in &sockets {
                observer.upgraded(socket);
            }
        }
    }

    fn on_close(&self, reason: DisconnectReason) {
        self.io.connection_gone();
        let sockets = std::mem::take(&mut *self.sockets.lock());
        for socket in &sockets {
            self.finish(socket, reason);
        }
    }
}
