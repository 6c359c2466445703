//! The WebSocket transport: a fresh WebSocket session, or the second half of
//! a polling -> WebSocket upgrade (`2probe` / `3probe`, then `5`).
//!
//! The gateway speaks WebSocket itself on the raw TCP stream (framing in
//! [`crate::protocol::websocket`]): the HTTP handler answers the opening
//! handshake, the connection is split, the write half goes to the session's
//! [`OutboundQueue`](super::OutboundQueue) (which writes frames straight to
//! it) and the connection's own task reads: it handles messages in order and
//! never spawns per message. An idle connection holds no read buffer.
//!
//! With `server.compression` on, permessage-deflate is negotiated in the
//! opening handshake with clients that offer it
//! ([`crate::protocol::deflate`]): their compressed messages are inflated
//! within `server.max_payload`, and long messages to them go compressed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::io::poll_read_buf;

use super::queue::Frame;
use super::session::Session;
use super::{Engine, HandshakeInfo};
use crate::protocol::deflate::{self, Agreed};
use crate::protocol::engineio::Transport;
use crate::protocol::engineio::{self, Packet};
use crate::protocol::websocket::{self as ws, Decoder, Message, opcode};
use crate::reason::DisconnectReason;

/// An accepted WebSocket opening handshake: the `101` response to send,
/// the connection to take over once it is sent, and permessage-deflate
/// when it was negotiated.
pub(crate) struct Accepted {
    pub(crate) response: axum::response::Response,
    pub(crate) upgrade: OnUpgrade,
    pub(crate) deflate: Option<Agreed>,
}

/// Checks the opening handshake of `parts` (RFC 6455 section 4.2.1);
/// negotiates permessage-deflate when `compression` is on and the client
/// offers it.
pub(crate) fn accept(parts: &mut Parts, compression: bool) -> Option<Accepted> {
    fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    }
    if parts.method != Method::GET
        || !has_token(&parts.headers, header::UPGRADE, "websocket")
        || !has_token(&parts.headers, header::CONNECTION, "upgrade")
        || parts
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
    {
        return None;
    }
    let key = parts.headers.get(header::SEC_WEBSOCKET_KEY)?;
    if !ws::valid_key(key.as_bytes()) {
        return None;
    }
    let accept = HeaderValue::from_str(&ws::accept_key(key.as_bytes())).ok()?;
    let upgrade = parts.extensions.remove::<OnUpgrade>()?;
    let mut response = axum::response::Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    let deflate = compression
        .then(|| {
            deflate::negotiate(
                parts
                    .headers
                    .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            )
        })
        .flatten();
    if let Some(agreed) = deflate {
        let value = HeaderValue::from_str(&agreed.response()).ok()?;
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
    }
    Some(Accepted {
        response,
        upgrade,
        deflate,
    })
}

/// The TCP connection under an upgraded request, split, with the bytes the
/// HTTP layer had already read after the request.
async fn take_over(upgrade: OnUpgrade) -> Option<(WsReader, OwnedWriteHalf)> {
    let upgraded = match upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade failed");
            return None;
        }
    };
    let parts =
        match hyper_util::server::conn::auto::upgrade::downcast::<TokioIo<TcpStream>>(upgraded) {
            Ok(p) => p,
            Err(_) => {
                tracing::warn!("websocket upgrade on an unexpected connection type");
                return None;
            }
        };
    let (read, write) = parts.io.into_inner().into_split();
    Some((WsReader::new(read, parts.read_buf), write))
}

/// The largest single read into a connection's buffer, bytes.
const MAX_READ: usize = 64 * 1024;

/// Reads and decodes client messages from the read half.
pub(crate) struct WsReader {
    socket: OwnedReadHalf,
    buf: BytesMut,
    decoder: Decoder,
    read_size: usize,
}

/// Why reading stopped.
enum ReadError {
    /// The peer closed the TCP connection.
    Eof,
    Io(io::Error),
    /// The peer broke the WebSocket protocol.
    Protocol(ws::Error),
}

impl WsReader {
    fn new(socket: OwnedReadHalf, already_read: Bytes) -> Self {
        Self {
            socket,
            buf: BytesMut::from(&already_read[..]),
            decoder: Decoder::new(usize::MAX),
            read_size: 1024,
        }
    }

    fn limits(mut self, max_message: usize, read_size: usize, deflate: bool) -> Self {
        self.decoder = Decoder::new(max_message).with_deflate(deflate);
        self.read_size = read_size.max(64);
        self
    }

