//! Client connections to a Socket.IO server: the Engine.IO handshake, the
//! Socket.IO CONNECT, heartbeats, and sending/receiving Socket.IO packets,
//! over WebSocket ([`ws`], or [`ws_deflate`] with permessage-deflate) or
//! HTTP long-polling ([`polling`]). Every connection counts the bytes it
//! reads from TCP ([`counted`]).
//!
//! A [`Conn`] hands its owner only Socket.IO packets; pings are answered
//! inside. Sockets bind a chosen loopback source address before
//! connecting, so one process can open more connections to one server port
//! than one source address has ephemeral ports.

pub mod counted;
pub mod frame;
pub mod inflate;
pub mod polling;
pub mod ws;
pub mod ws_deflate;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use self::counted::{Counted, WireStats};
use crate::protocol::{self, SioKind};

/// A server node under test: where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// As given on the command line, for reports.
    pub url: String,
    pub addr: SocketAddr,
}

impl Node {
    /// Parses `http://127.0.0.1:3001` (or `127.0.0.1:3001`). Only loopback
    /// addresses are accepted: this tool never sends load anywhere else.
    pub fn parse(url: &str) -> Result<Self> {
        let trimmed = url.trim();
        let hostport = trimmed
            .strip_prefix("http://")
            .or_else(|| trimmed.strip_prefix("ws://"))
            .unwrap_or(trimmed)
            .trim_end_matches('/');
        if hostport.contains('/') {
            bail!("node {url}: give only scheme, host and port (the path is --path)");
        }
        let addr = hostport
            .to_socket_addrs()
            .with_context(|| format!("node {url}: not host:port"))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| anyhow!("node {url}: no IPv4 address"))?;
        if !addr.ip().is_loopback() {
            bail!("node {url}: only loopback targets are allowed");
        }
        Ok(Self {
            url: trimmed.to_string(),
            addr,
        })
    }

    pub fn parse_list(list: &str) -> Result<Vec<Self>> {
        let nodes: Vec<Self> = list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Self::parse)
            .collect::<Result<_>>()?;
        if nodes.is_empty() {
            bail!("no node given");
        }
        Ok(nodes)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Websocket,
    Polling,
}

impl TransportKind {
    /// Transport of client `i` when `share` of all clients use polling,
    /// spread evenly (client 0 is always WebSocket unless share is 1).
    pub fn for_client(i: usize, share: f64) -> Self {
        let share = share.clamp(0.0, 1.0);
        let before = (i as f64 * share).floor();
        let after = ((i + 1) as f64 * share).floor();
        if after > before {
            Self::Polling
        } else {
            Self::Websocket
        }
    }
}

/// How clients connect, shared by every connection of a run.
#[derive(Debug, Clone)]
pub struct ConnectOpts {
    /// Engine.IO path, e.g. `/socket.io/`.
    pub path: String,
    /// Socket.IO namespace, e.g. `/`.
    pub namespace: String,
    /// WebSocket read buffer per connection, in bytes.
    pub ws_read_buffer: usize,
    /// Bound on the whole handshake (TCP, Engine.IO, Socket.IO CONNECT).
    pub timeout: Duration,
    /// Number of loopback source addresses to spread over (127.0.0.2 ..);
    /// 0 lets the kernel choose.
    pub source_ips: u8,
    /// WebSocket clients offer permessage-deflate ([`ws_deflate`]).
    pub ws_deflate: bool,
}

impl ConnectOpts {
    /// Source address for client `i`.
    pub fn source_ip(&self, i: usize) -> Option<Ipv4Addr> {
        (self.source_ips > 0)
            .then(|| Ipv4Addr::new(127, 0, 0, 2 + (i % self.source_ips as usize) as u8))
    }

    /// `path?EIO=4&transport=<t>[&sid=..]`.
    pub fn query(&self, transport: &str, sid: Option<&str>) -> String {
        let mut q = format!("{}?EIO=4&transport={transport}", self.path);
        if let Some(sid) = sid {
            q.push_str("&sid=");
            q.push_str(sid);
        }
        q
    }
}

