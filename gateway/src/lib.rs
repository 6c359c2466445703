//! A horizontally scalable Socket.IO gateway node.
//!
//! What the crate offers (everything else is `pub(crate)`):
//! - [`Node::builder`] and [`NodeBuilder`]: where a node's parts are made
//!   and wired (its bus and hooks chosen by the configuration unless
//!   given); the binary and the tests both build nodes through it.
//!   [`Node::serve`] serves it on [`Listeners`] until a shutdown future
//!   resolves, and [`run`] does both as the binary does;
//! - [`Config`] and [`config`]: the configuration, plain data;
//! - [`hooks`]: the [`hooks::Hooks`] trait an embedding program implements
//!   (admission, events, disconnects), and the gRPC client of a backend's
//!   hooks service;
//! - [`socketio`]: the node's Socket.IO server ([`SocketIo`]: emit, look up
//!   and drive sockets across the cluster) and its value types;
//! - [`cluster`]: the in-process broker for several nodes in one process,
//!   and the views of the cluster that [`SocketIo`] hands out;
//! - [`protocol`]: the pure Engine.IO v4 / Socket.IO v5 / WebSocket codec;
//! - [`telemetry`]: metrics names and the recorder, logs and traces set-up;
//! - read-only views for tests and tools: [`Engine`] and [`Session`] (the
//!   Engine.IO sessions), [`Readiness`];
//! - [`reason`]: why sockets disconnect; [`RunError`] (and [`AdminError`]):
//!   why a node could not start or stopped serving.
//!
//! Inside, from the wire inwards: `protocol` (codec), `accept` (the accept
//! loop, bounds on open TCP connections, request head and body timeouts),
//! `engine` and `http` (Engine.IO sessions over long-polling and WebSocket,
//! the upgrade, the heartbeat), `socketio` (namespaces, sockets, rooms,
//! acks, policies), `cluster` (the adapter and the bus), `hooks`, `admin`
//! (the gRPC admin API), `ops` (`/metrics`, `/healthz`, `/readyz`), and the
//! supporting `auth` and `ids`; `docs/architecture.md` draws the layers.
//!
//! Shutdown is a drain: not ready at once, then (after
//! `shutdown.drain_delay_ms`) stop accepting, close every client with
//! [`reason::DisconnectReason::Shutdown`], a few at a time over
//! `shutdown.disconnect_spread_ms` (clients see a transport close and
//! reconnect elsewhere), wait for in-flight work, and return within
//! `shutdown.grace_period_ms`.

#![forbid(unsafe_code)]
// Module docs describe the internals they hold, private ones included.
#![allow(rustdoc::private_intra_doc_links)]

mod accept;
mod admin;
mod admin_ui;
mod auth;
mod clock;
pub mod cluster;
pub mod config;
mod emitter;
mod engine;
pub mod hooks;
mod http;
mod ids;
mod ops;
pub mod protocol;
pub mod reason;
pub mod socketio;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use admin::AdminError;
pub use config::Config;
pub use engine::{Engine, HandshakeInfo, Session};
use hooks::{Hooks, NoHooks};
pub use ids::NodeId;
pub use ops::Readiness;
use reason::DisconnectReason;
pub use socketio::SocketIo;

/// Errors that stop a node from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("client listener failed")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Bus(#[from] cluster::BusError),
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// The sockets a node serves on, bound by the caller (port 0 in tests).
#[derive(Debug)]
pub struct Listeners {
    /// Client traffic (Engine.IO over HTTP and WebSocket).
    pub client: TcpListener,
    /// The operations port (`/metrics`, `/healthz`, `/readyz`), if any.
    pub ops: Option<TcpListener>,
    /// The admin gRPC API, if served.
    pub admin: Option<TcpListener>,
    /// The internal listener serving the long-polling requests other nodes
    /// forward (`cluster.internal_listen`), if any.
    pub internal: Option<TcpListener>,
}

impl Listeners {
    /// Client traffic only, no operations port, no admin API.
    pub fn new(client: TcpListener) -> Self {
        Self {
            client,
            ops: None,
            admin: None,
            internal: None,
        }
    }

    /// Also serves forwarded requests on `internal` (it needs
    /// `cluster.secret`; other nodes reach it at `cluster.internal_advertise`,
    /// or at its address when that is not a wildcard one).
    pub fn with_internal(mut self, internal: TcpListener) -> Self {
        self.internal = Some(internal);
        self
    }

    /// Also serves the admin API on `admin`.
    pub fn with_admin(mut self, admin: TcpListener) -> Self {
        self.admin = Some(admin);
        self
    }

    /// Also serves the operations port on `ops`.
    pub fn with_ops(mut self, ops: TcpListener) -> Self {
        self.ops = Some(ops);
        self
    }
}