    /// The next message. Cancel-safe: what was read stays in the buffer.
    async fn next(&mut self) -> Result<Message, ReadError> {
        loop {
            if let Some(m) = self
                .decoder
                .decode(&mut self.buf)
                .map_err(ReadError::Protocol)?
            {
                return Ok(m);
            }
            // Room for the next read grows with what arrived (a large frame
            // is read in larger pieces), never with what a frame header
            // announces: memory follows the bytes a client actually sends.
            let room = self.read_size.max(self.buf.len().min(MAX_READ));
            let read = std::future::poll_fn(|cx| {
                self.buf.reserve(room);
                // A read shorter than the room drained the socket: the
                // runtime then waits for the next readiness event instead
                // of trying a read that would only say "would block".
                let read = poll_read_buf(Pin::new(&mut self.socket), cx, &mut self.buf);
                if read.is_pending() && self.buf.is_empty() {
                    // Nothing pending: hold no buffer while waiting.
                    self.buf = BytesMut::new();
                }
                read
            })
            .await;
            match read {
                Ok(0) => return Err(ReadError::Eof),
                Ok(_) => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }

    /// The next text message, skipping pings and pongs (during the
    /// upgrade's probe, before the session writes to this socket).
    async fn next_text(&mut self) -> Option<Bytes> {
        loop {
            match self.next().await.ok()? {
                Message::Text(t) => return Some(t),
                Message::Ping(_) | Message::Pong => continue,
                _ => return None,
            }
        }
    }
}

/// Writes `frame` whole to `socket`, before the session's queue owns it.
async fn write_now(socket: &OwnedWriteHalf, frame: &[u8]) -> io::Result<()> {
    let mut at = 0;
    while at < frame.len() {
        socket.writable().await?;
        match socket.try_write(&frame[at..]) {
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The open packet of `session`.
pub(crate) fn open_packet(engine: &Engine, session: &Session, transport: Transport) -> String {
    let cfg = &engine.config.server;
    let upgrades: &[&str] = if transport == Transport::Polling && cfg.allows(Transport::Websocket) {
        &["websocket"]
    } else {
        &[]
    };
    engineio::encode_open(&engineio::Handshake {
        sid: &session.sid,
        upgrades,
        ping_interval_ms: cfg.ping_interval_ms,
        ping_timeout_ms: cfg.ping_timeout_ms,
        max_payload: cfg.max_payload,
    })
}

/// A session that starts on WebSocket, on the connection `upgrade` yields.
/// `held` (the TCP connection's slot in the node's count) is kept until
/// the WebSocket ends.
pub(crate) async fn serve_new(
    engine: Arc<Engine>,
    upgrade: OnUpgrade,
    deflate: Option<Agreed>,
    info: HandshakeInfo,
    held: impl Send + 'static,
) {
    let _held = held;
    let Some((reader, writer)) = take_over(upgrade).await else {
        return;
    };
    let session = match engine.open(Transport::Websocket, info, Some((writer, deflate))) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = e.message(), "websocket session refused");
            return;
        }
    };
    // The first frame of an empty queue: it fits.
    let _ = session.push_own(Frame::text(open_packet(
        &engine,
        &session,
        Transport::Websocket,
    )));
    read_loop(&engine, &session, limited(&engine, reader, deflate)).await;
}

/// The WebSocket half of an upgrade of the polling session `session`.
/// `held` as for [`serve_new`].
pub(crate) async fn serve_upgrade(
    engine: Arc<Engine>,
    session: Arc<Session>,
    upgrade: OnUpgrade,
    deflate: Option<Agreed>,
    held: impl Send + 'static,
) {
    let _held = held;
    let Some((reader, writer)) = take_over(upgrade).await else {
        session.abort_upgrade();
        return;
    };
    let mut reader = limited(&engine, reader, deflate);
    let timeout = engine.config.server.upgrade_timeout();
    let probed = tokio::time::timeout(timeout, async {
        // 1. "2probe" -> "3probe"; the pending poll gets a noop.
        match reader.next_text().await {
            Some(t) if &t[..] == b"2probe" => {}
            _ => return false,
        }
        if !session.begin_upgrade() {
            return false;
        }
        let probe = ws::encode_frame(opcode::TEXT, b"3probe");
        if write_now(&writer, &probe).await.is_err() {
            return false;
        }
        // 2. "5": the client switched.
        matches!(reader.next_text().await, Some(t) if &t[..] == b"5")
    })
    .await
    .unwrap_or(false);
    if !probed || session.is_closed() {
        session.abort_upgrade();
        let _ = write_now(&writer, &ws::close_frame(ws::close_code::NORMAL)).await;
        tracing::debug!(sid = %session.sid, "upgrade abandoned");
        return;
    }
    if !session.complete_upgrade(
        writer,
        engine.flusher.shard(),
        engine.metrics.clone(),
        deflate.map(|a| engine.deflate(a)),
    ) {
        return;
    }
    engine.metrics.engine_upgraded();
    session.upgraded();
    read_loop(&engine, &session, reader).await;
}

/// Completes an accepted WebSocket's handshake and closes it at once (1000),
/// bounded in time.
pub(crate) async fn close_at_once(upgrade: OnUpgrade) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        if let Some((_reader, writer)) = take_over(upgrade).await {
            let _ = write_now(&writer, &ws::close_frame(ws::close_code::NORMAL)).await;
        }
    })
    .await;
}

