//! Per-rpc counters of the hooks client (calls, outcomes, retries,
//! latency), next to the node's `gateway_hook_*` metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::*;

/// Counters of one rpc, next to the telemetry module's metrics
/// (`gateway_hook_*`), for the hooks' own [`GrpcHooks::stats`].
#[derive(Debug, Default)]
pub(crate) struct RpcStats {
    calls: AtomicU64,
    ok: AtomicU64,
    pub(super) refused: AtomicU64,
    unavailable: AtomicU64,
    timeout: AtomicU64,
    busy: AtomicU64,
    failed: AtomicU64,
    pub(super) retries: AtomicU64,
    latency_us: AtomicU64,
}

/// A reading of [`RpcStats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RpcCounts {
    /// Calls made (a retry is the same call).
    pub calls: u64,
    /// Calls answered with a usable response (a refusal included).
    pub ok: u64,
    /// `OnConnect` calls answered with `Refuse`.
    pub refused: u64,
    /// Failures: unreachable backend, error status, unusable response.
    pub unavailable: u64,
    /// Failures: the deadline passed during the call.
    pub timeout: u64,
    /// Failures: the deadline passed while waiting for a free slot.
    pub busy: u64,
    /// The backend rejected an event with a status meant for the client.
    pub failed: u64,
    /// Second attempts (connection failed before reaching the backend).
    pub retries: u64,
    /// Sum of the calls' durations, waiting included, microseconds.
    pub latency_us: u64,
}

impl RpcStats {
    fn read(&self) -> RpcCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RpcCounts {
            calls: get(&self.calls),
            ok: get(&self.ok),
            refused: get(&self.refused),
            unavailable: get(&self.unavailable),
            timeout: get(&self.timeout),
            busy: get(&self.busy),
            failed: get(&self.failed),
            retries: get(&self.retries),
            latency_us: get(&self.latency_us),
        }
    }

    pub(super) fn record(&self, elapsed: Duration, outcome: Result<(), &HookError>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.fetch_add(micros, Ordering::Relaxed);
        let counter = match outcome {
            Ok(()) => &self.ok,
            Err(HookError::Unavailable(_)) => &self.unavailable,
            Err(HookError::Timeout) => &self.timeout,
            Err(HookError::Busy) => &self.busy,
            Err(HookError::Failed(_)) => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Hook latency and errors, per rpc.
#[derive(Debug, Default)]
pub(crate) struct HookStats {
    pub(crate) connect: RpcStats,
    pub(crate) event: RpcStats,
    pub(crate) disconnect: RpcStats,
}

/// A reading of [`HookStats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HookCounts {
    pub connect: RpcCounts,
    pub event: RpcCounts,
    pub disconnect: RpcCounts,
}

impl HookStats {
    pub(crate) fn read(&self) -> HookCounts {
        HookCounts {
            connect: self.connect.read(),
            event: self.event.read(),
            disconnect: self.disconnect.read(),
        }
    }
}