/// How often recorded histogram samples are folded into their buckets.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);
/// How often the cluster's state is sampled into readiness and gauges.
const CLUSTER_STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// How long the operations server may take to stop once drained.
const OPS_STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the `OnDisconnect` calls of the sockets closed by a drain may
/// take before [`Node::serve`] returns.
const DISCONNECT_HOOKS_GRACE: Duration = Duration::from_secs(5);

/// A configured node, ready to serve. Built by [`Node::builder`], the one
/// place where a node's parts are made and wired, for the binary and the
/// tests alike.
pub struct Node {
    config: Arc<Config>,
    io: SocketIo,
    engine: Arc<Engine>,
    admin: admin::AdminApi,
    /// The Socket.IO Admin UI's server side, when enabled.
    admin_ui: Option<Arc<admin_ui::AdminUi>>,
    // -- operations (telemetry, readiness, drain) --
    metrics: Arc<telemetry::Metrics>,
    readiness: ops::Readiness,
    tasks: TaskTracker,
}

/// How a [`Node`] is made: from its configuration, with its bus and hooks
/// chosen by it unless given here.
#[must_use]
pub struct NodeBuilder {
    config: Config,
    hooks: Option<Arc<dyn Hooks>>,
    bus: Option<Arc<dyn cluster::ClusterBus>>,
}

impl NodeBuilder {
    /// In-process hooks instead of the configured ones (the gRPC client of
    /// the namespaces that name a backend, none otherwise): for embedding
    /// the gateway in a Rust program, and for tests.
    pub fn hooks(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// A member of an in-process broker shared with other nodes (to run
    /// several nodes in one process) instead of the bus the configuration
    /// names.
    pub fn bus(mut self, bus: Arc<cluster::LocalBus>) -> Self {
        self.bus = Some(bus);
        self
    }

    /// Builds the node on the bus given, else on the in-process broker (the
    /// Redis settings, if any, are not used: see [`NodeBuilder::connect`]).
    /// Checks the configuration and loads every resource it names (JWT
    /// keys, the admin TLS identity, hooks backends' addresses), once.
    pub fn build(self) -> Result<Node, RunError> {
        self.config.validate()?;
        self.finish()
    }

    /// [`NodeBuilder::build`] on the bus the configuration names when none
    /// was given: Redis when `cluster.redis_url` is set (the node starts
    /// even while Redis is unreachable, and connects when it appears).
    pub async fn connect(mut self) -> Result<Node, RunError> {
        // Checked before Redis is dialled: a bad URL is a configuration
        // error, not an unreachable bus.
        self.config.validate()?;
        if self.bus.is_none()
            && let Some(url) = &self.config.cluster.redis_url
        {
            self.bus = Some(cluster::redis::connect(url).await?);
        }
        self.finish()
    }

    /// Builds on a validated configuration.
    fn finish(self) -> Result<Node, RunError> {
        let bus = self
            .bus
            .unwrap_or_else(|| Arc::new(cluster::LocalBroker::new().connect()));
        Node::assemble(self.config, self.hooks, bus)
    }
}

impl Node {
    /// Starts building a node from `config`.
    pub fn builder(config: Config) -> NodeBuilder {
        NodeBuilder {
            config,
            hooks: None,
            bus: None,
        }
    }

    /// Makes every part of a node from a validated `config` and wires them:
    /// the one composition root.
    fn assemble(
        config: Config,
        hooks: Option<Arc<dyn Hooks>>,
        bus: Arc<dyn cluster::ClusterBus>,
    ) -> Result<Self, RunError> {
        let config = Arc::new(config);
        // Created first: every other part records into it.
        let metrics = Arc::new(telemetry::Metrics::for_config(&config));
        let hooks: Arc<dyn Hooks> = match hooks {
            Some(hooks) => hooks,
            None if hooks::grpc::configured(&config) => {
                // Channels connect lazily: a backend that is down does not
                // stop the node.
                Arc::new(hooks::grpc::GrpcHooks::new(&config, metrics.clone())?)
            }
            None => Arc::new(NoHooks),
        };
        // Checked by `Config::validate`.
        let node_id = config
            .cluster
            .node_id
            .as_deref()
            .and_then(ids::NodeId::parse)
            .unwrap_or_else(ids::NodeId::random);
        // The Admin UI serves its namespace and hands the others to the hooks.
        let admin_ui = config
            .admin_ui
            .enabled
            .then(|| admin_ui::AdminUi::new(&config.admin_ui, hooks.clone()));
        let hooks: Arc<dyn Hooks> = match &admin_ui {
            Some(ui) => ui.clone(),
            None => hooks,
        };
        let tasks = TaskTracker::new();
        let io = SocketIo::new(
            config.clone(),
            node_id,
            hooks,
            bus,
            metrics.clone(),
            tasks.clone(),
        )?;
        if let Some(ui) = &admin_ui {
            ui.attach(&io);
        }
        let keep_headers = io
            .namespaces()
            .policies()
            .iter()
            .any(|p| io.hooks().handles_connect(&p.name));
        let engine = Arc::new(Engine::new(
            config.clone(),
            io.node_id(),
            Arc::new(io.clone()),
            keep_headers,
            metrics.clone(),
        ));
        // Built here, served only when given a listener: a TLS identity
        // that does not load stops the start.
        let admin = admin::AdminApi::new(io.clone(), &config.admin, metrics.clone())?;
        Ok(Self {
            config,
            io,
            engine,
            admin,
            admin_ui,
            metrics,
            readiness: ops::Readiness::new(),
            tasks,
        })
    }

