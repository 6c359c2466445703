//! One Engine.IO session: its outbound queue, its transport, its heartbeat,
//! and the packet handling shared by both transports.
//!
//! The driver task owns the timers (ping, pong deadline, connect deadline)
//! and, once the session is on WebSocket, finishes the writes the socket did
//! not take at once (replies are written by their producers and broadcasts
//! by the node's writer shards, see [`super::queue`]).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::queue::{Deflate, Flush, Frame, OutboundQueue, PushError, QueueLimits};
use super::{Connection, Engine, HandshakeInfo};
use crate::protocol::engineio::Packet;
use crate::protocol::engineio::Transport;
use crate::protocol::websocket::close_code;
use crate::reason::DisconnectReason;

const POLLING: u8 = 0;
const WEBSOCKET: u8 = 1;

/// Token bucket of inbound Engine.IO packets (every packet counts: messages,
/// attachments, pongs, noops) and WebSocket control frames (pings, pongs).
pub(crate) struct RateLimit {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub(crate) fn new(per_sec: u32, burst: u32) -> Option<Self> {
        (per_sec > 0).then(|| Self {
            per_sec: f64::from(per_sec),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: Instant::now(),
        })
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Request bookkeeping of the polling transport: one GET and one POST at a
/// time, and whether an upgrade is under way.
#[derive(Default)]
pub(crate) struct PollState {
    pub(crate) get_active: bool,
    pub(crate) post_active: bool,
    pub(crate) upgrading: bool,
}

pub struct Session {
    pub(crate) sid: Box<str>,
    /// What the node writes to the client; the layers above queue through
    /// [`Session::send`] and its kin.
    pub(super) queue: Arc<OutboundQueue>,
    transport: AtomicU8,
    closed: CancellationToken,
    reason: OnceLock<DisconnectReason>,
    /// When the session opened: the heartbeat's schedule counts from here.
    created: Instant,
    /// No ping is waiting for its pong.
    pong_received: AtomicBool,
    /// When the ping waiting for its pong times out (set by the driver),
    /// so that a request arriving after it finds the session gone even if
    /// the driver's timer has not fired yet.
    pong_deadline: Mutex<Option<Instant>>,
    /// A namespace was connected (stops the connect timeout).
    connected: AtomicBool,
    pub(crate) info: HandshakeInfo,
    pub(crate) poll: Mutex<PollState>,
    /// Tells the driver that an upgrade moved the session to WebSocket.
    /// A WebSocket was accepted to upgrade this session (see
    /// `claim_upgrade`).
    upgrade_claimed: AtomicBool,
    ws_handoff: Mutex<Option<oneshot::Sender<()>>>,
    ws_handoff_rx: Mutex<Option<oneshot::Receiver<()>>>,
    conn: OnceLock<Arc<dyn Connection>>,
    rate: Option<Mutex<RateLimit>>,
    /// permessage-deflate, once the session is on a WebSocket whose client
    /// negotiated it.
    deflate: OnceLock<Deflate>,
    /// How the layer above encodes packets for this client, when not as
    /// they are queued (see [`Session::set_encoding`]).
    encoding: OnceLock<Encoding>,
}

/// A conversion of outgoing packets (a text frame and its attachments,
/// one packet after the other) into what one kind of client reads, such as
/// the msgpack parser's one binary frame per packet. Installed by the
/// layer above when a session opens.
pub(crate) type Encoding = fn(&[Frame]) -> Vec<Frame>;

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("sid", &self.sid)
            .field("transport", &self.transport())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Tells the connection that the session moved to WebSocket.
    pub(crate) fn upgraded(&self) {
        if let Some(conn) = self.conn.get() {
            conn.on_upgrade();
        }
    }

