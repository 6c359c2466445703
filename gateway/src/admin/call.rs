//! The guard that records one admin call, and the admin rpc an HTTP/2 path
//! names.
//!
//! Every admin call passes through [`Call`] when it ends, whatever its
//! outcome (`CANCELLED` when the client goes away mid-call;
//! `UNAUTHENTICATED` is counted by the auth layer): it is counted and timed
//! in the node's metrics `gateway_admin_requests_total{method,code}`,
//! `gateway_admin_request_duration_seconds{method}` and
//! `gateway_admin_in_flight`.

use tokio::time::Instant;
use tonic::{Code, Status};

use crate::telemetry::{AdminCall, AdminMethod, Metrics};

/// The admin rpc an HTTP/2 path calls
/// (`/socketio_gateway.admin.v1.Admin/Emit`), if it is one.
pub(crate) fn method_of_path(path: &str) -> Option<AdminMethod> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    if service != gateway_proto::admin::v1::admin_server::SERVICE_NAME {
        return None;
    }
    AdminMethod::parse(method)
}

/// One admin call in progress. Finishing it records its code; dropping it
/// unfinished (the client cancelled, the connection dropped) records
/// `CANCELLED`.
pub(crate) struct Call<'a> {
    timing: AdminCall<'a>,
    method: AdminMethod,
    start: Instant,
}

impl<'a> Call<'a> {
    pub(crate) fn start(metrics: &'a Metrics, method: AdminMethod) -> Self {
        Self {
            timing: metrics.admin_call(method),
            method,
            start: Instant::now(),
        }
    }

    /// Records the outcome and hands it back.
    pub(crate) fn finish<T>(self, result: Result<T, Status>) -> Result<T, Status> {
        let code = match &result {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        self.timing.finish(code as i32);
        tracing::debug!(
            method = self.method.as_str(),
            ?code,
            elapsed_ms = self.start.elapsed().as_millis() as u64,
            "admin call"
        );
        if let Err(status) = &result {
            tracing::debug!(method = self.method.as_str(), %status, "admin call failed");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::scrape::{series, value};
    use crate::telemetry::names;

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
        let metrics = Metrics::new(["/"]);
        let _ = Call::start(&metrics, AdminMethod::Emit).finish(Ok(()));
        let _ = Call::start(&metrics, AdminMethod::Emit)
            .finish::<()>(Err(Status::invalid_argument("x")));
        drop(Call::start(&metrics, AdminMethod::FetchSockets));
        let text = metrics.render();
        let calls = |method: &str, code: &str| {
            value(
                &text,
                names::ADMIN_REQUESTS,
                &[("method", method), ("code", code)],
            )
        };
        assert_eq!(calls("Emit", "OK"), Some(1.0));
        assert_eq!(calls("Emit", "INVALID_ARGUMENT"), Some(1.0));
        assert_eq!(calls("FetchSockets", "CANCELLED"), Some(1.0));
        let counted = series(&text)
            .filter(|s| s.name == names::ADMIN_REQUESTS && s.value > 0.0)
            .count();
        assert_eq!(counted, 3, "{text}");
        assert_eq!(value(&text, names::ADMIN_IN_FLIGHT, &[]), Some(0.0));
    }
}