/// Opens a TCP connection to `addr` from `source` (port chosen by the
/// kernel), counting what is read from it into `wire`.
pub async fn tcp_connect(
    addr: SocketAddr,
    source: Option<Ipv4Addr>,
    wire: &Arc<WireStats>,
) -> Result<Counted<TcpStream>> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.set_reuseaddr(true)?;
        socket
            .bind(SocketAddr::new(IpAddr::V4(ip), 0))
            .with_context(|| format!("bind {ip}:0"))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(Counted::new(stream, wire.clone()))
}

/// One Socket.IO client connection.
pub struct Conn {
    inner: Inner,
    namespace: String,
    /// The Socket.IO socket id from the CONNECT reply.
    pub sid: String,
}

enum Inner {
    Ws(Box<ws::WsConn>),
    WsDeflate(Box<ws_deflate::DeflateConn>),
    Polling(polling::PollingConn),
}

/// A Socket.IO packet received: the Engine.IO MESSAGE text after its `4`,
/// sharing the frame's buffer.
#[derive(Debug, Clone)]
pub struct Packet {
    frame: Utf8Bytes,
}

impl Packet {
    /// Wraps an Engine.IO MESSAGE frame (`4...`); `None` for other types.
    pub fn from_message(frame: Utf8Bytes) -> Option<Self> {
        frame.starts_with('4').then_some(Self { frame })
    }
}

impl std::ops::Deref for Packet {
    type Target = str;

    fn deref(&self) -> &str {
        &self.frame[1..]
    }
}

impl Conn {
    /// Connects and joins the namespace, all within `opts.timeout`; what
    /// the connection reads from TCP is counted into `wire`.
    pub async fn connect(
        node: &Node,
        transport: TransportKind,
        opts: &ConnectOpts,
        source: Option<Ipv4Addr>,
        wire: &Arc<WireStats>,
    ) -> Result<Self> {
        tokio::time::timeout(
            opts.timeout,
            Self::connect_inner(node, transport, opts, source, wire),
        )
        .await
        .map_err(|_| {
            anyhow!(
                "connect to {} timed out after {:?}",
                node.addr,
                opts.timeout
            )
        })?
    }