    /// The node's Socket.IO server (emit, look up sockets).
    pub fn io(&self) -> &SocketIo {
        &self.io
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The node's metrics (one recorder per node).
    pub fn metrics(&self) -> &Arc<telemetry::Metrics> {
        &self.metrics
    }

    /// The node's readiness (`/readyz`): register checks such as `"redis"`.
    pub fn readiness(&self) -> &ops::Readiness {
        &self.readiness
    }

    /// In-flight work a drain waits for (within the grace period) before
    /// [`Node::serve`] returns: spawn admin and hook calls, bus handlers and
    /// the like on it.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Serves until `shutdown` resolves, then drains: `/readyz` fails at
    /// once (`gateway_draining` 1); after `shutdown.drain_delay_ms` the client
    /// listener stops accepting and every session is closed with
    /// [`DisconnectReason::Shutdown`], evenly over
    /// `shutdown.disconnect_spread_ms` (clients see a transport close and
    /// reconnect elsewhere); then it waits for sessions and in-flight
    /// [`Node::tasks`] to end, at most `shutdown.grace_period_ms`, and returns.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), RunError> {
        let admin_api = listeners.admin.map(|listener| (self.admin, listener));
        let ops_stop = CancellationToken::new();
        let ops_server = listeners.ops.map(|listener| {
            let app = ops::router(
                self.metrics.clone(),
                self.readiness.clone(),
                self.config
                    .admin_ui
                    .enabled
                    .then(|| self.config.admin_ui.static_dir.clone())
                    .flatten(),
            );
            let stop = ops_stop.clone();
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            })
        });
        let upkeep = tokio::spawn(metrics_upkeep(self.metrics.clone(), ops_stop.clone()));
        let status = tokio::spawn(cluster_status(
            self.io.clone(),
            self.metrics.clone(),
            self.readiness.clone(),
            ops_stop.clone(),
        ));

        // Requests for another node's session are forwarded to it when the
        // cluster has a secret (and that node an internal listener).
        let forwarder = match (
            &self.config.cluster.secret,
            self.io.adapter().bus().is_remote(),
        ) {
            (Some(secret), true) => Some(Arc::new(http::Forwarder::new(
                self.io.adapter().clone(),
                secret.clone(),
                self.metrics.clone(),
            ))),
            _ => None,
        };
        let app = http::router(self.engine.clone(), forwarder);
        let stop = CancellationToken::new();
        if let (Some(listener), Some(secret)) = (listeners.internal, &self.config.cluster.secret) {
            let advertise = match &self.config.cluster.internal_advertise {
                Some(addr) => Some(addr.clone()),
                None => listener
                    .local_addr()
                    .ok()
                    .filter(|a| !a.ip().is_unspecified())
                    .map(|a| a.to_string()),
            };
            match advertise {
                Some(addr) => self.io.adapter().set_internal(addr),
                None => tracing::warn!(
                    "the internal listener has a wildcard address and cluster.internal_advertise \
                     is not set: other nodes cannot forward requests here"
                ),
            }
            let internal_app = http::internal_router(self.engine.clone(), secret);
            let internal_connections =
                accept::ConnCount::new(self.config.limits.tcp_connections(), self.metrics.clone());
            tokio::spawn(accept::serve(
                listener,
                internal_app,
                self.config.server.request_head_timeout(),
                internal_connections,
                stop.clone(),
            ));
        }
        let tcp_connections =
            accept::ConnCount::new(self.config.limits.tcp_connections(), self.metrics.clone());
        let mut server = tokio::spawn(accept::serve(
            listeners.client,
            app,
            self.config.server.request_head_timeout(),
            tcp_connections,
            stop.clone(),
        ));
        // The admin server stops accepting with the client listener; the
        // calls in flight are waited for with the node's other tasks.
        let admin = admin_api.map(|(api, listener)| {
            let readiness = self.readiness.clone();
            let ready = move || readiness.check().is_ok();
            self.tasks
                .spawn(api.serve(listener, stop.clone().cancelled_owned(), ready))
        });
        let cluster_stop = CancellationToken::new();
        let mut cluster = {
            let io = self.io.clone();
            let stop = cluster_stop.clone();
            tokio::spawn(async move { io.run_cluster(stop).await })
        };
        if let Some(ui) = &self.admin_ui {
            tokio::spawn(ui.clone().run(cluster_stop.clone()));
        }
        // What backends publish with the Socket.IO Redis emitter.
        let emitter = &self.config.redis_emitter;
        if let (true, Some(url)) = (emitter.enabled, &self.config.cluster.redis_url) {
            tokio::spawn(emitter::run(
                self.io.clone(),
                url.clone(),
                emitter.key.clone(),
                cluster_stop.clone(),
            ));
        }

