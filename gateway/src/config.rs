//! Configuration: one typed struct, loaded from a TOML file, environment
//! variables (`GATEWAY_<SECTION>__<KEY>`) and CLI flags, in that order of
//! precedence (later wins), and validated before any port is bound.
//!
//! Every field documents its default; `Config::default()` is what a node runs
//! with when nothing is configured: clients on `0.0.0.0:3000`, path
//! `/socket.io/`, one namespace `/` where clients may join any room and
//! publish into rooms they are in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use globset::{Glob, GlobMatcher};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tonic::transport::Endpoint;

/// The transports a node serves (`server.transports`); defined with the
/// Engine.IO protocol.
pub use crate::protocol::engineio::Transport;

/// Errors found while loading or validating the configuration. The message
/// names the setting; an error beneath it (a parser's, a file's) is its
/// [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or the environment could not be parsed into the schema.
    #[error("cannot load configuration")]
    Load(#[from] Box<figment::Error>),
    /// A value is out of its allowed range or inconsistent with another.
    #[error("invalid configuration: {key}: {reason}")]
    Invalid {
        /// The setting as the file names it (`server.path`); a namespace's
        /// settings are prefixed with it (`namespace "/chat": jwt`).
        key: String,
        reason: String,
    },
    /// A value that does not parse, or names something that cannot be
    /// loaded (a key file, a URL): the error that says why is the source.
    #[error("invalid configuration: {key}: {reason}")]
    Unusable {
        /// As in [`ConfigError::Invalid`].
        key: String,
        reason: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ConfigError {
    /// The same error, about a setting of namespace `name`.
    pub(crate) fn in_namespace(self, name: &str) -> Self {
        let prefix = |key: String| format!("namespace {name:?}: {key}");
        match self {
            Self::Invalid { key, reason } => Self::Invalid {
                key: prefix(key),
                reason,
            },
            Self::Unusable {
                key,
                reason,
                source,
            } => Self::Unusable {
                key: prefix(key),
                reason,
                source,
            },
            e @ Self::Load(_) => e,
        }
    }
}

/// `key` is set to a value that is out of range or inconsistent.
pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// `key` is set to a value that cannot be used, for the reason `source`
/// gives.
pub(crate) fn unusable(
    key: impl Into<String>,
    reason: impl Into<String>,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> ConfigError {
    ConfigError::Unusable {
        key: key.into(),
        reason: reason.into(),
        source: source.into(),
    }
}

/// The whole configuration of a node.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Client-facing listener and Engine.IO/Socket.IO protocol settings.
    pub server: ServerConfig,
    /// Bounds on what one client may hold or send.
    pub limits: LimitsConfig,
    /// Namespaces clients may connect to, with their policies. When empty, a
    /// single namespace `/` with `join = ["*"]` and `publish = true`.
    pub namespaces: Vec<NamespaceConfig>,
    /// Cluster membership.
    pub cluster: ClusterConfig,
    /// Operations port: `/metrics`, `/healthz`, `/readyz`.
    pub ops: OpsConfig,
    /// Graceful shutdown (drain) on SIGTERM.
    pub shutdown: ShutdownConfig,
    /// Logs and OpenTelemetry tracing.
    pub telemetry: TelemetryConfig,
    /// The admin gRPC API (backend -> gateway).
    pub admin: AdminConfig,
    /// Messages of the Socket.IO Redis emitter (`@socket.io/redis-emitter`).
    pub redis_emitter: RedisEmitterConfig,
    /// The server side of the Socket.IO Admin UI (`@socket.io/admin-ui`).
    pub admin_ui: AdminUiConfig,
}

/// `[admin_ui]`: the server side of the Socket.IO Admin UI
/// (`@socket.io/admin-ui` 0.5), on a namespace of the client listener. The
/// UI, pointed at any node, shows every node of the cluster and every
/// socket, and acts on sockets of any node.
///
/// ```toml
/// [admin_ui]
/// enabled = true
/// username = "admin"
/// # bcrypt hash of the password (GATEWAY_ADMIN_UI__PASSWORD_HASH)
/// password_hash = "$2b$10$..."
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminUiConfig {
    /// Serve the Admin UI's namespace. Default false.
    pub enabled: bool,
    /// Its namespace. Default `/admin`, the UI's default.
    pub namespace: String,
    /// The user name the UI logs in with. Required when enabled.
    pub username: Option<String>,
    /// The bcrypt hash of the password (`$2a$`, `$2b$` or `$2y$`, as
    /// `bcrypt.hash` and `htpasswd -B` write it). Required when enabled; set
    /// it from a Secret (`GATEWAY_ADMIN_UI__PASSWORD_HASH`).
    pub password_hash: Option<String>,
    /// Show sockets and rooms and offer no action (join, leave, disconnect,
    /// emit). Default false.
    pub readonly: bool,
    /// Interval between a node's statistics, ms. Default 2000.
    pub stats_interval_ms: u64,
    /// Most sockets listed to a UI as it connects (across the cluster);
    /// the list is also cut to half of `limits.outbound_queue_bytes`.
    /// Default 10000.
    pub max_sockets: usize,
    /// A directory of the UI's built files (`ui/dist` of the
    /// `@socket.io/admin-ui` npm package), served on the ops listener at
    /// `/admin-ui/`. Default none.
    pub static_dir: Option<PathBuf>,
}

impl Default for AdminUiConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            namespace: "/admin".to_owned(),
            username: None,
            password_hash: None,
            readonly: false,
            stats_interval_ms: 2_000,
            max_sockets: 10_000,
            static_dir: None,
        }
    }
}

impl AdminUiConfig {
    pub fn validate(&self, namespaces: &[NamespaceConfig]) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if !self.namespace.starts_with('/') {
            return Err(invalid("admin_ui.namespace", "must start with '/'"));
        }
        if namespaces
            .iter()
            .any(|ns| NamespaceMatcher::new(&ns.name).is_ok_and(|m| m.matches(&self.namespace)))
        {
            return Err(invalid(
                "admin_ui.namespace",
                format!(
                    "{:?} is a namespace of the [[namespaces]] list",
                    self.namespace
                ),
            ));
        }
        if self.username.as_deref().is_none_or(str::is_empty) {
            return Err(invalid("admin_ui.username", "required when enabled"));
        }
        let hash = self.password_hash.as_deref().unwrap_or("");
        let bcrypt_shape = hash.len() == 60
            && ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
            && hash[4..6].bytes().all(|b| b.is_ascii_digit())
            && &hash[6..7] == "$";
        if !bcrypt_shape {
            return Err(invalid(
                "admin_ui.password_hash",
                "required when enabled: a bcrypt hash ($2b$10$ and 53 more characters)",
            ));
        }
        if self.stats_interval_ms < 100 || self.stats_interval_ms > 60_000 {
            return Err(invalid(
                "admin_ui.stats_interval_ms",
                "must be between 100 and 60000",
            ));
        }
        if self.max_sockets == 0 || self.max_sockets > 1_000_000 {
            return Err(invalid(
                "admin_ui.max_sockets",
                "must be between 1 and 1000000",
            ));
        }
        Ok(())
    }
}

/// `[redis_emitter]`: what backends publish with `@socket.io/redis-emitter`
/// (or one of its ports) into the cluster's Redis reaches the sockets of
/// every node, as with Node's Redis adapter. Acts only with
/// `cluster.redis_url`.
///
/// ```toml
/// [redis_emitter]
/// enabled = true
/// key = "socket.io"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisEmitterConfig {
    /// Receive the emitter's messages. Default true (with
    /// `cluster.redis_url`): one more Redis connection per node, with two
    /// pattern subscriptions.
    pub enabled: bool,
    /// The emitter's `key` option, the prefix of its channels. Default
    /// `socket.io`, the emitter's default.
    pub key: String,
}

