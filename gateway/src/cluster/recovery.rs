//! Connection state recovery's store: per namespace, an append-only log of
//! the events sent to its sockets, in one total order, and the sessions of
//! sockets that were disconnected by accident, by private id (`pid`).
//!
//! The store is the cluster's because it must be shared by every node a
//! client may come back to. [`RecoveryStore`] is what the Socket.IO layer
//! calls; [`LocalRecovery`] is the in-process implementation, which lives
//! with the in-process broker (nodes sharing one [`super::LocalBroker`]
//! share one store; a lone node has its own). A Redis implementation is a
//! later step (see `docs/architecture.md`).
//!
//! **Order.** An event's offset and its delivery are one step: the store
//! appends the event and hands it to every node (the publisher included)
//! in log order, so each socket receives a namespace's stored events in log
//! order, and a client's last offset means "everything up to here". The
//! in-process store does both under the namespace log's lock: it calls each
//! registered node's [`LogSink`] synchronously. (Redis will do the same with
//! one script that appends to a stream and publishes the entry id, every
//! node delivering in the order Redis serialised them.)
//!
//! **Bounds.** Each namespace's log is trimmed on every append by age
//! (`max_disconnection_ms`), count and bytes; sessions expire after
//! `max_disconnection_ms` and are swept on access and at most once a second
//! on save and append.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use super::BusError;
use super::target::Target;
use crate::config::RecoveryConfig;
use crate::ids::NodeId;

/// The bounds of one namespace's log and sessions (from its policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecoveryLimits {
    pub(crate) max_disconnection: Duration,
    pub(crate) max_packets: usize,
    pub(crate) max_bytes: usize,
    /// Lost sockets' sessions kept per namespace.
    pub(crate) max_sessions: usize,
}

impl RecoveryLimits {
    /// The limits of an enabled policy, `None` when recovery is off.
    pub(crate) fn from_config(cfg: &RecoveryConfig) -> Option<Self> {
        cfg.enabled.then(|| Self {
            max_disconnection: Duration::from_millis(cfg.max_disconnection_ms),
            max_packets: cfg.max_packets,
            max_bytes: cfg.max_bytes,
            max_sessions: cfg.max_sessions,
        })
    }
}

/// An event to be stored: who it is for and its encoded packet.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredPacket {
    /// Its rooms, socket ids and except-rooms (never volatile).
    pub(crate) target: Target,
    /// The Engine.IO text packet (`42...`, `45N-...`) whose data, a JSON
    /// array, ends the text; the store appends the offset to that array.
    pub(crate) text: String,
    pub(crate) attachments: Vec<Bytes>,
}

impl StoredPacket {
    /// Whether a socket in `rooms` (its own-id room included) was meant to
    /// receive it: the target selects one of the rooms (a socket id counts
    /// as its own-id room) or the whole namespace, and none of the rooms is
    /// excepted.
    pub(crate) fn reaches(&self, rooms: &[String]) -> bool {
        let t = &self.target;
        let selected = t.is_namespace()
            || rooms
                .iter()
                .any(|r| t.rooms.contains(r) || t.socket_ids.contains(r));
        selected && !rooms.iter().any(|r| t.except_rooms.contains(r))
    }

    fn size(&self) -> usize {
        self.text.len() + self.attachments.iter().map(Bytes::len).sum::<usize>()
    }
}

/// A stored event with its offset; `packet.text` carries the offset as its
/// last argument.
#[derive(Debug)]
pub(crate) struct LoggedPacket {
    pub(crate) offset: String,
    seq: u64,
    at: Instant,
    pub(crate) packet: StoredPacket,
}

impl LoggedPacket {
    /// This event for its target except the sockets `sids`.
    pub(crate) fn except(&self, sids: &[String]) -> Self {
        let mut packet = self.packet.clone();
        packet.target.except_rooms.extend(sids.iter().cloned());
        Self {
            offset: self.offset.clone(),
            seq: self.seq,
            at: self.at,
            packet,
        }
    }

