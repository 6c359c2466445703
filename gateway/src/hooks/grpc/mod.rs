//! The gRPC client of a backend's `Hooks` service
//! (`socketio_gateway.hooks.v1`, see `proto/`): [`GrpcHooks`] implements
//! [`Hooks`] for the namespaces whose configuration has a `[namespaces.hooks]`
//! table.
//!
//! What it owns:
//! - routing: a namespace uses the hooks of the policy it matches (an exact
//!   declaration beats a pattern, as for the policy itself);
//! - one lazily connecting channel per backend url, shared by every namespace
//!   that names it, with a bound on the calls in flight ([`HooksConfig::max_in_flight`]);
//! - every call's deadline ([`HooksConfig::timeout_ms`], sent as
//!   `grpc-timeout` and enforced here too; waiting for a free slot counts
//!   against it);
//! - retries where safe: `OnConnect` and `OnDisconnect` are retried once when
//!   the first attempt failed with `UNAVAILABLE` before reaching the backend
//!   (the connection could not be made); `OnEvent` never is;
//! - the mapping between the gateway's types and the protobuf messages, and
//!   of failures to what the client sees ([`HookError`]);
//! - `OnDisconnect` as fire and forget: spawned, tracked, drained at shutdown
//!   ([`GrpcHooks::drain`]);
//! - the node's hook metrics (`gateway_hook_requests_total`,
//!   `gateway_hook_duration_seconds`, `gateway_hook_in_flight`,
//!   `gateway_hook_retries_total`), once attached.
//!
//! The order of one socket's events is kept by the caller (the socket's
//! event queue hands [`Hooks::on_event`] one event at a time).
//!
//! Files: `mod.rs` (configuration to routes, the [`Hooks`] implementation),
//! `call.rs` (a backend and one call: deadline, retry, failure mapping),
//! `convert.rs` (protobuf messages).

mod call;
mod convert;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gateway_proto::hooks::v1 as pb;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::{ConnectDecision, ConnectRequest, Event, HookError, Hooks};

use crate::config::{Config, ConfigError, HooksConfig, NamespaceMatcher};
use crate::reason::DisconnectReason;
use crate::socketio::{Payload, Socket};
use crate::telemetry::hook_span;
use call::*;
pub(crate) use convert::socketio_reason;
use convert::*;

/// Longest message of a backend's error status passed on to a client; longer
/// ones are cut (at a character boundary).
const MAX_CLIENT_MESSAGE: usize = 1024;

/// Whether any namespace of `config` names a hooks backend.
pub(crate) fn configured(config: &Config) -> bool {
    config.namespaces.iter().any(|ns| ns.hooks.is_some())
}

// ---------------------------------------------------------------------------
// Routes

/// The hooks of one namespace policy.
struct NamespaceHooks {
    backend: Arc<Backend>,
    connect: bool,
    events: bool,
    disconnect: bool,
    timeout: Duration,
    connect_deadline: Duration,
}

/// A declared namespace (exact or pattern) and its hooks, if any.
struct Route {
    name: String,
    matcher: NamespaceMatcher,
    hooks: Option<Arc<NamespaceHooks>>,
}

struct Inner {
    routes: Vec<Route>,
    max_room_name: usize,
    disconnects: TaskTracker,
    /// The node's Prometheus series, once attached.
    metrics: std::sync::OnceLock<Arc<crate::telemetry::Metrics>>,
}

/// Counts a finished call wherever calls are counted: the node's metrics,
/// and the backend's failing / answering-again log.
fn record<T>(
    rpc: Rpc,
    observed: Option<crate::telemetry::HookCall<'_>>,
    backend: &Backend,
    result: &Result<T, HookError>,
) {
    if let Some(call) = observed {
        call.finish(hook_result(result));
    }
    backend.note(rpc.name(), result.as_ref().map(|_| ()));
}

/// The Prometheus result label of a hook call's outcome.
fn hook_result<T>(result: &Result<T, HookError>) -> crate::telemetry::HookResult {
    use crate::telemetry::HookResult;
    match result {
        Ok(_) => HookResult::Ok,
        Err(HookError::Unavailable(_)) => HookResult::Unavailable,
        Err(HookError::Timeout) => HookResult::Timeout,
        Err(HookError::Busy) => HookResult::Overloaded,
        Err(HookError::Failed(_)) => HookResult::Error,
    }
}

