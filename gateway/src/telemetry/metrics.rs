//! The Prometheus metrics of one node.
//!
//! Each node owns a [`Metrics`]: its own Prometheus recorder (not the
//! process-global one, so that several nodes in one process, as in the
//! tests, keep their numbers apart) and every metric handle, registered once
//! when the node starts. Every series the dashboard and the alert rules read
//! exists from startup, at zero.
//!
//! The node's code updates metrics through cheap methods: an atomic add on a
//! pre-registered handle, never a string formatted or a label allocated on
//! the hot path. Labels are of low cardinality and fixed sets (transport,
//! [`DisconnectReason`], [`ConnectErrorReason`], [`RedisOp`], [`AdminMethod`]
//! and gRPC code, [`HookKind`] and [`HookResult`]), except `namespace`,
//! which is the *policy* name from the configuration (`/chat`, `/tenant-*`),
//! never a client-chosen string: [`Metrics::namespace`] hands out one
//! [`NamespaceMetrics`] per policy, to be kept beside the namespace.
//!
//! The names, help texts and label sets are a contract with `deploy/`; they
//! live in [`super::contract`], the handles that record into them here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ::metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use parking_lot::RwLock;

static METADATA: Metadata<'static> = Metadata::new("gateway", Level::INFO, Some(module_path!()));

pub(crate) use super::contract::{
    AdminMethod, ConnectErrorReason, HookKind, HookResult, HttpPhase, RecoveryResult, RedisOp,
    UNKNOWN_NAMESPACE, names,
};
use super::contract::{
    CALL_BUCKETS, EMITTER_KINDS, EMITTER_RESULTS, FANOUT_BUCKETS, GRPC_CANCELLED, GRPC_CODES,
    GRPC_OK, LAG_BUCKETS, describe, grpc_code_index,
};
use crate::protocol::engineio::Transport;
use crate::reason::DisconnectReason;

fn transport_index(t: Transport) -> usize {
    match t {
        Transport::Polling => 0,
        Transport::Websocket => 1,
    }
}

const TRANSPORTS: [Transport; 2] = [Transport::Polling, Transport::Websocket];

/// Registers handles into one node's recorder.
struct Registrar<'a> {
    recorder: &'a PrometheusRecorder,
}

type Labels = Vec<(&'static str, SharedString)>;

fn key(name: &'static str, labels: Labels) -> Key {
    Key::from_parts(
        name,
        labels
            .into_iter()
            .map(|(k, v)| Label::new(k, v))
            .collect::<Vec<_>>(),
    )
}

impl Registrar<'_> {
    fn counter(&self, name: &'static str, labels: Labels) -> Counter {
        self.recorder
            .register_counter(&key(name, labels), &METADATA)
    }

    fn gauge(&self, name: &'static str, labels: Labels) -> Gauge {
        self.recorder.register_gauge(&key(name, labels), &METADATA)
    }

    fn histogram(&self, name: &'static str, labels: Labels) -> Histogram {
        self.recorder
            .register_histogram(&key(name, labels), &METADATA)
    }
}

fn label(v: &'static str) -> SharedString {
    SharedString::const_str(v)
}

/// Running totals that the Socket.IO Admin UI's statistics are made of
/// (its `aggregatedEvents` and polling count), readable unlike the
/// exporter's handles: kept only when the UI is on.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) connections: AtomicU64,
    /// By [`DisconnectReason`], in declaration order.
    pub(crate) disconnections: [AtomicU64; DisconnectReason::ALL.len()],
    pub(crate) packets_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) packets_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    /// Connections on long-polling now.
    pub(crate) polling: AtomicI64,
}

/// Traffic counters and the connection gauge of one transport.
#[derive(Debug)]
pub(crate) struct TransportMetrics {
    connections: Gauge,
    packets_received: Counter,
    packets_sent: Counter,
    bytes_received: Counter,
    bytes_sent: Counter,
    writes: Counter,
    tally: Option<Arc<Tally>>,
}

impl TransportMetrics {
    fn new(r: &Registrar<'_>, t: Transport, tally: Option<Arc<Tally>>) -> Self {
        let l = || vec![("transport", label(t.as_str()))];
        Self {
            tally,
            connections: r.gauge(names::ENGINE_CONNECTIONS, l()),
            packets_received: r.counter(names::PACKETS_RECEIVED, l()),
            packets_sent: r.counter(names::PACKETS_SENT, l()),
            bytes_received: r.counter(names::BYTES_RECEIVED, l()),
            bytes_sent: r.counter(names::BYTES_SENT, l()),
            writes: r.counter(names::WRITES, l()),
        }
    }