    /// An event read from a log kept elsewhere (Redis), `offset` its id
    /// there; the offset is appended to its arguments.
    pub(crate) fn from_log(offset: String, mut packet: StoredPacket) -> Self {
        packet.text = with_offset(&packet.text, &offset);
        Self {
            offset,
            seq: 0,
            at: Instant::now(),
            packet,
        }
    }
}

/// What must survive of a socket disconnected by accident.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SessionRecord {
    pub(crate) sid: String,
    pub(crate) pid: String,
    pub(crate) nsp: String,
    /// Every room, the socket's own-id room included.
    pub(crate) rooms: Vec<String>,
    pub(crate) user_id: Option<String>,
    pub(crate) data: Option<serde_json::Value>,
    /// Milliseconds since the epoch.
    pub(crate) disconnected_at_ms: u64,
}

/// Why a recovery was refused (the client gets a new session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The store could not be asked (Redis is unreachable or failed).
    Unavailable,
    /// No session under that pid: never was, expired, already used, or of
    /// another namespace.
    NoSession,
    /// The offset was never issued by this log, or events after it were
    /// trimmed (the client would miss them).
    BadOffset,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Appended {
    pub(crate) offset: String,
    /// Sockets of the appending node that got the event.
    pub(crate) local: usize,
    /// Nodes with at least one recipient, the appending node included.
    pub(crate) nodes_reached: u64,
}

/// Sizes of a store, for the gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StoreStats {
    pub(crate) sessions: u64,
    pub(crate) packets: u64,
    pub(crate) bytes: u64,
}

/// A node's side of the log: delivers a stored event to its local sockets.
pub(crate) trait LogSink: Send + Sync {
    /// Delivers `packet` of namespace `nsp` to the node's sockets its
    /// target selects; returns how many got it. Called in log order, under
    /// the log's lock: must not block or call back into the store.
    fn deliver_logged(&self, nsp: &str, packet: &LoggedPacket) -> usize;
}

/// The nodes a store hands its events to (see [`RecoveryStore::register`]).
#[derive(Default)]
pub(crate) struct Sinks(RwLock<Vec<(NodeId, Weak<dyn LogSink>)>>);

impl Sinks {
    /// Adds node `node_id`'s sink, forgetting the dropped ones.
    pub(crate) fn register(&self, node_id: NodeId, sink: Weak<dyn LogSink>) {
        let mut sinks = self.0.write();
        sinks.retain(|(_, s)| s.strong_count() > 0);
        sinks.push((node_id, sink));
    }

    /// Hands `packet` of `nsp` to every live sink; calls `got` with each
    /// node and how many of its sockets got it.
    pub(crate) fn deliver(
        &self,
        nsp: &str,
        packet: &LoggedPacket,
        mut got: impl FnMut(NodeId, usize),
    ) {
        for (node, sink) in self.0.read().iter() {
            if let Some(sink) = sink.upgrade() {
                got(*node, sink.deliver_logged(nsp, packet));
            }
        }
    }
}

/// Called under the log's order with the events after an offset.
pub(crate) type Attach<'a> = &'a mut (dyn FnMut(&[Arc<LoggedPacket>]) + Send);

/// Told once what became of an append: its offset, or why it was not
/// stored (the bus failed; nobody received it).
pub(crate) type AppendDone = Box<dyn FnOnce(Result<Appended, BusError>) + Send>;

/// A change in a socket's life that the store keeps track of. The
/// in-process store keeps only lost sockets' sessions; the Redis store
/// keeps a record of every socket of a namespace with recovery on, from its
/// CONNECT, so that a client recovers even when its node was killed and
/// had no time to save anything.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Track {
    /// A socket connected (its record, rooms as they are now).
    Opened(SessionRecord),
    /// A connected socket's rooms changed (its whole record).
    Rooms(SessionRecord),
    /// A socket was disconnected by accident: keep its session for
    /// `max_disconnection`.
    Lost(SessionRecord),
    /// A socket left for good (its client disconnected, or was
    /// disconnected by the server): nothing to keep.
    Closed { nsp: String, pid: String },
}

