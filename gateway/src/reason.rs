//! Why a connection or a socket ended: one typed reason, mapped to the
//! protocol's close and to the `reason` label of the disconnect metrics.

/// Why a socket or a whole connection was disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// The client left a namespace (`41`).
    ClientDisconnect,
    /// The client closed the Engine.IO session (`1`).
    ClientClose,
    /// The transport closed (TCP or WebSocket closed by the peer).
    TransportClose,
    /// The transport failed (read or write error).
    TransportError,
    /// No pong within `pingTimeout`.
    PingTimeout,
    /// No namespace connected within `connectTimeout`.
    ConnectTimeout,
    /// The server (an admin call) disconnected the socket.
    ServerDisconnect,
    /// The outbound queue was full: the client does not read fast enough.
    SlowConsumer,
    /// The client sent something the protocol does not allow.
    ProtocolError,
    /// The client sent more packets than its rate limit allows.
    RateLimited,
    /// The node is shutting down; the client should reconnect elsewhere.
    Shutdown,
}

impl DisconnectReason {
    /// The metric label and log value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::ClientDisconnect => "client_disconnect",
            Self::ClientClose => "client_close",
            Self::TransportClose => "transport_close",
            Self::TransportError => "transport_error",
            Self::PingTimeout => "ping_timeout",
            Self::ConnectTimeout => "connect_timeout",
            Self::ServerDisconnect => "server_disconnect",
            Self::SlowConsumer => "slow_consumer",
            Self::ProtocolError => "protocol_error",
            Self::RateLimited => "rate_limited",
            Self::Shutdown => "shutdown",
        }
    }

    /// Whether a socket that ended for this reason may come back with
    /// connection state recovery: the connection was lost or closed under
    /// it (Node's "transport close", "transport error", "ping timeout",
    /// "forced close", "server shutting down"), not ended on purpose by
    /// either side for this namespace. A slow consumer is recoverable: the
    /// node closed the connection, not the socket, and the events it did not
    /// read are what recovery replays. A client's Engine.IO close (`1`) is
    /// Node's "transport close" and is recoverable too.
    pub(crate) fn is_recoverable(self) -> bool {
        matches!(
            self,
            Self::ClientClose
                | Self::TransportClose
                | Self::TransportError
                | Self::PingTimeout
                | Self::SlowConsumer
                | Self::Shutdown
        )
    }

    /// All reasons, for registering metric series up front.
    pub(crate) const ALL: [DisconnectReason; 11] = [
        Self::ClientDisconnect,
        Self::ClientClose,
        Self::TransportClose,
        Self::TransportError,
        Self::PingTimeout,
        Self::ConnectTimeout,
        Self::ServerDisconnect,
        Self::SlowConsumer,
        Self::ProtocolError,
        Self::RateLimited,
        Self::Shutdown,
    ];
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
