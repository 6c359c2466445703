//! Telemetry: what an operator sees of a node.
//!
//! - [`contract`]: the metrics contract with `deploy/` (names, help texts,
//!   buckets, label sets);
//! - [`metrics`]: the node's Prometheus metrics ([`Metrics`]), one recorder
//!   per node, every handle registered at startup, cheap updates on the hot
//!   path; rendered by the operations port (`crate::ops`).
//! - [`trace`]: the process's logs (text or JSON) and OpenTelemetry spans
//!   exported over OTLP ([`init`]), span helpers for connections, admin and
//!   hook calls and the cluster bus, and the W3C [`TraceContext`] that bus
//!   messages carry across nodes.

pub mod contract;
pub mod metrics;
pub mod trace;

pub use metrics::{
    AdminCall, AdminMethod, ConnectErrorReason, HookCall, HookKind, HookResult, HttpPhase, Metrics,
    NamespaceMetrics, RedisOp, TransportMetrics,
};
pub use trace::{
    TelemetryError, TelemetryGuard, TraceContext, TracingOptions, admin_span, bus_publish_span,
    bus_receive_span, connection_span, extract_context, hook_span, init, inject_context,
};