/// [`Hooks`] backed by the `Hooks` gRPC services named in the configuration.
/// Cheap to clone.
#[derive(Clone)]
pub struct GrpcHooks {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GrpcHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let routes: Vec<(&str, Option<&str>)> = self
            .inner
            .routes
            .iter()
            .map(|r| {
                (
                    r.name.as_str(),
                    r.hooks.as_ref().map(|h| h.backend.url.as_str()),
                )
            })
            .collect();
        f.debug_struct("GrpcHooks")
            .field("routes", &routes)
            .finish_non_exhaustive()
    }
}

impl GrpcHooks {
    /// Builds the hooks of every namespace of `config` (namespaces without a
    /// `[namespaces.hooks]` table get none). Connects lazily: a backend that
    /// is down does not stop the node; its calls fail until it is up. Must be
    /// called inside a tokio runtime.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let connect_timeout_cap = config.server.connect_timeout();
        let mut backends: HashMap<String, Arc<Backend>> = HashMap::new();
        let mut routes = Vec::new();
        for ns in config.effective_namespaces() {
            let matcher = NamespaceMatcher::new(&ns.name)?;
            let hooks = match &ns.hooks {
                None => None,
                Some(cfg) => {
                    cfg.validate().map_err(|e| e.in_namespace(&ns.name))?;
                    let backend = match backends.get(&cfg.url) {
                        Some(b) => b.clone(),
                        None => {
                            // The longest deadline of the namespaces naming it.
                            let connect_timeout = config
                                .namespaces
                                .iter()
                                .filter_map(|n| n.hooks.as_ref())
                                .filter(|h| h.url == cfg.url)
                                .map(HooksConfig::timeout)
                                .max()
                                .unwrap_or_else(|| cfg.timeout());
                            let b = Backend::new(cfg, connect_timeout)
                                .map_err(|e| e.in_namespace(&ns.name))?;
                            let b = Arc::new(b);
                            backends.insert(cfg.url.clone(), b.clone());
                            b
                        }
                    };
                    Some(Arc::new(NamespaceHooks {
                        backend,
                        connect: cfg.connect,
                        events: cfg.events,
                        disconnect: cfg.disconnect,
                        timeout: cfg.timeout(),
                        connect_deadline: cfg.timeout().min(connect_timeout_cap),
                    }))
                }
            };
            routes.push(Route {
                name: ns.name.clone(),
                matcher,
                hooks,
            });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                routes,
                max_room_name: config.limits.max_room_name,
                disconnects: TaskTracker::new(),
                metrics: std::sync::OnceLock::new(),
            }),
        })
    }

    /// [`GrpcHooks::from_config`] recording its calls in `metrics`: how a
    /// node wires the hooks its configuration names.
    pub(crate) fn new(
        config: &Config,
        metrics: Arc<crate::telemetry::Metrics>,
    ) -> Result<Self, ConfigError> {
        let hooks = Self::from_config(config)?;
        hooks.attach_metrics(metrics);
        Ok(hooks)
    }

    /// Records hook calls in the node's metrics from now on
    /// (`gateway_hook_requests_total`, `gateway_hook_duration_seconds`,
    /// `gateway_hook_in_flight`, `gateway_hook_retries_total`).
    pub fn attach_metrics(&self, metrics: Arc<crate::telemetry::Metrics>) {
        let _ = self.inner.metrics.set(metrics);
    }

    /// Waits up to `grace` for the `OnDisconnect` calls still under way (at
    /// shutdown, after the sessions closed). True when all finished.
    pub(crate) async fn drain(&self, grace: Duration) -> bool {
        let tasks = &self.inner.disconnects;
        tasks.close();
        let done = tokio::time::timeout(grace, tasks.wait()).await.is_ok();
        tasks.reopen();
        done
    }

    /// The hooks of the policy `namespace` falls under: the policy declared
    /// with exactly that name (or that pattern text), else the first pattern
    /// that matches, as `Namespaces::policy` chooses.
    fn route(&self, namespace: &str) -> Option<&Arc<NamespaceHooks>> {
        let routes = &self.inner.routes;
        routes
            .iter()
            .find(|r| r.name == namespace)
            .or_else(|| routes.iter().find(|r| r.matcher.matches(namespace)))
            .and_then(|r| r.hooks.as_ref())
    }
}