    pub(crate) fn new(
        sid: String,
        transport: Transport,
        info: HandshakeInfo,
        queue: QueueLimits,
        rate: Option<RateLimit>,
    ) -> Self {
        let (handoff, handoff_rx) = if transport == Transport::Polling {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        Self {
            sid: sid.into_boxed_str(),
            queue: Arc::new(OutboundQueue::new(queue)),
            transport: AtomicU8::new(match transport {
                Transport::Polling => POLLING,
                Transport::Websocket => WEBSOCKET,
            }),
            closed: CancellationToken::new(),
            reason: OnceLock::new(),
            created: Instant::now(),
            pong_received: AtomicBool::new(true),
            pong_deadline: Mutex::new(None),
            connected: AtomicBool::new(false),
            info,
            poll: Mutex::new(PollState::default()),
            upgrade_claimed: AtomicBool::new(false),
            ws_handoff: Mutex::new(handoff),
            ws_handoff_rx: Mutex::new(handoff_rx),
            conn: OnceLock::new(),
            rate: rate.map(Mutex::new),
            deflate: OnceLock::new(),
            encoding: OnceLock::new(),
        }
    }

    pub(crate) fn attach(&self, conn: Arc<dyn Connection>) {
        let _ = self.conn.set(conn);
    }

    /// Queues `frames` (one packet and its attachments, kept together) for
    /// the client: written at once on WebSocket, taken by the next poll
    /// otherwise. `Full` means the client does not read (a slow consumer).
    pub(crate) fn send(&self, frames: &[Frame]) -> Result<(), PushError> {
        let encoded;
        let frames = match self.encoding() {
            Some(encode) => {
                encoded = encode(frames);
                &encoded[..]
            }
            None => frames,
        };
        match self.deflate().and_then(|d| d.frames(frames)) {
            Some(deflated) => self.queue.push_all(&deflated),
            None => self.queue.push_all(frames),
        }
    }

    /// From now on, what is sent through [`Session::send`] and broadcasts
    /// is converted by `encoding` first (once per broadcast: every session
    /// of a node has the same). Set once, before anything is sent.
    pub(crate) fn set_encoding(&self, encoding: Encoding) {
        let _ = self.encoding.set(encoding);
    }

    /// The conversion of outgoing packets, when one is installed.
    pub(crate) fn encoding(&self) -> Option<Encoding> {
        self.encoding.get().copied()
    }

    /// permessage-deflate, when this session's WebSocket negotiated it.
    pub(crate) fn deflate(&self) -> Option<&Deflate> {
        self.deflate.get()
    }

    /// From now on the frames go to the WebSocket `socket` (compressed as
    /// `deflate` says, when the client negotiated it).
    pub(crate) fn attach_websocket(
        &self,
        socket: OwnedWriteHalf,
        shard: Arc<super::flusher::Shard>,
        metrics: Arc<crate::telemetry::Metrics>,
        deflate: Option<Deflate>,
    ) {
        if let Some(d) = deflate {
            let _ = self.deflate.set(d);
        }
        self.queue
            .attach_websocket(socket, shard, metrics, deflate.map(|d| d.agreed));
    }

    /// The outbound queue's state (frames and bytes waiting, whether the
    /// socket is full), read-only.
    pub fn queue(&self) -> &OutboundQueue {
        &self.queue
    }

    /// Whether a long-polling GET is being answered (parked until there is
    /// something to send): a client may not send a second one meanwhile.
    pub fn has_pending_poll(&self) -> bool {
        self.poll.lock().get_active
    }

    pub fn transport(&self) -> Transport {
        match self.transport.load(Ordering::Acquire) {
            POLLING => Transport::Polling,
            _ => Transport::Websocket,
        }
    }

    /// Marks that a namespace is connected, which ends the connect timeout.
    pub(crate) fn mark_connected(&self) {
        self.connected.store(true, Ordering::Release);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// The reason the session closed, once it has.
    pub fn close_reason(&self) -> Option<DisconnectReason> {
        self.reason.get().copied()
    }

    /// Resolves when the session closes.
    pub(crate) async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// Closes the session with `PingTimeout` if its pong is overdue, and
    /// says whether it did: a request that comes after the deadline gets
    /// the answer of a timed-out session whether or not the driver's timer
    /// has fired yet.
    pub(crate) fn close_if_pong_overdue(&self) -> bool {
        let overdue = !self.pong_received.load(Ordering::Acquire)
            && self
                .pong_deadline
                .lock()
                .is_some_and(|d| Instant::now() >= d);
        if overdue {
            self.close(DisconnectReason::PingTimeout);
        }
        overdue
    }

    /// A WebSocket was accepted to take this polling session over and has
    /// not finished (or given up) yet.
    pub(crate) fn upgrade_pending(&self) -> bool {
        self.upgrade_claimed.load(Ordering::Acquire) && self.transport() == Transport::Polling
    }

    /// The upgrade's probe was answered: the client is switching.
    pub(crate) fn is_upgrading(&self) -> bool {
        self.poll.lock().upgrading
    }

    /// Closes the session (idempotent; the first reason wins). Never blocks
    /// and never calls back into the Socket.IO layer: the driver does the
    /// cleanup, so this is safe to call while holding room or namespace
    /// locks (for example from a broadcast that found a full queue).
    pub(crate) fn close(&self, reason: DisconnectReason) {
        if self.reason.set(reason).is_err() {
            return;
        }
        if self.transport() == Transport::Polling {
            // A pending poll learns why: "6" when the client asked to close
            // (as the reference server does), otherwise a close packet.
            let frame = if reason == DisconnectReason::ClientClose {
                Frame::text_static("6")
            } else {
                Frame::text_static("1")
            };
            self.queue.push_final(frame);
        }
        self.queue.close();
        self.closed.cancel();
    }

    /// Handles one decoded packet from the client, whichever the transport.
    pub(crate) async fn handle_packet(&self, packet: Packet<'_>) -> Result<(), DisconnectReason> {
        let conn = self.conn.get().ok_or(DisconnectReason::TransportError)?;
        self.rate_limit()?;
        match packet {
            Packet::Message(text) => conn.on_message(text).await,
            Packet::Binary(data) => conn.on_binary(data).await,
            Packet::Pong(_) => {
                self.pong_received.store(true, Ordering::Release);
                Ok(())
            }
            Packet::Close => Err(DisconnectReason::ClientClose),
            Packet::Noop => Ok(()),
            // Clients do not ping in v4 (probes are handled by the upgrade),
            // nor send open or upgrade packets outside an upgrade.
            Packet::Ping(_) | Packet::Open(_) | Packet::Upgrade => {
                Err(DisconnectReason::ProtocolError)
            }
        }
    }

    /// Counts one inbound packet or control frame against the rate limit.
    pub(crate) fn rate_limit(&self) -> Result<(), DisconnectReason> {
        match &self.rate {
            Some(rate) if !rate.lock().take() => Err(DisconnectReason::RateLimited),
            _ => Ok(()),
        }
    }

    /// Queues a frame the node writes on its own initiative (a pong, a
    /// ping, a noop): bounded like any other, and a full queue means the
    /// client makes the node write without reading, a slow consumer.
    pub(crate) fn push_own(&self, frame: Frame) -> Result<(), DisconnectReason> {
        match self.queue.push(frame) {
            Ok(()) | Err(PushError::Closed) => Ok(()),
            Err(PushError::Full) => Err(DisconnectReason::SlowConsumer),
        }
    }

    /// Starts the polling -> WebSocket upgrade: a pending poll is answered
    /// with a noop so the client can switch.
    pub(crate) fn begin_upgrade(&self) -> bool {
        let mut poll = self.poll.lock();
        if poll.upgrading || self.transport() != Transport::Polling {
            return false;
        }
        poll.upgrading = true;
        drop(poll);
        if let Err(reason) = self.push_own(Frame::text_static("6")) {
            self.close(reason);
            return false;
        }
        true
    }

    pub(crate) fn abort_upgrade(&self) {
        self.poll.lock().upgrading = false;
        self.upgrade_claimed.store(false, Ordering::Release);
        // A poll waiting for the upgrade to settle goes on polling.
        self.queue.wake();
    }

    /// Claims the session's one upgrade for a WebSocket just accepted;
    /// false when the session is no longer polling or another WebSocket
    /// claimed it (that one is then closed at once, as the reference
    /// server does, and the session goes on untouched).
    pub(crate) fn claim_upgrade(&self) -> bool {
        self.transport() == Transport::Polling
            && !self.is_closed()
            && self
                .upgrade_claimed
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Finishes the upgrade: from now on frames go to `socket`.
    pub(crate) fn complete_upgrade(
        &self,
        socket: OwnedWriteHalf,
        shard: Arc<super::flusher::Shard>,
        metrics: Arc<crate::telemetry::Metrics>,
        deflate: Option<Deflate>,
    ) -> bool {
        let Some(handoff) = self.ws_handoff.lock().take() else {
            return false;
        };
        self.transport.store(WEBSOCKET, Ordering::Release);
        self.poll.lock().upgrading = false;
        self.attach_websocket(socket, shard, metrics, deflate);
        // Wake a poll that may still be pending: it answers with a noop.
        self.queue.wake();
        handoff.send(()).is_ok()
    }
}

/// Runs a session until it closes: heartbeat, connect deadline, WebSocket
/// writes. Then unregisters it and tells the connection.
pub(crate) async fn drive(session: Arc<Session>, engine: Arc<Engine>) {
    let cfg = &engine.config.server;
    let ping_interval = cfg.ping_interval();
    let ping_timeout = cfg.ping_timeout();
    let start = session.created;
    let mut next_ping = Some(start + ping_interval);
    let mut pong_deadline: Option<Instant> = None;
    let mut connect_deadline = Some(start + cfg.connect_timeout());
    let mut handoff = session.ws_handoff_rx.lock().take();
    let mut websocket = session.transport() == Transport::Websocket;

    // One timer for the session, moved only when the next deadline changes
    // (not re-registered on every write).
    let sleep = sleep_until(start + ping_interval);
    tokio::pin!(sleep);
    let reason = loop {
        let timer = [next_ping, pong_deadline, connect_deadline]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + ping_interval);
        if sleep.deadline() != timer {
            sleep.as_mut().reset(timer);
        }
        tokio::select! {
            biased;
            _ = session.closed.cancelled() => break None,
            received = async { handoff.as_mut().expect("guarded").await }, if handoff.is_some() => {
                handoff = None;
                if received.is_err() {
                    continue;
                }
                websocket = true;
                // What was queued while polling may be waiting already
                // (and its wake-up taken by the last poll).
                let result = tokio::select! {
                    r = flush_backlog(&session.queue) => r,
                    _ = session.closed.cancelled() => break None,
                };
                if let Err(reason) = result {
                    break Some(reason);
                }
            }
            _ = session.queue.notified(), if websocket => {
                let result = tokio::select! {
                    r = flush_backlog(&session.queue) => r,
                    _ = session.closed.cancelled() => break None,
                };
                if let Err(reason) = result {
                    break Some(reason);
                }
            }
            _ = &mut sleep => {
                let now = Instant::now();
                if connect_deadline.is_some_and(|d| now >= d) {
                    if !session.connected.load(Ordering::Acquire) {
                        break Some(DisconnectReason::ConnectTimeout);
                    }
                    connect_deadline = None;
                }
                if let Some(deadline) = pong_deadline {
                    if session.pong_received.load(Ordering::Acquire) {
                        pong_deadline = None;
                        if next_ping.is_none() {
                            next_ping = Some(deadline - ping_timeout + ping_interval);
                        }
                    } else if now >= deadline {
                        break Some(DisconnectReason::PingTimeout);
                    }
                }
                if next_ping.is_some_and(|t| now >= t) {
                    session.pong_received.store(false, Ordering::Release);
                    if let Err(reason) = session.push_own(Frame::text_static("2")) {
                        break Some(reason);
                    }
                    // The deadline follows the schedule (when the ping was
                    // due), as the client's own timer does; a timer that
                    // fired late still leaves the client half the timeout.
                    let due = next_ping.expect("checked") + ping_timeout;
                    let deadline = due.max(now + ping_timeout / 2);
                    *session.pong_deadline.lock() = Some(deadline);
                    pong_deadline = Some(deadline);
                    next_ping = None;
                }
            }
        }
    };
    if let Some(reason) = reason {
        session.close(reason);
    }
    let reason = session
        .close_reason()
        .unwrap_or(DisconnectReason::TransportClose);
    if websocket {
        // Flush what was queued before the close (for example a
        // disconnect packet), then the close frame, all bounded.
        // A close frame already queued (the client's own code echoed, or a
        // framing error's 1002/1007/1009) stays the one that is sent.
        let (code, why) = match reason {
            DisconnectReason::ProtocolError => (close_code::PROTOCOL_ERROR, reason.as_str()),
            DisconnectReason::RateLimited | DisconnectReason::SlowConsumer => {
                (close_code::POLICY, reason.as_str())
            }
            _ => (close_code::NORMAL, ""),
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            session.queue.push_ws_close(code, why);
            let _ = flush_backlog(&session.queue).await;
        })
        .await;
        session.queue.detach_websocket();
    }
    if !websocket && reason == DisconnectReason::ClientClose {
        // The client's close ("1" in a POST) may have overtaken the poll it
        // sent just before: that poll still gets its noop, as from the
        // reference server, instead of finding the session gone. Bounded.
        let grace = Instant::now() + CLOSE_POLL_GRACE;
        while !session.queue.is_empty() && Instant::now() < grace {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    engine.metrics.engine_closed(session.transport(), reason);
    engine.remove(&session.sid);
    if let Some(conn) = session.conn.get() {
        conn.on_close(reason);
    }
    tracing::debug!(sid = %session.sid, %reason, "session closed");
}

/// How long a polling session closed by its client waits for the poll
/// that may be on its way to take the closing noop.
const CLOSE_POLL_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Writes the WebSocket backlog, waiting for the socket to take it.
async fn flush_backlog(queue: &OutboundQueue) -> Result<(), DisconnectReason> {
    loop {
        match queue.flush() {
            Flush::Done => return Ok(()),
            Flush::Failed => return Err(DisconnectReason::TransportError),
            Flush::Blocked => {
                let Some(socket) = queue.websocket() else {
                    return Ok(());
                };
                socket
                    .writable()
                    .await
                    .map_err(|_| DisconnectReason::TransportError)?;
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use super::*;

    /// A session with small queue bounds (queue tests use it too).
    pub(in crate::engine) fn session(transport: Transport, rate: Option<RateLimit>) -> Session {
        Session::new(
            "sid".to_owned(),
            transport,
            HandshakeInfo {
                remote: "127.0.0.1:1".parse().unwrap(),
                query: "".into(),
                headers: Vec::new(),
            },
            QueueLimits {
                frames: 16,
                bytes: 1 << 16,
            },
            rate,
        )
    }

    fn drained(s: &Session) -> Vec<Frame> {
        let mut out = std::collections::VecDeque::new();
        s.queue.drain_into(&mut out);
        out.into()
    }

    fn texts(frames: &[Frame]) -> Vec<&str> {
        frames
            .iter()
            .map(|f| match f {
                Frame::Text(t) => t.as_str(),
                _ => "<not text>",
            })
            .collect()
    }

    #[test]
    fn the_first_close_reason_wins_and_a_pending_poll_learns_it() {
        let s = session(Transport::Polling, None);
        s.close(DisconnectReason::PingTimeout);
        s.close(DisconnectReason::ClientClose);
        assert!(s.is_closed());
        assert_eq!(s.close_reason(), Some(DisconnectReason::PingTimeout));
        // A server-side close ends a pending poll with a close packet.
        assert_eq!(texts(&drained(&s)), ["1"]);
    }

    #[test]
    fn a_client_close_answers_the_pending_poll_with_a_noop() {
        let s = session(Transport::Polling, None);
        s.close(DisconnectReason::ClientClose);
        assert_eq!(texts(&drained(&s)), ["6"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_after_the_pong_deadline_closes_the_session() {
        let s = session(Transport::Polling, None);
        assert!(!s.close_if_pong_overdue(), "no ping outstanding");
        s.pong_received.store(false, Ordering::Release);
        *s.pong_deadline.lock() = Some(Instant::now() + Duration::from_millis(200));
        tokio::time::advance(Duration::from_millis(199)).await;
        assert!(!s.close_if_pong_overdue(), "before the deadline");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(s.close_if_pong_overdue(), "at the deadline");
        assert_eq!(s.close_reason(), Some(DisconnectReason::PingTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pong_in_time_keeps_the_session() {
        let s = session(Transport::Polling, None);
        s.pong_received.store(false, Ordering::Release);
        *s.pong_deadline.lock() = Some(Instant::now() + Duration::from_millis(200));
        s.pong_received.store(true, Ordering::Release);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!s.close_if_pong_overdue());
        assert!(!s.is_closed());
    }

    #[test]
    fn one_websocket_claims_the_upgrade_until_it_gives_up() {
        let s = session(Transport::Polling, None);
        assert!(!s.upgrade_pending());
        assert!(s.claim_upgrade());
        assert!(s.upgrade_pending());
        assert!(!s.claim_upgrade(), "a second WebSocket is refused");
        assert!(s.begin_upgrade());
        assert!(s.is_upgrading());
        assert_eq!(texts(&drained(&s)), ["6"], "the pending poll's noop");
        s.abort_upgrade();
        assert!(!s.upgrade_pending() && !s.is_upgrading());
        assert!(
            s.claim_upgrade(),
            "claimable again after an abandoned upgrade"
        );
    }

    #[test]
    fn a_websocket_session_cannot_be_upgraded() {
        let s = session(Transport::Websocket, None);
        assert!(!s.claim_upgrade());
        assert!(!s.begin_upgrade());
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_allows_its_burst_then_refills_with_time() {
        let s = session(Transport::Websocket, RateLimit::new(10, 3));
        for _ in 0..3 {
            assert!(s.rate_limit().is_ok());
        }
        assert_eq!(s.rate_limit(), Err(DisconnectReason::RateLimited));
        // 10 per second: one token per 100 ms.
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(s.rate_limit().is_ok());
        assert_eq!(s.rate_limit(), Err(DisconnectReason::RateLimited));
        // Never more than the burst, however long the pause.
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 {
            assert!(s.rate_limit().is_ok());
        }
        assert!(s.rate_limit().is_err());
    }

    #[test]
    fn no_rate_limit_when_it_is_off() {
        assert!(RateLimit::new(0, 5).is_none());
        let s = session(Transport::Websocket, None);
        for _ in 0..10_000 {
            assert!(s.rate_limit().is_ok());
        }
    }
}
