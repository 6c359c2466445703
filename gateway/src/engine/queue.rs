//! The bounded outbound queue of one connection.
//!
//! Producers (broadcasts, acks, heartbeats, pongs) push complete Engine.IO
//! frames with `try`-semantics: a full queue is reported to the caller, which
//! treats the connection as a slow consumer. The queue is bounded twice, in
//! frames and in payload bytes (a broadcast's shared bytes count in full in
//! every queue that holds them: that is what the connection pins), and every
//! push counts, what the node writes on its own initiative (pongs, pings,
//! errors) included, so a client that makes the node write and never reads
//! is cut off at the bound. Only the last frames of a closing connection
//! (the close packet, the WebSocket close frame) pass the bounds, once. The
//! lock is per connection and never held across an await, so producers
//! never wait for a slow socket.
//!
//! On HTTP long-polling the queue holds frames until a GET takes them all.
//! On WebSocket the queue owns the socket's write half: a producer that
//! finds nothing pending schedules the queue on its [`Shard`], whose task
//! writes every pending frame at once (a WebSocket header beside the shared
//! payload bytes, one vectored write, no copy). What the socket does not
//! take is finished by the session's driver when the socket is writable
//! again; meanwhile producers append behind it, so order is kept.
//! The frame store is allocated on first use and shrunk once drained, so an
//! idle connection holds no buffer.
//!
//! A message may come with its permessage-deflate form ([`Frame::Deflated`],
//! compressed once for every recipient): a WebSocket that negotiated the
//! extension writes the compressed bytes (RSV1 set), any other connection
//! the message as it is.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

use super::flusher::{self, ScheduleBatch, Sent, Shard};
use crate::protocol::deflate::{self, Agreed};
use crate::protocol::websocket::{self as ws, MAX_HEADER, opcode};
use crate::telemetry::Metrics;

/// One Engine.IO packet ready for the wire: text (`"42[...]"`, `"2"`) or a
/// binary message. Cloning shares the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    Text(Utf8Bytes),
    Binary(Bytes),
    /// A complete WebSocket control frame (pong, close), written as is on
    /// WebSocket and skipped by polling.
    WsControl(Bytes),
    /// A text or binary message and its compressed form.
    Deflated(Arc<Deflated>),
}

/// A message compressed once (permessage-deflate), shared by every
/// recipient like the message itself.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Deflated {
    /// The message as it is ([`Frame::Text`] or [`Frame::Binary`]): for
    /// polling and for WebSockets without the extension.
    plain: Frame,
    /// The message compressed with no context taken over.
    compressed: Bytes,
}

/// permessage-deflate as one WebSocket connection uses it: what was
/// agreed with its client and the node's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deflate {
    pub(crate) agreed: Agreed,
    /// Messages shorter than this go uncompressed.
    pub(crate) threshold: usize,
    /// Deflate level.
    pub(crate) level: u32,
}

impl Deflate {
    /// `frames` with the compressed form of every message of at least the
    /// threshold, or `None` when no message is that long. Done once per
    /// message, whatever the number of its recipients.
    pub(crate) fn frames(&self, frames: &[Frame]) -> Option<Vec<Frame>> {
        let long =
            |f: &Frame| matches!(f, Frame::Text(_) | Frame::Binary(_)) && f.len() >= self.threshold;
        if !frames.iter().any(long) {
            return None;
        }
        Some(
            frames
                .iter()
                .map(|f| {
                    if !long(f) {
                        return f.clone();
                    }
                    let compressed = deflate::compress(f.payload(), self.level);
                    Frame::Deflated(Arc::new(Deflated {
                        plain: f.clone(),
                        compressed: Bytes::from(compressed),
                    }))
                })
                .collect(),
        )
    }
}

impl Frame {
    pub(crate) fn text(s: impl Into<String>) -> Self {
        Frame::Text(Utf8Bytes::from(s.into()))
    }

    pub(crate) const fn text_static(s: &'static str) -> Self {
        Frame::Text(Utf8Bytes::from_static(s))
    }

    /// Payload length (the WebSocket header not counted), uncompressed.
    pub(crate) fn len(&self) -> usize {
        self.payload().len()
    }

    /// The message as it is: a compressed one's uncompressed form, any
    /// other frame itself.
    pub(crate) fn plain(&self) -> &Frame {
        match self {
            Frame::Deflated(d) => &d.plain,
            other => other,
        }
    }

    fn payload(&self) -> &[u8] {
        match self {
            Frame::Text(t) => t.as_str().as_bytes(),
            Frame::Binary(b) | Frame::WsControl(b) => b,
            Frame::Deflated(d) => d.plain.payload(),
        }
    }