impl GrpcHooks {
    fn decision(&self, response: pb::OnConnectResponse) -> Result<ConnectDecision, String> {
        use pb::on_connect_response::Decision;
        match response.decision {
            Some(Decision::Allow(allow)) => {
                let data = json_field(&allow.data, "Allow.data")?;
                let max = self.inner.max_room_name;
                let rooms = allow
                    .rooms
                    .into_iter()
                    .filter(|room| {
                        let checked = crate::ids::check_room_name(room, max);
                        if let Err(e) = checked {
                            tracing::debug!(
                                room_len = room.len(),
                                error = %e,
                                "hooks backend named a room that cannot be; skipped"
                            );
                        }
                        checked.is_ok()
                    })
                    .collect();
                Ok(ConnectDecision::Allow {
                    user_id: (!allow.user_id.is_empty()).then_some(allow.user_id),
                    rooms,
                    data,
                })
            }
            Some(Decision::Refuse(refuse)) => Ok(ConnectDecision::Refuse {
                data: json_field(&refuse.data, "Refuse.data")?,
                message: refuse.message,
            }),
            None => Err("OnConnectResponse has no decision".to_owned()),
        }
    }
}

#[async_trait::async_trait]
impl Hooks for GrpcHooks {
    fn handles_connect(&self, namespace: &str) -> bool {
        self.route(namespace).is_some_and(|h| h.connect)
    }

    fn handles_events(&self, namespace: &str) -> bool {
        self.route(namespace).is_some_and(|h| h.events)
    }

    async fn on_connect(&self, req: ConnectRequest<'_>) -> Result<ConnectDecision, HookError> {
        let Some(hooks) = self.route(req.namespace).filter(|h| h.connect).cloned() else {
            return Ok(ConnectDecision::allow());
        };
        let started = Instant::now();
        let request = pb::OnConnectRequest {
            socket_id: req.socket_id.to_owned(),
            namespace: req.namespace.to_owned(),
            auth: req.auth.map(|a| a.to_string()).unwrap_or_default(),
            headers: headers_map(&req.handshake.headers),
            query: parse_query(&req.handshake.query),
            remote_addr: req.handshake.remote.to_string(),
            node_id: crate::ids::node_of(req.socket_id)
                .map(String::from)
                .unwrap_or_default(),
            user_id: req.user_id.unwrap_or_default().to_owned(),
        };
        let metrics = self.inner.metrics.get().cloned();
        let observed = metrics.as_ref().map(|m| m.hook_call(Rpc::Connect.kind()));
        let result = call(
            &hooks.backend,
            Rpc::Connect,
            started + hooks.connect_deadline,
            request,
            |mut client, r| async move { client.on_connect(r).await },
            observed.as_ref(),
            hook_span(Rpc::Connect.name(), req.namespace),
        )
        .await
        .map_err(|e| e.into_hook_error(false))
        .and_then(|r| self.decision(r).map_err(HookError::Unavailable));
        record(Rpc::Connect, observed, &hooks.backend, &result);
        result
    }

    async fn on_event(
        &self,
        socket: &Arc<Socket>,
        event: Event,
    ) -> Result<Option<Payload>, HookError> {
        let namespace = &socket.namespace().name;
        let Some(hooks) = self.route(namespace).filter(|h| h.events).cloned() else {
            return Ok(None);
        };
        let started = Instant::now();
        let wants_ack = event.wants_ack;
        let request = pb::OnEventRequest {
            socket_id: socket.id().to_owned(),
            namespace: namespace.to_string(),
            user_id: socket.user_id().unwrap_or_default().to_owned(),
            event: event.name,
            args: Some(to_proto_payload(event.args)),
            wants_ack,
            // The proto numbers a socket's events from 1.
            sequence: event.sequence.saturating_add(1),
        };
        let metrics = self.inner.metrics.get().cloned();
        let observed = metrics.as_ref().map(|m| m.hook_call(Rpc::Event.kind()));
        let result = call(
            &hooks.backend,
            Rpc::Event,
            started + hooks.timeout,
            request,
            |mut client, r| async move { client.on_event(r).await },
            observed.as_ref(),
            hook_span(Rpc::Event.name(), namespace),
        )
        .await
        .map_err(|e| e.into_hook_error(true))
        .and_then(|response| match response.ack_args {
            Some(args) if wants_ack => from_proto_payload(args)
                .map(Some)
                .map_err(HookError::Unavailable),
            _ => Ok(None),
        });
        record(Rpc::Event, observed, &hooks.backend, &result);
        result
    }