    /// `packets` Engine.IO packets of `bytes` bytes in total came in.
    pub(crate) fn received(&self, packets: u64, bytes: u64) {
        self.packets_received.increment(packets);
        self.bytes_received.increment(bytes);
        if let Some(t) = &self.tally {
            t.packets_in.fetch_add(packets, Ordering::Relaxed);
            t.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// `packets` Engine.IO packets of `bytes` bytes in total went out in
    /// `writes` writes (count a written batch at once).
    pub(crate) fn sent(&self, packets: u64, bytes: u64, writes: u64) {
        self.packets_sent.increment(packets);
        self.bytes_sent.increment(bytes);
        self.writes.increment(writes);
        if let Some(t) = &self.tally {
            t.packets_out.fetch_add(packets, Ordering::Relaxed);
            t.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        }
    }
}

/// The series of one namespace policy (`namespace` label). Get it once
/// through [`Metrics::namespace`] and keep it beside the namespace.
#[derive(Debug)]
pub(crate) struct NamespaceMetrics {
    sockets: Gauge,
    connects: Counter,
    connect_errors: [Counter; ConnectErrorReason::ALL.len()],
    rooms: Gauge,
    recoveries: [Counter; RecoveryResult::ALL.len()],
}

impl NamespaceMetrics {
    fn new(r: &Registrar<'_>, name: &str) -> Self {
        let ns = || -> SharedString { SharedString::from_owned(name.to_owned()) };
        Self {
            sockets: r.gauge(names::SOCKETS, vec![("namespace", ns())]),
            connects: r.counter(names::CONNECTS, vec![("namespace", ns())]),
            connect_errors: ConnectErrorReason::ALL.map(|reason| {
                r.counter(
                    names::CONNECT_ERRORS,
                    vec![("namespace", ns()), ("reason", label(reason.as_str()))],
                )
            }),
            rooms: r.gauge(names::ROOMS, vec![("namespace", ns())]),
            recoveries: RecoveryResult::ALL.map(|result| {
                r.counter(
                    names::RECOVERIES,
                    vec![("namespace", ns()), ("result", label(result.as_str()))],
                )
            }),
        }
    }

    /// A connection state recovery attempt ended with `result`.
    pub(crate) fn recovery(&self, result: RecoveryResult) {
        let i = RecoveryResult::ALL
            .iter()
            .position(|r| *r == result)
            .unwrap_or(0);
        self.recoveries[i].increment(1);
    }

    /// A socket connected to the namespace.
    pub(crate) fn connected(&self) {
        self.sockets.increment(1.0);
        self.connects.increment(1);
    }

    /// A connection attempt to the namespace was refused.
    pub(crate) fn connect_error(&self, reason: ConnectErrorReason) {
        let i = ConnectErrorReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.connect_errors[i].increment(1);
    }

    /// `n` rooms of the namespace got their first local member.
    pub(crate) fn rooms_added(&self, n: usize) {
        self.rooms.increment(n as f64);
    }

    /// `n` rooms of the namespace lost their last local member.
    pub(crate) fn rooms_removed(&self, n: usize) {
        self.rooms.decrement(n as f64);
    }
}

struct AdminMetrics {
    /// `[method][code]`: OK registered at startup, other codes on first use.
    requests: [[OnceLock<Counter>; GRPC_CODES.len()]; AdminMethod::ALL.len()],
    duration: [Histogram; AdminMethod::ALL.len()],
    in_flight: Gauge,
}

struct HookMetrics {
    requests: [[Counter; HookResult::ALL.len()]; HookKind::ALL.len()],
    duration: [Histogram; HookKind::ALL.len()],
    in_flight: Gauge,
    retries: [Counter; HookKind::ALL.len()],
}

/// Every metric of one node, and the recorder that renders them.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    transports: [TransportMetrics; 2],
    tally: Option<Arc<Tally>>,
    disconnects: [Counter; DisconnectReason::ALL.len()],
    deliveries: Counter,
    slow_consumer_disconnects: Counter,
    slow_consumer_drops: Counter,
    broadcast_fanout: Histogram,
    redis_publishes: Counter,
    redis_receives: Counter,
    redis_errors: [Counter; RedisOp::ALL.len()],
    redis_subscriptions: Gauge,
    redis_lag: Histogram,
    redis_connected: OnceLock<Gauge>,
    admin: AdminMetrics,
    hooks: HookMetrics,
    draining: Gauge,
    cluster_nodes: Gauge,
    tcp_connections: Gauge,
    tcp_connections_refused: Counter,
    /// `[fd_exhausted, other]`
    accept_errors: [Counter; 2],
    http_timeouts: [Counter; HttpPhase::ALL.len()],
    /// `[sessions, packets, bytes]` of the recovery store.
    recovery_store: [Gauge; 3],
    /// Forwarded requests `[ok, error]`, their bytes, their latency.
    forwarded: [Counter; 2],
    forwarded_bytes: Counter,
    forward_duration: Histogram,
    /// Emitter messages by `[kind][result]`.
    emitter: [[Counter; EMITTER_RESULTS.len()]; EMITTER_KINDS.len()],
    /// Messages written compressed, their bytes before and after.
    ws_deflated: [Counter; 3],
    namespaces: RwLock<HashMap<Box<str>, Arc<NamespaceMetrics>>>,
    unknown_namespace: Arc<NamespaceMetrics>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh set of metrics with its own recorder. `namespaces` are the
    /// configured policy names, registered up front.
    #[cfg(test)]
    pub(crate) fn new<'a>(namespaces: impl IntoIterator<Item = &'a str>) -> Self {
        Self::with_tally(namespaces, false)
    }

