//! The metrics contract with `deploy/` (the Grafana dashboard and the alert
//! rules, listed in `deploy/metric-names.txt`): every metric name and its
//! help text, the histogram buckets, and the fixed label sets
//! ([`ConnectErrorReason`], [`RecoveryResult`], [`RedisOp`], [`AdminMethod`] and gRPC codes,
//! [`HookKind`], [`HookResult`], [`HttpPhase`]). The handles that record
//! into them are in [`super::metrics`].

use ::metrics::{KeyName, Recorder, SharedString};
use metrics_exporter_prometheus::PrometheusRecorder;

/// The phase of an HTTP request that timed out (`phase` label of
/// `gateway_http_timeouts_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HttpPhase {
    /// No complete request head within `server.request_head_timeout_ms`.
    RequestHead,
    /// A request body stalled for `server.request_body_timeout_ms`.
    RequestBody,
}

impl HttpPhase {
    pub(crate) const ALL: [Self; 2] = [Self::RequestHead, Self::RequestBody];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::RequestHead => "request_head",
            Self::RequestBody => "request_body",
        }
    }
}

/// What a message of the Socket.IO Redis emitter is (`kind` label of
/// `gateway_emitter_messages_total`).
pub(crate) const EMITTER_KINDS: [&str; 6] = [
    "emit",
    "join",
    "leave",
    "disconnect",
    "server_side_emit",
    "other",
];

/// What became of it (`result` label): carried out, not understood, or
/// understood and not supported (`serverSideEmit`, other servers' requests).
pub(crate) const EMITTER_RESULTS: [&str; 3] = ["ok", "malformed", "unsupported"];

/// Metric names, as exported.
pub mod names {
    pub const BUILD_INFO: &str = "gateway_build_info";
    pub const ENGINE_CONNECTIONS: &str = "gateway_engine_connections";
    pub const SOCKETS: &str = "gateway_sockets";
    pub const CONNECTS: &str = "gateway_connects_total";
    pub const CONNECT_ERRORS: &str = "gateway_connect_errors_total";
    pub const DISCONNECTS: &str = "gateway_disconnects_total";
    pub const ROOMS: &str = "gateway_rooms";
    pub const PACKETS_RECEIVED: &str = "gateway_packets_received_total";
    pub const PACKETS_SENT: &str = "gateway_packets_sent_total";
    pub(crate) const BYTES_RECEIVED: &str = "gateway_bytes_received_total";
    pub const BYTES_SENT: &str = "gateway_bytes_sent_total";
    pub(crate) const WRITES: &str = "gateway_writes_total";
    pub const DELIVERIES: &str = "gateway_deliveries_total";
    pub(crate) const SLOW_CONSUMER_DISCONNECTS: &str = "gateway_slow_consumer_disconnects_total";
    pub(crate) const SLOW_CONSUMER_DROPS: &str = "gateway_slow_consumer_drops_total";
    pub(crate) const BROADCAST_FANOUT: &str = "gateway_broadcast_fanout";
    pub(crate) const REDIS_PUBLISHES: &str = "gateway_redis_publishes_total";
    pub(crate) const REDIS_RECEIVES: &str = "gateway_redis_receives_total";
    pub(crate) const REDIS_ERRORS: &str = "gateway_redis_errors_total";
    pub const REDIS_SUBSCRIPTIONS: &str = "gateway_redis_subscriptions";
    pub(crate) const REDIS_PUBSUB_LAG: &str = "gateway_redis_pubsub_lag_seconds";
    pub const REDIS_CONNECTED: &str = "gateway_redis_connected";
    pub(crate) const ADMIN_REQUESTS: &str = "gateway_admin_requests_total";
    pub(crate) const ADMIN_DURATION: &str = "gateway_admin_request_duration_seconds";
    pub(crate) const ADMIN_IN_FLIGHT: &str = "gateway_admin_in_flight";
    pub(crate) const HOOK_REQUESTS: &str = "gateway_hook_requests_total";
    pub(crate) const HOOK_DURATION: &str = "gateway_hook_duration_seconds";
    pub(crate) const HOOK_IN_FLIGHT: &str = "gateway_hook_in_flight";
    pub(crate) const HOOK_RETRIES: &str = "gateway_hook_retries_total";
    pub const DRAINING: &str = "gateway_draining";
    pub const CLUSTER_NODES: &str = "gateway_cluster_nodes";
    pub const CONNECTIONS_LIMIT: &str = "gateway_connections_limit";
    pub(crate) const TCP_CONNECTIONS: &str = "gateway_tcp_connections";
    pub(crate) const TCP_CONNECTIONS_REFUSED: &str = "gateway_tcp_connections_refused_total";
    pub(crate) const ACCEPT_ERRORS: &str = "gateway_accept_errors_total";
    pub(crate) const HTTP_TIMEOUTS: &str = "gateway_http_timeouts_total";
    pub const RECOVERIES: &str = "gateway_recoveries_total";
    pub const RECOVERY_SESSIONS: &str = "gateway_recovery_sessions";
    pub const RECOVERY_PACKETS: &str = "gateway_recovery_packets";
    pub const RECOVERY_BYTES: &str = "gateway_recovery_bytes";
    pub const FORWARDED: &str = "gateway_forwarded_requests_total";
    pub const FORWARDED_BYTES: &str = "gateway_forwarded_bytes_total";
    pub const FORWARD_DURATION: &str = "gateway_forward_duration_seconds";
    pub(crate) const EMITTER_MESSAGES: &str = "gateway_emitter_messages_total";
    pub const WS_COMPRESSED_FRAMES: &str = "gateway_ws_compressed_frames_total";
    pub const WS_COMPRESSION_INPUT_BYTES: &str = "gateway_ws_compression_input_bytes_total";
    pub const WS_COMPRESSION_OUTPUT_BYTES: &str = "gateway_ws_compression_output_bytes_total";
}