impl Default for RedisEmitterConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            key: "socket.io".to_owned(),
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the client listener binds. Default `0.0.0.0:3000`.
    pub listen: SocketAddr,
    /// HTTP path of the Engine.IO endpoint. Default `/socket.io/`.
    pub path: String,
    /// Origins allowed by CORS; `"*"` allows any. Default none (no CORS
    /// headers). In the environment either JSON
    /// (`GATEWAY_SERVER__CORS_ORIGINS='["https://a","https://b"]'`) or a
    /// comma-separated list (`GATEWAY_SERVER__CORS_ORIGINS=https://a,https://b`).
    #[serde(deserialize_with = "list")]
    pub cors_origins: Vec<String>,
    /// Transports clients may use. Default `["polling", "websocket"]`. In
    /// the environment also comma-separated (`polling,websocket`).
    #[serde(deserialize_with = "list")]
    pub transports: Vec<Transport>,
    /// Interval between server pings, ms. Default 25000.
    pub ping_interval_ms: u64,
    /// Time a client has to answer a ping, ms. Default 20000.
    pub ping_timeout_ms: u64,
    /// Time a polling -> WebSocket upgrade may take, ms. Default 10000.
    pub upgrade_timeout_ms: u64,
    /// Time a new connection has to connect to a namespace, ms. Default 45000.
    pub connect_timeout_ms: u64,
    /// Largest Engine.IO message or polling POST body, bytes. Default 1000000.
    pub max_payload: u64,
    /// WebSocket read buffer per connection, bytes: grows while a large frame
    /// arrives, so small keeps idle connections cheap. Default 1024.
    pub ws_read_buffer: usize,
    /// Shortest time between two write passes of a WebSocket writer
    /// shard, ms: on a busy node the messages that reach a connection
    /// within it go out in one write (one system call and TCP segment);
    /// after a long pass a shard waits four times that pass (at most eight
    /// times this). A shard woken after a pause passes at once, and a broadcast
    /// with only a few quiet recipients (no other broadcast for two
    /// windows: small rooms, targeted emits) is written at once by its
    /// producer. Replies to one client never wait. 0 writes everything at
    /// once.
    /// Default 20.
    pub write_coalesce_ms: u64,
    /// Time a client TCP connection has to send a complete HTTP request
    /// head, ms: counted from the accept for the first request (a Socket.IO
    /// client sends it at once), and from the end of the previous response
    /// for each later request on a kept-alive connection, so it is also how
    /// long a connection may idle between polls. A connection that sends
    /// nothing, or its head too slowly, is closed. Default 10000.
    pub request_head_timeout_ms: u64,
    /// Longest wait for the next bytes of a polling POST body, ms: a body
    /// that stalls this long is answered 408, its connection and session
    /// closed and what was read released. Default 30000.
    pub request_body_timeout_ms: u64,
    /// WebSocket compression, permessage-deflate
    /// (`[server.compression]`). Default off.
    pub compression: CompressionConfig,
    /// How Socket.IO packets are encoded for this node's clients: `"json"`
    /// (the default `socket.io-parser`) or `"msgpack"`
    /// (`socket.io-msgpack-parser`, which the clients must use too).
    /// Default `"json"`.
    pub parser: Parser,
}

/// The Socket.IO packet encoding of a node's clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parser {
    /// Text packets, binary as attachments (`socket.io-parser`).
    #[default]
    Json,
    /// One msgpack map per packet in a binary message
    /// (`socket.io-msgpack-parser`).
    Msgpack,
}

/// `[server.compression]`: permessage-deflate (RFC 7692) on WebSocket
/// connections whose client offers it. A message is compressed once
/// whatever the number of its recipients.
///
/// ```toml
/// [server.compression]
/// enabled = true
/// threshold = 1024
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompressionConfig {
    /// Negotiate permessage-deflate with clients that offer it. Default
    /// false.
    pub enabled: bool,
    /// Messages shorter than this many bytes are sent uncompressed (as
    /// Node's `perMessageDeflate.threshold`). Default 1024.
    pub threshold: usize,
    /// Deflate level, 1 (fastest) to 9 (smallest). Default 6 (zlib's, and
    /// Node's): a message is compressed once per node whatever its
    /// recipients, so in the compression benchmark level 6 sent 11% fewer
    /// bytes than level 1 at the same CPU per delivery
    /// (`docs/benchmarks.md`).
    pub level: u32,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            threshold: 1024,
            level: 6,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 3000)),
            path: "/socket.io/".to_owned(),
            cors_origins: Vec::new(),
            transports: vec![Transport::Polling, Transport::Websocket],
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            upgrade_timeout_ms: 10_000,
            connect_timeout_ms: 45_000,
            max_payload: 1_000_000,
            ws_read_buffer: 1024,
            write_coalesce_ms: 20,
            request_head_timeout_ms: 10_000,
            request_body_timeout_ms: 30_000,
            compression: CompressionConfig::default(),
            parser: Parser::Json,
        }
    }
}

impl ServerConfig {
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }
    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.ping_timeout_ms)
    }
    pub fn upgrade_timeout(&self) -> Duration {
        Duration::from_millis(self.upgrade_timeout_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn write_coalesce(&self) -> Duration {
        Duration::from_millis(self.write_coalesce_ms)
    }
    pub fn request_head_timeout(&self) -> Duration {
        Duration::from_millis(self.request_head_timeout_ms)
    }
    pub fn request_body_timeout(&self) -> Duration {
        Duration::from_millis(self.request_body_timeout_ms)
    }
    pub fn allows(&self, transport: Transport) -> bool {
        self.transports.contains(&transport)
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Engine.IO connections a node accepts; more get HTTP 503. Default 100000.
    pub max_connections: usize,
    /// Binary attachments in one Socket.IO packet. Default 10.
    pub max_attachments: usize,
    /// Rooms one socket may be in, its own-id room included. Default 256.
    pub max_rooms_per_socket: usize,
    /// Namespaces one connection may join at once. Default 16.
    pub max_namespaces_per_connection: usize,
    /// Frames queued for one connection before it counts as a slow consumer
    /// and is disconnected. Default 1024.
    pub outbound_queue_frames: usize,
    /// Payload bytes queued for one connection (beyond what its socket's
    /// kernel buffers took) before it counts as a slow consumer and is
    /// disconnected; a second bound beside `outbound_queue_frames`. Every
    /// frame counts, pongs, pings and errors the node writes on its own
    /// included, and a broadcast counts in full in each queue holding it.
    /// An empty queue takes one message of any size. At least
    /// `server.max_payload`, so that a message as large as the node accepts
    /// fits behind others. Default 4194304 (4 MiB: four messages of the
    /// default `max_payload`, far above what 1024 frames of ordinary
    /// messages hold, so the frame bound still decides for those).
    pub outbound_queue_bytes: usize,
    /// Inbound packets per second per connection (token bucket); 0 disables.
    /// WebSocket control frames (pings, pongs) count too. A connection over
    /// the limit is disconnected. Default 1000.
    pub rate_limit_per_sec: u32,
    /// Burst size of the rate limit. Default 2000.
    pub rate_limit_burst: u32,
    /// Length of a room name, bytes. Default 256.
    pub max_room_name: usize,
    /// Length of an event name, bytes. Default 256.
    pub max_event_name: usize,
    /// Application events of one socket waiting for the hooks; past it an
    /// event is dropped and its ack answers `backend busy`. Default 1024.
    pub hook_queue: usize,
    /// Client TCP connections a node holds open at once, HTTP and WebSocket
    /// alike, from accept to close (whether or not they carry a session
    /// yet); one more is closed at accept, before anything is read. Default:
    /// twice `max_connections` (a polling session may hold two connections,
    /// its GET and its POST, and an upgrade briefly two).
    pub max_tcp_connections: Option<usize>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_attachments: 10,
            max_rooms_per_socket: 256,
            max_namespaces_per_connection: 16,
            outbound_queue_frames: 1024,
            outbound_queue_bytes: 4 * 1024 * 1024,
            rate_limit_per_sec: 1000,
            rate_limit_burst: 2000,
            max_room_name: 256,
            max_event_name: 256,
            hook_queue: 1024,
            max_tcp_connections: None,
        }
    }
}

