//! Engine.IO v4: sessions, the two transports (HTTP long-polling and
//! WebSocket), the polling -> WebSocket upgrade and the server heartbeat.
//!
//! The engine knows nothing of Socket.IO: it hands every message of a session
//! to the [`Connection`] its [`EngineHandler`] created for it, in order, and
//! tells it once when the session ends.
//!
//! Tasks per session: one driver (heartbeat, connect deadline, and the
//! WebSocket writer once the session is on WebSocket) plus, on WebSocket, the
//! reader (the connection's own task). Polling requests run in their HTTP
//! request tasks.

pub(crate) mod flusher;
pub(crate) mod polling;
pub(crate) mod queue;
pub(crate) mod session;
pub(crate) mod websocket;

use crate::ids::NodeId;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::protocol::deflate::Agreed;
use crate::protocol::engineio::Transport;
use crate::reason::DisconnectReason;
pub(crate) use queue::{Deflate, Frame, PushError};
pub use session::Session;

/// The same encoded frames sent to many sessions: each recipient's queue
/// gets them as [`Session::send`] would, and the WebSocket writes are
/// scheduled together when the broadcast is dropped (one lock of each
/// writer shard per broadcast instead of one per recipient). The first
/// recipient with an encoding installed ([`Session::set_encoding`], the
/// same for every session of a node) has the frames converted, once; the
/// first whose WebSocket negotiated permessage-deflate has the long
/// messages compressed, once: every such recipient shares those bytes.
pub(crate) struct Broadcast<'a> {
    frames: &'a [Frame],
    /// The frames converted by the sessions' encoding, once one wanted them.
    encoded: Option<Vec<Frame>>,
    /// The frames with their compressed forms, once a recipient wanted
    /// them (`Some(None)`: no message was long enough).
    deflated: Option<Option<Vec<Frame>>>,
    batch: flusher::ScheduleBatch,
}

impl<'a> Broadcast<'a> {
    pub(crate) fn new(frames: &'a [Frame]) -> Self {
        Self {
            frames,
            encoded: None,
            deflated: None,
            batch: flusher::ScheduleBatch::default(),
        }
    }

    /// Queues the frames for `session`; on error nothing was queued.
    pub(crate) fn send(&mut self, session: &Session) -> Result<(), PushError> {
        let plain = match session.encoding() {
            Some(encode) => &self.encoded.get_or_insert_with(|| encode(self.frames))[..],
            None => self.frames,
        };
        let frames = match session.deflate() {
            Some(d) => self
                .deflated
                .get_or_insert_with(|| d.frames(plain))
                .as_deref()
                .unwrap_or(plain),
            None => plain,
        };
        session.queue.push_all_batched(frames, &mut self.batch)
    }
}

impl Drop for Broadcast<'_> {
    fn drop(&mut self) {
        std::mem::take(&mut self.batch).submit();
    }
}

/// The shortest time between two batches of a spread close
/// ([`Engine::close_all_spread`]).
const SPREAD_STEP: Duration = Duration::from_millis(20);

/// The Socket.IO side of one Engine.IO session.
#[async_trait::async_trait]
pub(crate) trait Connection: Send + Sync {
    /// A text message (the text after the Engine.IO `4`). An error closes the
    /// session with that reason.
    async fn on_message(&self, text: &str) -> Result<(), DisconnectReason>;
    /// A binary message.
    async fn on_binary(&self, data: Bytes) -> Result<(), DisconnectReason>;
    /// The session ended; called exactly once.
    fn on_close(&self, reason: DisconnectReason);
    /// The session moved from long-polling to WebSocket.
    fn on_upgrade(&self) {}
}

/// Creates the [`Connection`] of each new session.
pub(crate) trait EngineHandler: Send + Sync + 'static {
    fn on_open(&self, session: &Arc<Session>) -> Arc<dyn Connection>;
}

/// What the client told us when it opened the session.
#[derive(Debug, Clone)]
pub struct HandshakeInfo {
    pub remote: SocketAddr,
    /// The raw query string of the handshake request.
    pub query: Box<str>,
    /// Request headers (kept only when something needs them, such as hooks).
    pub headers: Vec<(Box<str>, Box<str>)>,
}

/// Why a request could not open or reach a session: the documented HTTP 400
/// errors of Engine.IO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EngineError {
    UnknownTransport,
    UnknownSid,
    BadHandshakeMethod,
    BadRequest,
    UnsupportedProtocolVersion,
    /// The node holds `limits.max_connections` sessions (HTTP 503).
    AtCapacity,
    /// The node is shutting down (HTTP 503).
    ShuttingDown,
    /// A polling POST body over `max_payload` (HTTP 413).
    PayloadTooLarge,
    /// A polling POST body stalled for `server.request_body_timeout_ms`
    /// (HTTP 408).
    RequestTimeout,
}

impl EngineError {
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::UnknownTransport => 0,
            Self::UnknownSid => 1,
            Self::BadHandshakeMethod => 2,
            Self::BadRequest | Self::PayloadTooLarge | Self::RequestTimeout => 3,
            Self::AtCapacity | Self::ShuttingDown => 4,
            Self::UnsupportedProtocolVersion => 5,
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::UnknownTransport => "Transport unknown",
            Self::UnknownSid => "Session ID unknown",
            Self::BadHandshakeMethod => "Bad handshake method",
            Self::BadRequest => "Bad request",
            Self::UnsupportedProtocolVersion => "Unsupported protocol version",
            Self::AtCapacity => "Server at capacity",
            Self::ShuttingDown => "Server shutting down",
            Self::PayloadTooLarge => "Payload too large",
            Self::RequestTimeout => "Request timeout",
        }
    }

    pub(crate) fn status(self) -> u16 {
        match self {
            Self::AtCapacity | Self::ShuttingDown => 503,
            Self::PayloadTooLarge => 413,
            Self::RequestTimeout => 408,
            _ => 400,
        }
    }
}

