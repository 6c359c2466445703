//! A small Socket.IO v5 client over a raw WebSocket (Engine.IO v4): enough to
//! connect to one namespace, join rooms with `$join`, receive events (binary
//! ones included), answer the server's acks (or not), and see a server
//! disconnect.
//!
//! One reader task answers pings and acks at once and hands everything else
//! to the test through an inbox, in order.

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

/// How the client answers an event that asks for an ack.
#[derive(Debug, Clone)]
pub enum AckMode {
    /// With the event's own arguments, prefixed by the socket id:
    /// `[sid, ...args]`.
    Echo,
    /// Never: the server times out.
    Never,
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
struct Packet {
    kind: u8,
    attachments: usize,
    nsp: String,
    id: Option<u64>,
    data: String,
}

fn parse(text: &str) -> Option<Packet> {
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

fn prefix(nsp: &str) -> String {
    if nsp == "/" {
        String::new()
    } else {
        format!("{nsp},")
    }
}

impl SioClient {
    /// Connects to the node at `addr`, namespace `nsp`, and waits for the
    /// CONNECT reply.
    pub async fn connect(addr: SocketAddr, nsp: &str, mode: AckMode) -> Self {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        let (mut sink, mut stream) = ws.split();
        let open = match stream.next().await {
            Some(Ok(Message::Text(t))) => t.to_string(),
            other => panic!("expected the open packet, got {other:?}"),
        };
        assert!(open.starts_with('0'), "open packet: {open}");
        sink.send(Message::text(format!("40{}", prefix(nsp))))
            .await
            .expect("send CONNECT");
        let id = loop {
            match stream.next().await {
                Some(Ok(Message::Text(t))) => {
                    let Some(p) = parse(&t) else { continue };
                    if p.nsp != nsp {
                        continue;
                    }
                    match p.kind {
                        0 => {
                            let v: Value = serde_json::from_str(&p.data).expect("CONNECT json");
                            break v["sid"].as_str().expect("sid").to_owned();
                        }
                        4 => panic!("CONNECT_ERROR for {nsp}: {}", p.data),
                        _ => {}
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("connection ended before CONNECT: {other:?}"),
            }
        };

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
                                    format!("43{}{ack}{}", prefix(&nsp), Value::Array(reply));
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
            nsp: nsp.to_owned(),
            out,
            inbox,
            pending,
            next_ack: AtomicU64::new(1),
            reader,
        }
    }

    /// Emits `event(...args)` and waits for the server's ack.
    pub async fn call(&self, event: &str, args: Vec<Value>) -> Vec<Value> {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        let mut all = vec![Value::String(event.to_owned())];
        all.extend(args);
        let text = format!("42{}{id}{}", prefix(&self.nsp), Value::Array(all));
        self.out.send(Message::text(text)).expect("connection open");
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .unwrap_or_else(|_| panic!("no ack for {event} within 10 s"))
            .expect("ack")
    }

    /// Joins `room` with the reserved `$join` event (the policy must allow it).
    pub async fn join(&self, room: &str) {
        let reply = self
            .call("$join", vec![Value::String(room.to_owned())])
            .await;
        assert_eq!(reply, vec![serde_json::json!({"ok": true})], "$join {room}");
    }

    /// The next thing the server sent, within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Incoming> {
        tokio::time::timeout(within, self.inbox.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next event, skipping nothing: panics on anything else or on
    /// silence for 10 s.
    pub async fn event(&mut self) -> (String, Vec<Value>, Vec<Bytes>) {
        match self.next(Duration::from_secs(10)).await {
            Some(Incoming::Event {
                name,
                args,
                attachments,
                ..
            }) => (name, args, attachments),
            other => panic!("{}: expected an event, got {other:?}", self.id),
        }
    }

    /// Every event received until the one named `marker` (included), within
    /// 10 s. A marker emitted to the same target right after a message
    /// travels the same channels behind it, so a duplicate of the message
    /// would arrive before the marker.
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

    /// Waits (10 s at most) for the server's disconnect or the close.
    pub async fn disconnected(&mut self) -> Incoming {
        loop {
            match self.next(Duration::from_secs(10)).await {
                Some(Incoming::Event { .. }) => continue,
                Some(other) => return other,
                None => panic!("{}: not disconnected within 10 s", self.id),
            }
        }
    }

    /// Closes the WebSocket.
    pub fn close(&self) {
        let _ = self.out.send(Message::Close(None));
    }
}

#[test]
fn parses_packet_headers() {
    let p = parse(r#"42/chat,12["a",1]"#).unwrap();
    assert_eq!((p.kind, p.nsp.as_str(), p.id), (2, "/chat", Some(12)));
    assert_eq!(p.data, r#"["a",1]"#);
    let p = parse(r#"451-["b",{"_placeholder":true,"num":0}]"#).unwrap();
    assert_eq!(
        (p.kind, p.attachments, p.nsp.as_str(), p.id),
        (5, 1, "/", None)
    );
    let p = parse("41/chat,").unwrap();
    assert_eq!((p.kind, p.nsp.as_str(), p.data.as_str()), (1, "/chat", ""));
    assert!(parse("2").is_none());
}