impl LimitsConfig {
    /// `max_tcp_connections`, or its default.
    pub fn tcp_connections(&self) -> usize {
        self.max_tcp_connections
            .unwrap_or_else(|| self.max_connections.saturating_mul(2))
    }
}

/// `[cluster]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id (6 characters of `[A-Za-z0-9_-]`), the prefix of every
    /// socket id it hands out. Default: random at start.
    pub node_id: Option<String>,
    /// Redis to share rooms with other nodes: `redis://host:port` (standalone),
    /// `redis-sentinel://host:port?sentinelServiceName=name&node=host2:port`
    /// (Sentinel) or `redis-cluster://host:port?node=host2:port` (Redis
    /// Cluster, sharded pub/sub). Default none: the node runs alone with the
    /// in-process broker.
    pub redis_url: Option<String>,
    /// Prefix of every bus channel name. Default `sio-gw`.
    pub channel_prefix: String,
    /// Interval between heartbeats, ms. Default 2000.
    pub heartbeat_interval_ms: u64,
    /// A node not heard from for this long is gone, ms. Default 6000.
    pub node_timeout_ms: u64,
    /// Longest wait for the answers of a cluster-wide request, ms. Default 5000.
    pub request_timeout_ms: u64,
    /// Address of the internal listener on which this node serves the
    /// long-polling requests other nodes forward to it (a request for a
    /// session owned by another node is forwarded there, so no sticky
    /// sessions are needed). Default none: a request for another node's
    /// session gets `Session ID unknown`. Needs `cluster.secret` and
    /// `cluster.redis_url`; keep it unreachable from clients.
    pub internal_listen: Option<SocketAddr>,
    /// The `host:port` other nodes reach the internal listener at (the
    /// pod's IP and the internal port). Default: the internal listener's
    /// address, when it is not a wildcard one.
    pub internal_advertise: Option<String>,
    /// The secret every node of the cluster shares, which forwarded requests
    /// carry (at least 16 characters). Set it from a Secret
    /// (`GATEWAY_CLUSTER__SECRET`), not in the file.
    pub secret: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: None,
            redis_url: None,
            channel_prefix: "sio-gw".to_owned(),
            heartbeat_interval_ms: 2_000,
            node_timeout_ms: 6_000,
            request_timeout_ms: 5_000,
            internal_listen: None,
            internal_advertise: None,
            secret: None,
        }
    }
}

/// `[ops]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct OpsConfig {
    /// Address of the operations listener (`/metrics`, `/healthz`,
    /// `/readyz`). Default: unset, no operations port. The container image
    /// sets `GATEWAY_OPS__LISTEN=0.0.0.0:9090`; left off by default so that
    /// several nodes can run on one host without a port clash.
    pub listen: Option<SocketAddr>,
}

/// `[shutdown]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After SIGTERM, how long the node waits for its clients to go and its
    /// in-flight work to finish before it exits anyway, ms. Counted from the
    /// end of the drain delay. Default 25000.
    pub grace_period_ms: u64,
    /// After SIGTERM, how long the node keeps serving while reporting not
    /// ready, so that load balancers stop routing to it before it closes
    /// its clients, ms. Default 0 (a Kubernetes `preStop` sleep does this).
    pub drain_delay_ms: u64,
    /// Then how long the node takes to close its clients, ms: they are
    /// closed a few at a time, evenly over this window, so that they
    /// reconnect to the other nodes gradually instead of all at once.
    /// Counted within the grace period, and must be shorter than it.
    /// Default 0 (all at once).
    pub disconnect_spread_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            grace_period_ms: 25_000,
            drain_delay_ms: 0,
            disconnect_spread_ms: 0,
        }
    }
}

impl ShutdownConfig {
    pub fn grace_period(&self) -> Duration {
        Duration::from_millis(self.grace_period_ms)
    }
    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.drain_delay_ms)
    }
    pub fn disconnect_spread(&self) -> Duration {
        Duration::from_millis(self.disconnect_spread_ms)
    }
}

/// `[telemetry]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Log format on stderr: `text` or `json`. Default `text`; the CLI flag
    /// `--log-format` (or `GATEWAY_LOG_FORMAT`) overrides it.
    pub log_format: LogFormat,
    /// Log filter (`tracing-subscriber` `EnvFilter` syntax, e.g.
    /// `info,gateway=debug`). `RUST_LOG` overrides it. Default `info`.
    pub log_level: String,
    /// OTLP/gRPC endpoint spans are exported to, e.g.
    /// `http://otel-collector:4317`. Default: `OTEL_EXPORTER_OTLP_ENDPOINT`;
    /// when neither is set, no span leaves the process.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans. Default: `OTEL_SERVICE_NAME`,
    /// else `gateway`. Other resource attributes come from
    /// `OTEL_RESOURCE_ATTRIBUTES`, sampling from `OTEL_TRACES_SAMPLER`.
    pub service_name: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            otlp_endpoint: None,
            service_name: None,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[admin]`: the admin gRPC API through which backends drive the cluster.
///
/// Without a token the API is open to whoever reaches the port, so it must
/// listen on a loopback address; validation refuses anything else.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address the admin gRPC listener binds. Default `127.0.0.1:50051`. Must
    /// be a loopback address unless `token` is set.
    pub listen: SocketAddr,
    /// Bearer token every admin call must carry as the metadata
    /// `authorization: Bearer <token>`: printable ASCII without spaces, at
    /// least 16 characters, and not a known placeholder (such as
    /// `replace-me-in-the-overlay`). Default none: with neither `token` nor
    /// `token_file`, calls are not authenticated and the API listens on
    /// localhost only. Prefer the environment (`GATEWAY_ADMIN__TOKEN`) to a
    /// file.
    pub token: Option<String>,
    /// File of accepted bearer tokens, one per line (blank lines and lines
    /// starting with `#` are skipped), each held to the rules of `token`.
    /// Every token of the file is accepted, together with `token` when both
    /// are set: during a rotation it holds the new token and the old one.
    /// Read when the node is built, then again every 10 s when it changes
    /// and at once on SIGHUP; a file that cannot be read or holds an
    /// unusable token keeps the tokens already loaded (and logs a warning).
    /// Default none. Kubernetes: a Secret mounted as a volume (updated in
    /// place, unlike environment variables).
    pub token_file: Option<PathBuf>,
    /// PEM file with the certificate chain the admin API presents (TLS).
    /// Default none: plaintext HTTP/2. Set together with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// PEM file with the private key of `tls_cert`. Default none.
    pub tls_key: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            token: None,
            token_file: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// The token stays out of logs.
impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish()
    }
}

impl AdminConfig {
    /// Checks the `[admin]` rules: a token to listen beyond localhost, a
    /// usable token, a TLS certificate and key both or neither.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(token) = &self.token {
            check_admin_token(token).map_err(|reason| invalid("admin.token", reason))?;
        } else if self.token_file.is_none() && !self.listen.ip().is_loopback() {
            return Err(invalid(
                "admin.listen",
                format!(
                    "{} is not a loopback address: without admin.token \
                     (GATEWAY_ADMIN__TOKEN) or admin.token_file the admin API \
                     listens on localhost only",
                    self.listen
                ),
            ));
        }
        // The certificate and key files are read (and checked) by the admin
        // API as the node is built.
        self.tls_files().map(drop)
    }

    /// The certificate and key files of the admin API's TLS identity, `None`
    /// for plaintext; an error when only one is set. Decides for
    /// [`AdminConfig::validate`] and for the admin API that loads them.
    pub(crate) fn tls_files(&self) -> Result<Option<(&Path, &Path)>, ConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            _ => Err(invalid(
                "admin.tls_cert, admin.tls_key",
                "must be set together",
            )),
        }
    }
}

