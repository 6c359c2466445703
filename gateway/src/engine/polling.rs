//! The HTTP long-polling transport: the handshake GET, the data GET (one at
//! a time, answered as soon as anything is queued) and the POST (one at a
//! time, packets handled in order before the answer).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::queue::Frame;
use super::session::Session;
use super::websocket::open_packet;
use super::{Engine, EngineError, HandshakeInfo};
use crate::protocol::engineio::Transport;
use crate::protocol::engineio::{self, PayloadItem};
use crate::reason::DisconnectReason;

/// Opens a polling session; the body of the answer is the open packet.
pub(crate) fn handshake(engine: &Arc<Engine>, info: HandshakeInfo) -> Result<Vec<u8>, EngineError> {
    let session = engine.open(Transport::Polling, info, None)?;
    Ok(open_packet(engine, &session, Transport::Polling).into_bytes())
}

/// Marks the GET done when it ends; a GET dropped before answering (the
/// client went away) closes the session, as the reference server does.
struct GetGuard<'a> {
    session: &'a Session,
    answered: bool,
}

impl Drop for GetGuard<'_> {
    fn drop(&mut self) {
        self.session.poll.lock().get_active = false;
        if !self.answered {
            self.session.close(DisconnectReason::TransportClose);
        }
    }
}

struct PostGuard<'a>(&'a Session);

impl Drop for PostGuard<'_> {
    fn drop(&mut self) {
        self.0.poll.lock().post_active = false;
    }
}

/// How long a GET that arrives during an upgrade waits for it to finish.
/// The reference server answers polls with a noop every 100 ms while
/// upgrading; a client polls no more once it has the probe's answer.
const UPGRADE_SETTLE: Duration = Duration::from_millis(100);

/// A data GET: waits until something is queued, then returns all of it.
pub(crate) async fn get(engine: &Engine, session: Arc<Session>) -> Result<Vec<u8>, EngineError> {
    if session.close_if_pong_overdue() {
        return Err(EngineError::UnknownSid);
    }
    // A WebSocket is taking the session over: a GET sent after the
    // client's "5" (on another connection, so it may be handled first)
    // must find the session upgraded, as from the reference server.
    if session.upgrade_pending() {
        settle_upgrade(&session).await;
    }
    if session.transport() != Transport::Polling {
        return Err(EngineError::BadRequest);
    }
    {
        let mut poll = session.poll.lock();
        if poll.get_active {
            drop(poll);
            session.close(DisconnectReason::ProtocolError);
            return Err(EngineError::BadRequest);
        }
        poll.get_active = true;
    }
    let mut guard = GetGuard {
        session: &session,
        answered: false,
    };
    let mut batch = VecDeque::new();
    let result = loop {
        if session.transport() != Transport::Polling {
            break Ok(b"6".to_vec());
        }
        session.queue.drain_into(&mut batch);
        if batch.is_empty() && session.is_upgrading() {
            // The probe was answered and its noop taken by an earlier poll:
            // this one must return too, or the client cannot switch.
            break Ok(b"6".to_vec());
        }
        if !batch.is_empty() {
            let mut body = Vec::with_capacity(batch.iter().map(|f| f.len() + 1).sum());
            engineio::encode_payload(
                batch.iter().filter_map(|f| match f.plain() {
                    Frame::Text(t) => Some(PayloadItem::Text(t.as_str())),
                    Frame::Binary(b) => Some(PayloadItem::Binary(b)),
                    Frame::WsControl(_) | Frame::Deflated(_) => None,
                }),
                &mut body,
            );
            engine.metrics.transport(Transport::Polling).sent(
                batch.len() as u64,
                body.len() as u64,
                1,
            );
            break Ok(body);
        }
        if session.is_closed() {
            break Err(EngineError::UnknownSid);
        }
        tokio::select! {
            _ = session.queue.notified() => {}
            _ = session.closed() => {}
        }
    };
    guard.answered = true;
    result
}

/// Waits until a pending upgrade completes or is given up, at most
/// [`UPGRADE_SETTLE`].
async fn settle_upgrade(session: &Session) {
    let deadline = Instant::now() + UPGRADE_SETTLE;
    while session.upgrade_pending() && !session.is_closed() {
        tokio::select! {
            _ = session.queue.notified() => {}
            _ = session.closed() => {}
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
}

/// A POST: decodes the payload and handles each packet in order.
pub(crate) async fn post(
    engine: &Engine,
    session: Arc<Session>,
    body: Bytes,
) -> Result<(), EngineError> {
    if session.close_if_pong_overdue() {
        return Err(EngineError::UnknownSid);
    }
    if session.transport() != Transport::Polling || session.is_closed() {
        return Err(EngineError::BadRequest);
    }
    {
        let mut poll = session.poll.lock();
        if poll.post_active {
            drop(poll);
            session.close(DisconnectReason::ProtocolError);
            return Err(EngineError::BadRequest);
        }
        poll.post_active = true;
    }
    let _guard = PostGuard(&session);
    let packets = match engineio::decode_payload(&body) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(sid = %session.sid, error = %e, "bad polling payload");
            session.close(DisconnectReason::ProtocolError);
            return Err(EngineError::BadRequest);
        }
    };
    engine
        .metrics
        .transport(Transport::Polling)
        .received(packets.len() as u64, body.len() as u64);
    for packet in packets {
        if let Err(reason) = session.handle_packet(packet).await {
            session.close(reason);
            break;
        }
    }
    Ok(())
}