/// Buckets of `gateway_broadcast_fanout` (recipients of one broadcast).
pub(super) const FANOUT_BUCKETS: &[f64] = &[
    0.0, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
    25000.0, 50000.0, 100000.0,
];
/// Buckets of `gateway_redis_pubsub_lag_seconds`.
pub(super) const LAG_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of the admin and hook call durations, seconds.
pub(super) const CALL_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The `namespace` label of connection attempts that matched no policy.
pub(crate) const UNKNOWN_NAMESPACE: &str = "unknown";

/// Why a client could not connect to a namespace (`reason` label of
/// `gateway_connect_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ConnectErrorReason {
    /// No namespace policy matches (`Invalid namespace`).
    InvalidNamespace,
    /// `limits.max_namespaces_per_connection` reached.
    TooManyNamespaces,
    /// The JWT was missing or invalid.
    Unauthorized,
    /// The connect hook refused the connection.
    Refused,
    /// The connect hook failed (timeout, backend down, bad answer).
    HookError,
    /// The Engine.IO connection closed before any namespace connected
    /// (`server.connect_timeout_ms`).
    ConnectTimeout,
    /// The cluster bus did not confirm the socket's channels (Redis down
    /// or too slow): the node cannot promise it receives their emits.
    ClusterUnavailable,
}

impl ConnectErrorReason {
    pub(crate) const ALL: [Self; 7] = [
        Self::InvalidNamespace,
        Self::TooManyNamespaces,
        Self::Unauthorized,
        Self::Refused,
        Self::HookError,
        Self::ConnectTimeout,
        Self::ClusterUnavailable,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::InvalidNamespace => "invalid_namespace",
            Self::TooManyNamespaces => "too_many_namespaces",
            Self::Unauthorized => "unauthorized",
            Self::Refused => "refused",
            Self::HookError => "hook_error",
            Self::ConnectTimeout => "connect_timeout",
            Self::ClusterUnavailable => "cluster_unavailable",
        }
    }
}

/// How a connection state recovery attempt ended (`result` label of
/// `gateway_recoveries_total`). An attempt is a CONNECT carrying a string
/// `pid` and a string `offset` to a namespace with recovery enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RecoveryResult {
    /// Same socket id, rooms and data; the missed events were replayed.
    Recovered,
    /// No session under that pid: unknown, expired, already used, or of
    /// another namespace.
    NoSession,
    /// The offset was never issued, or events after it were trimmed.
    BadOffset,
    /// The session was taken, but the connection closed or the bus did
    /// not confirm the socket's channels before the CONNECT reply.
    Failed,
}

