//! Test support shared by the integration tests: a node on port 0 stopped by
//! a oneshot, the conformance hooks (the server the official Socket.IO test
//! suite expects), raw Engine.IO clients over WebSocket and HTTP
//! long-polling that exchange packet strings, and waits bounded by a
//! deadline.
//!
//! Nothing here sleeps to make an assertion: waits end as soon as their
//! condition holds and fail loudly at [`DEADLINE`].

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gateway::engine::Engine;
use gateway::hooks::{ConnectDecision, ConnectRequest, Event, HookError, Hooks, NoHooks};
use gateway::reason::DisconnectReason;
use gateway::socketio::{Payload, Socket};
use gateway::{Config, Listeners, Node, RunError, SocketIo};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite};

/// The longest any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// The configuration the official test suites run against: pingInterval
/// 300 ms, pingTimeout 200 ms, connectTimeout 1000 ms, maxPayload 1000000,
/// CORS `*`, namespaces `/` and `/custom`.
pub const CONFORMANCE: &str = r#"
[server]
cors_origins = ["*"]
ping_interval_ms = 300
ping_timeout_ms = 200
connect_timeout_ms = 1000
max_payload = 1000000
[[namespaces]]
name = "/"
[[namespaces]]
name = "/custom"
"#;

// ---------------------------------------------------------------------------
// Nodes

/// A node serving on `127.0.0.1:<random port>`; dropping it stops it.
pub struct TestNode {
    pub addr: SocketAddr,
    pub io: SocketIo,
    pub engine: Arc<Engine>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), RunError>>>,
}

/// Starts a node with `toml` and the conformance hooks.
pub async fn start(toml: &str) -> TestNode {
    start_with(toml, Arc::new(Conformance::default())).await
}

/// Starts a node with `toml` and no application hooks (the product default).
pub async fn start_plain(toml: &str) -> TestNode {
    start_with(toml, Arc::new(NoHooks)).await
}