/// A session taken for recovery.
#[derive(Debug)]
pub(crate) struct Taken {
    pub(crate) record: SessionRecord,
    /// Stored events after the offset that the session's rooms reach, when
    /// the store hands them over with the session (the in-process store);
    /// otherwise [`RecoveryStore::attach`] reads them.
    pub(crate) missed: Vec<Arc<LoggedPacket>>,
    /// The node that still held the socket as connected when it was taken
    /// (its client came back before that node noticed it was gone): that
    /// node must drop its copy.
    pub(crate) held_by: Option<NodeId>,
}

/// Connection state recovery's storage, shared by the nodes a client may
/// come back to.
#[async_trait::async_trait]
pub(crate) trait RecoveryStore: Send + Sync + 'static {
    /// Node `node_id` receives every appended event through `sink` from now
    /// on (until the sink is dropped).
    fn register(&self, node_id: NodeId, sink: Weak<dyn LogSink>);

    /// Appends `packet` to namespace `nsp`'s log, gives it the next offset
    /// (appended to its arguments) and hands it to every registered node in
    /// log order; trims the log to `limits`. An error at once when the
    /// store is known to be unreachable (and `done` is not called);
    /// otherwise `done` is told once what became of it (the in-process
    /// store: before this returns).
    fn append(
        &self,
        origin: NodeId,
        nsp: &str,
        packet: StoredPacket,
        limits: &RecoveryLimits,
        done: Option<AppendDone>,
    ) -> Result<(), BusError>;

    /// Records a change in a socket's life (see [`Track`]); never waits.
    fn track(&self, change: Track, limits: &RecoveryLimits);

    /// Whether the store keeps records of connected sockets (and wants to
    /// hear of their opening, rooms and end), not only of lost ones.
    fn keeps_records(&self) -> bool {
        false
    }

    /// Takes the session `pid` of namespace `nsp` for node `taker` when it
    /// exists, has not expired, and `offset` is valid in the namespace's
    /// log. A taken session is not offered again.
    async fn take(
        &self,
        taker: NodeId,
        pid: &str,
        nsp: &str,
        offset: &str,
        limits: &RecoveryLimits,
    ) -> Result<Taken, Refusal>;

    /// Runs `f` with the events after `after` that `rooms` reach, under the
    /// log's order: no event is delivered to this node's sockets while `f`
    /// runs, so socket `sid`, which `f` registers, receives every later
    /// event live, after these, and none twice. The namespace's log channel
    /// (see [`RecoveryStore::log_channel`]) must be subscribed.
    async fn attach(
        &self,
        nsp: &str,
        sid: &str,
        after: &str,
        rooms: &[String],
        f: Attach<'_>,
    ) -> Result<(), Refusal>;

    /// The bus channel on which the store hands namespace `nsp`'s events to
    /// the nodes, which a node subscribes while it has a socket in `nsp`
    /// (`None`: the store hands them over itself).
    fn log_channel(&self, _nsp: &str) -> Option<String> {
        None
    }

    /// A log entry off the bus (a message on a log channel).
    fn received(&self, _payload: &[u8]) {}

    /// Called at every heartbeat for each namespace with recovery on in
    /// which this node has sockets: keeps the namespace's records alive and
    /// hands the sessions of dead nodes' sockets to expiry.
    async fn keepalive(&self, _node_id: NodeId, _nsp: &str, _limits: &RecoveryLimits) {}

    /// The id of the last event of `nsp` this node was handed, and the
    /// log's last id now: when they differ after the bus reconnected, the
    /// node may have missed events (`None`: the store cannot miss any).
    async fn gap(&self, _nsp: &str) -> Option<bool> {
        None
    }

    /// Waits until every record change made before has reached the store
    /// (or failed): a draining node calls it before it exits.
    async fn flush(&self) {}

    fn stats(&self) -> StoreStats;
}