/// The fewest characters an admin token may have.
pub const ADMIN_TOKEN_MIN_LEN: usize = 16;

/// Words that mark a token as a placeholder or an example copied from the
/// manifests or the docs rather than a generated secret (compared without
/// case).
const PLACEHOLDER_WORDS: [&str; 7] = [
    "replace-me",
    "replace_me",
    "changeme",
    "change-me",
    "not-a-secret",
    "placeholder",
    "example",
];

/// Why `token` cannot be an admin token, if it cannot: it travels in an
/// HTTP header (printable ASCII, no spaces), must not be guessable by
/// length, and must not be a placeholder left in a manifest. Used for
/// `admin.token` and for every line of `admin.token_file`.
pub(crate) fn check_admin_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("must not be empty when set".into());
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces (it travels in an HTTP header)".into());
    }
    if token.len() < ADMIN_TOKEN_MIN_LEN {
        return Err(format!(
            "must have at least {ADMIN_TOKEN_MIN_LEN} characters (generate one with \
             `openssl rand -hex 32`)"
        ));
    }
    let lower = token.to_ascii_lowercase();
    if let Some(word) = PLACEHOLDER_WORDS.iter().find(|w| lower.contains(*w)) {
        return Err(format!(
            "is a placeholder (it contains {word:?}), not a secret: generate one with \
             `openssl rand -hex 32`"
        ));
    }
    Ok(())
}

/// `[[namespaces]]`: a namespace, or a family of them, and its policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Exact name (`/chat`) or glob pattern (`/tenant-*`). Must start with `/`.
    pub name: String,
    /// Glob patterns of rooms a client may `$join`/`$leave` itself. Default none.
    #[serde(default)]
    pub join: Vec<String>,
    /// Whether a client may `$publish` into rooms it is in. Default false.
    #[serde(default)]
    pub publish: bool,
    /// When set, connections must carry a valid JWT in `auth.token`.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// When set, connect / event / disconnect go to this backend's `Hooks`
    /// gRPC service (`[namespaces.hooks]`). Default none.
    #[serde(default)]
    pub hooks: Option<HooksConfig>,
    /// Connection state recovery (`[namespaces.recovery]`). Default off.
    #[serde(default)]
    pub recovery: RecoveryConfig,
}

/// `[namespaces.recovery]`: Socket.IO's connection state recovery for a
/// namespace. When enabled, the CONNECT reply carries a `pid`, every stored
/// event carries an offset as its last argument, and a client that comes
/// back within `max_disconnection_ms` with its `pid` and last offset gets
/// the same socket id, its rooms and data, and the events it missed.
///
/// ```toml
/// [[namespaces]]
/// name = "/chat"
/// [namespaces.recovery]
/// enabled = true
/// max_disconnection_ms = 120000
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoveryConfig {
    /// Default false.
    pub enabled: bool,
    /// How long a disconnected socket's session is kept, and how long an
    /// event stays in the namespace's log, ms. Default 120000 (Node's
    /// `maxDisconnectionDuration`).
    pub max_disconnection_ms: u64,
    /// Events kept in the namespace's log (oldest dropped first). Default
    /// 10000.
    pub max_packets: usize,
    /// Bytes of events (text and attachments) kept in the namespace's log
    /// (oldest dropped first). Default 16 MiB.
    pub max_bytes: usize,
    /// Sessions of lost sockets kept for the namespace (the oldest dropped
    /// first), so that clients that connect and drop in a loop cannot grow
    /// the store without bound. Default 100000.
    pub max_sessions: usize,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_disconnection_ms: 120_000,
            max_packets: 10_000,
            max_bytes: 16 * 1024 * 1024,
            max_sessions: 100_000,
        }
    }
}

impl RecoveryConfig {
    /// Checks the values (of an enabled policy).
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if self.max_disconnection_ms == 0 || self.max_disconnection_ms > 86_400_000 {
            return Err("max_disconnection_ms must be between 1 and 86400000".into());
        }
        if self.max_packets == 0 || self.max_packets > 10_000_000 {
            return Err("max_packets must be between 1 and 10000000".into());
        }
        if self.max_bytes < 1024 || self.max_bytes as u64 > 4 * 1024 * 1024 * 1024 {
            return Err("max_bytes must be between 1024 and 4294967296".into());
        }
        if self.max_sessions == 0 || self.max_sessions > 100_000_000 {
            return Err("max_sessions must be between 1 and 100000000".into());
        }
        Ok(())
    }
}

/// `[namespaces.hooks]`: the backend that hears about a namespace's sockets.
///
/// ```toml
/// [[namespaces]]
/// name = "/chat"
/// [namespaces.hooks]
/// url = "http://127.0.0.1:50061"
/// timeout_ms = 2000
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    /// Address of the backend's `Hooks` service, `http://host:port`.
    /// Required. (TLS to backends is not supported yet.)
    pub url: String,
    /// Call `OnConnect` to decide admission. Default true.
    #[serde(default = "yes")]
    pub connect: bool,
    /// Send application events to `OnEvent`. Default true. When false, a
    /// client asking for an ack gets `{"ok":false,"error":...}`.
    #[serde(default = "yes")]
    pub events: bool,
    /// Report departures to `OnDisconnect`. Default true.
    #[serde(default = "yes")]
    pub disconnect: bool,
    /// Deadline of each call, ms, waiting for a free slot included; an
    /// `OnConnect` deadline is also bounded by `server.connect_timeout_ms`.
    /// Default 5000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Calls in flight to this backend at once, all its namespaces together
    /// (namespaces naming the same `url` must agree on it). Default 256.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

fn yes() -> bool {
    true
}

fn default_timeout_ms() -> u64 {
    5_000
}

fn default_max_in_flight() -> usize {
    256
}

impl HooksConfig {
    /// A backend at `url` with every default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            connect: true,
            events: true,
            disconnect: true,
            timeout_ms: default_timeout_ms(),
            max_in_flight: default_max_in_flight(),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Checks the values of one table; the error names the bad key
    /// (`hooks.url`), to be placed in its namespace
    /// ([`ConfigError::in_namespace`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        hooks_endpoint(&self.url)?;
        if self.timeout_ms == 0 || self.timeout_ms > 3_600_000 {
            return Err(invalid("hooks.timeout_ms", "must be between 1 and 3600000"));
        }
        if self.max_in_flight == 0 || self.max_in_flight > Semaphore::MAX_PERMITS {
            return Err(invalid(
                "hooks.max_in_flight",
                format!("must be between 1 and {}", Semaphore::MAX_PERMITS),
            ));
        }
        Ok(())
    }
}

/// Parses a backend url into an endpoint; only `http://host[:port]`.
pub(crate) fn hooks_endpoint(url: &str) -> Result<Endpoint, ConfigError> {
    const KEY: &str = "hooks.url";
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| unusable(KEY, format!("{url:?} is not a valid URI"), e))?;
    let uri = endpoint.uri();
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(invalid(
                KEY,
                format!("{url:?}: TLS to hooks backends is not supported yet, use http://"),
            ));
        }
        _ => return Err(invalid(KEY, format!("{url:?} must start with http://"))),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid(KEY, format!("{url:?} has no host")));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(invalid(
            KEY,
            format!("{url:?} must not have a path (the service path is fixed)"),
        ));
    }
    Ok(endpoint)
}