    async fn connect_inner(
        node: &Node,
        transport: TransportKind,
        opts: &ConnectOpts,
        source: Option<Ipv4Addr>,
        wire: &Arc<WireStats>,
    ) -> Result<Self> {
        let inner = match transport {
            TransportKind::Websocket if opts.ws_deflate => Inner::WsDeflate(Box::new(
                ws_deflate::DeflateConn::open(node, opts, source, wire).await?,
            )),
            TransportKind::Websocket => {
                Inner::Ws(Box::new(ws::WsConn::open(node, opts, source, wire).await?))
            }
            TransportKind::Polling => {
                Inner::Polling(polling::PollingConn::open(node, opts, source, wire).await?)
            }
        };
        let mut conn = Self {
            inner,
            namespace: opts.namespace.clone(),
            sid: String::new(),
        };
        conn.send(protocol::connect_packet(&opts.namespace)).await?;
        loop {
            let Some(pkt) = conn.recv().await? else {
                bail!("closed before the Socket.IO CONNECT reply");
            };
            let Some(p) = protocol::parse_sio(&pkt) else {
                continue;
            };
            if p.nsp != conn.namespace {
                continue;
            }
            match p.kind {
                SioKind::Connect => {
                    conn.sid = protocol::connect_sid(p.data)
                        .ok_or_else(|| anyhow!("CONNECT reply without sid: {}", p.data))?;
                    return Ok(conn);
                }
                SioKind::ConnectError => bail!("CONNECT refused: {}", p.data),
                _ => continue,
            }
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Sends one Socket.IO packet (the text after the Engine.IO `4`, which
    /// the packet builders in [`protocol`] already include).
    pub async fn send(&mut self, packet: String) -> Result<()> {
        match &mut self.inner {
            Inner::Ws(c) => c.send(packet).await,
            Inner::WsDeflate(c) => c.send(packet).await,
            Inner::Polling(c) => c.send(packet).await,
        }
    }

    /// The next Socket.IO packet, `None` once the server closed the session.
    /// Cancel-safe: may be used in `select!`.
    pub async fn recv(&mut self) -> Result<Option<Packet>> {
        match &mut self.inner {
            Inner::Ws(c) => c.recv().await,
            Inner::WsDeflate(c) => c.recv().await,
            Inner::Polling(c) => Ok(c.recv().await),
        }
    }

    /// Emits `event(args..)` with an ack and waits for the ack (answering
    /// pings meanwhile, dropping other packets). `Err` when the server said
    /// `ok:false`, closed, or did not answer within `timeout`.
    pub async fn call(
        &mut self,
        ack_id: u64,
        event: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<()> {
        let packet = protocol::event_packet(&self.namespace, Some(ack_id), event, args);
        self.send(packet).await?;
        let wait = async {
            loop {
                let Some(pkt) = self.recv().await? else {
                    bail!("closed while waiting for the {event} ack");
                };
                let Some(p) = protocol::parse_sio(&pkt) else {
                    continue;
                };
                if p.kind == SioKind::Ack && p.ack_id == Some(ack_id) && p.nsp == self.namespace {
                    return protocol::ack_result(p.data)
                        .map_err(|e| anyhow!("{event} refused: {e}"));
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| anyhow!("no {event} ack within {timeout:?}"))?
    }

    /// Leaves the namespace and closes the transport, best effort.
    pub async fn close(self) {
        let packet = protocol::disconnect_packet(&self.namespace);
        match self.inner {
            Inner::Ws(c) => c.close(packet).await,
            Inner::WsDeflate(c) => c.close(packet).await,
            Inner::Polling(c) => c.close(packet).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loopback_nodes_only() {
        let n = Node::parse("http://127.0.0.1:3001").unwrap();
        assert_eq!(n.addr, "127.0.0.1:3001".parse().unwrap());
        assert_eq!(Node::parse("127.0.0.1:3002/").unwrap().addr.port(), 3002);
        assert!(Node::parse("http://127.0.0.1:3001/socket.io/").is_err());
        assert!(Node::parse("http://10.0.0.1:3001").is_err());
        assert!(Node::parse("nonsense").is_err());
        let list = Node::parse_list("http://127.0.0.1:1, http://127.0.0.1:2,").unwrap();
        assert_eq!(list.len(), 2);
        assert!(Node::parse_list("").is_err());
    }

    #[test]
    fn polling_share_is_spread_evenly() {
        let count = |share: f64, n: usize| {
            (0..n)
                .filter(|&i| TransportKind::for_client(i, share) == TransportKind::Polling)
                .count()
        };
        assert_eq!(count(0.0, 1000), 0);
        assert_eq!(count(0.1, 1000), 100);
        assert_eq!(count(0.25, 10), 2);
        assert_eq!(count(1.0, 7), 7);
        assert_eq!(TransportKind::for_client(0, 0.1), TransportKind::Websocket);
    }

    #[test]
    fn source_ips_rotate_over_loopback() {
        let opts = ConnectOpts {
            path: "/socket.io/".into(),
            namespace: "/".into(),
            ws_read_buffer: 4096,
            timeout: Duration::from_secs(1),
            source_ips: 3,
            ws_deflate: false,
        };
        assert_eq!(opts.source_ip(0), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(opts.source_ip(4), Some(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(
            opts.query("polling", Some("abc")),
            "/socket.io/?EIO=4&transport=polling&sid=abc"
        );
        let none = ConnectOpts {
            source_ips: 0,
            ..opts
        };
        assert_eq!(none.source_ip(5), None);
    }
}