    /// [`Metrics::new`], keeping a [`Tally`] when `tally`.
    fn with_tally<'a>(namespaces: impl IntoIterator<Item = &'a str>, tally: bool) -> Self {
        let tally = tally.then(|| Arc::new(Tally::default()));
        let mut builder = PrometheusBuilder::new();
        for (name, buckets) in [
            (names::BROADCAST_FANOUT, FANOUT_BUCKETS),
            (names::REDIS_PUBSUB_LAG, LAG_BUCKETS),
            (names::ADMIN_DURATION, CALL_BUCKETS),
            (names::HOOK_DURATION, CALL_BUCKETS),
            (names::FORWARD_DURATION, CALL_BUCKETS),
        ] {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
                .expect("bucket lists are not empty");
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        describe(&recorder);
        let r = Registrar {
            recorder: &recorder,
        };
        r.gauge(
            names::BUILD_INFO,
            vec![("version", label(env!("CARGO_PKG_VERSION")))],
        )
        .set(1.0);
        let cluster_nodes = r.gauge(names::CLUSTER_NODES, vec![]);
        cluster_nodes.set(1.0);
        let admin = AdminMetrics {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
            duration: AdminMethod::ALL
                .map(|m| r.histogram(names::ADMIN_DURATION, vec![("method", label(m.as_str()))])),
            in_flight: r.gauge(names::ADMIN_IN_FLIGHT, vec![]),
        };
        let hooks = HookMetrics {
            requests: HookKind::ALL.map(|h| {
                HookResult::ALL.map(|res| {
                    r.counter(
                        names::HOOK_REQUESTS,
                        vec![("hook", label(h.as_str())), ("result", label(res.as_str()))],
                    )
                })
            }),
            duration: HookKind::ALL
                .map(|h| r.histogram(names::HOOK_DURATION, vec![("hook", label(h.as_str()))])),
            in_flight: r.gauge(names::HOOK_IN_FLIGHT, vec![]),
            retries: HookKind::ALL
                .map(|h| r.counter(names::HOOK_RETRIES, vec![("hook", label(h.as_str()))])),
        };
        let mut by_name = HashMap::new();
        for name in namespaces {
            by_name
                .entry(name.into())
                .or_insert_with(|| Arc::new(NamespaceMetrics::new(&r, name)));
        }
        let unknown_namespace = Arc::new(NamespaceMetrics::new(&r, UNKNOWN_NAMESPACE));
        let metrics = Self {
            transports: TRANSPORTS.map(|t| TransportMetrics::new(&r, t, tally.clone())),
            tally,
            disconnects: DisconnectReason::ALL.map(|reason| {
                r.counter(names::DISCONNECTS, vec![("reason", label(reason.as_str()))])
            }),
            deliveries: r.counter(names::DELIVERIES, vec![]),
            slow_consumer_disconnects: r.counter(names::SLOW_CONSUMER_DISCONNECTS, vec![]),
            slow_consumer_drops: r.counter(names::SLOW_CONSUMER_DROPS, vec![]),
            broadcast_fanout: r.histogram(names::BROADCAST_FANOUT, vec![]),
            redis_publishes: r.counter(names::REDIS_PUBLISHES, vec![]),
            redis_receives: r.counter(names::REDIS_RECEIVES, vec![]),
            redis_errors: RedisOp::ALL
                .map(|op| r.counter(names::REDIS_ERRORS, vec![("op", label(op.as_str()))])),
            redis_subscriptions: r.gauge(names::REDIS_SUBSCRIPTIONS, vec![]),
            redis_lag: r.histogram(names::REDIS_PUBSUB_LAG, vec![]),
            redis_connected: OnceLock::new(),
            admin,
            hooks,
            draining: r.gauge(names::DRAINING, vec![]),
            cluster_nodes,
            tcp_connections: r.gauge(names::TCP_CONNECTIONS, vec![]),
            tcp_connections_refused: r.counter(names::TCP_CONNECTIONS_REFUSED, vec![]),
            accept_errors: ["fd_exhausted", "other"]
                .map(|kind| r.counter(names::ACCEPT_ERRORS, vec![("kind", label(kind))])),
            http_timeouts: HttpPhase::ALL.map(|phase| {
                r.counter(names::HTTP_TIMEOUTS, vec![("phase", label(phase.as_str()))])
            }),
            recovery_store: [
                names::RECOVERY_SESSIONS,
                names::RECOVERY_PACKETS,
                names::RECOVERY_BYTES,
            ]
            .map(|name| r.gauge(name, vec![])),
            forwarded: ["ok", "error"]
                .map(|result| r.counter(names::FORWARDED, vec![("result", label(result))])),
            forwarded_bytes: r.counter(names::FORWARDED_BYTES, vec![]),
            forward_duration: r.histogram(names::FORWARD_DURATION, vec![]),
            emitter: EMITTER_KINDS.map(|kind| {
                EMITTER_RESULTS.map(|result| {
                    r.counter(
                        names::EMITTER_MESSAGES,
                        vec![("kind", label(kind)), ("result", label(result))],
                    )
                })
            }),
            ws_deflated: [
                names::WS_COMPRESSED_FRAMES,
                names::WS_COMPRESSION_INPUT_BYTES,
                names::WS_COMPRESSION_OUTPUT_BYTES,
            ]
            .map(|name| r.counter(name, vec![])),
            namespaces: RwLock::new(by_name),
            unknown_namespace,
            handle,
            recorder,
        };
        for method in AdminMethod::ALL {
            metrics.admin_counter(method, GRPC_OK);
        }
        // Exported from the start; `for_config` sets the configured limit.
        metrics
            .registrar()
            .gauge(names::CONNECTIONS_LIMIT, vec![])
            .set(0.0);
        metrics
    }

    /// Metrics for the namespaces of `config` (the default `/` when none).
    pub(crate) fn for_config(config: &crate::config::Config) -> Self {
        let names: Vec<String> = config
            .effective_namespaces()
            .into_iter()
            .map(|n| n.name)
            .collect();
        let metrics = Self::with_tally(names.iter().map(String::as_str), config.admin_ui.enabled);
        metrics
            .registrar()
            .gauge(names::CONNECTIONS_LIMIT, vec![])
            .set(config.limits.max_connections as f64);
        metrics
    }

    /// The running totals, when the Admin UI is on.
    pub(crate) fn tally(&self) -> Option<&Arc<Tally>> {
        self.tally.as_ref()
    }

    fn registrar(&self) -> Registrar<'_> {
        Registrar {
            recorder: &self.recorder,
        }
    }

    /// The Prometheus text exposition of every series.
    /// The size of the connection state recovery store this node uses.
    pub(crate) fn recovery_store(&self, sessions: u64, packets: u64, bytes: u64) {
        for (gauge, v) in self.recovery_store.iter().zip([sessions, packets, bytes]) {
            gauge.set(v as f64);
        }
    }

    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Folds recorded histogram samples into their buckets. Rendering does
    /// it too; the node runs it every few seconds so that samples do not
    /// pile up in memory when nobody scrapes.
    pub(crate) fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    // ---- Engine.IO connections and traffic ----

    /// The traffic counters of transport `t`.
    pub(crate) fn transport(&self, t: Transport) -> &TransportMetrics {
        &self.transports[transport_index(t)]
    }

    /// An Engine.IO connection opened on `t`.
    pub(crate) fn engine_opened(&self, t: Transport) {
        self.transport(t).connections.increment(1.0);
        if let Some(tally) = &self.tally {
            tally.connections.fetch_add(1, Ordering::Relaxed);
            if t == Transport::Polling {
                tally.polling.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A connection moved from polling to WebSocket.
    pub(crate) fn engine_upgraded(&self) {
        if let Some(tally) = &self.tally {
            tally.polling.fetch_sub(1, Ordering::Relaxed);
        }
        self.transport(Transport::Polling)
            .connections
            .decrement(1.0);
        self.transport(Transport::Websocket)
            .connections
            .increment(1.0);
    }

    /// An Engine.IO connection on `t` closed for `reason`. Counts slow
    /// consumers, and connect timeouts as connect errors (namespace
    /// `unknown`); the sockets it carried are counted by
    /// [`Metrics::socket_disconnected`].
    pub(crate) fn engine_closed(&self, t: Transport, reason: DisconnectReason) {
        self.transport(t).connections.decrement(1.0);
        if let Some(tally) = &self.tally {
            tally.disconnections[reason as usize].fetch_add(1, Ordering::Relaxed);
            if t == Transport::Polling {
                tally.polling.fetch_sub(1, Ordering::Relaxed);
            }
        }
        match reason {
            DisconnectReason::SlowConsumer => self.slow_consumer_disconnects.increment(1),
            DisconnectReason::ConnectTimeout => self
                .unknown_namespace
                .connect_error(ConnectErrorReason::ConnectTimeout),
            _ => {}
        }
    }

    // ---- Socket.IO namespaces and sockets ----

    /// The series of the namespace policy `policy_name` (the configured name
    /// or pattern, never a client-supplied name). Registered on first use;
    /// keep the handle.
    pub(crate) fn namespace(&self, policy_name: &str) -> Arc<NamespaceMetrics> {
        if let Some(m) = self.namespaces.read().get(policy_name) {
            return m.clone();
        }
        let r = self.registrar();
        self.namespaces
            .write()
            .entry(policy_name.into())
            .or_insert_with(|| Arc::new(NamespaceMetrics::new(&r, policy_name)))
            .clone()
    }

    /// The series of connection attempts that matched no policy
    /// (`namespace="unknown"`), for [`ConnectErrorReason::InvalidNamespace`].
    pub(crate) fn unknown_namespace(&self) -> &NamespaceMetrics {
        &self.unknown_namespace
    }

    /// A socket of `ns` disconnected for `reason` (one per namespace socket:
    /// a connection closing with two sockets counts two).
    pub(crate) fn socket_disconnected(&self, ns: &NamespaceMetrics, reason: DisconnectReason) {
        ns.sockets.decrement(1.0);
        self.disconnects[reason as usize].increment(1);
    }

    // ---- Delivery ----

    /// `n` messages were queued to local sockets (acks and single emits).
    pub(crate) fn delivered(&self, n: u64) {
        self.deliveries.increment(n);
    }

    /// One broadcast reached `recipients` local sockets (also counted as
    /// deliveries).
    pub(crate) fn broadcast(&self, recipients: usize) {
        self.broadcast_fanout.record(recipients as f64);
        self.deliveries.increment(recipients as u64);
    }

    /// A volatile message was dropped for a socket whose queue was full.
    pub(crate) fn slow_consumer_drop(&self) {
        self.slow_consumer_drops.increment(1);
    }

    // ---- Redis ----

    /// Exports `gateway_redis_connected` (at 0 until
    /// [`Metrics::set_redis_connected`]). Call it when Redis is configured:
    /// a single node without Redis does not export it, so the alert on it
    /// stays silent.
    pub fn enable_redis(&self) {
        self.redis_connected
            .get_or_init(|| self.registrar().gauge(names::REDIS_CONNECTED, vec![]));
    }

    /// The Redis connection went up or down (enables the series).
    pub(crate) fn set_redis_connected(&self, up: bool) {
        self.enable_redis();
        if let Some(g) = self.redis_connected.get() {
            g.set(if up { 1.0 } else { 0.0 });
        }
    }

    pub(crate) fn redis_published(&self) {
        self.redis_publishes.increment(1);
    }

    /// A message came from Redis; `lag` is the time since its publisher sent
    /// it, when the message says (see [`Metrics::lag_since_unix_micros`]).
    pub(crate) fn redis_received(&self, lag: Option<Duration>) {
        self.redis_receives.increment(1);
        if let Some(lag) = lag {
            self.redis_lag.record(lag.as_secs_f64());
        }
    }

    /// The delay since `sent_unix_micros` (the publisher's wall clock, in
    /// microseconds since the Unix epoch); zero when the clocks disagree
    /// the other way.
    pub(crate) fn lag_since_unix_micros(sent_unix_micros: u64) -> Duration {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        now.saturating_sub(Duration::from_micros(sent_unix_micros))
    }

    pub(crate) fn redis_error(&self, op: RedisOp) {
        let i = RedisOp::ALL.iter().position(|o| *o == op).unwrap_or(0);
        self.redis_errors[i].increment(1);
    }

    pub fn set_redis_subscriptions(&self, n: usize) {
        self.redis_subscriptions.set(n as f64);
    }

    // ---- Admin API and hooks ----

    fn admin_counter(&self, method: AdminMethod, code: i32) -> &Counter {
        let m = AdminMethod::ALL
            .iter()
            .position(|x| *x == method)
            .unwrap_or(0);
        let c = grpc_code_index(code);
        self.admin.requests[m][c].get_or_init(|| {
            self.registrar().counter(
                names::ADMIN_REQUESTS,
                vec![
                    ("method", label(method.as_str())),
                    ("code", label(GRPC_CODES[c])),
                ],
            )
        })
    }

    /// Starts timing an admin call; [`AdminCall::finish`] records it. Dropped
    /// unfinished, it counts as `CANCELLED`.
    pub(crate) fn admin_call(&self, method: AdminMethod) -> AdminCall<'_> {
        self.admin.in_flight.increment(1.0);
        AdminCall {
            metrics: self,
            method,
            start: Instant::now(),
            done: false,
        }
    }

    /// Starts timing a hook call; [`HookCall::finish`] records it. Dropped
    /// unfinished, it counts as [`HookResult::Cancelled`].
    pub(crate) fn hook_call(&self, hook: HookKind) -> HookCall<'_> {
        self.hooks.in_flight.increment(1.0);
        HookCall {
            metrics: self,
            hook,
            start: Instant::now(),
            done: false,
        }
    }

    // ---- Lifecycle and cluster ----

    pub(crate) fn set_draining(&self, draining: bool) {
        self.draining.set(if draining { 1.0 } else { 0.0 });
    }

    /// Live nodes in the cluster registry, this one included (1 alone).
    pub(crate) fn set_cluster_nodes(&self, n: usize) {
        self.cluster_nodes.set(n as f64);
    }

    // ---- Client listener ----

    /// A client TCP connection opened (`delta` 1) or closed (-1).
    pub(crate) fn tcp_connections_changed(&self, delta: i64) {
        if delta >= 0 {
            self.tcp_connections.increment(delta as f64);
        } else {
            self.tcp_connections.decrement(-delta as f64);
        }
    }

    /// A client TCP connection was closed at accept, over the bound.
    pub(crate) fn tcp_connection_refused(&self) {
        self.tcp_connections_refused.increment(1);
    }

    /// An accept failed; `fd_exhausted` when for want of file descriptors.
    pub(crate) fn accept_error(&self, fd_exhausted: bool) {
        self.accept_errors[usize::from(!fd_exhausted)].increment(1);
    }

    /// An HTTP connection was closed for a request not sent in time.
    pub(crate) fn http_timeout(&self, phase: HttpPhase) {
        self.http_timeouts[phase as usize].increment(1);
    }

    /// A request forwarded to its session's owner: answered or not, the
    /// bytes both ways, how long it took.
    pub(crate) fn forwarded(&self, ok: bool, bytes: u64, latency: Duration) {
        self.forwarded[usize::from(!ok)].increment(1);
        self.forwarded_bytes.increment(bytes);
        self.forward_duration.record(latency.as_secs_f64());
    }

    /// A message of the Socket.IO Redis emitter: `kind` and `result` are
    /// names of [`EMITTER_KINDS`] and [`EMITTER_RESULTS`].
    pub(crate) fn emitter_message(&self, kind: &str, result: &str) {
        let k = EMITTER_KINDS.iter().position(|k| *k == kind);
        let r = EMITTER_RESULTS.iter().position(|r| *r == result);
        if let (Some(k), Some(r)) = (k, r) {
            self.emitter[k][r].increment(1);
        }
    }

    /// Bytes of a spliced WebSocket (a forwarded upgrade), when it ends.
    pub(crate) fn forwarded_bytes(&self, bytes: u64) {
        self.forwarded_bytes.increment(bytes);
    }

    /// `frames` WebSocket messages went out compressed: `before` payload
    /// bytes as `after` bytes.
    pub(crate) fn ws_deflated(&self, frames: u64, before: u64, after: u64) {
        let [f, b, a] = &self.ws_deflated;
        f.increment(frames);
        b.increment(before);
        a.increment(after);
    }
}