impl RecoveryResult {
    pub(crate) const ALL: [Self; 4] = [
        Self::Recovered,
        Self::NoSession,
        Self::BadOffset,
        Self::Failed,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Recovered => "recovered",
            Self::NoSession => "no_session",
            Self::BadOffset => "bad_offset",
            Self::Failed => "failed",
        }
    }
}

/// A Redis operation (`op` label of `gateway_redis_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RedisOp {
    Publish,
    Subscribe,
    Unsubscribe,
    Connect,
    Heartbeat,
}

impl RedisOp {
    pub(crate) const ALL: [Self; 5] = [
        Self::Publish,
        Self::Subscribe,
        Self::Unsubscribe,
        Self::Connect,
        Self::Heartbeat,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
            Self::Unsubscribe => "unsubscribe",
            Self::Connect => "connect",
            Self::Heartbeat => "heartbeat",
        }
    }
}

/// A method of the admin gRPC service (`method` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminMethod {
    Emit,
    EmitWithAck,
    JoinRooms,
    LeaveRooms,
    DisconnectSockets,
    FetchSockets,
    ListRooms,
    ClusterInfo,
}

impl AdminMethod {
    pub(crate) const ALL: [Self; 8] = [
        Self::Emit,
        Self::EmitWithAck,
        Self::JoinRooms,
        Self::LeaveRooms,
        Self::DisconnectSockets,
        Self::FetchSockets,
        Self::ListRooms,
        Self::ClusterInfo,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Emit => "Emit",
            Self::EmitWithAck => "EmitWithAck",
            Self::JoinRooms => "JoinRooms",
            Self::LeaveRooms => "LeaveRooms",
            Self::DisconnectSockets => "DisconnectSockets",
            Self::FetchSockets => "FetchSockets",
            Self::ListRooms => "ListRooms",
            Self::ClusterInfo => "ClusterInfo",
        }
    }

    /// The method named `name`, or by the last segment of a gRPC path
    /// (`/socketio_gateway.admin.v1.Admin/Emit`).
    pub(crate) fn parse(name: &str) -> Option<Self> {
        let name = name.rsplit('/').next().unwrap_or(name);
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

/// gRPC status code names, indexed by code (`code` label).
pub(super) const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
pub(super) const GRPC_OK: i32 = 0;
pub(super) const GRPC_CANCELLED: i32 = 1;
pub(super) const GRPC_UNKNOWN: i32 = 2;

pub(super) fn grpc_code_index(code: i32) -> usize {
    usize::try_from(code)
        .ok()
        .filter(|c| *c < GRPC_CODES.len())
        .unwrap_or(GRPC_UNKNOWN as usize)
}

/// A backend hook (`hook` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum HookKind {
    Connect,
    Event,
    Disconnect,
}

impl HookKind {
    pub(crate) const ALL: [Self; 3] = [Self::Connect, Self::Event, Self::Disconnect];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Event => "event",
            Self::Disconnect => "disconnect",
        }
    }
}

/// How a hook call ended (`result` label; the alert counts everything but
/// `ok` as an error). A refusal by the backend is an answer: `ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum HookResult {
    Ok,
    /// The backend answered with an error status.
    Error,
    /// The deadline passed.
    Timeout,
    /// The backend could not be reached.
    Unavailable,
    /// Refused by the gateway's own concurrency limit.
    Overloaded,
    /// The caller went away before an answer (the guard was dropped).
    Cancelled,
}

impl HookResult {
    pub(crate) const ALL: [Self; 6] = [
        Self::Ok,
        Self::Error,
        Self::Timeout,
        Self::Unavailable,
        Self::Overloaded,
        Self::Cancelled,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::Overloaded => "overloaded",
            Self::Cancelled => "cancelled",
        }
    }
}