/// Offsets are the log's sequence numbers in this alphabet, most
/// significant digit first, without leading zeros.
const DIGITS: &[u8; 64] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_";

fn encode_offset(mut seq: u64) -> String {
    let mut out = Vec::with_capacity(11);
    loop {
        out.push(DIGITS[(seq % 64) as usize]);
        seq /= 64;
        if seq == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// The sequence number of a canonical offset.
fn decode_offset(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 11 || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    let mut seq: u64 = 0;
    for b in s.bytes() {
        let d = DIGITS.iter().position(|&c| c == b)? as u64;
        seq = seq.checked_mul(64)?.checked_add(d)?;
    }
    Some(seq)
}

/// `text` with `offset` as the last element of the JSON array that ends it.
fn with_offset(text: &str, offset: &str) -> String {
    let body = text.strip_suffix(']').unwrap_or(text);
    let mut out = String::with_capacity(text.len() + offset.len() + 3);
    out.push_str(body);
    out.push_str(",\"");
    out.push_str(offset);
    out.push_str("\"]");
    out
}

/// One namespace's log.
struct Log {
    entries: VecDeque<Arc<LoggedPacket>>,
    /// The sequence number of the log's first event ever (random, so that
    /// offsets of an earlier process are not mistaken for this one's).
    first_seq: u64,
    next_seq: u64,
    bytes: usize,
}

impl Log {
    fn new() -> Self {
        let first_seq = u64::from(rand::random::<u32>()) << 8;
        Self {
            entries: VecDeque::new(),
            first_seq,
            next_seq: first_seq,
            bytes: 0,
        }
    }

    /// Whether a client whose last event is `offset` misses nothing kept
    /// here: the offset was issued by this log and every event after it is
    /// still in the log. (An offset whose own event was trimmed but none
    /// after it still qualifies: a quiet namespace does not stop recovery.)
    fn seq_after(&self, offset: &str) -> Option<u64> {
        let seq = decode_offset(offset)?;
        let oldest = self.entries.front().map_or(self.next_seq, |e| e.seq);
        (seq >= self.first_seq && seq < self.next_seq && seq + 1 >= oldest).then_some(seq)
    }

    fn after(&self, seq: u64, rooms: &[String]) -> Vec<Arc<LoggedPacket>> {
        let oldest = self.entries.front().map_or(self.next_seq, |e| e.seq);
        let skip = (seq + 1).saturating_sub(oldest) as usize;
        self.entries
            .iter()
            .skip(skip)
            .filter(|e| e.packet.reaches(rooms))
            .cloned()
            .collect()
    }

    /// Drops the oldest events beyond `limits`; returns (events, bytes) dropped.
    fn trim(&mut self, limits: &RecoveryLimits, now: Instant) -> (usize, usize) {
        let (mut n, mut bytes) = (0, 0);
        while let Some(front) = self.entries.front() {
            let old = now.saturating_duration_since(front.at) > limits.max_disconnection;
            if !old && self.entries.len() <= limits.max_packets && self.bytes <= limits.max_bytes {
                break;
            }
            let size = front.packet.size();
            self.entries.pop_front();
            self.bytes -= size;
            n += 1;
            bytes += size;
        }
        (n, bytes)
    }
}

struct Session {
    record: SessionRecord,
    expires: Instant,
}

/// The in-process [`RecoveryStore`] (see the module).
pub(crate) struct LocalRecovery {
    logs: RwLock<HashMap<String, Arc<Mutex<Log>>>>,
    sessions: Mutex<HashMap<String, Session>>,
    /// Per namespace, pids in the order their sessions were saved (some
    /// taken or expired since): the oldest go first beyond `max_sessions`.
    saved: Mutex<HashMap<String, VecDeque<String>>>,
    sinks: Sinks,
    next_sweep: Mutex<Instant>,
    packets: AtomicU64,
    bytes: AtomicU64,
    session_count: AtomicU64,
}

impl std::fmt::Debug for LocalRecovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRecovery")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Default for LocalRecovery {
    fn default() -> Self {
        Self {
            logs: RwLock::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            saved: Mutex::new(HashMap::new()),
            sinks: Sinks::default(),
            next_sweep: Mutex::new(Instant::now()),
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            session_count: AtomicU64::new(0),
        }
    }
}

/// How often expired sessions are swept at most.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl LocalRecovery {
    fn log(&self, nsp: &str) -> Arc<Mutex<Log>> {
        if let Some(log) = self.logs.read().get(nsp) {
            return log.clone();
        }
        self.logs
            .write()
            .entry(nsp.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(Log::new())))
            .clone()
    }

    fn existing_log(&self, nsp: &str) -> Option<Arc<Mutex<Log>>> {
        self.logs.read().get(nsp).cloned()
    }

    fn dropped(&self, (n, bytes): (usize, usize)) {
        self.packets.fetch_sub(n as u64, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes as u64, Ordering::Relaxed);
    }

    /// Removes expired sessions, at most once per [`SWEEP_EVERY`].
    fn sweep(&self, now: Instant) {
        {
            let mut next = self.next_sweep.lock();
            if now < *next {
                return;
            }
            *next = now + SWEEP_EVERY;
        }
        let mut sessions = self.sessions.lock();
        sessions.retain(|_, s| s.expires > now);
        self.session_count
            .store(sessions.len() as u64, Ordering::Relaxed);
    }
}

