//! One backend (its lazily connecting channel and its bound on calls in
//! flight) and one call to it: the deadline, the retry where it is safe,
//! and what a failure means for the client.

use std::error::Error as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gateway_proto::hooks::v1::hooks_client::HooksClient;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tracing::{Instrument, Span};

use super::*;
use crate::config::{ConfigError, HooksConfig, hooks_endpoint};
use crate::telemetry::{HookCall, TraceContext};

/// One backend: its channel and its bound on calls in flight.
pub(super) struct Backend {
    pub(super) url: String,
    pub(super) client: HooksClient<Channel>,
    pub(super) slots: Semaphore,
    /// Set by a failure, cleared by a success: logs the transitions only,
    /// so that a backend that is down does not log once per call.
    pub(super) failing: AtomicBool,
}

impl Backend {
    pub(super) fn new(hooks: &HooksConfig, connect_timeout: Duration) -> Result<Self, ConfigError> {
        let endpoint = hooks_endpoint(&hooks.url)?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            // Finds a backend that vanished without closing its connections.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        Ok(Self {
            url: hooks.url.clone(),
            client: HooksClient::new(endpoint.connect_lazy()),
            slots: Semaphore::new(hooks.max_in_flight),
            failing: AtomicBool::new(false),
        })
    }

    pub(super) fn note(&self, rpc: &'static str, outcome: Result<(), &HookError>) {
        match outcome {
            Ok(()) | Err(HookError::Failed(_)) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(url = %self.url, rpc, "hooks backend answers again");
                }
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        url = %self.url,
                        rpc,
                        kind = e.kind(),
                        error = e.reason(),
                        "hooks backend failing"
                    );
                } else {
                    tracing::debug!(
                        url = %self.url,
                        rpc,
                        kind = e.kind(),
                        error = e.reason(),
                        "hook call failed"
                    );
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Rpc {
    Connect,
    Event,
    Disconnect,
}

impl Rpc {
    pub(super) fn name(self) -> &'static str {
        match self {
            Rpc::Connect => "OnConnect",
            Rpc::Event => "OnEvent",
            Rpc::Disconnect => "OnDisconnect",
        }
    }

    /// The `hook` label of the rpc's metrics.
    pub(super) fn kind(self) -> crate::telemetry::HookKind {
        match self {
            Rpc::Connect => crate::telemetry::HookKind::Connect,
            Rpc::Event => crate::telemetry::HookKind::Event,
            Rpc::Disconnect => crate::telemetry::HookKind::Disconnect,
        }
    }

    /// Safe to send again: only when the first attempt never reached the
    /// backend, and never for events.
    pub(super) fn retry_once(self) -> bool {
        !matches!(self, Rpc::Event)
    }
}

/// Why a call produced no response.
#[derive(Debug)]
pub(super) enum CallError {
    /// No free slot before the deadline.
    Busy,
    /// The deadline passed during the call.
    Timeout,
    /// The call ended with an error status.
    Status(Status),
}

/// Statuses a backend uses to reject an event with a reason for the client.
pub(super) const APPLICATION_CODES: [Code; 9] = [
    Code::InvalidArgument,
    Code::FailedPrecondition,
    Code::PermissionDenied,
    Code::Unauthenticated,
    Code::NotFound,
    Code::AlreadyExists,
    Code::OutOfRange,
    Code::ResourceExhausted,
    Code::Aborted,
];

/// Whether an error of type `E` is among the causes of `status`.
pub(super) fn caused_by<E: std::error::Error + 'static>(status: &Status) -> bool {
    let mut source = status.source();
    while let Some(e) = source {
        if e.is::<E>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The call failed with `UNAVAILABLE` because the connection could not be
/// made: no byte of it reached the backend.
pub(super) fn never_reached(status: &Status) -> bool {
    status.code() == Code::Unavailable && caused_by::<tonic::ConnectError>(status)
}

/// The status as a failure of the gateway: its code and message, for logs.
pub(super) fn describe(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Cuts `text` to at most `max` bytes at a character boundary.
pub(super) fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

impl CallError {
    /// What the client and the counters see; `application` when the rpc
    /// passes application statuses on (`OnEvent`).
    pub(super) fn into_hook_error(self, application: bool) -> HookError {
        match self {
            CallError::Busy => HookError::Busy,
            CallError::Timeout => HookError::Timeout,
            CallError::Status(s) if matches!(s.code(), Code::DeadlineExceeded) => {
                HookError::Timeout
            }
            // The channel's own enforcement of `grpc-timeout`.
            CallError::Status(s)
                if s.code() == Code::Cancelled && caused_by::<tonic::TimeoutExpired>(&s) =>
            {
                HookError::Timeout
            }
            CallError::Status(s) if application && APPLICATION_CODES.contains(&s.code()) => {
                let message = if s.message().is_empty() {
                    s.code().description().to_owned()
                } else {
                    s.message().to_owned()
                };
                HookError::Failed(truncate(message, MAX_CLIENT_MESSAGE))
            }
            CallError::Status(s) => HookError::Unavailable(describe(&s)),
        }
    }
}

/// Makes one call through `backend` within `deadline`, in `span` (a
/// [`hook_span`](crate::telemetry::hook_span)): waits for a free slot,
/// then calls (twice at most, when `rpc` may be retried and the first
/// attempt never reached the backend; a retry is counted on `observed`).
/// A traced span's context goes with every attempt as `traceparent` /
/// `tracestate` metadata.
pub(super) async fn call<Req, Resp, F, Fut>(
    backend: &Backend,
    rpc: Rpc,
    deadline: Instant,
    request: Req,
    send: F,
    observed: Option<&HookCall<'_>>,
    span: Span,
) -> Result<Resp, CallError>
where
    Req: Clone + Default,
    F: FnMut(HooksClient<Channel>, tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let trace = TraceContext::of(&span);
    attempts(backend, rpc, deadline, request, send, observed, trace)
        .instrument(span)
        .await
}

/// The attempts of [`call`], each carrying `trace` when there is one.
async fn attempts<Req, Resp, F, Fut>(
    backend: &Backend,
    rpc: Rpc,
    deadline: Instant,
    mut request: Req,
    mut send: F,
    observed: Option<&HookCall<'_>>,
    trace: Option<TraceContext>,
) -> Result<Resp, CallError>
where
    Req: Clone + Default,
    F: FnMut(HooksClient<Channel>, tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let Ok(Ok(_slot)) = tokio::time::timeout_at(deadline, backend.slots.acquire()).await else {
        // The semaphore is never closed: only the deadline gets here.
        return Err(CallError::Busy);
    };
    let mut may_retry = rpc.retry_once();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(CallError::Timeout);
        }
        // Keep a copy only while a second attempt is possible.
        let message = if may_retry {
            request.clone()
        } else {
            std::mem::take(&mut request)
        };
        let mut req = tonic::Request::new(message);
        req.set_timeout(remaining);
        if let Some(trace) = &trace {
            trace.inject_into(req.metadata_mut());
        }
        match tokio::time::timeout_at(deadline, send(backend.client.clone(), req)).await {
            Err(_) => return Err(CallError::Timeout),
            Ok(Ok(response)) => return Ok(response.into_inner()),
            Ok(Err(status)) if may_retry && never_reached(&status) => {
                tracing::debug!(url = %backend.url, rpc = rpc.name(), error = %describe(&status),
                    "hooks backend not reached, retrying once");
                if let Some(observed) = observed {
                    observed.retried();
                }
                may_retry = false;
            }
            Ok(Err(status)) => return Err(CallError::Status(status)),
        }
    }
}
