//! Shared by `tests/ops.rs` and `tests/drain.rs`: a node started on port 0
//! with an operations listener, a scraper of its ops port, and minimal raw
//! Socket.IO clients over WebSocket (tokio-tungstenite) and long-polling
//! (reqwest). Every wait has a deadline.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gateway::hooks::NoHooks;
use gateway::ops::Readiness;
use gateway::telemetry::Metrics;
use gateway::{Config, Listeners, Node, RunError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const DEADLINE: Duration = Duration::from_secs(10);

pub struct TestNode {
    pub addr: SocketAddr,
    pub ops: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    pub tasks: tokio_util::task::TaskTracker,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<Result<(), RunError>>>,
    http: reqwest::Client,
}

impl TestNode {
    pub async fn start(config: Config) -> Self {
        let client = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ops = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = client.local_addr().unwrap();
        let ops_addr = ops.local_addr().unwrap();
        let node = Node::connect(config, Arc::new(NoHooks))
            .await
            .expect("valid configuration and a reachable bus");
        let metrics = node.metrics().clone();
        let readiness = node.readiness().clone();
        let tasks = node.tasks().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            node.serve(Listeners::new(client).with_ops(ops), async move {
                let _ = stopped.await;
            }),
        );
        Self {
            addr,
            ops: ops_addr,
            metrics,
            readiness,
            tasks,
            stop: Some(stop),
            task: Some(task),
            http: reqwest::Client::new(),
        }
    }

    /// Resolves the shutdown future (what SIGTERM does in the binary).
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for `serve` to return, at most `limit`.
    pub async fn stopped(&mut self, limit: Duration) -> Result<(), RunError> {
        let task = self.task.take().expect("not awaited yet");
        tokio::time::timeout(limit, task)
            .await
            .expect("serve returned in time")
            .expect("serve did not panic")
    }

    /// `GET http://<ops><path>`: status and body.
    pub async fn ops_get(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("http://{}{path}", self.ops))
            .timeout(DEADLINE)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    /// A scrape of `/metrics`.
    pub async fn scrape(&self) -> String {
        let resp = self
            .http
            .get(format!("http://{}/metrics", self.ops))
            .timeout(DEADLINE)
            .send()
            .await
            .expect("scrape");
        assert_eq!(resp.status().as_u16(), 200);
        let ctype = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ctype.starts_with("text/plain"), "content type {ctype}");
        resp.text().await.unwrap()
    }

    /// Scrapes until `pred` holds on the text; panics with the last scrape
    /// after the deadline.
    pub async fn scrape_until(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let text = self.scrape().await;
            if pred(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}; last scrape:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A `redis-server` of the test's own on a free port; killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl RedisServer {
    /// `None` when `redis-server` is not installed.
    pub async fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self { port, child: None };
        server.restart().await.then_some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn restart(&mut self) -> bool {
        self.stop();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let Ok(child) = child else {
            return false;
        };
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        while TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The value of one series in a scrape (0 when absent).
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    gateway::telemetry::metrics::scrape::value(text, name, labels).unwrap_or(0.0)
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A Socket.IO client on a raw WebSocket, connected to namespace `/`.
pub struct WsClient {
    ws: Ws,
    pub sid: String,
}

impl WsClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (ws, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(url))
            .await
            .expect("websocket handshake in time")
            .expect("websocket handshake");
        let mut client = Self {
            ws,
            sid: String::new(),
        };
        let open = client.next_text().await.expect("open packet");
        assert!(open.starts_with('0'), "open packet: {open}");
        client.send("40").await;
        let connect = client.next_text().await.expect("connect packet");
        assert!(connect.starts_with("40"), "connect packet: {connect}");
        client.sid = connect;
        client
    }

    pub async fn send(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_owned().into()))
            .await
            .expect("send");
    }

    /// The next Engine.IO text packet (answering pings), or `None` once the
    /// connection closed.
    pub async fn next_text(&mut self) -> Option<String> {
        loop {
            let msg = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("a packet or a close in time");
            match msg {
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => self.send("3").await,
                Some(Ok(Message::Text(t))) => return Some(t.as_str().to_owned()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Waits until the server closes the connection; returns the text
    /// packets received before.
    pub async fn closed(&mut self) -> Vec<String> {
        let mut got = Vec::new();
        while let Some(t) = self.next_text().await {
            got.push(t);
        }
        got
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(DEADLINE, self.ws.next()).await {}
    }
}

/// A Socket.IO client over HTTP long-polling, connected to namespace `/`.
pub struct PollingClient {
    http: reqwest::Client,
    url: String,
    pub sid: String,
}

impl PollingClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        let http = reqwest::Client::new();
        let base = format!("http://{addr}/socket.io/?EIO=4&transport=polling");
        let open = http
            .get(&base)
            .timeout(DEADLINE)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(open.starts_with('0'), "open packet: {open}");
        let info: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
        let sid = info["sid"].as_str().unwrap().to_owned();
        let client = Self {
            http,
            url: format!("{base}&sid={sid}"),
            sid,
        };
        client.post("40").await;
        let connect = client.poll().await;
        assert!(connect.starts_with("40"), "connect packet: {connect}");
        client
    }

    pub async fn post(&self, body: &str) {
        let resp = self
            .http
            .post(&self.url)
            .body(body.to_owned())
            .timeout(DEADLINE)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "POST {body}");
    }

    /// One GET: the packets the server had (record-separated), or the
    /// error body.
    pub async fn poll(&self) -> String {
        self.http
            .get(&self.url)
            .timeout(DEADLINE)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Polls until the server sends the close packet `1` or forgets the
    /// session; true when it did either.
    pub async fn closed(&self) -> bool {
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            let body = self.poll().await;
            if body.split('\x1e').any(|p| p == "1") || body.contains("\"code\":1") {
                return true;
            }
            if body.split('\x1e').any(|p| p == "2") {
                self.post("3").await;
            }
        }
        false
    }

    /// Sends the Engine.IO close packet.
    pub async fn close(self) {
        self.post("1").await;
    }
}
