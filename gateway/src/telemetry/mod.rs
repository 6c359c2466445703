//! Telemetry: what an operator sees of a node.
//!
//! - [`contract`]: the metrics contract with `deploy/` (names, help texts,
//!   buckets, label sets);
//! - [`metrics`]: the node's Prometheus metrics ([`Metrics`]), one recorder
//!   per node, every handle registered at startup, cheap updates on the hot
//!   path; rendered by the operations port (`crate::ops`).
//! - [`logs`]: the shape of log lines (JSON on stdout, text on stderr, the
//!   node id on each, the trace and span ids on JSON lines inside a traced
//!   span) and [`logs::Throttle`] for warnings that repeat;
//! - [`process`]: the process's CPU time, memory and file descriptors
//!   (`process_*`), read at each scrape;
//! - [`trace`]: the process's logs (text or JSON) and OpenTelemetry spans
//!   exported over OTLP ([`init`]): one span per admin call
//!   ([`admin_span`]), a child of the caller's W3C [`TraceContext`] when the
//!   call carries one; one per delivery of a traced emit that came over the
//!   cluster bus ([`deliver_span`]), a child of the context the message
//!   carried; one per hooks call ([`hook_span`]), its context sent to the
//!   backend; and [`ErrorChain`], how an error is logged with the errors
//!   beneath it.

pub(crate) mod contract;
pub(crate) mod logs;
pub mod metrics;
pub(crate) mod process;
pub mod trace;

pub use contract::AdminMethod;
pub use contract::names;
pub use metrics::Metrics;
pub(crate) use metrics::{
    AdminCall, ConnectErrorReason, HookCall, HookKind, HookResult, HttpPhase, NamespaceMetrics,
    RecoveryResult, RedisOp, Tally,
};
pub(crate) use trace::ErrorChain;
pub use trace::{
    TelemetryError, TelemetryGuard, TraceContext, TracingOptions, admin_span, deliver_span,
    hook_span, init,
};
