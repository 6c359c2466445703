//! The application side of a Socket.IO server, as that layer calls it:
//! admission ([`Hooks::on_connect`]), events ([`Hooks::on_event`]) and
//! departures ([`Hooks::on_disconnect`]).
//!
//! [`NoHooks`] is the default (admit by policy, no application events); the
//! gRPC client of a backend's hooks service lives above this layer, in
//! [`crate::hooks::grpc`]. Events of one socket reach [`Hooks::on_event`] in
//! the order the client sent them, one at a time.

use std::sync::Arc;
use std::time::Duration;

use super::{Payload, Socket};
use crate::engine::HandshakeInfo;
use crate::reason::DisconnectReason;

/// A hook call that failed; the client gets a clear error, never a hang.
///
/// `Display` is exactly what the client is told, as `hooks.proto` states: the
/// message of its CONNECT_ERROR when admission failed, the `error` of its ack
/// when an event failed. Only [`HookError::Failed`] passes the backend's own
/// words on; every other failure reads `backend unavailable`, and
/// [`HookError::kind`] and the `Debug` form say why, for logs and counters.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HookError {
    /// The backend could not be reached, failed, or answered something the
    /// gateway cannot use; holds why.
    #[error("backend unavailable")]
    Unavailable(String),
    /// The call's deadline passed.
    #[error("backend unavailable")]
    Timeout,
    /// No free slot among the calls allowed in flight to the backend before
    /// the call's deadline.
    #[error("backend unavailable")]
    Busy,
    /// The backend refused the event with a reason meant for the client.
    #[error("{0}")]
    Failed(String),
}

impl HookError {
    /// Why the call failed, in words, for logs (the `Display` form is what
    /// a client is told).
    pub fn reason(&self) -> &str {
        match self {
            Self::Unavailable(why) | Self::Failed(why) => why,
            Self::Timeout => "the call's deadline passed",
            Self::Busy => "no free slot among the calls allowed in flight",
        }
    }

    /// A short label of the failure (`unavailable`, `timeout`, `busy`,
    /// `failed`), for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            HookError::Unavailable(_) => "unavailable",
            HookError::Timeout => "timeout",
            HookError::Busy => "busy",
            HookError::Failed(_) => "failed",
        }
    }
}

/// What the gateway knows when a client connects to a namespace.
#[derive(Debug)]
pub struct ConnectRequest<'a> {
    pub socket_id: &'a str,
    pub namespace: &'a str,
    /// The CONNECT packet's auth object, if any.
    pub auth: Option<&'a serde_json::Value>,
    pub handshake: &'a HandshakeInfo,
    /// The user id from a verified JWT, if the namespace requires one.
    pub user_id: Option<&'a str>,
}

/// An application event from a client.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: String,
    pub args: Payload,
    /// The client asked for an ack.
    pub wants_ack: bool,
    /// Position of the event among this socket's events, from 0.
    pub sequence: u64,
}

/// Admission decision.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectDecision {
    Allow {
        /// Overrides the JWT's user id when set.
        user_id: Option<String>,
        /// Rooms to join on connect.
        rooms: Vec<String>,
        /// Data attached to the socket (reported by fetch-sockets).
        data: Option<serde_json::Value>,
    },
    Refuse {
        /// Sent to the client as CONNECT_ERROR `{"message":..., "data":...}`.
        message: String,
        data: Option<serde_json::Value>,
    },
}

impl ConnectDecision {
    pub fn allow() -> Self {
        ConnectDecision::Allow {
            user_id: None,
            rooms: Vec::new(),
            data: None,
        }
    }
}

/// The application side of the gateway.
#[async_trait::async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// Whether [`Hooks::on_connect`] should be called for `namespace`
    /// (otherwise everyone the policy lets in is admitted).
    fn handles_connect(&self, _namespace: &str) -> bool {
        false
    }

    /// Whether application events of `namespace` go to [`Hooks::on_event`].
    /// When not, a client asking for an ack gets `{"ok":false,...}`.
    fn handles_events(&self, _namespace: &str) -> bool {
        false
    }

    /// Decides admission.
    async fn on_connect(&self, _req: ConnectRequest<'_>) -> Result<ConnectDecision, HookError> {
        Ok(ConnectDecision::allow())
    }

    /// The socket is connected (its CONNECT reply is queued): it may be
    /// emitted to now.
    fn on_connected(&self, _socket: &Arc<Socket>) {}

    /// An application event; the returned payload answers the client's ack
    /// when it asked for one.
    async fn on_event(
        &self,
        _socket: &Arc<Socket>,
        _event: Event,
    ) -> Result<Option<Payload>, HookError> {
        Ok(None)
    }

    /// The socket left; fire and forget.
    fn on_disconnect(&self, _socket: &Arc<Socket>, _reason: DisconnectReason) {}

    /// Waits at most `grace` for what the hooks still do once the node has
    /// stopped serving (`OnDisconnect` calls of the sockets it closed);
    /// false when some of it is still under way.
    async fn drain(&self, _grace: Duration) -> bool {
        true
    }
}

/// The default hooks: admission by policy only, no application events.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;

impl Hooks for NoHooks {}
