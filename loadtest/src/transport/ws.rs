//! Engine.IO over WebSocket: one text frame per packet. The connection is
//! owned by one task that reads, answers pings and writes; its buffers are
//! kept small so thousands of clients fit in one process.

use std::net::Ipv4Addr;
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use super::counted::{Counted, WireStats};
use super::{ConnectOpts, Node, Packet, tcp_connect};
use crate::protocol::{self, eio};

pub struct WsConn {
    ws: WebSocketStream<Counted<TcpStream>>,
}

impl WsConn {
    /// TCP connect, WebSocket upgrade, and the Engine.IO OPEN packet.
    pub async fn open(
        node: &Node,
        opts: &ConnectOpts,
        source: Option<Ipv4Addr>,
        wire: &Arc<WireStats>,
    ) -> Result<Self> {
        let stream = tcp_connect(node.addr, source, wire).await?;
        let url = format!("ws://{}{}", node.addr, opts.query("websocket", None));
        let config = WebSocketConfig::default()
            .read_buffer_size(opts.ws_read_buffer)
            .write_buffer_size(0)
            .max_message_size(Some(16 << 20));
        let (ws, _response) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
        let mut conn = Self { ws };
        match conn.ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_bytes().first() == Some(&eio::OPEN) => {
                protocol::parse_open(&t[1..])
                    .map_err(|e| anyhow!("bad Engine.IO OPEN packet {t}: {e}"))?;
            }
            Some(Ok(other)) => bail!("expected the Engine.IO OPEN packet, got {other:?}"),
            Some(Err(e)) => return Err(e.into()),
            None => bail!("closed before the Engine.IO OPEN packet"),
        }
        Ok(conn)
    }

    pub async fn send(&mut self, text: String) -> Result<()> {
        self.ws.send(Message::Text(text.into())).await?;
        Ok(())
    }

    pub async fn recv(&mut self) -> Result<Option<Packet>> {
        loop {
            let msg = match self.ws.next().await {
                None => return Ok(None),
                Some(Ok(msg)) => msg,
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => return Ok(None),
                Some(Err(e)) => return Err(e.into()),
            };
            let text = match msg {
                Message::Text(t) => t,
                Message::Close(_) => return Ok(None),
                _ => continue,
            };
            match text.as_bytes().first() {
                Some(&eio::MESSAGE) => return Ok(Packet::from_message(text)),
                Some(&eio::PING) => {
                    // The pong echoes the ping's data (empty for heartbeats).
                    let pong = format!("3{}", &text[1..]);
                    self.ws.send(Message::Text(Utf8Bytes::from(pong))).await?;
                }
                Some(&eio::CLOSE) => return Ok(None),
                _ => {}
            }
        }
    }

    pub async fn close(mut self, disconnect: String) {
        let _ = self.ws.send(Message::Text(disconnect.into())).await;
        let _ = self.ws.close(None).await;
    }
}
