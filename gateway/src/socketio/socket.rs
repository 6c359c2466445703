//! A Socket.IO socket: one client connected to one namespace over one
//! Engine.IO session. Emits go straight into the session's bounded queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::{mpsc, oneshot};

use super::client::Client;
use super::namespace::{Joined, Namespace};
use super::payload::{self, Payload, PayloadError};
use crate::cluster::recovery::SessionRecord;
use crate::engine::{Frame, PushError, Session};
use crate::protocol::engineio::Transport;
use crate::protocol::socketio::PacketKind;
use crate::reason::DisconnectReason;

/// Why an emit to one socket failed.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("socket disconnected")]
    Disconnected,
    #[error("client too slow: outbound queue full")]
    SlowConsumer,
    /// A stored emit (connection state recovery) the store did not take.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::BusError),
}

/// Why waiting for a client's ack failed.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error(transparent)]
    Emit(#[from] EmitError),
    #[error("no ack within the timeout")]
    Timeout,
    #[error("socket disconnected before acknowledging")]
    Disconnected,
}

/// An application event queued for the hooks, in arrival order.
pub(crate) struct InboundEvent {
    pub(crate) event: String,
    pub(crate) args: Payload,
    pub(crate) ack: Option<u64>,
    /// Position among the socket's application events (a dropped event
    /// leaves a gap).
    pub(crate) sequence: u64,
}

/// What a socket's hook queue carries, in order.
pub(crate) enum Inbound {
    Event(InboundEvent),
    /// The socket left: reported to the hooks after the events before it.
    Left(DisconnectReason),
}

/// The acks a client owes us, by id.
#[derive(Debug, Default)]
struct Acks {
    waiting: HashMap<u64, oneshot::Sender<Payload>>,
    /// Size at which entries nobody waits for any more (the caller gave
    /// up, as a cancelled `EmitWithAck` does) are swept out.
    sweep_at: usize,
}

impl Acks {
    /// Sweeps start at this many entries.
    const FIRST_SWEEP: usize = 64;

    /// Adds `id`. Each sweep sets the next at twice what it kept, so the
    /// entries of callers that left cost amortised O(1) per ack and never
    /// outnumber the live ones by more than [`Self::FIRST_SWEEP`].
    fn insert(&mut self, id: u64, tx: oneshot::Sender<Payload>) {
        self.waiting.insert(id, tx);
        if self.waiting.len() >= self.sweep_at.max(Self::FIRST_SWEEP) {
            self.waiting.retain(|_, tx| !tx.is_closed());
            self.sweep_at = self.waiting.len() * 2;
        }
    }

    fn remove(&mut self, id: u64) -> Option<oneshot::Sender<Payload>> {
        self.waiting.remove(&id)
    }

    fn clear(&mut self) {
        self.waiting.clear();
    }
}

/// An ack the client owes us.
#[derive(Debug)]
pub struct PendingAck {
    id: u64,
    rx: oneshot::Receiver<Payload>,
}

impl PendingAck {
    /// Waits for the client's answer; on timeout the ack is forgotten.
    pub async fn wait(self, socket: &Socket, timeout: Duration) -> Result<Payload, AckError> {
        match tokio::time::timeout(timeout, self.rx).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(AckError::Disconnected),
            Err(_) => {
                socket.acks.lock().remove(self.id);
                Err(AckError::Timeout)
            }
        }
    }
}

pub struct Socket {
    id: Arc<str>,
    ns: Arc<Namespace>,
    session: Arc<Session>,
    client: Weak<Client>,
    /// The private id of connection state recovery, when the namespace has
    /// it on.
    pid: Option<Arc<str>>,
    /// Rooms joined, the own-id room excluded.
    rooms: Mutex<Vec<Arc<str>>>,
    user_id: Option<String>,
    data: Mutex<Option<serde_json::Value>>,
    connected_at: SystemTime,
    connected: AtomicBool,
    /// Taken by a recovery elsewhere (its client came back before this
    /// node noticed it was gone): its end is not recorded.
    taken: AtomicBool,
    /// Recovered on a node other than the one its id names: that node's
    /// channel, held while the socket lives here, brings the emits to its
    /// id (see `docs/architecture.md`).
    moved: Mutex<Option<crate::cluster::Held>>,
    next_ack: AtomicU64,
    pub(crate) next_event: AtomicU64,
    acks: Mutex<Acks>,
    pub(crate) events: Mutex<Option<mpsc::Sender<Inbound>>>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id)
            .field("nsp", &self.ns.name)
            .finish_non_exhaustive()
    }
}