impl LocalRecovery {
    /// Appends and delivers at once (see [`RecoveryStore::append`]).
    pub(crate) fn append_now(
        &self,
        origin: NodeId,
        nsp: &str,
        mut packet: StoredPacket,
        limits: &RecoveryLimits,
    ) -> Appended {
        let now = Instant::now();
        self.sweep(now);
        let log = self.log(nsp);
        let mut log = log.lock();
        let seq = log.next_seq;
        log.next_seq += 1;
        let offset = encode_offset(seq);
        packet.text = with_offset(&packet.text, &offset);
        let entry = Arc::new(LoggedPacket {
            offset: offset.clone(),
            seq,
            at: now,
            packet,
        });
        let size = entry.packet.size();
        log.bytes += size;
        log.entries.push_back(entry.clone());
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(size as u64, Ordering::Relaxed);
        let trimmed = log.trim(limits, now);
        self.dropped(trimmed);
        // Delivered under the log's lock: every node gets the namespace's
        // events in log order.
        let mut appended = Appended {
            offset,
            local: 0,
            nodes_reached: 0,
        };
        self.sinks.deliver(nsp, &entry, |node, n| {
            if node == origin {
                appended.local = n;
            }
            appended.nodes_reached += u64::from(n > 0);
        });
        appended
    }

    /// Keeps `record` for `limits.max_disconnection`, under its pid.
    pub(crate) fn save_session(&self, record: SessionRecord, limits: &RecoveryLimits) {
        let now = Instant::now();
        self.sweep(now);
        let mut sessions = self.sessions.lock();
        let mut saved = self.saved.lock();
        let order = saved.entry(record.nsp.clone()).or_default();
        order.push_back(record.pid.clone());
        while order.len() > limits.max_sessions {
            let Some(oldest) = order.pop_front() else {
                break;
            };
            if sessions
                .get(&oldest)
                .is_some_and(|s| s.record.nsp == record.nsp)
            {
                sessions.remove(&oldest);
            }
        }
        drop(saved);
        sessions.insert(
            record.pid.clone(),
            Session {
                record,
                expires: now + limits.max_disconnection,
            },
        );
        self.session_count
            .store(sessions.len() as u64, Ordering::Relaxed);
    }