/// Starts a node with `toml` and `hooks`.
pub async fn start_with(toml: &str, hooks: Arc<dyn Hooks>) -> TestNode {
    let config = Config::from_toml(toml).expect("test configuration parses");
    let node = Node::new(config, hooks).expect("test configuration is valid");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let addr = listener.local_addr().expect("local address");
    let io = node.io().clone();
    let engine = node.engine().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(node.serve(Listeners::new(listener), async move {
        let _ = stopped.await;
    }));
    TestNode {
        addr,
        io,
        engine,
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestNode {
    /// `http://addr/socket.io/?<query>`
    pub fn url(&self, query: &str) -> String {
        format!("http://{}/socket.io/?{query}", self.addr)
    }

    /// `ws://addr/socket.io/?<query>`
    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/socket.io/?{query}", self.addr)
    }

    /// Whether the serving task is still running (it ends only on stop or
    /// on a fatal error).
    pub fn is_serving(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the node and waits for it to finish cleanly.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("node stops within its grace period")
                .expect("node task did not panic");
            result.expect("node served without error");
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

// ---------------------------------------------------------------------------
// Conformance hooks

/// The behaviour the official Socket.IO test suite expects of the server:
/// - on connect, emits `auth` with the CONNECT auth object (or `{}`);
/// - `message(...args)` -> emits `message-back(...args)`, binary kept;
/// - `message-with-ack(...args)` -> acks with `args`;
/// - `request-ack(event, ...args)` -> emits `event(...args)` asking for an
///   ack, then emits `ack-result` with the client's answer, or
///   `{"timeout":true}` after [`Conformance::ACK_TIMEOUT`].
///
/// It also records every disconnect with its reason.
#[derive(Default)]
pub struct Conformance {
    disconnects: Mutex<Vec<(String, DisconnectReason)>>,
}

impl Conformance {
    pub const ACK_TIMEOUT: Duration = Duration::from_millis(600);

    /// The reasons recorded so far for socket `id`.
    pub fn reasons_of(&self, id: &str) -> Vec<DisconnectReason> {
        self.disconnects
            .lock()
            .expect("disconnect log")
            .iter()
            .filter(|(sid, _)| sid == id)
            .map(|(_, r)| *r)
            .collect()
    }
}

/// `[a, b, c]` as raw JSON values, or an error for anything else.
fn split_args(args: &str) -> Result<Vec<Box<RawValue>>, HookError> {
    serde_json::from_str(args).map_err(|e| HookError::Failed(format!("arguments: {e}")))
}

#[async_trait::async_trait]
impl Hooks for Conformance {
    fn handles_connect(&self, _namespace: &str) -> bool {
        true
    }

    fn handles_events(&self, _namespace: &str) -> bool {
        true
    }

    async fn on_connect(&self, req: ConnectRequest<'_>) -> Result<ConnectDecision, HookError> {
        let auth = match req.auth {
            Some(a) => a.clone(),
            None => Value::Object(Map::new()),
        };
        Ok(ConnectDecision::Allow {
            user_id: None,
            rooms: Vec::new(),
            data: Some(auth),
        })
    }

    fn on_connected(&self, socket: &Arc<Socket>) {
        let auth = socket.data().unwrap_or(Value::Object(Map::new()));
        socket
            .emit("auth", &Payload::from_values(&[auth]))
            .expect("emit auth");
    }

    async fn on_event(
        &self,
        socket: &Arc<Socket>,
        event: Event,
    ) -> Result<Option<Payload>, HookError> {
        match event.name.as_str() {
            "message" => {
                socket
                    .emit("message-back", &event.args)
                    .map_err(|e| HookError::Failed(e.to_string()))?;
                Ok(None)
            }
            "message-with-ack" => Ok(Some(event.args)),
            "request-ack" => {
                let list = split_args(&event.args.args)?;
                let name: String = list
                    .first()
                    .and_then(|v| serde_json::from_str(v.get()).ok())
                    .ok_or_else(|| HookError::Failed("request-ack(event, ...)".into()))?;
                let rest: Vec<&str> = list[1..].iter().map(|v| v.get()).collect();
                let inner = Payload {
                    args: format!("[{}]", rest.join(",")),
                    attachments: event.args.attachments.clone(),
                };
                // Asked now, so that requests reach the client in order; the
                // answer is awaited on the side.
                let pending = socket
                    .send_with_ack(&name, &inner)
                    .map_err(|e| HookError::Failed(e.to_string()))?;
                let socket = socket.clone();
                tokio::spawn(async move {
                    let answer = pending
                        .wait(&socket, Self::ACK_TIMEOUT)
                        .await
                        .unwrap_or_else(|_| {
                            Payload::from_values(&[serde_json::json!({ "timeout": true })])
                        });
                    let _ = socket.emit("ack-result", &answer);
                });
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    fn on_disconnect(&self, socket: &Arc<Socket>, reason: DisconnectReason) {
        self.disconnects
            .lock()
            .expect("disconnect log")
            .push((socket.id().to_owned(), reason));
    }
}

// ---------------------------------------------------------------------------
// Waiting

/// Polls `condition` every few milliseconds until it holds; fails the test
/// with `what` after [`DEADLINE`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `fut` and fails the test with `what` if it takes over [`DEADLINE`].
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A short pause that only orders events between two clients (for example
/// "this GET is pending before that POST is sent"); never an assertion.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

// ---------------------------------------------------------------------------
// Engine.IO helpers

/// The open packet's JSON, checked to be an open packet (`0{...}`).
pub fn parse_open(packet: &str) -> Map<String, Value> {
    let json = packet
        .strip_prefix('0')
        .unwrap_or_else(|| panic!("not an open packet: {packet:?}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("open packet JSON {json:?}: {e}"))
}

/// The packets of a polling payload (`\x1e`-separated).
pub fn packets(payload: &str) -> Vec<String> {
    payload.split('\u{1e}').map(str::to_owned).collect()
}

/// Checks an Engine.IO error answer: HTTP `status` and the JSON body
/// `{"code":code,"message":<string>}`.
pub fn assert_engine_error(status: u16, body: &str, expected_status: u16, code: u64) {
    assert_eq!(status, expected_status, "status of {body:?}");
    let value: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("error body {body:?}: {e}"));
    assert_eq!(value["code"], code, "error code in {body}");
    assert!(value["message"].is_string(), "error message in {body}");
}

/// The `sid` of a Socket.IO CONNECT reply (`40{"sid":..}` or
/// `40/nsp,{"sid":..}`) for namespace `nsp`; fails on anything else.
pub fn connect_reply_sid(packet: &str, nsp: &str) -> String {
    let prefix = if nsp == "/" {
        "40".to_owned()
    } else {
        format!("40{nsp},")
    };
    let json = packet
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("expected a CONNECT reply for {nsp}, got {packet:?}"));
    let value: Map<String, Value> =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("CONNECT reply JSON {json:?}: {e}"));
    assert_eq!(
        value.keys().collect::<Vec<_>>(),
        ["sid"],
        "CONNECT reply keys"
    );
    value["sid"]
        .as_str()
        .expect("the socket id is a string")
        .to_owned()
}

// ---------------------------------------------------------------------------
// WebSocket client

/// One message received over WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Text(String),
    Binary(Vec<u8>),
    /// The server closed the connection (close frame, EOF or reset).
    Closed,
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw Engine.IO client over WebSocket: sends and receives packet strings.
pub struct WsClient {
    ws: Ws,
    /// The Engine.IO session id (empty until known).
    pub sid: String,
    /// Engine.IO pings answered so far by the receive helpers.
    pub pings: usize,
}

/// Opens a WebSocket to `url`; the HTTP status of a refused handshake is in
/// the error.
pub async fn ws_connect(url: &str) -> Result<WsClient, tungstenite::Error> {
    let (ws, _) = within("websocket connect", tokio_tungstenite::connect_async(url)).await?;
    Ok(WsClient {
        ws,
        sid: String::new(),
        pings: 0,
    })
}

/// The HTTP status and body of a refused WebSocket handshake to `url`.
pub async fn ws_refused(url: &str) -> (u16, String) {
    match ws_connect(url).await {
        Ok(_) => panic!("websocket handshake to {url} was accepted"),
        Err(tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (response.status().as_u16(), body)
        }
        Err(e) => panic!("websocket handshake to {url} failed without an HTTP answer: {e}"),
    }
}

impl WsClient {
    /// Opens an Engine.IO session over WebSocket and reads its open packet.
    pub async fn open(node: &TestNode) -> (Self, Map<String, Value>) {
        let mut client = ws_connect(&node.ws_url("EIO=4&transport=websocket"))
            .await
            .expect("websocket handshake");
        let open = parse_open(&client.next_text().await);
        client.sid = open["sid"].as_str().expect("sid").to_owned();
        (client, open)
    }

    /// Opens a session and connects namespace `/` (consuming the conformance
    /// `auth` event when `auth_event`); returns the client and its socket id.
    pub async fn socket(node: &TestNode, auth_event: bool) -> (Self, String) {
        let (mut client, _) = Self::open(node).await;
        let id = client.connect_ns("/", None).await;
        if auth_event {
            client.expect(r#"42["auth",{}]"#).await;
        }
        (client, id)
    }

    /// Sends CONNECT for `nsp` with optional auth JSON and returns the socket
    /// id of the reply.
    pub async fn connect_ns(&mut self, nsp: &str, auth: Option<&str>) -> String {
        let mut packet = String::from("40");
        if nsp != "/" {
            packet.push_str(nsp);
            packet.push(',');
        }
        if let Some(auth) = auth {
            packet.push_str(auth);
        }
        self.send(&packet).await;
        let reply = self.recv_text().await;
        connect_reply_sid(&reply, nsp)
    }

    pub async fn send(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .await
            .unwrap_or_else(|e| panic!("send {text:?}: {e}"));
    }

    pub async fn send_binary(&mut self, data: &[u8]) {
        self.ws
            .send(Message::binary(data.to_vec()))
            .await
            .unwrap_or_else(|e| panic!("send binary: {e}"));
    }

    /// Sends without caring whether the server already closed.
    pub async fn send_lossy(&mut self, msg: Msg) {
        let msg = match msg {
            Msg::Text(t) => Message::text(t),
            Msg::Binary(b) => Message::binary(b),
            Msg::Closed => return,
        };
        let _ = self.ws.send(msg).await;
    }

    /// The next message as it arrives (pings included), within [`DEADLINE`].
    pub async fn next_raw(&mut self) -> Msg {
        self.next_raw_within(DEADLINE)
            .await
            .expect("a message within the deadline")
    }

    /// The next message within `limit`, or `None` when nothing came.
    pub async fn next_raw_within(&mut self, limit: Duration) -> Option<Msg> {
        let deadline = Instant::now() + limit;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            return Some(match next {
                None | Some(Ok(Message::Close(_))) | Some(Err(_)) => Msg::Closed,
                Some(Ok(Message::Text(t))) => Msg::Text(t.as_str().to_owned()),
                Some(Ok(Message::Binary(b))) => Msg::Binary(b.to_vec()),
                Some(Ok(_)) => continue,
            });
        }
    }

    /// The next text message as it arrives (pings included).
    pub async fn next_text(&mut self) -> String {
        match self.next_raw().await {
            Msg::Text(t) => t,
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next message that is not an Engine.IO ping or noop; pings are
    /// answered.
    pub async fn recv(&mut self) -> Msg {
        loop {
            match self.next_raw().await {
                Msg::Text(t) if t == "2" => {
                    self.pings += 1;
                    self.send_lossy(Msg::Text("3".into())).await;
                }
                Msg::Text(t) if t == "6" => {}
                other => return other,
            }
        }
    }

    /// Like [`WsClient::recv`] but gives up after `limit`.
    pub async fn recv_within(&mut self, limit: Duration) -> Option<Msg> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_raw_within(left).await? {
                Msg::Text(t) if t == "2" => {
                    self.pings += 1;
                    self.send_lossy(Msg::Text("3".into())).await;
                }
                Msg::Text(t) if t == "6" => {}
                other => return Some(other),
            }
        }
    }

    pub async fn recv_text(&mut self) -> String {
        match self.recv().await {
            Msg::Text(t) => t,
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    pub async fn expect(&mut self, text: &str) {
        assert_eq!(self.recv().await, Msg::Text(text.to_owned()));
    }

    pub async fn expect_binary(&mut self, data: &[u8]) {
        assert_eq!(self.recv().await, Msg::Binary(data.to_vec()));
    }

    /// Waits until the server closes the connection, answering pings and
    /// ignoring anything else it sends first.
    pub async fn expect_closed(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_raw_within(left).await {
                None => panic!("the server did not close the connection"),
                Some(Msg::Closed) => return,
                Some(Msg::Text(t)) if t == "2" => {
                    self.send_lossy(Msg::Text("3".into())).await;
                }
                Some(_) => {}
            }
        }
    }

    /// Asserts that for `window` nothing but pings (answered) and noops
    /// arrives and the connection stays open; returns the pings seen.
    pub async fn expect_only_pings(&mut self, window: Duration) -> usize {
        let mut pings = 0;
        let deadline = Instant::now() + window;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_raw_within(left).await {
                None => return pings,
                Some(Msg::Text(t)) if t == "2" => {
                    pings += 1;
                    self.send_lossy(Msg::Text("3".into())).await;
                }
                Some(Msg::Text(t)) if t == "6" => {}
                Some(other) => panic!("expected only pings, got {other:?}"),
            }
        }
    }

    /// Closes the WebSocket from the client side.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

// ---------------------------------------------------------------------------
// Polling client

/// A raw Engine.IO client over HTTP long-polling.
pub struct PollClient {
    http: reqwest::Client,
    url: String,
    pub sid: String,
}

/// A plain HTTP client with the test deadline.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .expect("HTTP client")
}

/// Status and body of a request.
pub async fn send(req: reqwest::RequestBuilder) -> (u16, String) {
    let response = req.send().await.expect("HTTP request");
    let status = response.status().as_u16();
    let body = response.text().await.expect("HTTP body");
    (status, body)
}

impl PollClient {
    /// Opens an Engine.IO session over polling; returns the open packet JSON.
    pub async fn open(node: &TestNode) -> (Self, Map<String, Value>) {
        let http = http_client();
        let (status, body) = send(http.get(node.url("EIO=4&transport=polling"))).await;
        assert_eq!(status, 200, "handshake answer {body:?}");
        let open = parse_open(&body);
        let sid = open["sid"].as_str().expect("sid").to_owned();
        let url = node.url(&format!("EIO=4&transport=polling&sid={sid}"));
        (Self { http, url, sid }, open)
    }

    /// A polling client for an existing `sid` (or a made-up one).
    pub fn for_sid(node: &TestNode, sid: &str) -> Self {
        Self {
            http: http_client(),
            url: node.url(&format!("EIO=4&transport=polling&sid={sid}")),
            sid: sid.to_owned(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A data GET: status and body.
    pub async fn get(&self) -> (u16, String) {
        send(self.http.get(&self.url)).await
    }

    /// A POST of `body`: status and body.
    pub async fn post(&self, body: impl Into<reqwest::Body>) -> (u16, String) {
        send(self.http.post(&self.url).body(body)).await
    }

    /// POSTs `body` and checks the `ok` answer.
    pub async fn post_ok(&self, body: impl Into<reqwest::Body>) {
        let (status, answer) = self.post(body).await;
        assert_eq!((status, answer.as_str()), (200, "ok"), "POST answer");
    }

    /// GETs until `n` packets other than pings arrived (pings are answered
    /// with a POST of `3`); returns exactly those packets, in order.
    pub async fn recv_packets(&self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        let deadline = Instant::now() + DEADLINE;
        while out.len() < n {
            assert!(Instant::now() < deadline, "got only {out:?}");
            let (status, body) = self.get().await;
            assert_eq!(status, 200, "GET answer {body:?} after {out:?}");
            for packet in packets(&body) {
                if packet == "2" {
                    self.post_ok("3").await;
                } else {
                    out.push(packet);
                }
            }
        }
        assert_eq!(out.len(), n, "more packets than expected: {out:?}");
        out
    }
}