/// Checks what spans namespaces: those naming the same backend share its
/// bound on calls in flight, so they must agree on it.
pub(crate) fn validate_backends(namespaces: &[NamespaceConfig]) -> Result<(), ConfigError> {
    let mut bounds: HashMap<&str, (&str, usize)> = HashMap::new();
    for ns in namespaces {
        let Some(hooks) = &ns.hooks else { continue };
        match bounds.get(hooks.url.as_str()) {
            Some(&(other, bound)) if bound != hooks.max_in_flight => {
                return Err(invalid(
                    "hooks.max_in_flight",
                    format!(
                        "namespaces {other:?} and {:?} name the hooks backend {:?} with \
                         different max_in_flight ({bound} and {}); it bounds the backend as a \
                         whole, so give them the same value",
                        ns.name, hooks.url, hooks.max_in_flight
                    ),
                ));
            }
            Some(_) => {}
            None => {
                bounds.insert(&hooks.url, (&ns.name, hooks.max_in_flight));
            }
        }
    }
    Ok(())
}

/// `[namespaces.jwt]`: how `auth.token` is verified (see `crate::auth`).
/// The key is exactly one of `secret` (HS256), `public_key` /
/// `public_key_file` (RS256, ES256) or `jwks_url` (RS256, ES256).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// `HS256`, `RS256` or `ES256`: the only algorithm accepted (the token's
    /// own `alg` header never chooses).
    pub algorithm: JwtAlgorithm,
    /// Shared secret (HS256).
    #[serde(default)]
    pub secret: Option<String>,
    /// PEM public key (RS256: RSA; ES256: P-256 EC).
    #[serde(default)]
    pub public_key: Option<String>,
    /// Path of a PEM public key file, instead of `public_key`.
    #[serde(default)]
    pub public_key_file: Option<String>,
    /// URL of a JSON Web Key Set (`http://` or `https://`, e.g. an identity
    /// provider's `jwks_uri`), instead of a fixed key. Fetched at start,
    /// cached, refetched when a token names an unknown `kid` or the set is
    /// older than `jwks_max_age_ms`. Default none.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Longest one JWKS fetch may take (connect, headers and body), ms.
    /// Default 5000.
    #[serde(default = "JwtConfig::default_jwks_timeout_ms")]
    pub jwks_timeout_ms: u64,
    /// Largest JWKS response accepted, bytes. Default 262144 (256 KiB).
    #[serde(default = "JwtConfig::default_jwks_max_bytes")]
    pub jwks_max_bytes: usize,
    /// Least time between two JWKS fetches, ms: tokens with unknown `kid`s
    /// cause at most one fetch per interval. Default 10000.
    #[serde(default = "JwtConfig::default_jwks_min_refresh_interval_ms")]
    pub jwks_min_refresh_interval_ms: u64,
    /// Age after which the cached JWKS is refetched in the background (so
    /// keys the provider removed stop being accepted), ms. Default 600000.
    #[serde(default = "JwtConfig::default_jwks_max_age_ms")]
    pub jwks_max_age_ms: u64,
    /// Accepted audiences: when non-empty, the token's `aud` (a string or an
    /// array) must contain one of them. When empty, `aud` is not checked.
    /// A string or a list. Default none.
    #[serde(default, deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// Accepted issuers: when non-empty, the token's `iss` must be one of
    /// them. When empty, `iss` is not checked. A string or a list. Default
    /// none.
    #[serde(default, deserialize_with = "one_or_many")]
    pub issuer: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, seconds (at most 600).
    /// Default 60.
    #[serde(default = "JwtConfig::default_leeway_secs")]
    pub leeway_secs: u64,
}

/// The most clock skew `leeway_secs` may allow.
pub const MAX_JWT_LEEWAY_SECS: u64 = 600;

/// Where a namespace's verification key comes from: the one key setting
/// its algorithm takes (see [`JwtConfig::key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JwtKey<'a> {
    /// HS256: the shared `secret`.
    Secret(&'a str),
    /// RS256, ES256: `public_key`, a PEM public key.
    PublicKey(&'a str),
    /// RS256, ES256: `public_key_file`, the path of a PEM public key.
    PublicKeyFile(&'a str),
    /// RS256, ES256: `jwks_url`, the URL of a JSON Web Key Set.
    Jwks(&'a str),
}

impl JwtConfig {
    /// Checks which keys are given for the algorithm and the other values;
    /// the keys themselves are parsed (and a key file read) by the
    /// namespace's verifier as the node is built. The error names the
    /// table (`jwt`), to be placed in its namespace
    /// ([`ConfigError::in_namespace`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.key().map(drop)
    }

    /// Checks the values like [`JwtConfig::validate`] and says where the
    /// key comes from: the one place that decides which key settings fit
    /// the algorithm, for the validation and for the verifier.
    pub(crate) fn key(&self) -> Result<JwtKey<'_>, ConfigError> {
        const KEY: &str = "jwt";
        let key = match self.algorithm {
            JwtAlgorithm::HS256 => {
                if self.public_key.is_some()
                    || self.public_key_file.is_some()
                    || self.jwks_url.is_some()
                {
                    return Err(invalid(
                        KEY,
                        "HS256 takes only `secret` (no public key, no `jwks_url`)",
                    ));
                }
                match self.secret.as_deref() {
                    Some(secret) if !secret.is_empty() => JwtKey::Secret(secret),
                    _ => return Err(invalid(KEY, "HS256 needs `secret`")),
                }
            }
            algorithm => {
                if self.secret.is_some() {
                    return Err(invalid(
                        KEY,
                        format!("{algorithm:?} takes a public key, not `secret`"),
                    ));
                }
                match (
                    self.public_key.as_deref(),
                    self.public_key_file.as_deref(),
                    self.jwks_url.as_deref(),
                ) {
                    (Some(pem), None, None) => JwtKey::PublicKey(pem),
                    (None, Some(path), None) => JwtKey::PublicKeyFile(path),
                    (None, None, Some(url)) => JwtKey::Jwks(url),
                    _ => {
                        return Err(invalid(
                            KEY,
                            format!(
                                "{algorithm:?} needs exactly one of `public_key`, \
                                 `public_key_file` or `jwks_url`"
                            ),
                        ));
                    }
                }
            }
        };
        if self.leeway_secs > MAX_JWT_LEEWAY_SECS {
            return Err(invalid(
                KEY,
                format!("`leeway_secs` is at most {MAX_JWT_LEEWAY_SECS}"),
            ));
        }
        if self
            .audience
            .iter()
            .chain(&self.issuer)
            .any(String::is_empty)
        {
            return Err(invalid(
                KEY,
                "`audience` and `issuer` entries must not be empty",
            ));
        }
        Ok(key)
    }

    /// A configuration for `algorithm` with every other field at its default.
    pub fn new(algorithm: JwtAlgorithm) -> Self {
        Self {
            algorithm,
            secret: None,
            public_key: None,
            public_key_file: None,
            jwks_url: None,
            jwks_timeout_ms: Self::default_jwks_timeout_ms(),
            jwks_max_bytes: Self::default_jwks_max_bytes(),
            jwks_min_refresh_interval_ms: Self::default_jwks_min_refresh_interval_ms(),
            jwks_max_age_ms: Self::default_jwks_max_age_ms(),
            audience: Vec::new(),
            issuer: Vec::new(),
            leeway_secs: Self::default_leeway_secs(),
        }
    }

    fn default_jwks_timeout_ms() -> u64 {
        5_000
    }

    fn default_jwks_max_bytes() -> usize {
        256 * 1024
    }

    fn default_jwks_min_refresh_interval_ms() -> u64 {
        10_000
    }

    fn default_jwks_max_age_ms() -> u64 {
        600_000
    }

    fn default_leeway_secs() -> u64 {
        60
    }
}

/// A list, or a string of comma-separated items (blank ones skipped): the
/// form a list takes in an environment variable. Each item is read as a
/// `T`, so a bad item is reported as such.
fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ListVisitor<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ListVisitor<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list, or a string of comma-separated items")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            Ok(items)
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Vec<T>, E> {
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| T::deserialize(serde::de::value::StrDeserializer::<E>::new(item)))
                .collect()
        }
    }

    d.deserialize_any(ListVisitor(std::marker::PhantomData))
}