/// An admin call being timed (see [`Metrics::admin_call`]).
#[must_use = "finish the call with its gRPC code"]
pub(crate) struct AdminCall<'a> {
    metrics: &'a Metrics,
    method: AdminMethod,
    start: Instant,
    done: bool,
}

impl AdminCall<'_> {
    /// Records the call with gRPC status `code` (`tonic::Code as i32`).
    pub(crate) fn finish(mut self, code: i32) {
        self.record(code);
    }

    fn record(&mut self, code: i32) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let m = self.metrics;
        m.admin.in_flight.decrement(1.0);
        m.admin_counter(self.method, code).increment(1);
        let i = AdminMethod::ALL
            .iter()
            .position(|x| *x == self.method)
            .unwrap_or(0);
        m.admin.duration[i].record(self.start.elapsed().as_secs_f64());
    }
}

impl Drop for AdminCall<'_> {
    fn drop(&mut self) {
        self.record(GRPC_CANCELLED);
    }
}

/// A hook call being timed (see [`Metrics::hook_call`]).
#[must_use = "finish the call with its result"]
pub(crate) struct HookCall<'a> {
    metrics: &'a Metrics,
    hook: HookKind,
    start: Instant,
    done: bool,
}

impl HookCall<'_> {
    pub(crate) fn finish(mut self, result: HookResult) {
        self.record(result);
    }

    /// The call is sent a second time, its first attempt having never
    /// reached the backend (`gateway_hook_retries_total`).
    pub(crate) fn retried(&self) {
        self.metrics.hooks.retries[self.hook_index()].increment(1);
    }

    fn hook_index(&self) -> usize {
        HookKind::ALL
            .iter()
            .position(|x| *x == self.hook)
            .unwrap_or(0)
    }

    fn record(&mut self, result: HookResult) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let m = self.metrics;
        m.hooks.in_flight.decrement(1.0);
        let h = self.hook_index();
        let r = HookResult::ALL
            .iter()
            .position(|x| *x == result)
            .unwrap_or(0);
        m.hooks.requests[h][r].increment(1);
        m.hooks.duration[h].record(self.start.elapsed().as_secs_f64());
    }
}

