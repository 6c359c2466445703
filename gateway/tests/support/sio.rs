//! A small Socket.IO v5 client over a raw WebSocket (Engine.IO v4): enough to
//! connect to one namespace, call the reserved events (`$join`, `$leave`,
//! `$publish`) and wait for their acks, receive events (binary ones
//! included), answer the server's acks (at once, by hand, or never), and see
//! a server disconnect. The tests of one node or many use it where they care
//! about events rather than exact packet strings (for those, see
//! [`super::eio`]).
//!
//! One reader task answers pings (and acks, in [`AckMode::Echo`]) at once and
//! hands everything else to the test through an inbox, in order.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use super::eio::nsp_prefix;
use super::wait::{DEADLINE, within};

/// How the client answers an event that asks for an ack.
#[derive(Debug, Clone)]
pub enum AckMode {
    /// At once, with the event's own arguments prefixed by the socket id:
    /// `[sid, ...args]`.
    Echo,
    /// Only when the test says so ([`SioClient::answer_next_ack`]); a
    /// client that is never told to is one the server times out.
    Manual,
}

/// What the server sent, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Event {
        name: String,
        args: Vec<Value>,
        attachments: Vec<Bytes>,
        /// The server asked for an ack.
        ack: Option<u64>,
    },
    /// The server disconnected the socket from its namespace (`41`).
    Disconnect,
    /// The connection closed.
    Closed,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<Value>>>>>;

pub struct SioClient {
    /// The socket id the server gave (`{"sid":...}`).
    pub id: String,
    /// The private id of connection state recovery (`{"pid":...}`), when
    /// the namespace has it on.
    pub pid: Option<String>,
    /// Events of the namespace that came before the CONNECT reply (a
    /// recovery's replay); they are in the inbox first.
    pub before_connect: usize,
    pub nsp: String,
    out: mpsc::UnboundedSender<Message>,
    inbox: mpsc::UnboundedReceiver<Incoming>,
    pending: Pending,
    next_ack: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for SioClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The `4<type>[n-][/nsp,][id]` header of a Socket.IO packet, and its data.
pub struct Packet {
    pub kind: u8,
    pub attachments: usize,
    pub nsp: String,
    pub id: Option<u64>,
    pub data: String,
}

/// The packet an Engine.IO message `text` carries, if it is one.
pub fn parse(text: &str) -> Option<Packet> {
    let rest = text.strip_prefix('4')?;
    let kind = rest.chars().next()?.to_digit(10)? as u8;
    let mut pos = 1;
    let mut attachments = 0;
    if kind == 5 || kind == 6 {
        let dash = rest[pos..].find('-')?;
        attachments = rest[pos..pos + dash].parse().ok()?;
        pos += dash + 1;
    }
    let mut nsp = "/".to_owned();
    if rest[pos..].starts_with('/') {
        let end = rest[pos..].find(',').map_or(rest.len(), |c| pos + c);
        nsp = rest[pos..end].to_owned();
        pos = (end + 1).min(rest.len());
    }
    let digits = rest[pos..].bytes().take_while(u8::is_ascii_digit).count();
    let id = if digits > 0 {
        Some(rest[pos..pos + digits].parse().ok()?)
    } else {
        None
    };
    pos += digits;
    Some(Packet {
        kind,
        attachments,
        nsp,
        id,
        data: rest[pos..].to_owned(),
    })
}

impl SioClient {
    /// Connects to the node at `addr`, namespace `nsp`, and waits for the
    /// CONNECT reply.
    pub async fn connect(addr: SocketAddr, nsp: &str, mode: AckMode) -> Self {
        Self::connect_with(addr, nsp, mode, None).await
    }