/// The Engine.IO server of a node: the registry of live sessions.
pub struct Engine {
    pub(crate) config: Arc<Config>,
    sessions: RwLock<std::collections::HashMap<Box<str>, Arc<Session>>>,
    handler: Arc<dyn EngineHandler>,
    pub(crate) tracker: TaskTracker,
    shutdown: CancellationToken,
    open_count: AtomicUsize,
    keep_headers: bool,
    pub(crate) metrics: Arc<crate::telemetry::Metrics>,
    /// The WebSocket writer tasks.
    pub(crate) flusher: flusher::Flusher,
    /// The node serving the sessions: every session id starts with it, so
    /// that any node can tell which one owns a session.
    node_id: NodeId,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.flusher.stop();
    }
}

impl Engine {
    pub(crate) fn new(
        config: Arc<Config>,
        node_id: NodeId,
        handler: Arc<dyn EngineHandler>,
        keep_headers: bool,
        metrics: Arc<crate::telemetry::Metrics>,
    ) -> Self {
        let coalesce = config.server.write_coalesce();
        Self {
            config,
            sessions: RwLock::new(Default::default()),
            handler,
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            open_count: AtomicUsize::new(0),
            keep_headers,
            metrics,
            // One writer per core: the writes are most of a node's work.
            flusher: flusher::Flusher::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
                coalesce,
            ),
            node_id,
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// permessage-deflate as `agreed` with a client, with the node's
    /// settings.
    pub(crate) fn deflate(&self, agreed: Agreed) -> Deflate {
        let c = &self.config.server.compression;
        Deflate {
            agreed,
            threshold: c.threshold,
            level: c.level,
        }
    }

    pub(crate) fn keep_headers(&self) -> bool {
        self.keep_headers
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.open_count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, sid: &str) -> Option<Arc<Session>> {
        self.sessions.read().get(sid).cloned()
    }

    /// Opens a session: registers it, creates its connection and starts its
    /// driver. The caller sends the open packet.
    pub(crate) fn open(
        self: &Arc<Self>,
        transport: Transport,
        info: HandshakeInfo,
        websocket: Option<(tokio::net::tcp::OwnedWriteHalf, Option<Agreed>)>,
    ) -> Result<Arc<Session>, EngineError> {
        if self.shutdown.is_cancelled() {
            return Err(EngineError::ShuttingDown);
        }
        let max = self.config.limits.max_connections;
        if self
            .open_count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            return Err(EngineError::AtCapacity);
        }
        let session = Arc::new(Session::new(
            crate::ids::new_session_id(self.node_id),
            transport,
            info,
            queue::QueueLimits {
                frames: self.config.limits.outbound_queue_frames,
                bytes: self.config.limits.outbound_queue_bytes,
            },
            session::RateLimit::new(
                self.config.limits.rate_limit_per_sec,
                self.config.limits.rate_limit_burst,
            ),
        ));
        if let Some((socket, agreed)) = websocket {
            session.attach_websocket(
                socket,
                self.flusher.shard(),
                self.metrics.clone(),
                agreed.map(|a| self.deflate(a)),
            );
        }
        let conn = self.handler.on_open(&session);
        session.attach(conn);
        self.sessions
            .write()
            .insert(session.sid.clone(), session.clone());
        self.metrics.engine_opened(transport);
        let engine = self.clone();
        let driver_session = session.clone();
        self.tracker.spawn(async move {
            session::drive(driver_session, engine).await;
        });
        Ok(session)
    }

    /// Called by a session's driver when it ends.
    pub(crate) fn remove(&self, sid: &str) {
        if self.sessions.write().remove(sid).is_some() {
            self.open_count.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Stops accepting sessions and closes every live one with `reason`.
    pub(crate) fn close_all(&self, reason: DisconnectReason) {
        self.shutdown.cancel();
        let sessions: Vec<_> = self.sessions.read().values().cloned().collect();
        for s in sessions {
            s.close(reason);
        }
    }

    /// [`Engine::close_all`], the sessions closed a few at a time evenly
    /// over `spread` (at most one batch every [`SPREAD_STEP`]), so that
    /// their clients do not all reconnect elsewhere at the same instant.
    /// New sessions are refused from the start. Late ticks are not caught
    /// up: a slow node spreads the closes over longer, never bunches them.
    pub(crate) async fn close_all_spread(&self, reason: DisconnectReason, spread: Duration) {
        self.shutdown.cancel();
        let sessions: Vec<_> = self.sessions.read().values().cloned().collect();
        let most = (spread.as_millis() / SPREAD_STEP.as_millis()).max(1) as usize;
        let batches = sessions.len().min(most);
        if batches <= 1 {
            return self.close_all(reason);
        }
        let per_batch = sessions.len().div_ceil(batches);
        // Rounding the batch size up can leave fewer batches than planned:
        // the window is divided by the batches there are.
        let chunks = sessions.len().div_ceil(per_batch);
        let mut tick = tokio::time::interval(spread / chunks as u32);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for batch in sessions.chunks(per_batch) {
            tick.tick().await;
            for s in batch {
                s.close(reason);
            }
        }
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Resolves when every session task has ended (after `close_all`).
    pub(crate) async fn wait_closed(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}