    fn on_disconnect(&self, socket: &Arc<Socket>, reason: DisconnectReason) {
        let namespace = &socket.namespace().name;
        let Some(hooks) = self.route(namespace).filter(|h| h.disconnect).cloned() else {
            return;
        };
        let request = pb::OnDisconnectRequest {
            socket_id: socket.id().to_owned(),
            namespace: namespace.to_string(),
            user_id: socket.user_id().unwrap_or_default().to_owned(),
            reason: socketio_reason(reason).to_owned(),
        };
        let started = Instant::now();
        let metrics = self.inner.metrics.get().cloned();
        // Made here, so that it is a child of the span the socket closes in.
        let span = hook_span(Rpc::Disconnect.name(), namespace);
        self.inner.disconnects.spawn(async move {
            let observed = metrics
                .as_ref()
                .map(|m| m.hook_call(Rpc::Disconnect.kind()));
            let result = call(
                &hooks.backend,
                Rpc::Disconnect,
                started + hooks.timeout,
                request,
                |mut client, r| async move { client.on_disconnect(r).await },
                observed.as_ref(),
                span,
            )
            .await
            .map(|_| ())
            .map_err(|e| e.into_hook_error(false));
            record(Rpc::Disconnect, observed, &hooks.backend, &result);
        });
    }

    async fn drain(&self, grace: Duration) -> bool {
        GrpcHooks::drain(self, grace).await
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use gateway_proto::common::v1 as pb_common;
    use tonic::Status;

    use super::*;

    fn config(text: &str) -> Config {
        let c = Config::from_toml(text).unwrap();
        c.validate().unwrap();
        c
    }

    #[test]
    fn defaults_and_full_table() {
        let c = config(
            r#"
            [[namespaces]]
            name = "/chat"
            [namespaces.hooks]
            url = "http://127.0.0.1:50061"
            [[namespaces]]
            name = "/tenant-*"
            [namespaces.hooks]
            url = "http://backend:9000"
            connect = false
            events = true
            disconnect = false
            timeout_ms = 250
            max_in_flight = 8
            "#,
        );
        assert_eq!(
            c.namespaces[0].hooks,
            Some(HooksConfig::new("http://127.0.0.1:50061"))
        );
        let h = c.namespaces[0].hooks.as_ref().unwrap();
        assert!(h.connect && h.events && h.disconnect);
        assert_eq!((h.timeout_ms, h.max_in_flight), (5000, 256));
        let t = c.namespaces[1].hooks.as_ref().unwrap();
        assert!(!t.connect && t.events && !t.disconnect);
        assert_eq!((t.timeout_ms, t.max_in_flight), (250, 8));
        assert!(configured(&c));
        assert!(!configured(&Config::default()));
    }

    #[test]
    fn rejects_bad_tables() {
        for text in [
            "url = \"127.0.0.1:50061\"",
            "url = \"https://127.0.0.1:50061\"",
            "url = \"http://\"",
            "url = \"http://a:1/some/path\"",
            "url = \"not a url\"",
            "url = \"http://a:1\"\ntimeout_ms = 0",
            "url = \"http://a:1\"\nmax_in_flight = 0",
        ] {
            let c = Config::from_toml(&format!(
                "[[namespaces]]\nname = \"/a\"\n[namespaces.hooks]\n{text}"
            ))
            .unwrap();
            let err = c.validate().expect_err(text).to_string();
            assert!(err.contains("namespace \"/a\": hooks."), "{err}");
        }
        // Missing url, unknown key.
        assert!(Config::from_toml("[[namespaces]]\nname = \"/a\"\n[namespaces.hooks]\n").is_err());
        assert!(
            Config::from_toml(
                "[[namespaces]]\nname = \"/a\"\n[namespaces.hooks]\nurl = \"http://a:1\"\nretries = 3"
            )
            .is_err()
        );
        // One backend, two bounds.
        let c = Config::from_toml(
            r#"
            [[namespaces]]
            name = "/a"
            [namespaces.hooks]
            url = "http://b:1"
            max_in_flight = 4
            [[namespaces]]
            name = "/b"
            [namespaces.hooks]
            url = "http://b:1"
            max_in_flight = 5
            "#,
        )
        .unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("different max_in_flight"), "{err}");
    }

