//! What the hooks tests run against: a hooks backend (a real tonic server
//! on `127.0.0.1:0` that records every call), a gateway node on port 0 with
//! [`GrpcHooks`], and a raw Socket.IO client over WebSocket.

#![allow(dead_code)] // each test binary uses its own part

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gateway::hooks::grpc::GrpcHooks;
use gateway::{Config, Listeners, Node, SocketIo};
use gateway_proto::common::v1::Payload;
use gateway_proto::hooks::v1::hooks_server::{Hooks, HooksServer};
use gateway_proto::hooks::v1::{
    Allow, OnConnectRequest, OnConnectResponse, OnDisconnectRequest, OnDisconnectResponse,
    OnEventRequest, OnEventResponse, Refuse, on_connect_response::Decision,
};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderName;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// How long any single wait in these tests may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Polls `cond` until it holds; panics with `what` after [`WAIT`].
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------
// The backend

/// A call the backend received, with the `grpc-timeout` it carried.
#[derive(Debug, Clone)]
pub enum Call {
    Connect(OnConnectRequest, Option<Duration>),
    Event(OnEventRequest, Option<Duration>),
    Disconnect(OnDisconnectRequest),
}

#[derive(Default)]
pub struct BackendState {
    calls: Mutex<Vec<Call>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    connect_delay_ms: AtomicU64,
    event_delay_ms: AtomicU64,
}