        shutdown.await;
        let shutdown_cfg = &self.config.shutdown;
        let started = Instant::now();
        self.readiness.start_draining();
        self.metrics.set_draining(true);
        tracing::info!(
            sessions = self.engine.len(),
            drain_delay_ms = shutdown_cfg.drain_delay_ms,
            grace_period_ms = shutdown_cfg.grace_period_ms,
            "shutting down: not ready"
        );
        tokio::time::sleep(shutdown_cfg.drain_delay()).await;
        let deadline = Instant::now() + shutdown_cfg.grace_period();

        stop.cancel();
        let spread = shutdown_cfg.disconnect_spread();
        if tokio::time::timeout_at(
            deadline,
            self.engine
                .close_all_spread(DisconnectReason::Shutdown, spread),
        )
        .await
        .is_err()
        {
            tracing::warn!("clients still being closed at the end of the grace period");
        }
        // Any left (a spread cut short by the grace period).
        self.engine.close_all(DisconnectReason::Shutdown);
        if tokio::time::timeout_at(deadline, self.engine.wait_closed())
            .await
            .is_err()
        {
            tracing::warn!(
                sessions = self.engine.len(),
                "sessions still open after the grace period"
            );
        }
        // The sessions of the clients just closed are in the recovery
        // store before the node goes (over Redis, their records are
        // written by a queue).
        if tokio::time::timeout_at(deadline, self.io.flush_recovery())
            .await
            .is_err()
        {
            tracing::warn!("recovery records still being written at the end of the grace period");
        }
        self.tasks.close();
        if tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = self.tasks.len(),
                "in-flight work still running after the grace period"
            );
        }
        if let Some(admin) = admin {
            admin.abort(); // a no-op once it stopped by itself
            if let Ok(Err(e)) = admin.await {
                tracing::warn!(error = %telemetry::ErrorChain(&e), "admin server failed");
            }
        }
        if !self.io.hooks().drain(DISCONNECT_HOOKS_GRACE).await {
            tracing::warn!("OnDisconnect calls still under way at exit");
        }
        cluster_stop.cancel();
        if tokio::time::timeout_at(deadline, &mut cluster)
            .await
            .is_err()
        {
            tracing::warn!("cluster tasks still running after the grace period");
            cluster.abort();
        }
        let served = match tokio::time::timeout_at(deadline, &mut server).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "client server task failed");
                Ok(())
            }
            Err(_) => {
                tracing::warn!("client connections still open after the grace period");
                server.abort();
                Ok(())
            }
        };

        ops_stop.cancel();
        let _ = upkeep.await;
        let _ = status.await;
        if let Some(mut ops_server) = ops_server {
            match tokio::time::timeout(OPS_STOP_TIMEOUT, &mut ops_server).await {
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "operations server failed"),
                Ok(_) => {}
                Err(_) => ops_server.abort(),
            }
        }
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "shut down"
        );
        served?;
        Ok(())
    }
}

/// Folds histogram samples into buckets every few seconds until `stop`.
async fn metrics_upkeep(metrics: Arc<telemetry::Metrics>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(METRICS_UPKEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => metrics.run_upkeep(),
        }
    }
}

/// Samples the cluster's state every second until `stop`: with Redis,
/// `gateway_redis_connected` and the `redis` readiness check follow the bus
/// connection (so `/readyz` fails while Redis is unreachable); the node
/// count of the registry goes to `gateway_cluster_nodes`.
async fn cluster_status(
    io: SocketIo,
    metrics: Arc<telemetry::Metrics>,
    readiness: ops::Readiness,
    stop: CancellationToken,
) {
    let redis = io.adapter().bus().is_remote();
    if redis {
        metrics.enable_redis();
    }
    let mut tick = tokio::time::interval(CLUSTER_STATUS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if redis {
            let up = io.adapter().is_connected();
            metrics.set_redis_connected(up);
            readiness.set("redis", up);
        }
        metrics.set_cluster_nodes(io.nodes().len().max(1));
    }
}

/// Builds a node from `config` as the binary does (its bus and hooks
/// from the configuration) and serves it on `listeners` until `shutdown`
/// resolves.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    Node::builder(config)
        .connect()
        .await?
        .serve(listeners, shutdown)
        .await
}