    /// Takes (consumes) the session `pid` of namespace `nsp` when it
    /// exists, has not expired, and `offset` is valid in the namespace's
    /// log; with the stored events after `offset` that its rooms reach.
    pub(crate) fn take_session(
        &self,
        pid: &str,
        nsp: &str,
        offset: &str,
    ) -> Result<(SessionRecord, Vec<Arc<LoggedPacket>>), Refusal> {
        let now = Instant::now();
        let mut sessions = self.sessions.lock();
        match sessions.get(pid) {
            None => return Err(Refusal::NoSession),
            Some(s) if s.expires <= now => {
                sessions.remove(pid);
                self.session_count
                    .store(sessions.len() as u64, Ordering::Relaxed);
                return Err(Refusal::NoSession);
            }
            // Someone else's namespace: not this client's to take.
            Some(s) if s.record.nsp != nsp => return Err(Refusal::NoSession),
            Some(_) => {}
        }
        let log = self.existing_log(nsp).ok_or(Refusal::BadOffset)?;
        let log = log.lock();
        let seq = log.seq_after(offset).ok_or(Refusal::BadOffset)?;
        let session = sessions.remove(pid).ok_or(Refusal::NoSession)?;
        self.session_count
            .store(sessions.len() as u64, Ordering::Relaxed);
        drop(sessions);
        let missed = log.after(seq, &session.record.rooms);
        Ok((session.record, missed))
    }

    /// [`RecoveryStore::attach`], at once.
    pub(crate) fn attach_now(
        &self,
        nsp: &str,
        after: &str,
        rooms: &[String],
        f: Attach<'_>,
    ) -> Result<(), Refusal> {
        let log = self.log(nsp);
        let log = log.lock();
        let seq = log.seq_after(after).ok_or(Refusal::BadOffset)?;
        f(&log.after(seq, rooms));
        Ok(())
    }
}

#[async_trait::async_trait]
impl RecoveryStore for LocalRecovery {
    fn register(&self, node_id: NodeId, sink: Weak<dyn LogSink>) {
        self.sinks.register(node_id, sink);
    }

    fn append(
        &self,
        origin: NodeId,
        nsp: &str,
        packet: StoredPacket,
        limits: &RecoveryLimits,
        done: Option<AppendDone>,
    ) -> Result<(), BusError> {
        let appended = self.append_now(origin, nsp, packet, limits);
        if let Some(done) = done {
            done(Ok(appended));
        }
        Ok(())
    }

    fn track(&self, change: Track, limits: &RecoveryLimits) {
        // Only lost sockets need a session here: this store lives and dies
        // with the nodes that use it.
        if let Track::Lost(record) = change {
            self.save_session(record, limits);
        }
    }

    async fn take(
        &self,
        _taker: NodeId,
        pid: &str,
        nsp: &str,
        offset: &str,
        _limits: &RecoveryLimits,
    ) -> Result<Taken, Refusal> {
        let (record, missed) = self.take_session(pid, nsp, offset)?;
        Ok(Taken {
            record,
            missed,
            held_by: None,
        })
    }

