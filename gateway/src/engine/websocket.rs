//! The WebSocket transport: a fresh WebSocket session, or the second half of
//! a polling -> WebSocket upgrade (`2probe` / `3probe`, then `5`).
//!
//! The connection's own task is the reader: it handles frames in order and
//! never spawns per message. Writes belong to the session's driver.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};

use super::queue::Frame;
use super::session::Session;
use super::{Engine, HandshakeInfo};
use crate::config::Transport;
use crate::protocol::engineio::{self, Packet};
use crate::reason::DisconnectReason;

/// The write half of a WebSocket, owned by the session driver.
pub type WsSink = SplitSink<WebSocket, Message>;
type WsStream = SplitStream<WebSocket>;

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

/// A session that starts on WebSocket.
pub(crate) async fn serve_new(engine: Arc<Engine>, socket: WebSocket, info: HandshakeInfo) {
    let (sink, stream) = socket.split();
    let session = match engine.open(Transport::Websocket, info, Some(sink)) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = e.message(), "websocket session refused");
            return;
        }
    };
    session.queue.push_control(Frame::text(open_packet(
        &engine,
        &session,
        Transport::Websocket,
    )));
    read_loop(&engine, &session, stream).await;
}

/// The WebSocket half of an upgrade of the polling session `session`.
pub(crate) async fn serve_upgrade(engine: Arc<Engine>, session: Arc<Session>, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let timeout = engine.config.server.upgrade_timeout();
    let probed = tokio::time::timeout(timeout, async {
        // 1. "2probe" -> "3probe"; the pending poll gets a noop.
        match next_text(&mut stream).await {
            Some(t) if t == "2probe" => {}
            _ => return false,
        }
        if !session.begin_upgrade() {
            return false;
        }
        if sink.send(Message::Text("3probe".into())).await.is_err() {
            return false;
        }
        // 2. "5": the client switched.
        matches!(next_text(&mut stream).await, Some(t) if t == "5")
    })
    .await
    .unwrap_or(false);
    if !probed || session.is_closed() {
        session.abort_upgrade();
        let _ = sink.close().await;
        tracing::debug!(sid = %session.sid, "upgrade abandoned");
        return;
    }
    if !session.complete_upgrade(sink) {
        return;
    }
    engine.metrics.engine_upgraded();
    read_loop(&engine, &session, stream).await;
}

async fn next_text(stream: &mut WsStream) -> Option<String> {
    loop {
        match stream.next().await? {
            Ok(Message::Text(t)) => return Some(t.as_str().to_owned()),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            _ => return None,
        }
    }
}

async fn read_loop(engine: &Engine, session: &Arc<Session>, mut stream: WsStream) {
    let traffic = engine.metrics.transport(Transport::Websocket);
    loop {
        let next = tokio::select! {
            m = stream.next() => m,
            _ = session.closed() => return,
        };
        let result = match next {
            None | Some(Ok(Message::Close(_))) => Err(DisconnectReason::TransportClose),
            Some(Err(e)) => {
                tracing::debug!(sid = %session.sid, error = %e, "websocket read failed");
                Err(DisconnectReason::TransportError)
            }
            Some(Ok(Message::Text(text))) => {
                traffic.received(1, text.len() as u64);
                match engineio::decode_text(&text) {
                    // Binary travels in binary frames on WebSocket.
                    Ok(Packet::Binary(_)) | Err(_) => Err(DisconnectReason::ProtocolError),
                    Ok(packet) => session.handle_packet(packet).await,
                }
            }
            Some(Ok(Message::Binary(data))) => {
                traffic.received(1, data.len() as u64);
                session.handle_packet(Packet::Binary(data)).await
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
        };
        if let Err(reason) = result {
            session.close(reason);
            return;
        }
    }
}