/// A string or a list of strings, read as a list.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    ES256,
}

/// A compiled namespace name: exact or glob.
#[derive(Debug, Clone)]
pub enum NamespaceMatcher {
    Exact(String),
    Pattern(GlobMatcher),
}

impl NamespaceMatcher {
    pub fn new(name: &str) -> Result<Self, ConfigError> {
        let key = || format!("namespace {name:?}");
        if !name.starts_with('/') {
            return Err(invalid(key(), "must start with '/'"));
        }
        if name.contains(['*', '?', '[', '{']) {
            let glob =
                Glob::new(name).map_err(|e| unusable(key(), "not a valid glob pattern", e))?;
            Ok(Self::Pattern(glob.compile_matcher()))
        } else {
            Ok(Self::Exact(name.to_owned()))
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(n) => n == name,
            Self::Pattern(g) => g.is_match(name),
        }
    }

    pub fn is_pattern(&self) -> bool {
        matches!(self, Self::Pattern(_))
    }
}

/// Compiles a pattern of a namespace's `join` list.
pub(crate) fn join_pattern(pattern: &str) -> Result<Glob, ConfigError> {
    Glob::new(pattern).map_err(|e| {
        unusable(
            "join",
            format!("{pattern:?} is not a valid glob pattern"),
            e,
        )
    })
}

impl Config {
    /// Loads `file` (when given), then `GATEWAY_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        // Only section-qualified names (`GATEWAY_SERVER__LISTEN`) are settings;
        // others such as `GATEWAY_CONFIG` belong to the binary.
        figment = figment.merge(
            Env::prefixed("GATEWAY_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        let config: Config = figment.extract().map_err(Box::new)?;
        Ok(config)
    }

    /// Parses a TOML document (no environment), for tests and examples.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = Figment::from(Toml::string(text))
            .extract()
            .map_err(Box::new)?;
        Ok(config)
    }

    /// The namespaces in effect: the configured ones, or the default `/`;
    /// and the Admin UI's when it is on.
    pub fn effective_namespaces(&self) -> Vec<NamespaceConfig> {
        let mut all = self.client_namespaces();
        if self.admin_ui.enabled {
            all.push(NamespaceConfig {
                name: self.admin_ui.namespace.clone(),
                join: Vec::new(),
                publish: false,
                jwt: None,
                hooks: None,
                recovery: RecoveryConfig::default(),
            });
        }
        all
    }

    /// The configured namespaces, or the default `/`.
    fn client_namespaces(&self) -> Vec<NamespaceConfig> {
        if self.namespaces.is_empty() {
            vec![NamespaceConfig {
                name: "/".to_owned(),
                join: vec!["*".to_owned()],
                publish: true,
                jwt: None,
                hooks: None,
                recovery: RecoveryConfig::default(),
            }]
        } else {
            self.namespaces.clone()
        }
    }

    /// Checks every value, without reading any file or address it names
    /// (the parts that use them load them as the node is built, see
    /// `Node::builder`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.redis_emitter.key.is_empty() {
            return Err(invalid("redis_emitter.key", "must not be empty"));
        }
        let s = &self.server;
        if !s.path.starts_with('/') {
            return Err(invalid("server.path", "must start with '/'"));
        }
        if s.transports.is_empty() {
            return Err(invalid(
                "server.transports",
                "must name at least one transport",
            ));
        }
        for (name, v) in [
            ("server.ping_interval_ms", s.ping_interval_ms),
            ("server.ping_timeout_ms", s.ping_timeout_ms),
            ("server.upgrade_timeout_ms", s.upgrade_timeout_ms),
            ("server.connect_timeout_ms", s.connect_timeout_ms),
            ("server.request_head_timeout_ms", s.request_head_timeout_ms),
            ("server.request_body_timeout_ms", s.request_body_timeout_ms),
        ] {
            if v == 0 || v > 3_600_000 {
                return Err(invalid(name, "must be between 1 and 3600000"));
            }
        }
        if s.max_payload < 16 || s.max_payload > 256 * 1024 * 1024 {
            return Err(invalid(
                "server.max_payload",
                "must be between 16 and 268435456",
            ));
        }
        if s.write_coalesce_ms > 1000 {
            return Err(invalid("server.write_coalesce_ms", "must be at most 1000"));
        }
        if s.ws_read_buffer < 64 {
            return Err(invalid("server.ws_read_buffer", "must be at least 64"));
        }
        if !(1..=9).contains(&s.compression.level) {
            return Err(invalid(
                "server.compression.level",
                "must be between 1 and 9",
            ));
        }
        let l = &self.limits;
        for (name, v) in [
            ("limits.max_connections", l.max_connections),
            ("limits.max_rooms_per_socket", l.max_rooms_per_socket),
            (
                "limits.max_namespaces_per_connection",
                l.max_namespaces_per_connection,
            ),
            ("limits.outbound_queue_frames", l.outbound_queue_frames),
            ("limits.max_room_name", l.max_room_name),
            ("limits.max_event_name", l.max_event_name),
            ("limits.hook_queue", l.hook_queue),
            ("limits.max_tcp_connections", l.tcp_connections()),
        ] {
            if v == 0 {
                return Err(invalid(name, "must be at least 1"));
            }
        }
        if (l.outbound_queue_bytes as u64) < s.max_payload {
            return Err(invalid(
                "limits.outbound_queue_bytes",
                "must be at least server.max_payload",
            ));
        }
        if l.rate_limit_per_sec > 0 && l.rate_limit_burst == 0 {
            return Err(invalid(
                "limits.rate_limit_burst",
                "must be at least 1 when the rate limit is on",
            ));
        }
        if let Some(id) = &self.cluster.node_id
            && crate::ids::NodeId::parse(id).is_none()
        {
            return Err(invalid(
                "cluster.node_id",
                format!(
                    "{id:?} must be {} characters of [A-Za-z0-9_-]",
                    crate::ids::NODE_ID_LEN
                ),
            ));
        }
        let c = &self.cluster;
        if c.channel_prefix.is_empty() || c.channel_prefix.contains(char::is_whitespace) {
            return Err(invalid(
                "cluster.channel_prefix",
                "must be non-empty, without spaces",
            ));
        }
        if c.heartbeat_interval_ms == 0 || c.node_timeout_ms <= c.heartbeat_interval_ms {
            return Err(invalid(
                "cluster.node_timeout_ms",
                "must be greater than cluster.heartbeat_interval_ms (> 0)",
            ));
        }
        if c.request_timeout_ms == 0 {
            return Err(invalid("cluster.request_timeout_ms", "must be at least 1"));
        }
        if let Some(url) = &c.redis_url {
            let known = [
                "redis://",
                "rediss://",
                "redis-cluster://",
                "redis-sentinel://",
                "valkey://",
            ];
            if !known.iter().any(|p| url.starts_with(p)) {
                return Err(invalid(
                    "cluster.redis_url",
                    format!("{url:?} must start with one of {known:?}"),
                ));
            }
        }
        if c.internal_listen.is_some() {
            if c.secret.as_ref().is_none_or(|s| s.len() < 16) {
                return Err(invalid(
                    "cluster.secret",
                    "must be set (at least 16 characters) with cluster.internal_listen",
                ));
            }
            if c.redis_url.is_none() {
                return Err(invalid(
                    "cluster.internal_listen",
                    "forwarding needs other nodes: set cluster.redis_url",
                ));
            }
        }
        if let Some(addr) = &c.internal_advertise
            && addr
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(invalid(
                "cluster.internal_advertise",
                format!("{addr:?} must be host:port"),
            ));
        }
        self.validate_operations()?;
        let mut seen = std::collections::HashSet::new();
        for ns in &self.namespaces {
            if !seen.insert(ns.name.as_str()) {
                return Err(invalid(
                    format!("namespace {:?}", ns.name),
                    "declared twice",
                ));
            }
            NamespaceMatcher::new(&ns.name)?;
            for pattern in &ns.join {
                join_pattern(pattern).map_err(|e| e.in_namespace(&ns.name))?;
            }
            // JWT keys are parsed (a key file read) by the namespace's
            // policy as the node is built.
            if let Some(jwt) = &ns.jwt {
                jwt.validate().map_err(|e| e.in_namespace(&ns.name))?;
            }
            if let Some(hooks) = &ns.hooks {
                hooks.validate().map_err(|e| e.in_namespace(&ns.name))?;
            }
            ns.recovery
                .validate()
                .map_err(|reason| invalid("recovery", reason).in_namespace(&ns.name))?;
        }
        validate_backends(&self.namespaces)?;
        self.admin_ui.validate(&self.client_namespaces())?;
        Ok(())
    }
}

