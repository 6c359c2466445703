//! The client listener's accept loop: every accepted TCP connection is
//! counted and bounded, and every phase before a request reaches the
//! router has a deadline.
//!
//! - **Accept.** Open client TCP connections (HTTP and WebSocket alike,
//!   from accept to close) are counted in `gateway_tcp_connections`; one
//!   accepted while `limits.max_tcp_connections` are open is closed at once,
//!   before anything is read (`gateway_tcp_connections_refused_total`).
//!   Running out of file descriptors (`EMFILE`, `ENFILE`, `ENOBUFS`,
//!   `ENOMEM`) backs off, 5 ms doubling to 1 s, and is counted
//!   (`gateway_accept_errors_total{kind="fd_exhausted"}`): it never spins.
//! - **Request head.** A connection must deliver a complete request head
//!   within `server.request_head_timeout_ms` of its accept, and each later
//!   head on a kept-alive connection within as long after the previous
//!   response ended: that is also the keep-alive idle bound between polls.
//!   A connection that sends nothing, or its head byte by byte, is closed
//!   at the bound (`gateway_http_timeouts_total{phase="request_head"}`).
//! - **Request body**: see [`read_body`] (`server.request_body_timeout_ms`).
//!
//! A WebSocket keeps its connection's slot until the WebSocket ends: the
//! router hands the [`ConnSlot`] (a request extension) to its task.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::{Bytes, BytesMut};
use hyper::body::{Body as _, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::telemetry::{HttpPhase, Metrics};

/// The first back-off after an accept error, doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Open client TCP connections, shared by the accept loop and the
/// connections' [`ConnSlot`]s.
#[derive(Debug)]
pub(crate) struct ConnCount {
    open: AtomicUsize,
    max: usize,
    metrics: Arc<Metrics>,
}

impl ConnCount {
    pub(crate) fn new(max: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            max,
            metrics,
        })
    }

    /// Open client TCP connections.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// A slot for one more connection, or `None` at the bound.
    fn try_take(self: &Arc<Self>) -> Option<ConnSlot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        self.metrics.tcp_connections_changed(1);
        Some(ConnSlot(Arc::new(SlotInner(self.clone()))))
    }
}

struct SlotInner(Arc<ConnCount>);

impl Drop for SlotInner {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.tcp_connections_changed(-1);
    }
}

/// One open client TCP connection's place in the count, released when the
/// last clone goes (the HTTP connection ends, or the WebSocket it became).
#[derive(Clone)]
pub(crate) struct ConnSlot(#[allow(dead_code)] Arc<SlotInner>);

impl std::fmt::Debug for ConnSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnSlot")
    }
}

/// Whether `e` leaves the process short of file descriptors or buffers.
fn is_resource_exhaustion(e: &io::Error) -> bool {
    // EMFILE 24, ENFILE 23, ENOBUFS 105, ENOMEM 12 (Linux numbering).
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// Errors of one connection that failed before accept returned it.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves `app` on `listener` until `stop`, then lets every HTTP connection
/// finish its request in flight and returns once they are all closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    head_timeout: Duration,
    count: Arc<ConnCount>,
    stop: CancellationToken,
) -> io::Result<()> {
    let metrics = count.metrics.clone();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout);
    let builder = Arc::new(builder);
    let connections = TaskTracker::new();
    let mut backoff = MIN_BACKOFF;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => {
                backoff = MIN_BACKOFF;
                a
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                let exhausted = is_resource_exhaustion(&e);
                metrics.accept_error(exhausted);
                tracing::warn!(
                    error = %e,
                    backoff_ms = backoff.as_millis() as u64,
                    open = count.open(),
                    "accept failed; backing off"
                );
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let Some(slot) = count.try_take() else {
            metrics.tcp_connection_refused();
            tracing::debug!(%remote, open = count.open(), "tcp connection refused: at the bound");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        connections.spawn(serve_connection(
            builder.clone(),
            TokioIo::new(tcp),
            remote,
            app.clone(),
            slot,
            head_timeout,
            metrics.clone(),
            stop.clone(),
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    builder: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
    io: TokioIo<tokio::net::TcpStream>,
    remote: SocketAddr,
    app: Router,
    slot: ConnSlot,
    head_timeout: Duration,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    // Hyper's own head timer starts only once the first bytes told the
    // HTTP version apart: this one runs from accept to the first request.
    let first_request = Arc::new(Notify::new());
    let service = {
        let first_request = first_request.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            first_request.notify_one();
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(remote));
            request.extensions_mut().insert(slot.clone());
            let mut app = app.clone();
            async move { Ok::<_, Infallible>(app.call(request).await.unwrap_or_else(|e| match e {})) }
        })
    };
    let conn = builder.serve_connection_with_upgrades(io, service);
    let mut conn = std::pin::pin!(conn);
    let head_deadline = tokio::time::sleep(head_timeout);
    let mut head_deadline = std::pin::pin!(head_deadline);
    let mut waiting_first = true;
    let mut shutting_down = false;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            _ = first_request.notified(), if waiting_first => waiting_first = false,
            _ = &mut head_deadline, if waiting_first => {
                metrics.http_timeout(HttpPhase::RequestHead);
                tracing::debug!(%remote, "no request head within the timeout: closed");
                return;
            }
            _ = stop.cancelled(), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(e) = result {
        let timeout = e
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout);
        if timeout {
            metrics.http_timeout(HttpPhase::RequestHead);
            tracing::debug!(%remote, "request head timed out: closed");
        } else {
            tracing::trace!(%remote, error = %e, "connection ended with an error");
        }
    }
}

/// Why a request body could not be read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Longer than the limit (announced or read).
    TooLarge,
    /// No bytes for the idle timeout.
    Stalled,
    /// The connection failed or the client went away.
    Failed,
}

/// Reads `body` whole, at most `limit` bytes; bytes must keep arriving:
/// `idle` without any is [`BodyError::Stalled`]. What was read is released
/// when it fails.
pub(crate) async fn read_body(
    body: Body,
    limit: usize,
    idle: Duration,
) -> Result<Bytes, BodyError> {
    let mut body = std::pin::pin!(body);
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyError::TooLarge);
    }
    let mut out = BytesMut::new();
    loop {
        let frame = match frame_with_timeout(body.as_mut(), idle).await {
            Err(()) => return Err(BodyError::Stalled),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(BodyError::Failed),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(BodyError::TooLarge);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

/// The next frame of `body`, or `Err` after `idle` without one.
async fn frame_with_timeout(
    mut body: Pin<&mut Body>,
    idle: Duration,
) -> Result<Option<Result<Frame<Bytes>, axum::Error>>, ()> {
    let next = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx));
    tokio::time::timeout(idle, next).await.map_err(|_| ())
}