    async fn attach(
        &self,
        nsp: &str,
        _sid: &str,
        after: &str,
        rooms: &[String],
        f: Attach<'_>,
    ) -> Result<(), Refusal> {
        self.attach_now(nsp, after, rooms, f)
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            sessions: self.session_count.load(Ordering::Relaxed),
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node id from a short name (padded to the id length).
    fn node(name: &str) -> NodeId {
        NodeId::parse(&format!("{name:_<6}")).expect("a node id")
    }

    fn limits() -> RecoveryLimits {
        RecoveryLimits {
            max_disconnection: Duration::from_secs(60),
            max_packets: 100,
            max_bytes: 1 << 20,
            max_sessions: 1000,
        }
    }

    fn packet(target: Target, n: u32) -> StoredPacket {
        StoredPacket {
            target,
            text: format!("42[\"ev\",{n}]"),
            attachments: Vec::new(),
        }
    }

    fn record(pid: &str, nsp: &str, rooms: &[&str]) -> SessionRecord {
        SessionRecord {
            sid: "sid".into(),
            pid: pid.into(),
            nsp: nsp.into(),
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            user_id: None,
            data: Some(serde_json::json!({"k": 1})),
            disconnected_at_ms: crate::cluster::registry::now_ms(),
        }
    }

    struct Counting(Mutex<Vec<String>>);

    impl LogSink for Counting {
        fn deliver_logged(&self, _nsp: &str, packet: &LoggedPacket) -> usize {
            self.0.lock().push(packet.offset.clone());
            1
        }
    }

    #[test]
    fn offsets_round_trip_and_reject_forgeries() {
        for seq in [0, 1, 63, 64, 4095, 1 << 40, u64::MAX] {
            assert_eq!(decode_offset(&encode_offset(seq)), Some(seq), "{seq}");
        }
        assert_eq!(decode_offset(""), None);
        assert_eq!(decode_offset("01"), None);
        assert_eq!(decode_offset("bogus!"), None);
        assert_eq!(decode_offset("zzzzzzzzzzzz"), None);
        assert_eq!(
            with_offset("42[\"ev\",1]", "Ab"),
            "42[\"ev\",1,\"Ab\"]".to_owned()
        );
        assert_eq!(with_offset("42/x,[\"ev\"]", "0"), "42/x,[\"ev\",\"0\"]");
    }

    #[test]
    fn appends_in_order_to_every_sink_and_replays_what_the_rooms_reach() {
        let store = LocalRecovery::default();
        let sink: Arc<dyn LogSink> = Arc::new(Counting(Mutex::new(Vec::new())));
        store.register(node("node01"), Arc::downgrade(&sink));
        let first = store.append_now(node("node01"), "/", packet(Target::default(), 0), &limits());
        assert_eq!(first.local, 1);
        assert!(first.offset.len() <= 8, "compact: {}", first.offset);
        let offsets: Vec<String> = [
            Target::room("a"),
            Target::room("b"),
            Target::default().except("a"),
            Target::socket("sid"),
            Target::room("b").except("sid"),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            store
                .append_now(node("x"), "/", packet(t, i as u32 + 1), &limits())
                .offset
        })
        .collect();
        assert!(offsets.windows(2).all(|w| w[0] != w[1]));
        store.save_session(record("p1", "/", &["sid", "a"]), &limits());
        assert_eq!(store.stats().sessions, 1);
        // A foreign namespace's pid and an unknown offset are refused, and
        // leave the session in place.
        assert_eq!(
            store.take_session("p1", "/other", &first.offset).err(),
            Some(Refusal::NoSession)
        );
        assert_eq!(
            store.take_session("p1", "/", "bogus").err(),
            Some(Refusal::BadOffset)
        );
        assert_eq!(
            store.take_session("p2", "/", &first.offset).err(),
            Some(Refusal::NoSession)
        );
        let (rec, missed) = store.take_session("p1", "/", &first.offset).unwrap();
        assert_eq!(rec.rooms, ["sid", "a"]);
        let texts: Vec<&str> = missed.iter().map(|p| p.packet.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                format!("42[\"ev\",1,\"{}\"]", offsets[0]),
                format!("42[\"ev\",4,\"{}\"]", offsets[3]),
            ]
        );
        // Used once.
        assert_eq!(
            store.take_session("p1", "/", &first.offset).err(),
            Some(Refusal::NoSession)
        );
        assert_eq!(store.stats().sessions, 0);
        let seen = store.stats();
        assert_eq!(seen.packets, 6);
        drop(sink);
        // A dropped sink is skipped.
        assert_eq!(
            store
                .append_now(node("node01"), "/", packet(Target::default(), 9), &limits())
                .local,
            0
        );
    }

    #[test]
    fn the_log_trims_by_count_and_bytes_and_old_offsets_stop_working() {
        let store = LocalRecovery::default();
        let small = RecoveryLimits {
            max_packets: 3,
            ..limits()
        };
        let offsets: Vec<String> = (0..5)
            .map(|i| {
                store
                    .append_now(node("n"), "/", packet(Target::default(), i), &small)
                    .offset
            })
            .collect();
        assert_eq!(store.stats().packets, 3);
        // Events 0 and 1 are gone: a client at event 0 would miss event 1.
        store.save_session(record("p", "/", &["sid"]), &small);
        assert_eq!(
            store.take_session("p", "/", &offsets[0]).err(),
            Some(Refusal::BadOffset)
        );
        // At event 1 (trimmed itself) nothing after it was lost: recoverable.
        let (_, missed) = store.take_session("p", "/", &offsets[1]).unwrap();
        assert_eq!(missed.len(), 3);
        // An offset this log never issued.
        let future = encode_offset(decode_offset(&offsets[4]).unwrap() + 1);
        store.save_session(record("q", "/", &["sid"]), &small);
        assert_eq!(
            store.take_session("q", "/", &future).err(),
            Some(Refusal::BadOffset)
        );

        let by_bytes = RecoveryLimits {
            max_bytes: 40,
            ..limits()
        };
        let store = LocalRecovery::default();
        for i in 0..10 {
            store.append_now(node("n"), "/", packet(Target::default(), i), &by_bytes);
        }
        let stats = store.stats();
        assert!(stats.bytes <= 40, "{stats:?}");
        assert_eq!(stats.packets, 2, "{stats:?}");
    }

    #[test]
    fn lost_sessions_are_capped_per_namespace_oldest_first() {
        let store = LocalRecovery::default();
        let first = store.append_now(node("n"), "/", packet(Target::default(), 0), &limits());
        let capped = RecoveryLimits {
            max_sessions: 2,
            ..limits()
        };
        for pid in ["p1", "p2", "p3"] {
            store.save_session(record(pid, "/", &["sid"]), &capped);
        }
        store.save_session(record("q1", "/other", &["sid"]), &capped);
        assert_eq!(store.stats().sessions, 3);
        assert_eq!(
            store.take_session("p1", "/", &first.offset).err(),
            Some(Refusal::NoSession),
            "the oldest went first"
        );
        assert!(store.take_session("p3", "/", &first.offset).is_ok());
    }

    #[test]
    fn sessions_expire() {
        let store = LocalRecovery::default();
        let brief = RecoveryLimits {
            max_disconnection: Duration::from_millis(1),
            ..limits()
        };
        let first = store.append_now(node("n"), "/", packet(Target::default(), 0), &limits());
        store.save_session(record("p", "/", &["sid"]), &brief);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            store.take_session("p", "/", &first.offset).err(),
            Some(Refusal::NoSession)
        );
        assert_eq!(store.stats().sessions, 0);
    }

    #[test]
    fn attach_runs_with_the_events_after_an_offset() {
        let store = LocalRecovery::default();
        let a = store.append_now(node("n"), "/", packet(Target::default(), 0), &limits());
        store.append_now(node("n"), "/", packet(Target::room("r"), 1), &limits());
        store.append_now(node("n"), "/", packet(Target::room("s"), 2), &limits());
        let mut got = Vec::new();
        store
            .attach_now("/", &a.offset, &["me".into(), "r".into()], &mut |p| {
                got.extend(p.iter().map(|p| p.packet.text.clone()))
            })
            .unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].starts_with("42[\"ev\",1,"));
        assert_eq!(
            store.attach_now("/", "nope", &[], &mut |_| {}).err(),
            Some(Refusal::BadOffset)
        );
    }
}