impl Drop for HookCall<'_> {
    fn drop(&mut self) {
        self.record(HookResult::Cancelled);
    }
}

/// Reading a rendered exposition back, for the unit tests (the one copy
/// lives with the integration tests' support).
#[cfg(test)]
#[path = "../../tests/support/scrape.rs"]
pub(crate) mod scrape;

#[cfg(test)]
mod tests {
    use super::scrape::{names as scraped_names, sum, value};
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new(["/", "/tenant-*"])
    }

    #[test]
    fn disconnect_reasons_index_in_declaration_order() {
        for (i, r) in DisconnectReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r}");
        }
    }

    #[test]
    fn every_series_exists_from_the_start() {
        let m = metrics();
        let text = m.render();
        let names = scraped_names(&text);
        let listed = include_str!("../../../deploy/metric-names.txt");
        for name in listed
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            if name == names::REDIS_CONNECTED {
                assert!(!names.contains(name), "exported without Redis");
            } else {
                assert!(names.contains(name), "{name} missing:\n{text}");
            }
        }
        assert_eq!(
            value(
                &text,
                names::BUILD_INFO,
                &[("version", env!("CARGO_PKG_VERSION"))]
            ),
            Some(1.0)
        );
        assert_eq!(value(&text, names::CLUSTER_NODES, &[]), Some(1.0));
        assert_eq!(
            value(&text, names::SOCKETS, &[("namespace", "/tenant-*")]),
            Some(0.0)
        );
        for reason in DisconnectReason::ALL {
            assert_eq!(
                value(&text, names::DISCONNECTS, &[("reason", reason.as_str())]),
                Some(0.0)
            );
        }
        assert_eq!(
            value(
                &text,
                names::ADMIN_REQUESTS,
                &[("method", "EmitWithAck"), ("code", "OK")]
            ),
            Some(0.0)
        );
        assert!(text.contains("# TYPE gateway_broadcast_fanout histogram"));
        assert!(text.contains("gateway_redis_pubsub_lag_seconds_bucket{le=\"0.5\"} 0"));
        m.enable_redis();
        let text = m.render();
        assert_eq!(value(&text, names::REDIS_CONNECTED, &[]), Some(0.0));
        m.set_redis_connected(true);
        assert_eq!(value(&m.render(), names::REDIS_CONNECTED, &[]), Some(1.0));
    }

    #[test]
    fn connection_lifecycle_moves_the_series() {
        let m = metrics();
        m.engine_opened(Transport::Polling);
        m.engine_opened(Transport::Websocket);
        m.engine_upgraded();
        let ns = m.namespace("/");
        ns.connected();
        ns.rooms_added(2);
        m.transport(Transport::Websocket).received(3, 30);
        m.transport(Transport::Websocket).sent(4, 40, 2);
        let text = m.render();
        let conns = |t: &str| value(&text, names::ENGINE_CONNECTIONS, &[("transport", t)]);
        assert_eq!(conns("polling"), Some(0.0));
        assert_eq!(conns("websocket"), Some(2.0));
        assert_eq!(
            value(&text, names::SOCKETS, &[("namespace", "/")]),
            Some(1.0)
        );
        assert_eq!(value(&text, names::ROOMS, &[("namespace", "/")]), Some(2.0));
        assert_eq!(sum(&text, names::BYTES_SENT), 40.0);
        assert_eq!(sum(&text, names::WRITES), 2.0);
        assert_eq!(
            value(
                &text,
                names::PACKETS_RECEIVED,
                &[("transport", "websocket")]
            ),
            Some(3.0)
        );

        m.socket_disconnected(&ns, DisconnectReason::Shutdown);
        ns.rooms_removed(2);
        m.engine_closed(Transport::Websocket, DisconnectReason::Shutdown);
        m.engine_closed(Transport::Websocket, DisconnectReason::SlowConsumer);
        m.engine_opened(Transport::Polling);
        m.engine_closed(Transport::Polling, DisconnectReason::ConnectTimeout);
        m.unknown_namespace()
            .connect_error(ConnectErrorReason::InvalidNamespace);
        let text = m.render();
        assert_eq!(sum(&text, names::ENGINE_CONNECTIONS), 0.0);
        assert_eq!(sum(&text, names::SOCKETS), 0.0);
        assert_eq!(
            value(&text, names::DISCONNECTS, &[("reason", "shutdown")]),
            Some(1.0)
        );
        assert_eq!(
            value(&text, names::SLOW_CONSUMER_DISCONNECTS, &[]),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                names::CONNECT_ERRORS,
                &[("namespace", "unknown"), ("reason", "connect_timeout")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                names::CONNECT_ERRORS,
                &[("namespace", "unknown"), ("reason", "invalid_namespace")]
            ),
            Some(1.0)
        );
    }

    #[test]
    fn namespaces_are_registered_once() {
        let m = metrics();
        let a = m.namespace("/late");
        let b = m.namespace("/late");
        assert!(Arc::ptr_eq(&a, &b));
        a.connected();
        assert_eq!(
            value(&m.render(), names::CONNECTS, &[("namespace", "/late")]),
            Some(1.0)
        );
    }

    #[test]
    fn deliveries_and_fanout() {
        let m = metrics();
        m.broadcast(3);
        m.broadcast(700);
        m.delivered(2);
        m.slow_consumer_drop();
        let text = m.render();
        assert_eq!(value(&text, names::DELIVERIES, &[]), Some(705.0));
        assert_eq!(
            value(&text, "gateway_broadcast_fanout_count", &[]),
            Some(2.0)
        );
        assert_eq!(
            value(&text, "gateway_broadcast_fanout_bucket", &[("le", "5")]),
            Some(1.0)
        );
        assert_eq!(value(&text, names::SLOW_CONSUMER_DROPS, &[]), Some(1.0));
    }

    #[test]
    fn admin_and_hook_calls() {
        let m = metrics();
        let call = m.admin_call(AdminMethod::Emit);
        assert_eq!(value(&m.render(), names::ADMIN_IN_FLIGHT, &[]), Some(1.0));
        call.finish(14);
        m.admin_call(AdminMethod::parse("/socketio_gateway.admin.v1.Admin/FetchSockets").unwrap())
            .finish(0);
        drop(m.admin_call(AdminMethod::ListRooms));
        m.hook_call(HookKind::Connect).finish(HookResult::Timeout);
        drop(m.hook_call(HookKind::Event));
        let text = m.render();
        let admin = |method: &str, code: &str| {
            value(
                &text,
                names::ADMIN_REQUESTS,
                &[("method", method), ("code", code)],
            )
        };
        assert_eq!(admin("Emit", "UNAVAILABLE"), Some(1.0));
        assert_eq!(admin("FetchSockets", "OK"), Some(1.0));
        assert_eq!(admin("ListRooms", "CANCELLED"), Some(1.0));
        assert_eq!(value(&text, names::ADMIN_IN_FLIGHT, &[]), Some(0.0));
        assert_eq!(
            value(
                &text,
                "gateway_admin_request_duration_seconds_count",
                &[("method", "Emit")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                names::HOOK_REQUESTS,
                &[("hook", "connect"), ("result", "timeout")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                names::HOOK_REQUESTS,
                &[("hook", "event"), ("result", "cancelled")]
            ),
            Some(1.0)
        );
        assert_eq!(value(&text, names::HOOK_IN_FLIGHT, &[]), Some(0.0));
    }

    #[test]
    fn hook_retries_by_hook() {
        let m = metrics();
        let text = m.render();
        for hook in HookKind::ALL {
            assert_eq!(
                value(&text, names::HOOK_RETRIES, &[("hook", hook.as_str())]),
                Some(0.0),
                "{hook:?} registered at start-up"
            );
        }
        let call = m.hook_call(HookKind::Connect);
        call.retried();
        call.finish(HookResult::Unavailable);
        let call = m.hook_call(HookKind::Disconnect);
        call.retried();
        call.finish(HookResult::Ok);
        m.hook_call(HookKind::Connect).finish(HookResult::Ok);
        let text = m.render();
        let retries = |hook: &str| value(&text, names::HOOK_RETRIES, &[("hook", hook)]);
        assert_eq!(retries("connect"), Some(1.0));
        assert_eq!(retries("event"), Some(0.0));
        assert_eq!(retries("disconnect"), Some(1.0));
        assert_eq!(sum(&text, names::HOOK_RETRIES), 2.0);
        // A retried call is counted once, with the result of its last attempt.
        let connects = |result: &str| {
            value(
                &text,
                names::HOOK_REQUESTS,
                &[("hook", "connect"), ("result", result)],
            )
        };
        assert_eq!(connects("unavailable"), Some(1.0));
        assert_eq!(connects("ok"), Some(1.0));
    }

    #[test]
    fn redis_series() {
        let m = metrics();
        m.redis_published();
        m.redis_received(Some(Duration::from_millis(3)));
        m.redis_error(RedisOp::Subscribe);
        m.set_redis_subscriptions(1);
        let text = m.render();
        assert_eq!(value(&text, names::REDIS_PUBLISHES, &[]), Some(1.0));
        assert_eq!(value(&text, names::REDIS_RECEIVES, &[]), Some(1.0));
        assert_eq!(
            value(&text, names::REDIS_ERRORS, &[("op", "subscribe")]),
            Some(1.0)
        );
        assert_eq!(value(&text, names::REDIS_SUBSCRIPTIONS, &[]), Some(1.0));
        assert_eq!(
            value(
                &text,
                "gateway_redis_pubsub_lag_seconds_bucket",
                &[("le", "0.005")]
            ),
            Some(1.0)
        );
        assert!(Metrics::lag_since_unix_micros(u64::MAX) == Duration::ZERO);
    }

    #[test]
    fn two_nodes_keep_their_numbers_apart() {
        let a = metrics();
        let b = metrics();
        a.engine_opened(Transport::Websocket);
        assert_eq!(sum(&a.render(), names::ENGINE_CONNECTIONS), 1.0);
        assert_eq!(sum(&b.render(), names::ENGINE_CONNECTIONS), 0.0);
    }
}