impl Config {
    /// Checks `[ops]`, `[shutdown]`, `[telemetry]` and `[admin]`.
    fn validate_operations(&self) -> Result<(), ConfigError> {
        let sd = &self.shutdown;
        if sd.grace_period_ms > 3_600_000 {
            return Err(invalid(
                "shutdown.grace_period_ms",
                "must be at most 3600000",
            ));
        }
        if sd.drain_delay_ms > 3_600_000 {
            return Err(invalid(
                "shutdown.drain_delay_ms",
                "must be at most 3600000",
            ));
        }
        if sd.disconnect_spread_ms > 0 && sd.disconnect_spread_ms >= sd.grace_period_ms {
            return Err(invalid(
                "shutdown.disconnect_spread_ms",
                "must be shorter than shutdown.grace_period_ms (clients are closed within it)",
            ));
        }
        let t = &self.telemetry;
        tracing_subscriber::EnvFilter::try_new(&t.log_level).map_err(|e| {
            unusable(
                "telemetry.log_level",
                format!("{:?} is not a log filter", t.log_level),
                e,
            )
        })?;
        if let Some(endpoint) = &t.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(invalid(
                "telemetry.otlp_endpoint",
                format!("{endpoint:?} must start with http:// or https://"),
            ));
        }
        if t.service_name.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("telemetry.service_name", "must not be empty"));
        }
        self.admin.validate()?;
        for (name, addr) in [
            ("ops.listen", self.ops.listen),
            ("admin.listen", Some(self.admin.listen)),
        ] {
            if let Some(addr) = addr
                && addr.port() != 0
                && addr == self.server.listen
            {
                return Err(invalid(name, "must differ from server.listen"));
            }
        }
        if let Some(ops) = self.ops.listen
            && ops.port() != 0
            && ops == self.admin.listen
        {
            return Err(invalid("ops.listen", "must differ from admin.listen"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_reference_server() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.server.ping_interval_ms, 25_000);
        assert_eq!(c.server.ping_timeout_ms, 20_000);
        assert_eq!(c.server.connect_timeout_ms, 45_000);
        assert_eq!(c.server.upgrade_timeout_ms, 10_000);
        assert_eq!(c.server.max_payload, 1_000_000);
        let ns = c.effective_namespaces();
        assert_eq!(ns.len(), 1);
        assert_eq!(ns[0].name, "/");
        assert!(ns[0].publish);
    }

    #[test]
    fn recovery_is_off_by_default_and_checked() {
        let c = Config::from_toml("[[namespaces]]\nname = \"/\"\n").unwrap();
        assert_eq!(c.namespaces[0].recovery, RecoveryConfig::default());
        assert!(!c.namespaces[0].recovery.enabled);
        assert_eq!(c.namespaces[0].recovery.max_disconnection_ms, 120_000);
        assert_eq!(c.namespaces[0].recovery.max_packets, 10_000);
        assert_eq!(c.namespaces[0].recovery.max_bytes, 16 * 1024 * 1024);
        assert_eq!(c.namespaces[0].recovery.max_sessions, 100_000);
        let on = "[[namespaces]]\nname = \"/\"\n[namespaces.recovery]\nenabled = true\n";
        Config::from_toml(on).unwrap().validate().unwrap();
        let zero = format!("{on}max_packets = 0\n");
        let e = Config::from_toml(&zero).unwrap().validate().unwrap_err();
        assert!(e.to_string().contains("recovery: max_packets"), "{e}");
        // Over Redis too: the store is then in Redis.
        let redis = format!("[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\n{on}");
        Config::from_toml(&redis).unwrap().validate().unwrap();
    }

    #[test]
    fn compression_is_off_by_default_and_checked() {
        let c = Config::default();
        assert!(!c.server.compression.enabled);
        assert_eq!(c.server.compression.threshold, 1024);
        let on = "[server.compression]\nenabled = true\nthreshold = 0\n";
        let c = Config::from_toml(on).unwrap();
        c.validate().unwrap();
        assert!(c.server.compression.enabled);
        assert_eq!(c.server.compression.threshold, 0);
        assert_eq!(c.server.compression.level, 6);
        let e = Config::from_toml(&format!("{on}level = 10\n"))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("server.compression.level"), "{e}");
        assert!(Config::from_toml(&format!("{on}window = 9\n")).is_err());
    }

    #[test]
    fn the_parser_is_json_unless_msgpack_is_asked_for() {
        assert_eq!(Config::default().server.parser, Parser::Json);
        let c = Config::from_toml("[server]\nparser = \"msgpack\"\n").unwrap();
        assert_eq!(c.server.parser, Parser::Msgpack);
        assert!(Config::from_toml("[server]\nparser = \"cbor\"\n").is_err());
    }

    #[test]
    fn forwarding_needs_a_secret_and_redis() {
        let base = "[cluster]\ninternal_listen = \"127.0.0.1:3100\"\n";
        let e = Config::from_toml(base).unwrap().validate().unwrap_err();
        assert!(e.to_string().contains("cluster.secret"), "{e}");
        let short = format!("{base}secret = \"short\"\nredis_url = \"redis://r:6379\"\n");
        let e = Config::from_toml(&short).unwrap().validate().unwrap_err();
        assert!(e.to_string().contains("at least 16"), "{e}");
        let alone = format!("{base}secret = \"0123456789abcdef\"\n");
        let e = Config::from_toml(&alone).unwrap().validate().unwrap_err();
        assert!(e.to_string().contains("cluster.redis_url"), "{e}");
        let ok = format!("{alone}redis_url = \"redis://r:6379\"\n");
        Config::from_toml(&ok).unwrap().validate().unwrap();
        let bad = format!("{ok}internal_advertise = \"nohost\"\n");
        let e = Config::from_toml(&bad).unwrap().validate().unwrap_err();
        assert!(e.to_string().contains("cluster.internal_advertise"), "{e}");
    }

    #[test]
    fn the_admin_ui_needs_a_user_and_a_bcrypt_hash_and_a_free_namespace() {
        const HASH: &str = "$2b$04$abcdefghijklmnopqrstuuVRvbNKVD3W7fCnO0mMTPx.lBT4ha3Vm";
        let ok = format!(
            "[admin_ui]\nenabled = true\nusername = \"admin\"\npassword_hash = \"{HASH}\"\n"
        );
        let c = Config::from_toml(&ok).unwrap();
        c.validate().unwrap();
        // Its namespace is in effect beside the default one.
        let names: Vec<_> = c
            .effective_namespaces()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, ["/", "/admin"]);
        // Off by default, and then nothing is required.
        let off = Config::default();
        assert!(!off.admin_ui.enabled);
        assert_eq!(off.effective_namespaces().len(), 1);
        for bad in [
            "[admin_ui]\nenabled = true\npassword_hash = \"HASH\"\n".to_owned(),
            "[admin_ui]\nenabled = true\nusername = \"admin\"\n".to_owned(),
            "[admin_ui]\nenabled = true\nusername = \"admin\"\npassword_hash = \"secret\"\n"
                .to_owned(),
            format!("{ok}namespace = \"admin\"\n"),
            format!("{ok}stats_interval_ms = 10\n"),
            format!("[[namespaces]]\nname = \"/*\"\n{ok}"),
        ] {
            let bad = bad.replace("HASH", HASH);
            let c = Config::from_toml(&bad).unwrap();
            assert!(c.validate().is_err(), "accepted: {bad}");
        }
        assert!(
            Config::from_toml("[redis_emitter]\nkey = \"\"")
                .unwrap()
                .validate()
                .is_err()
        );
    }

    #[test]
    fn parses_a_full_file() {
        let c = Config::from_toml(
            r#"
            [server]
            listen = "127.0.0.1:4000"
            ping_interval_ms = 300
            transports = ["websocket"]
            [limits]
            outbound_queue_frames = 8
            outbound_queue_bytes = 2000000
            [[namespaces]]
            name = "/tenant-*"
            join = ["public-*"]
            publish = true
            [namespaces.jwt]
            algorithm = "HS256"
            secret = "s3cret"
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.server.listen.port(), 4000);
        assert!(!c.server.allows(Transport::Polling));
        assert_eq!(c.limits.outbound_queue_frames, 8);
        assert_eq!(c.limits.outbound_queue_bytes, 2_000_000);
        let m = NamespaceMatcher::new(&c.namespaces[0].name).unwrap();
        assert!(m.matches("/tenant-42"));
        assert!(!m.matches("/other"));
    }

    #[test]
    fn rejects_bad_values() {
        for text in [
            "[server]\npath = \"x\"",
            "[server]\ntransports = []",
            "[server]\nping_interval_ms = 0",
            "[limits]\noutbound_queue_frames = 0",
            "[limits]\noutbound_queue_bytes = 999999",
            "[server]\nmax_payload = 5000000",
            "[[namespaces]]\nname = \"chat\"",
            "[[namespaces]]\nname = \"/a\"\n[[namespaces]]\nname = \"/a\"",
            "[[namespaces]]\nname = \"/a\"\n[namespaces.jwt]\nalgorithm = \"HS256\"",
            "[cluster]\nnode_id = \"toolongid\"",
        ] {
            let c = Config::from_toml(text).unwrap();
            assert!(c.validate().is_err(), "accepted: {text}");
        }
        assert!(Config::from_toml("[server]\nnope = 1").is_err());
    }

    #[test]
    fn an_error_names_the_setting_and_keeps_what_it_wraps() {
        use std::error::Error as _;
        let validate = |text: &str| Config::from_toml(text).unwrap().validate().unwrap_err();

        let e = validate("[server]\npath = \"x\"");
        assert!(matches!(&e, ConfigError::Invalid { key, .. } if key == "server.path"));
        assert_eq!(
            e.to_string(),
            "invalid configuration: server.path: must start with '/'"
        );
        assert!(e.source().is_none());
        let e = validate("[[namespaces]]\nname = \"/a\"\n[namespaces.jwt]\nalgorithm = \"HS256\"");
        assert_eq!(
            e.to_string(),
            "invalid configuration: namespace \"/a\": jwt: HS256 needs `secret`"
        );

        for (text, key) in [
            (
                "[telemetry]\nlog_level = \"info,=x=y\"",
                "telemetry.log_level",
            ),
            ("[[namespaces]]\nname = \"/a[\"", "namespace \"/a[\""),
            (
                "[[namespaces]]\nname = \"/a\"\njoin = [\"r[\"]",
                "namespace \"/a\": join",
            ),
            (
                "[[namespaces]]\nname = \"/a\"\n[namespaces.hooks]\nurl = \"http://a b\"",
                "namespace \"/a\": hooks.url",
            ),
        ] {
            let e = validate(text);
            assert!(
                matches!(&e, ConfigError::Unusable { key: k, .. } if k == key),
                "{text}: {e:?}"
            );
            assert!(
                e.to_string()
                    .starts_with(&format!("invalid configuration: {key}: ")),
                "{e}"
            );
            let source = e.source().expect("the parser's error is the source");
            assert!(
                !e.to_string().contains(&source.to_string()),
                "said twice: {e}"
            );
        }

        let e = Config::from_toml("[server]\nnope = 1").unwrap_err();
        assert_eq!(e.to_string(), "cannot load configuration");
        assert!(e.source().unwrap().to_string().contains("nope"));
    }

    #[test]
    fn operations_sections() {
        let c = Config::default();
        assert_eq!(c.ops.listen, None);
        assert_eq!(c.shutdown.grace_period_ms, 25_000);
        assert_eq!(c.shutdown.drain_delay_ms, 0);
        assert_eq!(c.telemetry.log_format, LogFormat::Text);
        let c = Config::from_toml(
            r#"
            [ops]
            listen = "127.0.0.1:9090"
            [shutdown]
            grace_period_ms = 1000
            drain_delay_ms = 200
            [telemetry]
            log_format = "json"
            log_level = "info,gateway=debug"
            otlp_endpoint = "http://collector:4317"
            service_name = "edge"
            [admin]
            listen = "0.0.0.0:50051"
            token = "a-token-of-16-chars"
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.ops.listen.unwrap().port(), 9090);
        assert_eq!(c.shutdown.drain_delay(), Duration::from_millis(200));
        assert_eq!(c.telemetry.log_format, LogFormat::Json);
        for text in [
            "[ops]\nlisten = \"0.0.0.0:3000\"",
            "[shutdown]\ngrace_period_ms = 99999999",
            "[shutdown]\ngrace_period_ms = 1000\ndisconnect_spread_ms = 1000",
            "[telemetry]\notlp_endpoint = \"collector:4317\"",
            "[telemetry]\nlog_level = \"info,=x=y\"",
            "[admin]\ntoken = \"\"",
            "[admin]\ntoken = \"short-token\"",
            "[admin]\ntoken = \"replace-me-in-the-overlay\"",
            "[admin]\ntoken = \"example-only-not-a-secret-0b7c4e1f\"",
            "[admin]\ntoken = \"CHANGEME-0123456789abcdef\"",
        ] {
            let c = Config::from_toml(text).unwrap();
            assert!(c.validate().is_err(), "accepted: {text}");
        }
        assert!(Config::from_toml("[ops]\nport = 1").is_err());
        assert!(Config::from_toml("[telemetry]\nlog_format = \"xml\"").is_err());
    }

    #[test]
    fn lists_are_arrays_or_comma_separated_strings() {
        let c = Config::from_toml(
            "[server]\ncors_origins = \"https://a.example, https://b.example,\"\n\
             transports = \"websocket\"",
        )
        .unwrap();
        assert_eq!(
            c.server.cors_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(c.server.transports, [Transport::Websocket]);
        let c = Config::from_toml("[server]\ncors_origins = [\"https://a,b\"]").unwrap();
        assert_eq!(c.server.cors_origins, ["https://a,b"]);
        let e = Config::from_toml("[server]\ntransports = \"polling,pigeon\"").unwrap_err();
        let chain = format!("{}", crate::telemetry::ErrorChain(&e));
        assert!(chain.contains("pigeon"), "{chain}");
    }

    #[test]
    fn accepts_the_kubernetes_base_configuration() {
        let text = include_str!("../../deploy/kubernetes/base/gateway.toml");
        let mut c = Config::from_toml(text).unwrap();
        // The admin API listens on every interface: only with the tokens
        // of the file the deployment mounts from the Secret gateway-admin.
        assert!(c.admin.token_file.is_some());
        c.validate().unwrap();
        c.admin.token_file = None;
        assert!(c.validate().is_err(), "no token, not loopback");
        assert_eq!(c.ops.listen.unwrap().port(), 9090);
    }
}