    /// What goes on a WebSocket with `deflate` agreed (or none): the
    /// frame's header into `out` (its length, 0 for a control frame, which
    /// carries its own) and the payload, compressed when the client takes
    /// it so.
    fn ws_parts(&self, deflate: Option<Agreed>, out: &mut [u8; MAX_HEADER]) -> (usize, &[u8]) {
        match self {
            Frame::Text(t) => (
                ws::encode_header(opcode::TEXT, t.len(), out),
                t.as_str().as_bytes(),
            ),
            Frame::Binary(b) => (ws::encode_header(opcode::BINARY, b.len(), out), b),
            Frame::WsControl(b) => (0, b),
            Frame::Deflated(d) => {
                if !deflate.is_some_and(|a| a.takes(d.plain.len())) {
                    return d.plain.ws_parts(None, out);
                }
                let op = match d.plain {
                    Frame::Binary(_) => opcode::BINARY,
                    _ => opcode::TEXT,
                };
                let header = ws::encode_deflated_header(op, d.compressed.len(), out);
                (header, &d.compressed)
            }
        }
    }
}

/// Why a push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PushError {
    #[error("outbound queue full")]
    Full,
    #[error("connection closed")]
    Closed,
}

/// The WebSocket write half, its writer shard, and where to count what
/// goes out.
struct Direct {
    socket: Arc<OwnedWriteHalf>,
    shard: Arc<Shard>,
    metrics: Arc<Metrics>,
    /// permessage-deflate, when the client negotiated it.
    deflate: Option<Agreed>,
}

struct State {
    frames: VecDeque<Frame>,
    /// Payload bytes of `frames` ([`Frame::len`] summed).
    bytes: usize,
    /// Bytes of the front frame (its WebSocket header included) already
    /// written to the socket.
    written: usize,
    closed: bool,
    /// The socket failed (reset, broken pipe): the driver ends the session.
    broken: bool,
    /// A WebSocket close frame was queued; nothing follows it.
    close_sent: bool,
    /// On WebSocket: the pending frames are in the care of the shard or
    /// the driver (so producers need not schedule again).
    scheduled: bool,
    /// On WebSocket: the socket did not take everything; the driver waits
    /// until it is writable.
    blocked: bool,
    /// On WebSocket: when the socket was last written, on the shards'
    /// clock ([`flusher::clock_ms`]): a connection written less than a
    /// window ago waits for the window's end, a quiet one is written at
    /// once.
    last_write: u32,
    direct: Option<Direct>,
}

/// How a flush of the WebSocket backlog ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Everything queued is written.
    Done,
    /// The socket takes no more for now: wait until it is writable.
    Blocked,
    /// The socket failed.
    Failed,
}

/// The bounds of one outbound queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueLimits {
    /// Frames queued at most.
    pub(crate) frames: usize,
    /// Payload bytes queued at most. An empty queue takes one unit (a
    /// packet and its attachments) of any size, so a single message larger
    /// than the bound is not by itself a slow consumer.
    pub(crate) bytes: usize,
}

/// Bounded multi-producer, single-consumer frame queue.
pub struct OutboundQueue {
    state: Mutex<State>,
    notify: Notify,
    limits: QueueLimits,
}

/// Capacity kept by an idle queue after a drain; more is released.
const IDLE_KEEP: usize = 8;

/// Frames handed to one vectored write at most.
const WRITE_BATCH: usize = 32;

impl OutboundQueue {
    pub(crate) fn new(limits: QueueLimits) -> Self {
        let state = State {
            frames: VecDeque::new(),
            bytes: 0,
            written: 0,
            closed: false,
            broken: false,
            close_sent: false,
            scheduled: false,
            blocked: false,
            last_write: flusher::long_ago(),
            direct: None,
        };
        Self {
            state: Mutex::new(state),
            notify: Notify::new(),
            limits,
        }
    }

    /// Queues `frames` for this connection alone as one unit (a packet and
    /// its attachments stay together), or none of them. On WebSocket they
    /// are written at once unless the socket is full.
    pub(crate) fn push_all(&self, frames: &[Frame]) -> Result<(), PushError> {
        let mut st = self.state.lock();
        self.admit(&mut st, frames)?;
        self.push_locked(&mut st, frames);
        Ok(())
    }

    /// Whether `frames` may be queued: the queue is open and has room
    /// (made by writing, see [`make_room`](Self::make_room)).
    fn admit(&self, st: &mut State, frames: &[Frame]) -> Result<(), PushError> {
        if st.closed {
            return Err(PushError::Closed);
        }
        let bytes = frames.iter().map(Frame::len).sum();
        if !self.fits(st, frames.len(), bytes) && !self.make_room(st, frames.len(), bytes) {
            return Err(PushError::Full);
        }
        Ok(())
    }

    /// Do `n` more frames of `bytes` payload bytes fit within the limits?
    fn fits(&self, st: &State, n: usize, bytes: usize) -> bool {
        st.frames.len() + n <= self.limits.frames
            && (st.frames.is_empty() || st.bytes + bytes <= self.limits.bytes)
    }