impl BackendState {
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().clone()
    }

    pub fn connects(&self) -> Vec<OnConnectRequest> {
        self.calls
            .lock()
            .iter()
            .filter_map(|c| match c {
                Call::Connect(r, _) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn events(&self) -> Vec<OnEventRequest> {
        self.calls
            .lock()
            .iter()
            .filter_map(|c| match c {
                Call::Event(r, _) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn disconnects(&self) -> Vec<OnDisconnectRequest> {
        self.calls
            .lock()
            .iter()
            .filter_map(|c| match c {
                Call::Disconnect(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    /// The most calls the backend was ever handling at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn set_connect_delay(&self, d: Duration) {
        self.connect_delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn set_event_delay(&self, d: Duration) {
        self.event_delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    fn enter(self: &Arc<Self>) -> InFlight {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(self.clone())
    }
}

/// Counts a call in flight until dropped (also when the gateway cancels it).
struct InFlight(Arc<BackendState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn grpc_timeout<T>(req: &Request<T>) -> Option<Duration> {
    let text = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The test backend's behaviour:
/// - OnConnect: `auth.name` a non-empty string -> allow (user id = name,
///   rooms `lobby`, data `{"name":...}`); otherwise refuse with
///   "name required" and data `{"code":42}`.
/// - OnEvent: `echo` acks with its own arguments (binary kept); `reject`
///   fails with INVALID_ARGUMENT "text too long"; `crash` with INTERNAL;
///   anything else acks `[{"seq":N,"event":name}]`.
/// - OnDisconnect: recorded.
#[derive(Clone)]
struct TestHooks(Arc<BackendState>);

#[tonic::async_trait]
impl Hooks for TestHooks {
    async fn on_connect(
        &self,
        request: Request<OnConnectRequest>,
    ) -> Result<Response<OnConnectResponse>, Status> {
        let _guard = self.0.enter();
        let timeout = grpc_timeout(&request);
        let req = request.into_inner();
        self.0
            .calls
            .lock()
            .push(Call::Connect(req.clone(), timeout));
        let delay = self.0.connect_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let auth: serde_json::Value = serde_json::from_str(&req.auth).unwrap_or_default();
        let decision = match auth.get("name").and_then(|n| n.as_str()) {
            Some(name) if !name.is_empty() => Decision::Allow(Allow {
                user_id: name.to_owned(),
                rooms: vec!["lobby".to_owned()],
                data: serde_json::json!({ "name": name }).to_string(),
            }),
            _ => Decision::Refuse(Refuse {
                message: "name required".to_owned(),
                data: r#"{"code":42}"#.to_owned(),
            }),
        };
        Ok(Response::new(OnConnectResponse {
            decision: Some(decision),
        }))
    }

    async fn on_event(
        &self,
        request: Request<OnEventRequest>,
    ) -> Result<Response<OnEventResponse>, Status> {
        let _guard = self.0.enter();
        let timeout = grpc_timeout(&request);
        let req = request.into_inner();
        self.0.calls.lock().push(Call::Event(req.clone(), timeout));
        let delay = self.0.event_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let ack_args = match req.event.as_str() {
            "echo" => req.args,
            "reject" => return Err(Status::invalid_argument("text too long")),
            "crash" => return Err(Status::internal("boom")),
            name => Some(Payload {
                json_args: serde_json::json!([{ "seq": req.sequence, "event": name }]).to_string(),
                attachments: Vec::new(),
            }),
        };
        Ok(Response::new(OnEventResponse { ack_args }))
    }

    async fn on_disconnect(
        &self,
        request: Request<OnDisconnectRequest>,
    ) -> Result<Response<OnDisconnectResponse>, Status> {
        self.0
            .calls
            .lock()
            .push(Call::Disconnect(request.into_inner()));
        Ok(Response::new(OnDisconnectResponse {}))
    }
}

/// A running test backend.
pub struct Backend {
    pub addr: SocketAddr,
    pub state: Arc<BackendState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Backend {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(BackendState::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let service = HooksServer::new(TestHooks(state.clone()));
        let task = tokio::spawn(async move {
            Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server (it closes its listener and connections).
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("the backend stops")
                .unwrap();
        }
    }
}

// ---------------------------------------------------------------------------
// The gateway node

pub struct TestNode {
    pub addr: SocketAddr,
    pub io: SocketIo,
    pub hooks: Arc<GrpcHooks>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestNode {
    /// A node on `127.0.0.1:0` with `toml` as its configuration and
    /// [`GrpcHooks`] built from it.
    pub async fn start(toml: &str) -> Self {
        let config = Config::from_toml(toml).unwrap();
        let hooks = Arc::new(GrpcHooks::from_config(&config).unwrap());
        let node = Node::new(config, hooks.clone()).unwrap();
        hooks.attach_metrics(node.metrics().clone());
        let io = node.io().clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            node.serve(Listeners::new(listener), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            io,
            hooks,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("the node stops")
                .unwrap();
        }
    }
}

// ---------------------------------------------------------------------------
// A raw Socket.IO client over WebSocket

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A frame from the server: text or binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

pub struct RawClient {
    ws: Ws,
    pending: VecDeque<Frame>,
}

impl RawClient {
    /// Opens an Engine.IO session over WebSocket; `query` is appended to the
    /// handshake's query, `headers` are added to its request.
    pub async fn open(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> Self {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket{query}");
        let mut request = url.into_client_request().unwrap();
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            request.headers_mut().insert(name, value.parse().unwrap());
        }
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("websocket handshake in time")
            .expect("websocket handshake");
        let mut client = Self {
            ws,
            pending: VecDeque::new(),
        };
        let open = client.text().await;
        assert!(open.starts_with("0{"), "open packet, got {open}");
        client
    }

    pub async fn send(&mut self, text: impl Into<String>) {
        self.ws.send(Message::text(text.into())).await.unwrap();
    }

    pub async fn send_binary(&mut self, data: &[u8]) {
        self.ws.send(Message::binary(data.to_vec())).await.unwrap();
    }

    /// The next Socket.IO frame (answers pings on the way).
    pub async fn frame(&mut self) -> Frame {
        if let Some(f) = self.pending.pop_front() {
            return f;
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("a frame from the server in time")
                .expect("the connection is open")
                .expect("a websocket frame");
            match msg {
                Message::Text(t) if t.as_str() == "2" => self.send("3").await,
                Message::Text(t) => return Frame::Text(t.as_str().to_owned()),
                Message::Binary(b) => return Frame::Binary(b.to_vec()),
                Message::Close(_) => panic!("the server closed the connection"),
                _ => {}
            }
        }
    }

    pub async fn text(&mut self) -> String {
        match self.frame().await {
            Frame::Text(t) => t,
            Frame::Binary(b) => panic!("expected a text frame, got {} bytes", b.len()),
        }
    }

    /// Connects to namespace `nsp` with `auth` (JSON text): the sid, or the
    /// body of the CONNECT_ERROR.
    pub async fn connect(&mut self, nsp: &str, auth: Option<&str>) -> Result<String, String> {
        let prefix = nsp_prefix(nsp);
        self.send(format!("40{prefix}{}", auth.unwrap_or(""))).await;
        let reply = self.text().await;
        if let Some(body) = reply.strip_prefix(&format!("40{prefix}")) {
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            return Ok(v["sid"].as_str().unwrap().to_owned());
        }
        match reply.strip_prefix(&format!("44{prefix}")) {
            Some(body) => Err(body.to_owned()),
            None => panic!("expected a CONNECT reply for {nsp}, got {reply}"),
        }
    }

    /// Emits `event(...args)` (`args`: the JSON array text of the
    /// arguments) asking for ack `id`, if any.
    pub async fn emit(&mut self, nsp: &str, event: &str, args: &str, ack: Option<u64>) {
        let prefix = nsp_prefix(nsp);
        let id = ack.map(|a| a.to_string()).unwrap_or_default();
        let inner = args
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .expect("args is a JSON array");
        let sep = if inner.is_empty() { "" } else { "," };
        self.send(format!("42{prefix}{id}[\"{event}\"{sep}{inner}]"))
            .await;
    }

    /// Waits for the ack `id` of namespace `nsp`: its arguments' JSON text.
    pub async fn ack(&mut self, nsp: &str, id: u64) -> String {
        let head = format!("43{}{id}", nsp_prefix(nsp));
        loop {
            let text = self.text().await;
            if let Some(args) = text.strip_prefix(&head) {
                return args.to_owned();
            }
            self.skip(&text);
        }
    }

    fn skip(&self, text: &str) {
        assert!(
            !text.starts_with("44") && !text.starts_with('1'),
            "unexpected frame while waiting: {text}"
        );
    }

    /// Leaves namespace `nsp` (`41`).
    pub async fn leave(&mut self, nsp: &str) {
        self.send(format!("41{}", nsp_prefix(nsp))).await;
    }

    /// Closes the WebSocket.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

fn nsp_prefix(nsp: &str) -> String {
    if nsp == "/" {
        String::new()
    } else {
        format!("{nsp},")
    }
}
