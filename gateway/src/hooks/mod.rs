//! Hooks: how the application behind the gateway hears about connections
//! and events, and decides admission.
//!
//! The [`Hooks`] trait belongs to the Socket.IO layer that calls it
//! ([`crate::socketio::hooks`], re-exported here with its types); this
//! module adds the gRPC client of a backend's hooks service
//! ([`grpc::GrpcHooks`], for the namespaces whose configuration names a
//! backend).

pub mod grpc;

pub use crate::engine::HandshakeInfo;
pub use crate::socketio::hooks::{
    ConnectDecision, ConnectRequest, Event, HookError, Hooks, NoHooks,
};