    /// [`push_all`](Self::push_all) for one recipient of a broadcast: a
    /// WebSocket queue to schedule goes into `batch`, which the caller
    /// submits after the last recipient.
    pub(crate) fn push_all_batched(
        self: &Arc<Self>,
        frames: &[Frame],
        batch: &mut ScheduleBatch,
    ) -> Result<(), PushError> {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        self.admit(st, frames)?;
        append(st, frames);
        match &st.direct {
            None => self.notify.notify_one(),
            Some(direct) => {
                if !st.scheduled {
                    st.scheduled = true;
                    batch.add(&direct.shard, self.clone(), st.last_write);
                }
            }
        }
        Ok(())
    }

    pub(crate) fn push(&self, frame: Frame) -> Result<(), PushError> {
        self.push_all(std::slice::from_ref(&frame))
    }

    /// Queues the last frame of a closing connection (its close packet)
    /// regardless of the limits: the caller closes the queue right after,
    /// so this happens once per connection.
    pub(crate) fn push_final(&self, frame: Frame) {
        let mut st = self.state.lock();
        if st.closed {
            return;
        }
        self.push_locked(&mut st, std::slice::from_ref(&frame));
    }

    /// Queues `frames` for one connection. On WebSocket they are written at
    /// once (with whatever broadcasts were pending before them): replies,
    /// acks and control frames answer the client's own requests, and are
    /// few next to broadcasts, which wait for their shard.
    fn push_locked(&self, st: &mut State, frames: &[Frame]) {
        append(st, frames);
        if st.direct.is_none() {
            self.notify.notify_one();
            return;
        }
        if st.blocked {
            // The driver writes when the socket drains.
            return;
        }
        if flush_counted(st, WriteVia::Socket) != Flush::Done {
            self.notify.notify_one();
        }
    }

    /// Hands the queue the WebSocket write half: from now on its frames go
    /// there (broadcasts through `shard`). Frames queued before, while
    /// polling, go first: the session's driver writes them once it learns
    /// of the upgrade.
    pub(crate) fn attach_websocket(
        &self,
        socket: OwnedWriteHalf,
        shard: Arc<Shard>,
        metrics: Arc<Metrics>,
        deflate: Option<Agreed>,
    ) {
        let mut st = self.state.lock();
        st.written = 0;
        st.direct = Some(Direct {
            socket: Arc::new(socket),
            shard,
            metrics,
            deflate,
        });
    }

    /// The shard's pass over this queue: writes what is pending; a socket
    /// that is full (or failed) goes to the driver.
    /// Returns the metrics to count `sent` on.
    pub(crate) fn flush_scheduled(&self, sent: &mut Sent) -> Option<Arc<Metrics>> {
        let mut st = self.state.lock();
        let metrics = st.direct.as_ref().map(|d| d.metrics.clone());
        if flush_locked(&mut st, WriteVia::Socket, sent) != Flush::Done {
            self.notify.notify_one();
        }
        metrics
    }

    /// The WebSocket write half, to wait until it is writable.
    pub(crate) fn websocket(&self) -> Option<Arc<OwnedWriteHalf>> {
        self.state.lock().direct.as_ref().map(|d| d.socket.clone())
    }

    /// Writes the WebSocket backlog until it is gone or the socket is full
    /// (for the driver, which then waits until the socket is writable).
    pub(crate) fn flush(&self) -> Flush {
        flush_counted(&mut self.state.lock(), WriteVia::Tokio)
    }

    /// A push found the queue full. On WebSocket, frames may only be
    /// waiting for their shard's next pass while the socket has room: write
    /// them now, so that only a client that does not read counts as slow.
    fn make_room(&self, st: &mut State, n: usize, bytes: usize) -> bool {
        if st.direct.is_none() || st.blocked {
            return false;
        }
        flush_counted(st, WriteVia::Socket);
        self.fits(st, n, bytes)
    }

    /// Queues the WebSocket close frame with `code` (and `reason`, when not
    /// empty) after the backlog, once, and refuses everything after it.
    pub(crate) fn push_ws_close(&self, code: u16, reason: &str) {
        let mut st = self.state.lock();
        if st.broken || st.close_sent || st.direct.is_none() {
            return;
        }
        st.close_sent = true;
        st.closed = true;
        let frame = if reason.is_empty() {
            ws::close_frame(code)
        } else {
            ws::close_frame_with_reason(code, reason)
        };
        self.push_locked(&mut st, &[Frame::WsControl(frame)]);
    }

    /// Drops the WebSocket write half (which shuts the socket's sending
    /// side down once the reader has let go too).
    pub(crate) fn detach_websocket(&self) {
        let direct = self.state.lock().direct.take();
        drop(direct);
    }