impl Socket {
    pub(crate) fn new(
        id: String,
        ns: Arc<Namespace>,
        session: Arc<Session>,
        client: Weak<Client>,
        pid: Option<String>,
        user_id: Option<String>,
        data: Option<serde_json::Value>,
    ) -> Self {
        Self {
            id: id.into(),
            ns,
            session,
            client,
            pid: pid.map(Into::into),
            rooms: Mutex::new(Vec::new()),
            user_id,
            data: Mutex::new(data),
            connected_at: SystemTime::now(),
            connected: AtomicBool::new(true),
            taken: AtomicBool::new(false),
            moved: Mutex::new(None),
            next_ack: AtomicU64::new(0),
            next_event: AtomicU64::new(0),
            acks: Mutex::new(Acks::default()),
            events: Mutex::new(None),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn id_arc(&self) -> Arc<str> {
        self.id.clone()
    }

    pub(crate) fn namespace(&self) -> &Arc<Namespace> {
        &self.ns
    }

    pub(crate) fn session(&self) -> &Arc<Session> {
        &self.session
    }

    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    pub fn data(&self) -> Option<serde_json::Value> {
        self.data.lock().clone()
    }

    pub(crate) fn transport(&self) -> Transport {
        self.session.transport()
    }

    pub(crate) fn connected_at(&self) -> SystemTime {
        self.connected_at
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// The client (Engine.IO connection) the socket belongs to.
    pub(crate) fn client(&self) -> Option<Arc<Client>> {
        self.client.upgrade()
    }

    /// Keeps the channel of the node its id names while it lives here.
    pub(crate) fn hold_moved(&self, held: crate::cluster::Held) {
        *self.moved.lock() = Some(held);
    }

    /// Lets go of that channel (the socket left).
    pub(crate) fn release_moved(&self) {
        self.moved.lock().take();
    }

    /// Marks the socket taken by a recovery elsewhere (see `taken`).
    pub(crate) fn mark_taken(&self) {
        self.taken.store(true, Ordering::Release);
    }

    pub(crate) fn is_taken(&self) -> bool {
        self.taken.load(Ordering::Acquire)
    }

    /// What connection state recovery keeps of this socket (when its
    /// namespace has recovery on), with `rooms` as its joined rooms.
    pub(crate) fn record_with(&self, rooms: &[Arc<str>]) -> Option<SessionRecord> {
        let pid = self.pid.as_deref()?;
        let mut all = Vec::with_capacity(rooms.len() + 1);
        all.push(self.id.to_string());
        all.extend(rooms.iter().map(|r| r.to_string()));
        Some(SessionRecord {
            sid: self.id.to_string(),
            pid: pid.to_owned(),
            nsp: self.ns.name.to_string(),
            rooms: all,
            user_id: self.user_id.clone(),
            data: self.data(),
            disconnected_at_ms: 0,
        })
    }

    /// [`Socket::record_with`] its rooms now.
    pub(crate) fn record(&self) -> Option<SessionRecord> {
        let rooms = self.rooms.lock().clone();
        self.record_with(&rooms)
    }

    /// Rooms of the socket, its own-id room first.
    pub fn rooms(&self) -> Vec<String> {
        let own = self.rooms.lock();
        let mut out = Vec::with_capacity(own.len() + 1);
        out.push(self.id.to_string());
        out.extend(own.iter().map(|r| r.to_string()));
        out
    }

    pub fn in_room(&self, room: &str) -> bool {
        room == &*self.id || self.rooms.lock().iter().any(|r| &**r == room)
    }

    pub(crate) fn rooms_mut(&self) -> MutexGuard<'_, Vec<Arc<str>>> {
        self.rooms.lock()
    }

    /// Joins `room` (bounded by `max_rooms` including the own-id room).
    pub(crate) fn join(
        self: &Arc<Self>,
        room: &str,
        max_rooms: usize,
    ) -> Result<Joined, &'static str> {
        if !self.is_connected() {
            return Err("socket disconnected");
        }
        self.ns.join(self, room, max_rooms)
    }

    /// Leaves `room`; true when the socket was in it.
    pub(crate) fn leave(&self, room: &str) -> bool {
        self.ns.leave(self, room).is_some()
    }

    /// Queues frames for this socket's connection. A full queue closes the
    /// connection as a slow consumer.
    pub(crate) fn send_frames(&self, frames: &[Frame]) -> Result<(), EmitError> {
        match self.session.send(frames) {
            Ok(()) => {
                self.ns.node_metrics().delivered(1);
                Ok(())
            }
            Err(PushError::Closed) => Err(EmitError::Disconnected),
            Err(PushError::Full) => {
                self.session.close(DisconnectReason::SlowConsumer);
                Err(EmitError::SlowConsumer)
            }
        }
    }

    /// Emits `event(...args)` to this socket. With connection state
    /// recovery on, it is stored (and carries an offset) like any emit.
    pub fn emit(&self, event: &str, args: &Payload) -> Result<(), EmitError> {
        if self.ns.policy.recovery.is_some()
            && let Some(client) = self.client.upgrade()
        {
            if !self.is_connected() {
                return Err(EmitError::Disconnected);
            }
            let target = crate::cluster::Target::socket(self.id.to_string());
            let io = client.io();
            if let Some(log) = io.stored(&self.ns.name, &target) {
                let text = payload::event_text(&self.ns.name, event, args, None)?;
                io.append_stored(&log, &self.ns.name, &target, text, args, None)?;
                return Ok(());
            }
        }
        let frames = payload::encode_event(&self.ns.name, event, args, None)?;
        self.send_frames(&frames)
    }

    /// Emits `event(...args)` asking for an ack, and waits for it.
    pub(crate) async fn emit_with_ack(
        &self,
        event: &str,
        args: &Payload,
        timeout: Duration,
    ) -> Result<Payload, AckError> {
        self.send_with_ack(event, args)?.wait(self, timeout).await
    }

    /// Emits `event(...args)` asking for an ack now (so emits keep their
    /// order); the answer is awaited later with [`PendingAck::wait`].
    pub fn send_with_ack(&self, event: &str, args: &Payload) -> Result<PendingAck, EmitError> {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let frames = payload::encode_event(&self.ns.name, event, args, Some(id))?;
        let (tx, rx) = oneshot::channel();
        self.acks.lock().insert(id, tx);
        if let Err(e) = self.send_frames(&frames) {
            self.acks.lock().remove(id);
            return Err(e);
        }
        Ok(PendingAck { id, rx })
    }

    /// The client answered our ack `id`; unknown ids are ignored.
    pub(crate) fn resolve_ack(&self, id: u64, args: Payload) {
        if let Some(tx) = self.acks.lock().remove(id) {
            let _ = tx.send(args);
        }
    }

    /// Answers the client's ack `id`.
    pub(crate) fn ack(&self, id: u64, args: &Payload) -> Result<(), EmitError> {
        self.send_frames(&payload::encode_ack(&self.ns.name, id, args))
    }

    /// Disconnects this socket from its namespace (the connection stays):
    /// the client gets a DISCONNECT packet, as with Socket.IO's
    /// `socket.disconnect()`; with `close`, the whole connection is closed.
    pub fn disconnect(&self, close: bool) {
        // The DISCONNECT packet goes first either way, so the client knows
        // the server let it go (and does not reconnect by itself).
        let _ = self.session.send(&[payload::encode_control(
            PacketKind::Disconnect,
            &self.ns.name,
            None,
        )]);
        if close {
            self.session.close(DisconnectReason::ServerDisconnect);
            return;
        }
        if let Some(client) = self.client.upgrade() {
            client.remove_socket(&self.ns.name, DisconnectReason::ServerDisconnect);
        }
    }

    /// Marks the socket gone: pending acks fail, the hooks' queue takes no
    /// more events. Returns the queue, if it was started, so the departure
    /// can be reported after the events still in it.
    pub(crate) fn mark_disconnected(&self) -> Option<mpsc::Sender<Inbound>> {
        self.connected.store(false, Ordering::Release);
        self.acks.lock().clear();
        self.events.lock().take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_nobody_waits_for_are_swept_as_new_ones_come() {
        let mut acks = Acks::default();
        let mut live = Vec::new();
        for id in 0..10_000u64 {
            let (tx, rx) = oneshot::channel();
            acks.insert(id, tx);
            // One caller in a hundred is still waiting; the rest gave up.
            if id % 100 == 0 {
                live.push((id, rx));
            }
        }
        assert!(
            acks.waiting.len() <= live.len() * 2 + Acks::FIRST_SWEEP,
            "{} entries for {} waiting callers",
            acks.waiting.len(),
            live.len()
        );
        // The live ones were kept and still get their answer.
        for (id, mut rx) in live {
            acks.remove(id).unwrap().send(Payload::empty()).unwrap();
            assert!(rx.try_recv().is_ok());
        }
    }
}
