//! What the admin API tests share: nodes started on ephemeral ports with
//! their admin API, admin clients (with or without a token, with or without
//! TLS), a Redis server of their own, and a raw Socket.IO client ([`sio`]).

#![allow(dead_code)]

pub mod sio;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use gateway::admin::AdminStats;
use gateway::cluster::ClusterBus;
use gateway::hooks::NoHooks;
use gateway::{Config, Listeners, Node, RunError, SocketIo};
use gateway_proto::admin::v1::admin_client::AdminClient;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Adds `authorization: Bearer <token>` to every call, when it has one.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

/// An admin client on `channel`, sending `token` when given.
pub fn admin_on(channel: Channel, token: Option<&str>) -> Admin {
    let bearer = token.map(|t| format!("Bearer {t}").parse().expect("ascii token"));
    AdminClient::with_interceptor(channel, Bearer(bearer))
}

/// The configuration of a test node: namespaces `/` (join anything),
/// `/chat` and `/tenant-*`; fast heartbeats so that nodes find each other
/// and notice a death within a second; `extra` TOML appended.
pub fn config(extra: &str) -> Config {
    let text = format!(
        r#"
        [cluster]
        heartbeat_interval_ms = 200
        node_timeout_ms = 1000
        request_timeout_ms = 2000
        {extra}

        [[namespaces]]
        name = "/"
        join = ["*"]
        publish = true

        [[namespaces]]
        name = "/chat"
        join = ["*"]

        [[namespaces]]
        name = "/tenant-*"
        "#
    );
    Config::from_toml(&text).expect("test configuration")
}

/// A node serving clients and the admin API on ephemeral ports.
pub struct TestNode {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub io: SocketIo,
    pub stats: Arc<AdminStats>,
    pub metrics: Arc<gateway::telemetry::Metrics>,
    token: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), RunError>>>,
}

impl TestNode {
    /// A node alone, with the in-process broker.
    pub async fn start(config: Config) -> Self {
        let token = config.admin.token.clone();
        Self::serve(Node::new(config, Arc::new(NoHooks)).expect("node"), token).await
    }

    /// A node on `bus` (a member of a shared in-process broker).
    pub async fn start_on(config: Config, bus: Arc<dyn ClusterBus>) -> Self {
        let token = config.admin.token.clone();
        let node = Node::with_bus(config, Arc::new(NoHooks), bus).expect("node");
        Self::serve(node, token).await
    }

    /// A node on the bus its configuration names (Redis).
    pub async fn connect(config: Config) -> Self {
        let token = config.admin.token.clone();
        let node = Node::connect(config, Arc::new(NoHooks))
            .await
            .expect("node");
        Self::serve(node, token).await
    }

    async fn serve(node: Node, token: Option<String>) -> Self {
        let client = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = client.local_addr().unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let io = node.io().clone();
        let stats = node.admin_stats().clone();
        let metrics = node.metrics().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = Listeners::new(client).with_admin(admin);
        let task = tokio::spawn(node.serve(listeners, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            admin_addr,
            io,
            stats,
            metrics,
            token,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn node_id(&self) -> String {
        self.io.node_id().to_owned()
    }

    /// A plaintext admin client with the node's own token (if any).
    pub async fn admin(&self) -> Admin {
        self.admin_with(self.token.clone().as_deref()).await
    }

    /// A plaintext admin client sending `token`.
    pub async fn admin_with(&self, token: Option<&str>) -> Admin {
        let channel = Endpoint::from_shared(format!("http://{}", self.admin_addr))
            .unwrap()
            .connect()
            .await
            .expect("admin connects");
        admin_on(channel, token)
    }

    /// A TLS admin client trusting `ca_pem`, for the name `localhost`.
    pub async fn admin_tls(
        &self,
        ca_pem: &str,
        token: Option<&str>,
    ) -> Result<Admin, tonic::transport::Error> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .domain_name("localhost");
        let channel =
            Endpoint::from_shared(format!("https://localhost:{}", self.admin_addr.port()))
                .unwrap()
                .tls_config(tls)?
                .connect()
                .await?;
        Ok(admin_on(channel, token))
    }

    /// Live nodes this node knows, itself included.
    pub fn nodes_known(&self) -> usize {
        self.io.nodes().len()
    }

    /// Whether the node receives other nodes' emits to the whole namespace.
    pub fn subscribed_to_namespace(&self, nsp: &str) -> bool {
        let adapter = self.io.adapter();
        adapter
            .subscriptions
            .is_active(&adapter.channels.namespace(nsp))
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("node stops within 15 s")
                .expect("node task")
                .expect("node serves cleanly");
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

/// Polls `check` every 20 ms until it holds; panics after `within`.
pub async fn until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every node knows all the others.
pub async fn until_clustered(nodes: &[&TestNode]) {
    let n = nodes.len();
    until(
        "the nodes to see each other",
        Duration::from_secs(10),
        || nodes.iter().all(|node| node.nodes_known() == n),
    )
    .await;
}

/// A `redis-server` of the test's own, on a free port, without persistence;
/// killed when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        let server = Self {
            port,
            child: Some(child),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not listen on {port} within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (a Redis outage).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh directory under the system's temporary one, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "gateway-{name}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}