pub(super) fn describe(r: &PrometheusRecorder) {
    use names::*;
    let help: [(&'static str, &'static str); 47] = [
        (BUILD_INFO, "Build of this node; always 1"),
        (
            CONNECTIONS_LIMIT,
            "Engine.IO connections this node accepts (limits.max_connections)",
        ),
        (ENGINE_CONNECTIONS, "Open Engine.IO connections"),
        (SOCKETS, "Connected Socket.IO sockets"),
        (CONNECTS, "Sockets connected to a namespace"),
        (CONNECT_ERRORS, "Namespace connections refused"),
        (DISCONNECTS, "Sockets disconnected"),
        (ROOMS, "Rooms with at least one member on this node"),
        (PACKETS_RECEIVED, "Engine.IO packets received"),
        (PACKETS_SENT, "Engine.IO packets sent"),
        (BYTES_RECEIVED, "Engine.IO payload bytes received"),
        (BYTES_SENT, "Engine.IO payload bytes sent"),
        (
            WRITES,
            "Socket writes: WebSocket write calls, polling responses",
        ),
        (DELIVERIES, "Messages queued to a local socket"),
        (
            SLOW_CONSUMER_DISCONNECTS,
            "Connections closed because their outbound queue was full",
        ),
        (
            SLOW_CONSUMER_DROPS,
            "Volatile messages dropped because a queue was full",
        ),
        (BROADCAST_FANOUT, "Local recipients of one broadcast"),
        (REDIS_PUBLISHES, "Messages published to Redis"),
        (REDIS_RECEIVES, "Messages received from Redis"),
        (REDIS_ERRORS, "Failed Redis operations"),
        (REDIS_SUBSCRIPTIONS, "Redis channels subscribed"),
        (
            REDIS_PUBSUB_LAG,
            "Delay from publish on a node to receipt here",
        ),
        (REDIS_CONNECTED, "1 while the Redis connection is up"),
        (ADMIN_REQUESTS, "Admin API calls by method and gRPC code"),
        (ADMIN_DURATION, "Admin API call duration"),
        (ADMIN_IN_FLIGHT, "Admin API calls in progress"),
        (HOOK_REQUESTS, "Hook calls by hook and result"),
        (HOOK_DURATION, "Hook call duration"),
        (HOOK_IN_FLIGHT, "Hook calls in progress"),
        (
            HOOK_RETRIES,
            "Hook calls sent a second time: the first attempt never reached the backend",
        ),
        (DRAINING, "1 while the node drains before exiting"),
        (
            CLUSTER_NODES,
            "Live nodes in the cluster as this node sees it",
        ),
        (
            TCP_CONNECTIONS,
            "Open client TCP connections, HTTP and WebSocket",
        ),
        (
            TCP_CONNECTIONS_REFUSED,
            "Client TCP connections closed at accept: limits.max_tcp_connections reached",
        ),
        (
            ACCEPT_ERRORS,
            "Failed accepts on the client listener (fd_exhausted: out of file descriptors)",
        ),
        (
            HTTP_TIMEOUTS,
            "HTTP connections closed for a request head or body not sent in time",
        ),
        (
            RECOVERIES,
            "Connection state recovery attempts by namespace and result",
        ),
        (
            RECOVERY_SESSIONS,
            "Sessions kept for connection state recovery (over Redis: records of every socket of the recovering namespaces)",
        ),
        (
            RECOVERY_PACKETS,
            "Events kept in the connection state recovery logs",
        ),
        (
            RECOVERY_BYTES,
            "Bytes of events kept in the connection state recovery logs",
        ),
        (
            FORWARDED,
            "Long-polling requests forwarded to the node owning their session, by result",
        ),
        (
            FORWARDED_BYTES,
            "Bytes of forwarded requests and their answers",
        ),
        (
            FORWARD_DURATION,
            "Time from forwarding a request to having the owner's answer",
        ),
        (
            EMITTER_MESSAGES,
            "Messages of the Socket.IO Redis emitter received, by kind and result",
        ),
        (
            WS_COMPRESSED_FRAMES,
            "WebSocket messages sent compressed (permessage-deflate), one per recipient",
        ),
        (
            WS_COMPRESSION_INPUT_BYTES,
            "Payload bytes of the messages sent compressed, before compression",
        ),
        (
            WS_COMPRESSION_OUTPUT_BYTES,
            "Payload bytes of the messages sent compressed, as written",
        ),
    ];
    for (name, text) in help {
        let key = KeyName::from_const_str(name);
        let text = SharedString::const_str(text);
        // The exporter keeps one help text per name whatever the kind.
        r.describe_gauge(key, None, text);
    }
}