    /// Moves every queued frame into `out` (which should be empty), for a
    /// polling GET.
    pub(crate) fn drain_into(&self, out: &mut VecDeque<Frame>) {
        let mut st = self.state.lock();
        if st.frames.is_empty() {
            return;
        }
        if out.is_empty() && out.capacity() <= st.frames.capacity() {
            std::mem::swap(out, &mut st.frames);
        } else {
            out.extend(st.frames.drain(..));
        }
        st.bytes = 0;
        if st.frames.capacity() > IDLE_KEEP {
            st.frames.shrink_to(IDLE_KEEP);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.state.lock().frames.is_empty()
    }

    pub fn len(&self) -> usize {
        self.state.lock().frames.len()
    }

    /// Payload bytes queued (what the connection pins beyond its socket's
    /// kernel buffers).
    pub fn queued_bytes(&self) -> usize {
        self.state.lock().bytes
    }

    /// Is the WebSocket full (the driver waits until it is writable)?
    pub fn is_blocked(&self) -> bool {
        self.state.lock().blocked
    }

    #[cfg(test)]
    /// Did the WebSocket fail under a write?
    pub(crate) fn is_broken(&self) -> bool {
        self.state.lock().broken
    }

    /// Refuses further pushes and wakes the consumer. Frames already queued
    /// stay drainable (a close packet may be among them).
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.notify.notify_one();
    }

    /// Resolves once something was pushed since the last call (a permit is
    /// kept when nobody waits, so no wake-up is lost). On WebSocket: once a
    /// backlog formed, or the socket failed.
    pub(crate) async fn notified(&self) {
        self.notify.notified().await;
    }

    /// Wakes the consumer without pushing (for example when the transport
    /// changes under a pending poll).
    pub(crate) fn wake(&self) {
        self.notify.notify_one();
    }
}

/// Appends `frames` to the queue of `st`, counting their bytes.
fn append(st: &mut State, frames: &[Frame]) {
    for f in frames {
        st.bytes += f.len();
        st.frames.push_back(f.clone());
    }
}

/// [`flush_locked`], counting what was written on the queue's metrics.
fn flush_counted(st: &mut State, via: WriteVia) -> Flush {
    let mut sent = Sent::default();
    let result = flush_locked(st, via, &mut sent);
    if let Some(d) = &st.direct {
        sent.count(&d.metrics);
    }
    result
}

/// Writes the WebSocket backlog of `st` until it is gone or the socket is
/// full (then `blocked`: the driver waits until the socket is writable).
fn flush_locked(st: &mut State, via: WriteVia, sent: &mut Sent) -> Flush {
    if st.broken {
        return Flush::Failed;
    }
    let Some(direct) = st.direct.as_ref() else {
        return Flush::Done;
    };
    let deflate = direct.deflate;
    while !st.frames.is_empty() {
        let written = match write_frames(&direct.socket, via, deflate, st.frames.iter(), st.written)
        {
            Ok(0) => {
                st.blocked = true;
                return Flush::Blocked;
            }
            Ok(n) => {
                sent.writes += 1;
                st.last_write = flusher::clock_ms();
                n
            }
            Err(_) => {
                st.broken = true;
                st.closed = true;
                return Flush::Failed;
            }
        };
        let (done, partial) = split_written(st.frames.iter(), deflate, st.written + written);
        for f in st.frames.drain(..done) {
            sent.frames += 1;
            sent.bytes += f.len() as u64;
            st.bytes -= f.len();
            if let (Frame::Deflated(d), Some(agreed)) = (&f, deflate)
                && agreed.takes(d.plain.len())
            {
                sent.deflated += 1;
                sent.deflate_in += d.plain.len() as u64;
                sent.deflate_out += d.compressed.len() as u64;
            }
        }
        st.written = partial;
    }
    st.scheduled = false;
    st.blocked = false;
    if st.frames.capacity() > IDLE_KEEP {
        st.frames.shrink_to(IDLE_KEEP);
    }
    Flush::Done
}

/// How a write reaches the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteVia {
    /// Through tokio, which clears the socket's write readiness on
    /// `WouldBlock` (needed before waiting for `writable`).
    Tokio,
    /// A plain system call on the socket (the shards' hot path; a socket
    /// that would block goes to the driver, which retries through tokio).
    Socket,
}

/// The wire length of `frame` on WebSocket (header included).
fn wire_len(frame: &Frame, deflate: Option<Agreed>) -> usize {
    let mut header = [0u8; MAX_HEADER];
    let (header, payload) = frame.ws_parts(deflate, &mut header);
    header + payload.len()
}

/// After `written` bytes of `frames` went out: how many frames are complete,
/// and how many bytes of the next one were written.
fn split_written<'a>(
    frames: impl Iterator<Item = &'a Frame>,
    deflate: Option<Agreed>,
    mut written: usize,
) -> (usize, usize) {
    let mut done = 0;
    for f in frames {
        let len = wire_len(f, deflate);
        if written < len {
            break;
        }
        written -= len;
        done += 1;
    }
    (done, written)
}

