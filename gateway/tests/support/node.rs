//! One test node: a [`Node`] built the way the binary builds it, serving on
//! `127.0.0.1:0` (and, when asked, with its admin API and operations port on
//! ports of their own), stopped by resolving its shutdown future. Dropping it
//! stops it too.
//!
//! ```ignore
//! let node = TestNode::builder(config).hooks(hooks).admin().start().await;
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gateway::Engine;
use gateway::Readiness;
use gateway::cluster::LocalBus;
use gateway::hooks::Hooks;
use gateway::{Config, Listeners, Node, RunError, SocketIo};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use super::conformance::Conformance;
use super::wait::eventually_within;

/// How long a node may take to stop before the test fails.
const STOP_LIMIT: Duration = Duration::from_secs(15);

/// `toml` parsed, or the test fails.
pub fn config(toml: &str) -> Config {
    Config::from_toml(toml).expect("test configuration parses")
}

/// Starts a node with `toml` and the conformance hooks.
pub async fn start(toml: &str) -> TestNode {
    start_with(toml, Arc::new(Conformance::default())).await
}

/// Starts a node with `toml` and no application hooks (the product default).
pub async fn start_plain(toml: &str) -> TestNode {
    TestNode::builder(config(toml)).start().await
}

/// Starts a node with `toml` and `hooks`.
pub async fn start_with(toml: &str, hooks: Arc<dyn Hooks>) -> TestNode {
    TestNode::builder(config(toml)).hooks(hooks).start().await
}

/// How a [`TestNode`] is made: its configuration, hooks and bus, and which
/// listeners it has besides the client one.
pub struct NodeBuilder {
    config: Config,
    /// `None`: the hooks the configuration names, as the binary wires them.
    hooks: Option<Arc<dyn Hooks>>,
    bus: Option<Arc<LocalBus>>,
    admin: bool,
    ops: bool,
    internal: bool,
}

impl NodeBuilder {
    /// Serves forwarded requests on an internal listener of its own (the
    /// configuration must have `cluster.secret`).
    pub fn internal(mut self) -> Self {
        self.internal = true;
        self
    }

    /// In-process application hooks instead of the configured ones (by
    /// default the node gets what the binary would: the gRPC client of the
    /// namespaces that name a backend, none otherwise).
    pub fn hooks(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// A member of a shared in-process broker as the node's bus, instead of
    /// the bus the configuration names (Redis, or a broker of its own).
    pub fn bus(mut self, bus: Arc<LocalBus>) -> Self {
        self.bus = Some(bus);
        self
    }

    /// Serves the admin API on a port of its own.
    pub fn admin(mut self) -> Self {
        self.admin = true;
        self
    }

    /// Serves the operations port (`/metrics`, `/healthz`, `/readyz`).
    pub fn ops(mut self) -> Self {
        self.ops = true;
        self
    }

    /// Builds the node and serves it; fails the test when the configuration
    /// is invalid or the bus unreachable.
    pub async fn start(self) -> TestNode {
        // Built as the binary builds it (`Node::builder`).
        let mut builder = Node::builder(self.config);
        if let Some(hooks) = self.hooks {
            builder = builder.hooks(hooks);
        }
        if let Some(bus) = &self.bus {
            builder = builder.bus(bus.clone());
        }
        let node = builder
            .connect()
            .await
            .expect("a valid configuration and a reachable bus");
        let client = bind().await;
        let addr = client.local_addr().expect("local address");
        let mut listeners = Listeners::new(client);
        let mut admin_addr = None;
        if self.admin {
            let admin = bind().await;
            admin_addr = Some(admin.local_addr().expect("local address"));
            listeners = listeners.with_admin(admin);
        }
        let mut internal_addr = None;
        if self.internal {
            let internal = bind().await;
            internal_addr = Some(internal.local_addr().expect("local address"));
            listeners = listeners.with_internal(internal);
        }
        let mut ops_addr = None;
        if self.ops {
            let ops = bind().await;
            ops_addr = Some(ops.local_addr().expect("local address"));
            listeners = listeners.with_ops(ops);
        }
        let io = node.io().clone();
        let engine = node.engine().clone();
        let readiness = node.readiness().clone();
        let tasks = node.tasks().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(node.serve(listeners, async move {
            let _ = stopped.await;
        }));
        TestNode {
            addr,
            io,
            engine,
            readiness,
            tasks,
            admin_addr,
            ops_addr,
            internal_addr,
            bus: self.bus,
            stop: Some(stop),
            task: Some(task),
            ops_http: self.ops.then(reqwest::Client::new),
        }
    }
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind port 0")
}

/// A node serving on `127.0.0.1:<random port>`. Its configuration and
/// metrics are its `io`'s.
pub struct TestNode {
    pub addr: SocketAddr,
    pub io: SocketIo,
    pub engine: Arc<Engine>,
    pub readiness: Readiness,
    /// In-flight work a drain waits for.
    pub tasks: TaskTracker,
    admin_addr: Option<SocketAddr>,
    ops_addr: Option<SocketAddr>,
    internal_addr: Option<SocketAddr>,
    bus: Option<Arc<LocalBus>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), RunError>>>,
    /// An HTTP client for the operations port, if it has one.
    pub(super) ops_http: Option<reqwest::Client>,
}

impl TestNode {
    /// A node with `config`, no hooks, the bus `config` names, and only the
    /// client listener, until told otherwise.
    pub fn builder(config: Config) -> NodeBuilder {
        NodeBuilder {
            config,
            hooks: None,
            bus: None,
            admin: false,
            ops: false,
            internal: false,
        }
    }

    /// `http://addr/socket.io/?<query>`
    pub fn url(&self, query: &str) -> String {
        format!("http://{}/socket.io/?{query}", self.addr)
    }

    /// `ws://addr/socket.io/?<query>`
    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/socket.io/?{query}", self.addr)
    }

    /// The admin API's address (the node was built with `.admin()`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr.expect("the node serves the admin API")
    }

    /// The internal listener's address (the node was built with
    /// `.internal()`).
    pub fn internal_addr(&self) -> SocketAddr {
        self.internal_addr
            .expect("the node serves an internal listener")
    }

    /// The operations port's address (the node was built with `.ops()`).
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops_addr.expect("the node serves the operations port")
    }

    pub fn node_id(&self) -> String {
        self.io.node_id().to_string()
    }

    /// Live nodes this node knows, itself included.
    pub fn nodes_known(&self) -> usize {
        self.io.nodes().len()
    }

    /// Whether the serving task is still running (it ends only on stop or
    /// on a fatal error).
    pub fn is_serving(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
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

    /// Stops the node and waits for it to finish cleanly.
    pub async fn stop(mut self) {
        self.shutdown();
        self.stopped(STOP_LIMIT)
            .await
            .expect("node served without error");
    }

    /// Abrupt stop (in-process broker only): the node vanishes from the bus
    /// without a goodbye, as a crashed process would.
    pub fn kill(mut self) {
        self.bus
            .as_ref()
            .expect("a node on a shared in-process broker")
            .set_connected(false);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Waits until every node knows all the others.
pub async fn until_clustered(nodes: &[&TestNode]) {
    let n = nodes.len();
    eventually_within(
        "the nodes to see each other",
        Duration::from_secs(10),
        || nodes.iter().all(|node| node.nodes_known() == n),
    )
    .await;
}