    #[tokio::test]
    async fn routes_like_the_policies() {
        let c = config(
            r#"
            [[namespaces]]
            name = "/t-*"
            [namespaces.hooks]
            url = "http://127.0.0.1:1"
            [[namespaces]]
            name = "/t-public"
            [[namespaces]]
            name = "/events-only"
            [namespaces.hooks]
            url = "http://127.0.0.1:1"
            connect = false
            disconnect = false
            "#,
        );
        let hooks = GrpcHooks::from_config(&c).unwrap();
        assert!(hooks.handles_connect("/t-42") && hooks.handles_events("/t-42"));
        assert!(hooks.handles_connect("/t-*"), "the policy's own name");
        // The exact declaration wins, and it has no hooks.
        assert!(!hooks.handles_connect("/t-public") && !hooks.handles_events("/t-public"));
        assert!(!hooks.handles_connect("/events-only") && hooks.handles_events("/events-only"));
        assert!(!hooks.handles_connect("/") && !hooks.handles_events("/other"));
        // Both namespaces share one backend.
        let a = &hooks.route("/t-1").unwrap().backend;
        let b = &hooks.route("/events-only").unwrap().backend;
        assert!(Arc::ptr_eq(a, b));
    }

    #[test]
    fn maps_statuses_to_what_the_client_sees() {
        let app = CallError::Status(Status::invalid_argument("text too long"));
        assert_eq!(app.into_hook_error(true).to_string(), "text too long");
        let app = CallError::Status(Status::permission_denied("no"));
        assert_eq!(
            app.into_hook_error(false).to_string(),
            "backend unavailable"
        );
        let empty = CallError::Status(Status::not_found(""));
        assert!(!empty.into_hook_error(true).to_string().is_empty());
        let long = CallError::Status(Status::aborted("é".repeat(2000)));
        assert!(long.into_hook_error(true).to_string().len() <= MAX_CLIENT_MESSAGE);
        for (status, kind) in [
            (Status::internal("boom"), "unavailable"),
            (Status::unavailable("down"), "unavailable"),
            (Status::unknown("?"), "unavailable"),
            (Status::deadline_exceeded("late"), "timeout"),
        ] {
            let e = CallError::Status(status).into_hook_error(true);
            assert_eq!(
                (e.kind(), e.to_string().as_str()),
                (kind, "backend unavailable")
            );
        }
        assert_eq!(CallError::Busy.into_hook_error(true).kind(), "busy");
        assert_eq!(CallError::Timeout.into_hook_error(true).kind(), "timeout");
        assert!(!never_reached(&Status::unavailable("down")));
    }

    #[test]
    fn maps_request_parts() {
        let q = parse_query("EIO=4&transport=websocket&name=a%20b+c&x=1&x=2&flag");
        assert_eq!(q["EIO"], "4");
        assert_eq!(q["name"], "a b c");
        assert_eq!(q["x"], "2");
        assert_eq!(q["flag"], "");
        let h = headers_map(&[
            ("Host".into(), "h".into()),
            ("x-a".into(), "1".into()),
            ("x-a".into(), "2".into()),
        ]);
        assert_eq!(h["host"], "h");
        assert_eq!(h["x-a"], "1, 2");
        assert_eq!(
            socketio_reason(DisconnectReason::ClientDisconnect),
            "client namespace disconnect"
        );
        assert_eq!(
            socketio_reason(DisconnectReason::PingTimeout),
            "ping timeout"
        );
    }

    #[test]
    fn checks_backend_payloads() {
        let ok = from_proto_payload(pb_common::Payload {
            json_args: r#"["a",{"_placeholder":true,"num":0}]"#.into(),
            attachments: vec![vec![1, 2]],
        })
        .unwrap();
        assert_eq!(ok.attachments, vec![Bytes::from_static(&[1, 2])]);
        assert_eq!(
            from_proto_payload(pb_common::Payload::default())
                .unwrap()
                .args,
            "[]"
        );
        for (json, n) in [
            (r#"{"a":1}"#, 0),
            ("[1", 0),
            (r#"[{"_placeholder":true,"num":1}]"#, 1),
        ] {
            let p = pb_common::Payload {
                json_args: json.into(),
                attachments: vec![vec![0]; n],
            };
            assert!(from_proto_payload(p).is_err(), "{json}");
        }
        assert_eq!(json_field("  ", "d"), Ok(None));
        assert!(json_field("{", "d").is_err());
    }
}