    /// [`SioClient::connect`] with `auth` in the CONNECT packet.
    pub async fn connect_with(
        addr: SocketAddr,
        nsp: &str,
        mode: AckMode,
        auth: Option<Value>,
    ) -> Self {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (ws, _) = within("websocket connect", tokio_tungstenite::connect_async(url))
            .await
            .expect("websocket connects");
        let (mut sink, mut stream) = ws.split();
        let open = match within("the open packet", stream.next()).await {
            Some(Ok(Message::Text(t))) => t.to_string(),
            other => panic!("expected the open packet, got {other:?}"),
        };
        assert!(open.starts_with('0'), "open packet: {open}");
        let auth = auth.map(|a| a.to_string()).unwrap_or_default();
        sink.send(Message::text(format!("40{}{auth}", nsp_prefix(nsp))))
            .await
            .expect("send CONNECT");
        // What came before the CONNECT reply, handed to the reader first.
        let mut early = Vec::new();
        let mut before_connect = 0;
        let (id, pid) = loop {
            match within("the CONNECT reply", stream.next()).await {
                Some(Ok(Message::Text(t))) => {
                    let Some(p) = parse(&t) else { continue };
                    if p.nsp != nsp {
                        continue;
                    }
                    match p.kind {
                        0 => {
                            let v: Value = serde_json::from_str(&p.data).expect("CONNECT json");
                            let sid = v["sid"].as_str().expect("sid").to_owned();
                            break (sid, v["pid"].as_str().map(str::to_owned));
                        }
                        4 => panic!("CONNECT_ERROR for {nsp}: {}", p.data),
                        2 | 5 => {
                            before_connect += 1;
                            early.push(Ok(Message::Text(t)));
                        }
                        _ => {}
                    }
                }
                Some(Ok(m @ Message::Binary(_))) => early.push(Ok(m)),
                Some(Ok(_)) => {}
                other => panic!("connection ended before CONNECT: {other:?}"),
            }
        };
        let mut stream = futures_util::stream::iter(early).chain(stream);

        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    return;
                }
            }
        });
        let reader = {
            let out = out.clone();
            let pending = pending.clone();
            let nsp = nsp.to_owned();
            let sid = id.clone();
            tokio::spawn(async move {
                // A binary event waiting for its attachments.
                let mut partial: Option<(Packet, Vec<Bytes>)> = None;
                while let Some(msg) = stream.next().await {
                    let packet = match msg {
                        Ok(Message::Text(t)) if t.as_str() == "2" => {
                            let _ = out.send(Message::text("3"));
                            continue;
                        }
                        Ok(Message::Text(t)) => match parse(&t) {
                            Some(p) if p.attachments > 0 => {
                                partial = Some((p, Vec::new()));
                                continue;
                            }
                            Some(p) => (p, Vec::new()),
                            None => continue,
                        },
                        Ok(Message::Binary(b)) => {
                            let Some((p, mut bins)) = partial.take() else {
                                continue;
                            };
                            bins.push(b);
                            if bins.len() < p.attachments {
                                partial = Some((p, bins));
                                continue;
                            }
                            (p, bins)
                        }
                        Ok(Message::Close(_)) | Err(_) => break,
                        Ok(_) => continue,
                    };
                    let (p, attachments) = packet;
                    if p.nsp != nsp {
                        continue;
                    }
                    match p.kind {
                        2 | 5 => {
                            let mut args: Vec<Value> =
                                serde_json::from_str(&p.data).expect("event json");
                            let name = args.remove(0).as_str().unwrap_or_default().to_owned();
                            if let (Some(ack), AckMode::Echo) = (p.id, &mode) {
                                let mut reply = vec![Value::String(sid.clone())];
                                reply.extend(args.iter().cloned());
                                let text =
                                    format!("43{}{ack}{}", nsp_prefix(&nsp), Value::Array(reply));
                                let _ = out.send(Message::text(text));
                            }
                            let _ = inbox_tx.send(Incoming::Event {
                                name,
                                args,
                                attachments,
                                ack: p.id,
                            });
                        }
                        3 => {
                            let args: Vec<Value> =
                                serde_json::from_str(&p.data).unwrap_or_default();
                            if let Some(tx) = p.id.and_then(|id| pending.lock().remove(&id)) {
                                let _ = tx.send(args);
                            }
                        }
                        1 => {
                            let _ = inbox_tx.send(Incoming::Disconnect);
                        }
                        _ => {}
                    }
                }
                let _ = inbox_tx.send(Incoming::Closed);
            })
        };
        Self {
            id,
            pid,
            before_connect,
            nsp: nsp.to_owned(),
            out,
            inbox,
            pending,
            next_ack: AtomicU64::new(1),
            reader,
        }
    }

    /// Emits `event(...args)` (`args`: a JSON array) and waits for the
    /// server's ack: its arguments.
    pub async fn call(&self, event: &str, args: Value) -> Vec<Value> {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        let mut all = vec![Value::String(event.to_owned())];
        all.extend(
            args.as_array()
                .expect("args is a JSON array")
                .iter()
                .cloned(),
        );
        let text = format!("42{}{id}{}", nsp_prefix(&self.nsp), Value::Array(all));
        self.out.send(Message::text(text)).expect("connection open");
        tokio::time::timeout(DEADLINE, rx)
            .await
            .unwrap_or_else(|_| panic!("no ack for {event} within {DEADLINE:?}"))
            .expect("ack")
    }

    /// Joins `room` with the reserved `$join` event (the policy must allow it).
    pub async fn join(&self, room: &str) {
        let reply = self.call("$join", serde_json::json!([room])).await;
        assert_eq!(reply, [serde_json::json!({"ok": true})], "$join {room}");
    }

    /// Leaves `room` with the reserved `$leave` event.
    pub async fn leave(&self, room: &str) {
        let reply = self.call("$leave", serde_json::json!([room])).await;
        assert_eq!(reply, [serde_json::json!({"ok": true})], "$leave {room}");
    }

    /// The next thing the server sent, within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Incoming> {
        tokio::time::timeout(within, self.inbox.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next event, skipping nothing: panics on anything else or on
    /// silence until [`DEADLINE`].
    pub async fn event(&mut self) -> (String, Vec<Value>, Vec<Bytes>) {
        match self.next(DEADLINE).await {
            Some(Incoming::Event {
                name,
                args,
                attachments,
                ..
            }) => (name, args, attachments),
            other => panic!("{}: expected an event, got {other:?}", self.id),
        }
    }

    /// Every event received until the one named `marker` (included), each
    /// within [`DEADLINE`]. A marker emitted to the same target right after
    /// a message travels the same channels behind it, so a duplicate of the
    /// message would arrive before the marker.
    pub async fn events_until(&mut self, marker: &str) -> Vec<String> {
        let mut names = Vec::new();
        loop {
            let (name, _, _) = self.event().await;
            let done = name == marker;
            names.push(name);
            if done {
                return names;
            }
        }
    }

    /// The next event `(name, args)` within `limit`, passing over a
    /// disconnect; `None` on silence or once the connection closed.
    pub async fn event_within(&mut self, limit: Duration) -> Option<(String, Vec<Value>)> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Incoming::Event { name, args, .. } => return Some((name, args)),
                Incoming::Disconnect => continue,
                Incoming::Closed => return None,
            }
        }
    }

    /// Asserts that no event arrives within `limit`.
    pub async fn no_event(&mut self, limit: Duration) {
        if let Some(event) = self.event_within(limit).await {
            panic!("{}: unexpected event {event:?}", self.id);
        }
    }

    /// Answers the next event that asks for an ack with `[answer]`, passing
    /// over events that do not ask; returns that event's name and arguments.
    pub async fn answer_next_ack(&mut self, answer: Value) -> (String, Vec<Value>) {
        loop {
            match self.next(DEADLINE).await {
                Some(Incoming::Event {
                    name,
                    args,
                    ack: Some(id),
                    ..
                }) => {
                    let text = format!(
                        "43{}{id}{}",
                        nsp_prefix(&self.nsp),
                        Value::Array(vec![answer])
                    );
                    self.out.send(Message::text(text)).expect("connection open");
                    return (name, args);
                }
                Some(Incoming::Event { .. }) => continue,
                other => panic!("{}: expected an event with an ack, got {other:?}", self.id),
            }
        }
    }

    /// Waits ([`DEADLINE`] at most) for the server's disconnect or the
    /// close, passing over events.
    pub async fn disconnected(&mut self) -> Incoming {
        loop {
            match self.next(DEADLINE).await {
                Some(Incoming::Event { .. }) => continue,
                Some(other) => return other,
                None => panic!("{}: not disconnected within {DEADLINE:?}", self.id),
            }
        }
    }

    /// Leaves the namespace (`41`), the connection staying open.
    pub fn leave_namespace(&self) {
        let text = format!("41{}", nsp_prefix(&self.nsp));
        let _ = self.out.send(Message::text(text));
    }

    /// Closes the WebSocket.
    pub fn close(&self) {
        let _ = self.out.send(Message::Close(None));
    }
}
