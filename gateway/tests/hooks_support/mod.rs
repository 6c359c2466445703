//! What the hooks tests run against besides the shared harness: a hooks
//! backend (a real tonic server on `127.0.0.1:0` that records every call),
//! a node whose namespaces call it through the gRPC hooks client its
//! configuration names, and that node's hook series.

// Each test binary that says `mod hooks_support;` uses only part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

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
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::support::node::{TestNode, config};
use crate::support::scrape;
use crate::support::wait::DEADLINE;

/// A node on `127.0.0.1:0` with `toml` as its configuration and the gRPC
/// hooks it names, wired as the binary wires them.
pub async fn start_node(toml: &str) -> TestNode {
    TestNode::builder(config(toml)).start().await
}

// ---------------------------------------------------------------------------
// The node's hook series

/// One reading of a node's hook series: `gateway_hook_requests_total
/// {hook,result}` and `gateway_hook_retries_total{hook}`, with `hook` one
/// of `connect`, `event`, `disconnect`. Shown as those lines of the
/// rendering.
pub struct HookSeries(String);

impl HookSeries {
    /// Calls of `hook` that ended with `result` (`ok`, `error`, `timeout`,
    /// `unavailable`, `overloaded`, `cancelled`); a refusal is `ok`.
    pub fn calls(&self, hook: &str, result: &str) -> u64 {
        let labels = [("hook", hook), ("result", result)];
        scrape::value(&self.0, "gateway_hook_requests_total", &labels).unwrap_or(0.0) as u64
    }

    /// Every call of `hook`, whatever its result (a retry is the same call).
    pub fn total(&self, hook: &str) -> u64 {
        let sum: f64 = scrape::series(&self.0)
            .filter(|s| s.name == "gateway_hook_requests_total")
            .filter(|s| s.labels.iter().any(|(k, v)| *k == "hook" && v == hook))
            .map(|s| s.value)
            .sum();
        sum as u64
    }

    /// Calls of `hook` sent a second time.
    pub fn retries(&self, hook: &str) -> u64 {
        let labels = [("hook", hook)];
        scrape::value(&self.0, "gateway_hook_retries_total", &labels).unwrap_or(0.0) as u64
    }
}

impl std::fmt::Debug for HookSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for line in self.0.lines() {
            if line.starts_with("gateway_hook_requests_total")
                || line.starts_with("gateway_hook_retries_total")
            {
                writeln!(f, "{line}")?;
            }
        }
        Ok(())
    }
}

// Methods of the shared test node that only the hooks tests need.
impl TestNode {
    /// The node's hook series now.
    pub fn hook_series(&self) -> HookSeries {
        HookSeries(self.io.metrics().render())
    }

    /// Namespace connections to `namespace` the connect hook refused
    /// (`gateway_connect_errors_total{namespace,reason="refused"}`).
    pub fn refused_connects(&self, namespace: &str) -> u64 {
        let labels = [("namespace", namespace), ("reason", "refused")];
        self.metric("gateway_connect_errors_total", &labels) as u64
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
    /// The `traceparent` metadata of the calls that carried one.
    traceparents: Mutex<Vec<String>>,
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

    /// The `traceparent` metadata of the calls that carried one, in order.
    pub fn traceparents(&self) -> Vec<String> {
        self.traceparents.lock().clone()
    }

    fn note_traceparent<T>(&self, req: &Request<T>) {
        if let Some(value) = req.metadata().get("traceparent") {
            let text = value.to_str().unwrap_or("(not text)").to_owned();
            self.traceparents.lock().push(text);
        }
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
        self.0.note_traceparent(&request);
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
        self.0.note_traceparent(&request);
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
        self.0.note_traceparent(&request);
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
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("the backend stops")
                .unwrap();
        }
    }
}