/// Writes as much of `frames` as the socket takes now (up to
/// [`WRITE_BATCH`] frames), starting `skip` bytes into the first. Returns
/// the bytes written, 0 when the socket would block.
fn write_frames<'a>(
    socket: &OwnedWriteHalf,
    via: WriteVia,
    deflate: Option<Agreed>,
    frames: impl Iterator<Item = &'a Frame>,
    mut skip: usize,
) -> io::Result<usize> {
    let mut payloads: [&[u8]; WRITE_BATCH] = [&[]; WRITE_BATCH];
    let mut headers = [[0u8; MAX_HEADER]; WRITE_BATCH];
    let mut header_lens = [0usize; WRITE_BATCH];
    let mut n = 0;
    for (i, f) in frames.take(WRITE_BATCH).enumerate() {
        let (header, payload) = f.ws_parts(deflate, &mut headers[i]);
        header_lens[i] = header;
        payloads[i] = payload;
        n = i + 1;
    }
    let mut slices = [IoSlice::new(&[]); 2 * WRITE_BATCH];
    let mut used = 0;
    for i in 0..n {
        for part in [&headers[i][..header_lens[i]], payloads[i]] {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            slices[used] = IoSlice::new(&part[skip..]);
            skip = 0;
            used += 1;
        }
    }
    if used == 0 {
        return Ok(0);
    }
    let result = match via {
        WriteVia::Tokio => socket.try_write_vectored(&slices[..used]),
        WriteVia::Socket => {
            let stream: &tokio::net::TcpStream = socket.as_ref();
            socket2::SockRef::from(stream).send_vectored(&slices[..used])
        }
    };
    match result {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frames waiting in `s`'s queue.
    fn queued_frames(s: &super::super::Session) -> Vec<Frame> {
        s.queue.state.lock().frames.iter().cloned().collect()
    }

    #[test]
    fn bounded_and_all_or_nothing() {
        let q = Arc::new(frames_only(3));
        q.push(Frame::text("a")).unwrap();
        let pair = [Frame::text("b"), Frame::Binary(Bytes::from_static(b"x"))];
        q.push_all(&pair).unwrap();
        assert_eq!(q.push(Frame::text("c")), Err(PushError::Full));
        assert_eq!(q.len(), 3);
        let mut out = VecDeque::new();
        q.drain_into(&mut out);
        assert_eq!(out.len(), 3);
        assert!(q.is_empty());
        q.push_all(&pair).unwrap();
        assert_eq!(q.push_all(&pair), Err(PushError::Full));
        q.close();
        assert_eq!(q.push(Frame::text("d")), Err(PushError::Closed));
        out.clear();
        q.drain_into(&mut out);
        assert_eq!(out.len(), 2, "frames queued before close stay drainable");
    }

    /// A queue bounded in frames only.
    fn frames_only(frames: usize) -> OutboundQueue {
        OutboundQueue::new(QueueLimits {
            frames,
            bytes: usize::MAX,
        })
    }

    #[test]
    fn only_the_final_frame_passes_the_limits() {
        let q = Arc::new(frames_only(1));
        q.push(Frame::text("a")).unwrap();
        assert_eq!(q.push(Frame::text_static("2")), Err(PushError::Full));
        q.push_final(Frame::text_static("1"));
        q.close();
        q.push_final(Frame::text_static("1"));
        assert_eq!(q.len(), 2, "one final frame, before the close");
    }

    #[test]
    fn bytes_are_bounded_and_counted_until_drained() {
        let q = OutboundQueue::new(QueueLimits {
            frames: 100,
            bytes: 10,
        });
        // An empty queue takes one unit of any size.
        q.push(Frame::text("x".repeat(25))).unwrap();
        assert_eq!(q.queued_bytes(), 25);
        assert_eq!(q.push(Frame::text("y")), Err(PushError::Full));
        let mut out = VecDeque::new();
        q.drain_into(&mut out);
        assert_eq!(q.queued_bytes(), 0);
        // Then the bound holds: 4 + 6 fit, one more byte does not, whatever
        // the kind of frame; a unit is admitted whole or not at all.
        q.push(Frame::text("abcd")).unwrap();
        let shared = Bytes::from_static(b"012345");
        q.push(Frame::Binary(shared.clone())).unwrap();
        assert_eq!(q.queued_bytes(), 10);
        assert_eq!(
            q.push(Frame::WsControl(Bytes::from_static(&[0x8A]))),
            Err(PushError::Full)
        );
        let mut batch = ScheduleBatch::default();
        let q = Arc::new(q);
        assert_eq!(
            q.push_all_batched(&[Frame::Binary(shared)], &mut batch),
            Err(PushError::Full)
        );
        assert_eq!((q.len(), q.queued_bytes()), (2, 10));
        out.clear();
        q.drain_into(&mut out);
        assert_eq!((q.len(), q.queued_bytes()), (0, 0));
        // A broadcast's shared bytes count in every queue that holds them.
        let other = OutboundQueue::new(q.limits);
        let payload = Frame::Binary(Bytes::from(vec![7u8; 8]));
        q.push(payload.clone()).unwrap();
        other.push(payload).unwrap();
        assert_eq!((q.queued_bytes(), other.queued_bytes()), (8, 8));
        // The final frame passes and is counted.
        q.push_final(Frame::text_static("1"));
        assert_eq!(q.queued_bytes(), 9);
    }

    #[tokio::test]
    async fn written_frames_release_their_bytes() {
        let (write, mut client) = socket_pair().await;
        let q = Arc::new(OutboundQueue::new(QueueLimits {
            frames: 64,
            bytes: 1024,
        }));
        q.attach_websocket(write, shard(), metrics(), None);
        for i in 0..100 {
            q.push(Frame::text(format!("4m{i:03}"))).unwrap();
            broadcast(&q, Frame::text(format!("4b{i:03}"))).unwrap();
        }
        assert_eq!(read_texts(&mut client, 200).await.len(), 200);
        eventually_empty(&q).await;
        assert_eq!(q.queued_bytes(), 0);
    }

    async fn eventually_empty(q: &OutboundQueue) {
        for _ in 0..200 {
            if q.is_empty() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("the queue never drained");
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_fills_the_byte_bound_and_no_more() {
        let (write, _client) = socket_pair().await;
        let limits = QueueLimits {
            frames: 1 << 20,
            bytes: 64 * 1024,
        };
        let q = Arc::new(OutboundQueue::new(limits));
        q.attach_websocket(write, shard(), metrics(), None);
        // Pongs of 127 bytes, as a ping flood makes the node write: the
        // kernel buffers fill, then the queue up to its byte bound.
        let pong = Frame::WsControl(ws::encode_frame(opcode::PONG, &[b'p'; 125]));
        let mut pushed = 0usize;
        let full = loop {
            match q.push(pong.clone()) {
                Ok(()) => pushed += 1,
                Err(e) => break e,
            }
            assert!(pushed < 1_000_000, "never full");
            assert!(q.queued_bytes() <= limits.bytes);
        };
        assert_eq!(full, PushError::Full);
        assert!(q.queued_bytes() > limits.bytes - pong.len());
        assert!(q.len() < 1024, "the byte bound, not the frame bound");
    }

    #[tokio::test]
    async fn a_push_before_waiting_is_not_lost() {
        let q = Arc::new(frames_only(4));
        q.push(Frame::text("a")).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), q.notified())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_broadcast_is_compressed_once_and_shared_by_the_recipients_that_negotiated_it() {
        use super::super::Broadcast;
        use crate::protocol::engineio::Transport;
        use tokio::io::AsyncReadExt;
        let agreed = deflate::negotiate(["permessage-deflate"]).unwrap();
        let d = Deflate {
            agreed,
            threshold: 100,
            level: 6,
        };
        let mut sessions = Vec::new();
        let mut clients = Vec::new();
        for negotiated in [true, true, false] {
            let s = super::super::session::tests::session(Transport::Websocket, None);
            let (write, client) = socket_pair().await;
            s.attach_websocket(write, shard(), metrics(), negotiated.then_some(d));
            sessions.push(s);
            clients.push(client);
        }
        let long = format!("42[\"news\",\"{}\"]", "n".repeat(500));
        let frames = [Frame::text(long.clone()), Frame::text("42[\"brief\"]")];
        let mut broadcast = Broadcast::new(&frames);
        for s in &sessions {
            broadcast.send(s).unwrap();
        }
        let (a, b, c) = (
            queued_frames(&sessions[0]),
            queued_frames(&sessions[1]),
            queued_frames(&sessions[2]),
        );
        match (&a[0], &b[0]) {
            (Frame::Deflated(x), Frame::Deflated(y)) => {
                assert!(Arc::ptr_eq(x, y), "one compression")
            }
            other => panic!("expected compressed frames: {other:?}"),
        }
        assert_eq!(a[1], frames[1], "under the threshold: as it is");
        assert_eq!(c, frames, "no extension: the message as it is");
        drop(broadcast);
        // On the wire: RSV1 and the compressed bytes, or the text.
        let mut first = [0u8; 2];
        clients[0].read_exact(&mut first).await.unwrap();
        assert_eq!(first[0], 0xC1);
        assert!(usize::from(first[1]) < long.len() / 4, "{}", first[1]);
        clients[2].read_exact(&mut first).await.unwrap();
        assert_eq!(first, [0x81, 126]);
    }

    #[test]
    fn a_broadcast_is_encoded_once_for_the_sessions_with_an_encoding() {
        use super::super::{Broadcast, Session};
        use crate::protocol::engineio::Transport;
        let sessions: Vec<Session> = (0..3)
            .map(|i| {
                let s = super::super::session::tests::session(Transport::Polling, None);
                if i < 2 {
                    s.set_encoding(crate::socketio::msgpack::encode);
                }
                s
            })
            .collect();
        let frames = [
            Frame::text("451-[\"blob\",{\"_placeholder\":true,\"num\":0}]"),
            Frame::Binary(Bytes::from_static(b"data")),
        ];
        let mut broadcast = Broadcast::new(&frames);
        for s in &sessions {
            broadcast.send(s).unwrap();
        }
        drop(broadcast);
        let (a, b, c) = (
            queued_frames(&sessions[0]),
            queued_frames(&sessions[1]),
            queued_frames(&sessions[2]),
        );
        match (&a[..], &b[..]) {
            ([Frame::Binary(x)], [Frame::Binary(y)]) => {
                assert_eq!(x.as_ptr(), y.as_ptr(), "one encoding, shared bytes")
            }
            other => panic!("expected one msgpack frame each: {other:?}"),
        }
        assert_eq!(c, frames, "no encoding: the frames as they are");
    }

    /// A connected pair: the server side's write half, the client stream.
    async fn socket_pair() -> (OwnedWriteHalf, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (_read, write) = accepted.unwrap().0.into_split();
        (write, client.unwrap())
    }

    fn shard() -> Arc<Shard> {
        // Leaked so that its task outlives the test's queues.
        Box::leak(Box::new(super::super::flusher::Flusher::new(
            1,
            std::time::Duration::ZERO,
        )))
        .shard()
    }

    /// A push as one recipient of a broadcast (through the shard).
    fn broadcast(q: &Arc<OutboundQueue>, frame: Frame) -> Result<(), PushError> {
        let mut batch = ScheduleBatch::default();
        let result = q.push_all_batched(std::slice::from_ref(&frame), &mut batch);
        batch.submit();
        result
    }

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new(["/"]))
    }

    /// Reads `n` text frames the server wrote (unmasked, any length form).
    async fn read_texts(client: &mut tokio::net::TcpStream, n: usize) -> Vec<String> {
        use tokio::io::AsyncReadExt;
        let mut out = Vec::new();
        for _ in 0..n {
            let mut h = [0u8; 2];
            client.read_exact(&mut h).await.unwrap();
            assert_eq!(h[0], 0x81, "final text frame");
            let len = match h[1] {
                126 => usize::from(client.read_u16().await.unwrap()),
                127 => client.read_u64().await.unwrap() as usize,
                n => usize::from(n),
            };
            let mut body = vec![0u8; len];
            client.read_exact(&mut body).await.unwrap();
            out.push(String::from_utf8(body).unwrap());
        }
        out
    }

    #[tokio::test]
    async fn the_shard_writes_websocket_frames_in_order() {
        let (write, mut client) = socket_pair().await;
        let q = Arc::new(frames_only(256));
        q.attach_websocket(write, shard(), metrics(), None);
        for i in 0..100 {
            broadcast(&q, Frame::text(format!("4m{i}"))).unwrap();
        }
        let got = read_texts(&mut client, 100).await;
        assert_eq!(got, (0..100).map(|i| format!("4m{i}")).collect::<Vec<_>>());
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_coalescing_shard_holds_frames_until_its_window_passed() {
        let (write, mut client) = socket_pair().await;
        let window = std::time::Duration::from_secs(1);
        let flusher = Box::leak(Box::new(super::super::flusher::Flusher::new(1, window)));
        let q = Arc::new(frames_only(8));
        q.attach_websocket(write, flusher.shard(), metrics(), None);
        broadcast(&q, Frame::text("4a")).unwrap();
        assert_eq!(read_texts(&mut client, 1).await, ["4a"]);
        let first = tokio::time::Instant::now();
        broadcast(&q, Frame::text("4b")).unwrap();
        broadcast(&q, Frame::text("4c")).unwrap();
        assert_eq!(read_texts(&mut client, 2).await, ["4b", "4c"]);
        assert!(
            first.elapsed() >= window / 2,
            "the second pass waited for the window: {:?}",
            first.elapsed()
        );
        // A reply to this client does not wait, and takes the pending
        // broadcast with it, in order.
        broadcast(&q, Frame::text("4d")).unwrap();
        q.push(Frame::text("430[]")).unwrap();
        let start = tokio::time::Instant::now();
        assert_eq!(read_texts(&mut client, 2).await, ["4d", "430[]"]);
        assert!(start.elapsed() < window / 2, "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn a_quiet_connection_is_written_at_once_and_a_busy_one_once_per_window() {
        use crate::telemetry::metrics::scrape;
        use std::time::Duration;
        let (write, mut client) = socket_pair().await;
        let window = Duration::from_secs(1);
        let flusher = Box::leak(Box::new(super::super::flusher::Flusher::new(1, window)));
        let q = Arc::new(frames_only(8));
        let m = metrics();
        q.attach_websocket(write, flusher.shard(), m.clone(), None);
        // Quiet (never written): at once.
        let start = tokio::time::Instant::now();
        broadcast(&q, Frame::text("4a")).unwrap();
        assert_eq!(read_texts(&mut client, 1).await, ["4a"]);
        // (Well under the quarter window a woken shard used to linger.)
        assert!(start.elapsed() < window / 10, "{:?}", start.elapsed());
        // Written just now: what follows waits for the window's end and
        // leaves in one write.
        broadcast(&q, Frame::text("4b")).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        broadcast(&q, Frame::text("4c")).unwrap();
        broadcast(&q, Frame::text("4d")).unwrap();
        assert_eq!(read_texts(&mut client, 3).await, ["4b", "4c", "4d"]);
        assert!(
            start.elapsed() >= window * 9 / 10,
            "held until the window ended: {:?}",
            start.elapsed()
        );
        // Quiet again after a window without writes: at once.
        tokio::time::sleep(window + Duration::from_millis(20)).await;
        let quiet = tokio::time::Instant::now();
        broadcast(&q, Frame::text("4e")).unwrap();
        assert_eq!(read_texts(&mut client, 1).await, ["4e"]);
        assert!(quiet.elapsed() < window / 10, "{:?}", quiet.elapsed());
        let text = m.render();
        let ws = [("transport", "websocket")];
        assert_eq!(
            scrape::value(&text, "gateway_packets_sent_total", &ws),
            Some(5.0)
        );
        assert_eq!(
            scrape::value(&text, "gateway_writes_total", &ws),
            Some(3.0),
            "4a alone, 4b to 4d together, 4e alone"
        );
    }

    #[tokio::test]
    async fn a_busy_connection_does_not_hold_back_a_quiet_one_on_the_same_shard() {
        use std::time::Duration;
        let window = Duration::from_secs(1);
        let flusher = Box::leak(Box::new(super::super::flusher::Flusher::new(1, window)));
        let (busy_write, mut busy_client) = socket_pair().await;
        let (quiet_write, mut quiet_client) = socket_pair().await;
        let busy = Arc::new(frames_only(8));
        let quiet = Arc::new(frames_only(8));
        busy.attach_websocket(busy_write, flusher.shard(), metrics(), None);
        quiet.attach_websocket(quiet_write, flusher.shard(), metrics(), None);
        broadcast(&busy, Frame::text("4a")).unwrap();
        assert_eq!(read_texts(&mut busy_client, 1).await, ["4a"]);
        // One broadcast to both: the busy connection waits for its window,
        // the quiet one does not.
        let start = tokio::time::Instant::now();
        let mut batch = ScheduleBatch::default();
        for q in [&busy, &quiet] {
            q.push_all_batched(&[Frame::text("4b")], &mut batch)
                .unwrap();
        }
        batch.submit();
        assert_eq!(read_texts(&mut quiet_client, 1).await, ["4b"]);
        assert!(start.elapsed() < window / 2, "{:?}", start.elapsed());
        assert_eq!(read_texts(&mut busy_client, 1).await, ["4b"]);
        assert!(start.elapsed() >= window * 3 / 4, "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn frames_waiting_for_the_window_do_not_make_a_reader_slow() {
        let (write, mut client) = socket_pair().await;
        let window = std::time::Duration::from_secs(1);
        let flusher = Box::leak(Box::new(super::super::flusher::Flusher::new(1, window)));
        let q = Arc::new(frames_only(2));
        q.attach_websocket(write, flusher.shard(), metrics(), None);
        // Ten frames into a queue of two, faster than the shard passes: the
        // socket has room, so a full queue is written out instead of refused.
        for i in 0..10 {
            broadcast(&q, Frame::text(format!("4m{i}"))).unwrap();
        }
        let got = read_texts(&mut client, 10).await;
        assert_eq!(got, (0..10).map(|i| format!("4m{i}")).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_backlog_forms_when_the_socket_is_full_and_drains_in_order() {
        let (write, mut client) = socket_pair().await;
        let q = Arc::new(frames_only(64));
        q.attach_websocket(write, shard(), metrics(), None);
        // The client does not read: the kernel buffers fill, then the queue.
        let big = "x".repeat(256 * 1024);
        let mut pushed = 0;
        loop {
            match q.push(Frame::text(format!("{pushed}:{big}"))) {
                Ok(()) => pushed += 1,
                Err(e) => {
                    assert_eq!(e, PushError::Full, "bounded");
                    break;
                }
            }
            assert!(pushed < 1000, "the socket never filled up");
            // Let the shard write.
            tokio::task::yield_now().await;
        }
        assert_eq!(q.len(), 64);
        // The driver's part: flush whenever the socket is writable.
        let socket = q.websocket().unwrap();
        let flusher = async {
            loop {
                match q.flush() {
                    Flush::Done => break,
                    Flush::Blocked => socket.writable().await.unwrap(),
                    Flush::Failed => panic!("socket failed"),
                }
            }
        };
        let (_, got) = tokio::join!(flusher, read_texts(&mut client, pushed));
        for (i, text) in got.iter().enumerate() {
            assert!(text.starts_with(&format!("{i}:")), "frame {i} in order");
            assert_eq!(text.len(), format!("{i}:").len() + big.len());
        }
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_reset_socket_marks_the_queue_broken() {
        let (write, client) = socket_pair().await;
        let q = Arc::new(frames_only(4));
        q.attach_websocket(write, shard(), metrics(), None);
        drop(client);
        // Writes to a peer that closed fail after at most a few attempts
        // (the first may still be accepted by the kernel).
        for _ in 0..50 {
            let _ = q.push(Frame::text("4x"));
            let _ = q.flush();
            if q.is_broken() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(q.is_broken());
        assert_eq!(q.push(Frame::text("4y")), Err(PushError::Closed));
        assert_eq!(q.flush(), Flush::Failed);
    }
}