fn limited(engine: &Engine, reader: WsReader, deflate: Option<Agreed>) -> WsReader {
    let cfg = &engine.config.server;
    reader.limits(
        cfg.max_payload as usize,
        cfg.ws_read_buffer,
        deflate.is_some(),
    )
}

async fn read_loop(engine: &Engine, session: &Arc<Session>, mut reader: WsReader) {
    let traffic = engine.metrics.transport(Transport::Websocket);
    loop {
        let next = tokio::select! {
            m = reader.next() => m,
            _ = session.closed() => return,
        };
        let result = match next {
            Err(ReadError::Eof) => Err(DisconnectReason::TransportClose),
            Ok(Message::Close(code)) => {
                // The client's code is echoed (an invalid one never gets
                // here: the decoder refuses it with 1002).
                session.queue.push_ws_close(ws::close_reply(code), "");
                Err(DisconnectReason::TransportClose)
            }
            Err(ReadError::Io(e)) => {
                tracing::debug!(sid = %session.sid, error = %e, "websocket read failed");
                Err(DisconnectReason::TransportError)
            }
            Err(ReadError::Protocol(e)) => {
                tracing::debug!(sid = %session.sid, error = %e, "websocket protocol error");
                session.queue.push_ws_close(e.close_code(), "");
                Err(DisconnectReason::ProtocolError)
            }
            Ok(Message::Text(data)) => {
                traffic.received(1, data.len() as u64);
                match std::str::from_utf8(&data).map(engineio::decode_text) {
                    // Binary travels in binary frames on WebSocket.
                    Ok(Ok(Packet::Binary(_)) | Err(_)) | Err(_) => {
                        Err(DisconnectReason::ProtocolError)
                    }
                    Ok(Ok(packet)) => session.handle_packet(packet).await,
                }
            }
            Ok(Message::Binary(data)) => {
                traffic.received(1, data.len() as u64);
                session.handle_packet(Packet::Binary(data)).await
            }
            // Control frames count against the rate limit like packets, and
            // a pong is queued like any reply: a client that pings without
            // reading is a slow consumer at the queue's bound.
            Ok(Message::Ping(data)) => session.rate_limit().and_then(|()| {
                session.push_own(Frame::WsControl(ws::encode_frame(opcode::PONG, &data)))
            }),
            Ok(Message::Pong) => session.rate_limit(),
        };
        if let Err(reason) = result {
            session.close(reason);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A masked client frame header announcing `len` payload bytes.
    fn header(op: u8, len: u64) -> Vec<u8> {
        let mut h = vec![0x80 | op, 0x80 | 127];
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 0]);
        h
    }

    #[tokio::test]
    async fn the_read_buffer_grows_with_what_arrives_not_with_what_is_announced() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let mut client = client.unwrap();
        let (read, _write) = accepted.unwrap().0.into_split();
        let mut reader = WsReader::new(read, Bytes::new()).limits(1_000_000, 1024, false);

        // A header announcing 999 KB and ten bytes of it.
        let announced = 999_000;
        client
            .write_all(&header(opcode::BINARY, announced))
            .await
            .unwrap();
        client.write_all(&[7; 10]).await.unwrap();
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(200), reader.next()).await;
        assert!(waited.is_err(), "the message is not complete");
        assert_eq!(reader.buf.len(), 14 + 10);
        assert!(
            reader.buf.capacity() < 16 * 1024,
            "reserved {} bytes for 24 that arrived",
            reader.buf.capacity()
        );

        // The rest arrives; the message is whole.
        let rest = vec![7u8; announced as usize - 10];
        let (written, message) = tokio::join!(client.write_all(&rest), reader.next());
        written.unwrap();
        match message {
            Ok(Message::Binary(data)) => assert_eq!(data.len(), announced as usize),
            _ => panic!("expected the binary message"),
        }
    }
}
