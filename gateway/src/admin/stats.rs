//! Counts of admin calls by method and gRPC status code, and the guard that
//! records one call.
//!
//! Every admin call passes through [`Call`] when it ends, whatever its
//! outcome (`CANCELLED` when the client goes away mid-call;
//! `UNAUTHENTICATED` is counted by the auth layer): it is counted in the
//! node's [`AdminStats`] and in the Prometheus metrics
//! `gateway_admin_requests_total{method,code}`,
//! `gateway_admin_request_duration_seconds{method}` and
//! `gateway_admin_in_flight`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tonic::{Code, Status};

pub use crate::telemetry::AdminMethod;
use crate::telemetry::{AdminCall, Metrics};

/// The admin rpc an HTTP/2 path calls
/// (`/socketio_gateway.admin.v1.Admin/Emit`), if it is one.
pub(crate) fn method_of_path(path: &str) -> Option<AdminMethod> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    if service != gateway_proto::admin::v1::admin_server::SERVICE_NAME {
        return None;
    }
    AdminMethod::parse(method)
}

fn index(method: AdminMethod) -> usize {
    AdminMethod::ALL
        .iter()
        .position(|m| *m == method)
        .unwrap_or(0)
}

/// gRPC status codes run from 0 (`OK`) to 16 (`UNAUTHENTICATED`).
const CODES: usize = 17;

/// Admin calls counted by method and status code, since the node started.
#[derive(Debug, Default)]
pub struct AdminStats {
    calls: [[AtomicU64; CODES]; AdminMethod::ALL.len()],
}

impl AdminStats {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Records one finished call.
    pub(crate) fn record(&self, method: AdminMethod, code: Code, elapsed: Duration) {
        let code = (code as usize).min(CODES - 1);
        self.calls[index(method)][code].fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            method = method.as_str(),
            code = ?Code::from(code as i32),
            elapsed_ms = elapsed.as_millis() as u64,
            "admin call"
        );
    }

    /// Calls of `method` that ended with `code`.
    pub fn count(&self, method: AdminMethod, code: Code) -> u64 {
        self.calls[index(method)][(code as usize).min(CODES - 1)].load(Ordering::Relaxed)
    }

    /// Every non-zero count, as (method, code, calls).
    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> Vec<(AdminMethod, Code, u64)> {
        let mut out = Vec::new();
        for method in AdminMethod::ALL {
            for (code, n) in self.calls[index(method)].iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    out.push((method, Code::from(code as i32), n));
                }
            }
        }
        out
    }
}

/// One admin call in progress. Finishing it records its code; dropping it
/// unfinished (the client cancelled, the connection dropped) records
/// `CANCELLED`.
pub(crate) struct Call<'a> {
    stats: &'a AdminStats,
    timing: Option<AdminCall<'a>>,
    method: AdminMethod,
    start: Instant,
}

impl<'a> Call<'a> {
    pub(crate) fn start(stats: &'a AdminStats, metrics: &'a Metrics, method: AdminMethod) -> Self {
        Self {
            stats,
            timing: Some(metrics.admin_call(method)),
            method,
            start: Instant::now(),
        }
    }

    /// Records the outcome and hands it back.
    pub(crate) fn finish<T>(mut self, result: Result<T, Status>) -> Result<T, Status> {
        let code = match &result {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        if let Some(timing) = self.timing.take() {
            timing.finish(code as i32);
        }
        self.stats.record(self.method, code, self.start.elapsed());
        if let Err(status) = &result {
            tracing::debug!(method = self.method.as_str(), %status, "admin call failed");
        }
        result
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        // Unfinished: the metrics' own guard records CANCELLED as it drops.
        if self.timing.is_some() {
            self.stats
                .record(self.method, Code::Cancelled, self.start.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_from_paths() {
        assert_eq!(
            method_of_path("/socketio_gateway.admin.v1.Admin/EmitWithAck"),
            Some(AdminMethod::EmitWithAck)
        );
        assert_eq!(
            method_of_path("/socketio_gateway.admin.v1.Admin/Nope"),
            None
        );
        assert_eq!(method_of_path("/other.v1.Service/Emit"), None);
        assert_eq!(
            method_of_path("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            None
        );
        assert_eq!(method_of_path(""), None);
    }

    #[test]
    fn counts_by_method_and_code_and_cancelled_on_drop() {
        let stats = AdminStats::new();
        let metrics = Metrics::new(["/"]);
        let _ = Call::start(&stats, &metrics, AdminMethod::Emit).finish(Ok(()));
        let _ = Call::start(&stats, &metrics, AdminMethod::Emit)
            .finish::<()>(Err(Status::invalid_argument("x")));
        drop(Call::start(&stats, &metrics, AdminMethod::FetchSockets));
        assert_eq!(stats.count(AdminMethod::Emit, Code::Ok), 1);
        assert_eq!(stats.count(AdminMethod::Emit, Code::InvalidArgument), 1);
        assert_eq!(stats.count(AdminMethod::FetchSockets, Code::Cancelled), 1);
        assert_eq!(stats.snapshot().len(), 3);
        let text = metrics.render();
        for line in [
            r#"gateway_admin_requests_total{method="Emit",code="INVALID_ARGUMENT"} 1"#,
            r#"gateway_admin_requests_total{method="FetchSockets",code="CANCELLED"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
