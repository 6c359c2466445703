//! The client-facing HTTP endpoint: routes Engine.IO requests to the polling
//! or WebSocket transport, answers CORS preflights and turns
//! [`EngineError`]s into the documented `{"code":N,"message":...}` answers.
//!
//! A long-polling request for a session another node owns (the session id
//! names its node) is forwarded to that node's internal listener, which
//! serves the same endpoint to requests carrying the cluster's secret: no
//! sticky sessions are needed for polling (see `docs/architecture.md`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::accept::{BodyError, ConnSlot, read_body};
use crate::engine::{Engine, EngineError, HandshakeInfo, polling, websocket};
use crate::protocol::engineio::Transport;
use crate::reason::DisconnectReason;
use crate::telemetry::HttpPhase;

/// The header a forwarded request carries: the cluster's secret.
const FORWARDED: &str = "x-gateway-forwarded";
/// The header a forwarded request carries: the client's address.
const CLIENT: &str = "x-gateway-client";

/// What the endpoint serves with.
#[derive(Clone)]
struct Http {
    engine: Arc<Engine>,
    /// Forwards requests for other nodes' sessions (the client listener,
    /// when the cluster has a secret).
    forward: Option<Arc<Forwarder>>,
    /// Serves forwarded requests only: the internal listener, whose
    /// requests must carry this secret.
    internal: Option<Arc<str>>,
}

/// The router serving `config.server.path` to clients.
pub(crate) fn router(engine: Arc<Engine>, forward: Option<Arc<Forwarder>>) -> Router {
    routes(Http {
        engine,
        forward,
        internal: None,
    })
}

/// The router of the internal listener: the same endpoint, for requests
/// other nodes forward with the cluster's `secret`; others are refused.
pub(crate) fn internal_router(engine: Arc<Engine>, secret: &str) -> Router {
    routes(Http {
        engine,
        forward: None,
        internal: Some(secret.into()),
    })
}

fn routes(state: Http) -> Router {
    let path = state.engine.config().server.path.clone();
    let trimmed = path.trim_end_matches('/').to_owned();
    let mut router = Router::new().route(&path, axum::routing::any(endpoint));
    if !trimmed.is_empty() && trimmed != path {
        router = router.route(&trimmed, axum::routing::any(endpoint));
    }
    router.with_state(state)
}

/// Forwards long-polling requests to the node owning their session.
pub(crate) struct Forwarder {
    adapter: Arc<crate::cluster::adapter::Adapter>,
    client: reqwest::Client,
    secret: String,
    metrics: Arc<crate::telemetry::Metrics>,
}

impl Forwarder {
    pub(crate) fn new(
        adapter: Arc<crate::cluster::adapter::Adapter>,
        secret: String,
        metrics: Arc<crate::telemetry::Metrics>,
    ) -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        Self {
            adapter,
            client,
            secret,
            metrics,
        }
    }

    /// Sends the request to `addr` and relays the answer (status, content
    /// type and body). When the owner cannot be reached, the client gets
    /// what a missing session gets, and reconnects.
    async fn forward(
        &self,
        engine: &Engine,
        addr: &str,
        remote: SocketAddr,
        parts: &axum::http::request::Parts,
        body: bytes::Bytes,
    ) -> Response {
        let started = std::time::Instant::now();
        let server = &engine.config().server;
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = self
            .client
            .request(parts.method.clone(), format!("http://{addr}{path}"))
            .header(FORWARDED, &self.secret)
            .header(CLIENT, remote.to_string())
            // A poll waits at most a ping interval; the rest is slack.
            .timeout(server.ping_interval() + server.ping_timeout() + Duration::from_secs(5))
            .body(body.clone());
        if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
            request = request.header(header::CONTENT_TYPE, ct.clone());
        }
        let answer = async {
            let response = request.send().await?;
            let status = response.status();
            let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
            let bytes = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, content_type, bytes))
        }
        .await;
        let latency = started.elapsed();
        match answer {
            Ok((status, content_type, bytes)) => {
                self.metrics
                    .forwarded(true, body.len() as u64 + bytes.len() as u64, latency);
                let mut response = (status, bytes).into_response();
                if let Some(ct) = content_type {
                    response.headers_mut().insert(header::CONTENT_TYPE, ct);
                }
                response
            }
            Err(e) => {
                self.metrics.forwarded(false, 0, latency);
                tracing::debug!(addr, error = %e, "forwarded request failed");
                error(EngineError::UnknownSid)
            }
        }
    }
}

/// Most bytes of the owner's answer head to a forwarded upgrade.
const UPGRADE_HEAD_MAX: usize = 8 * 1024;
/// How long the owner has to answer a forwarded upgrade.
const UPGRADE_ANSWER_WAIT: Duration = Duration::from_secs(5);

impl Forwarder {
    /// A WebSocket upgrade of another node's session: the same upgrade is
    /// made on the owner's internal listener; when the owner switches
    /// protocols, so does this node (its answer is the one `accepted`
    /// holds: the key is the client's either way), and the two byte
    /// streams are spliced until either side closes. Otherwise the client
    /// gets what a missing session gets.
    async fn upgrade(
        &self,
        engine: &Arc<Engine>,
        addr: &str,
        remote: SocketAddr,
        parts: &axum::http::request::Parts,
        accepted: websocket::Accepted,
        slot: Option<ConnSlot>,
    ) -> Response {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let started = std::time::Instant::now();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
        for name in [
            header::UPGRADE,
            header::CONNECTION,
            header::SEC_WEBSOCKET_KEY,
            header::SEC_WEBSOCKET_VERSION,
        ] {
            if let Some(v) = parts.headers.get(&name).and_then(|v| v.to_str().ok()) {
                head.push_str(&format!("{name}: {v}\r\n"));
            }
        }
        head.push_str(&format!(
            "{FORWARDED}: {}\r\n{CLIENT}: {remote}\r\n\r\n",
            self.secret
        ));
        let opened = tokio::time::timeout(UPGRADE_ANSWER_WAIT, async {
            let mut owner = tokio::net::TcpStream::connect(addr).await?;
            owner.write_all(head.as_bytes()).await?;
            // The owner's answer head, and any bytes after it.
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            loop {
                let n = owner.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::Error::other("closed before answering"));
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let rest = buf.split_off(end + 4);
                    return Ok((owner, buf, rest));
                }
                if buf.len() > UPGRADE_HEAD_MAX {
                    return Err(std::io::Error::other("answer head too long"));
                }
            }
        })
        .await;
        let (owner, answer, rest) = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(e)) => {
                self.metrics.forwarded(false, 0, started.elapsed());
                tracing::debug!(addr, error = %e, "forwarded upgrade failed");
                return error(EngineError::UnknownSid);
            }
            Err(_) => {
                self.metrics.forwarded(false, 0, started.elapsed());
                tracing::debug!(addr, "forwarded upgrade not answered in time");
                return error(EngineError::UnknownSid);
            }
        };
        if !answer.starts_with(b"HTTP/1.1 101") {
            // The owner refused it (the session is gone, or upgraded
            // already): its status is the answer.
            self.metrics
                .forwarded(true, answer.len() as u64, started.elapsed());
            let status = std::str::from_utf8(&answer)
                .ok()
                .and_then(|a| a.split(' ').nth(1)?.parse::<u16>().ok())
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::BAD_REQUEST);
            return closing(error_with_status(EngineError::UnknownSid, status));
        }
        self.metrics.forwarded(true, 0, started.elapsed());
        let metrics = self.metrics.clone();
        let upgrade = accepted.upgrade;
        engine.tracker.spawn(async move {
            // The client's TCP connection keeps its slot while spliced.
            let _slot = slot;
            let Ok(upgraded) = upgrade.await else { return };
            let mut client = hyper_util::rt::TokioIo::new(upgraded);
            let mut owner = owner;
            if !rest.is_empty() && client.write_all(&rest).await.is_err() {
                return;
            }
            if let Ok((up, down)) = tokio::io::copy_bidirectional(&mut client, &mut owner).await {
                metrics.forwarded_bytes(up + down + rest.len() as u64);
            }
        });
        accepted.response
    }
}

/// Whether `given` is `secret`, compared in time independent of where
/// they differ.
fn same_secret(given: &[u8], secret: &[u8]) -> bool {
    given.len() == secret.len()
        && given
            .iter()
            .zip(secret)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[derive(Deserialize, Default)]
struct EngineQuery {
    #[serde(rename = "EIO")]
    eio: Option<String>,
    transport: Option<String>,
    sid: Option<String>,
}

async fn endpoint(
    State(http): State<Http>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let mut remote = remote;
    if let Some(secret) = &http.internal {
        // The internal listener: forwarded requests from other nodes only.
        let given = parts.headers.get(FORWARDED).map(|v| v.as_bytes());
        if !given.is_some_and(|g| same_secret(g, secret.as_bytes())) {
            return (
                StatusCode::FORBIDDEN,
                "not a forwarded request of this cluster",
            )
                .into_response();
        }
        if let Some(client) = parts
            .headers
            .get(CLIENT)
            .and_then(|v| v.to_str().ok()?.parse().ok())
        {
            remote = client;
        }
        return route(&http, remote, &mut parts, body).await;
    }
    let cors = cors_headers(&http.engine, &parts.headers);
    let mut response = route(&http, remote, &mut parts, body).await;
    response.headers_mut().extend(cors);
    response
}

async fn route(
    http: &Http,
    remote: SocketAddr,
    parts: &mut axum::http::request::Parts,
    body: Body,
) -> Response {
    let engine = &http.engine;
    if parts.method == Method::OPTIONS {
        return StatusCode::NO_CONTENT.into_response();
    }
    let query: EngineQuery = parts.uri.query().and_then(parse_query).unwrap_or_default();
    if query.eio.as_deref() != Some("4") {
        return error(EngineError::UnsupportedProtocolVersion);
    }
    let Some(transport) = query
        .transport
        .as_deref()
        .and_then(Transport::parse)
        .filter(|t| engine.config().server.allows(*t))
    else {
        return error(EngineError::UnknownTransport);
    };
    match (transport, query.sid) {
        (Transport::Websocket, sid) => {
            // Checked before the handshake is taken apart: a request that
            // cannot be served keeps its documented error.
            let session = match &sid {
                None => {
                    if engine.is_shutting_down() {
                        return error(EngineError::ShuttingDown);
                    }
                    if engine.len() >= engine.config().limits.max_connections {
                        return error(EngineError::AtCapacity);
                    }
                    None
                }
                Some(sid) => {
                    let Some(session) = engine.get(sid) else {
                        // Another node's session: the upgrade is made there.
                        let Some((forwarder, addr)) = http.forwarder_for(sid) else {
                            return error(EngineError::UnknownSid);
                        };
                        // Not compressed: the owner's answer is not this
                        // node's to shape.
                        let Some(accepted) = websocket::accept(parts, false) else {
                            return error(EngineError::BadRequest);
                        };
                        let slot = parts.extensions.get::<ConnSlot>().cloned();
                        return forwarder
                            .upgrade(engine, &addr, remote, parts, accepted, slot)
                            .await;
                    };
                    if session.is_closed() {
                        return error(EngineError::BadRequest);
                    }
                    Some(session)
                }
            };
            let compression = engine.config().server.compression.enabled;
            let Some(accepted) = websocket::accept(parts, compression) else {
                return error(EngineError::BadRequest);
            };
            let (upgrade, deflate) = (accepted.upgrade, accepted.deflate);
            // The WebSocket keeps its TCP connection's slot until it ends.
            let slot = parts.extensions.get::<ConnSlot>().cloned();
            match session {
                // A second WebSocket for a session already upgraded, or
                // being upgraded by another: its handshake completes, then
                // it is closed; the session is not touched.
                Some(session) if !session.claim_upgrade() => {
                    engine.tracker.spawn(websocket::close_at_once(upgrade));
                }
                // The slot goes in as an argument: a future awaited by a
                // wrapping task would be stored twice in it (0.7 KiB more
                // per idle connection, measured).
                Some(session) => {
                    engine.tracker.spawn(websocket::serve_upgrade(
                        engine.clone(),
                        session,
                        upgrade,
                        deflate,
                        slot,
                    ));
                }
                None => {
                    let info = handshake_info(engine, remote, parts);
                    engine.tracker.spawn(websocket::serve_new(
                        engine.clone(),
                        upgrade,
                        deflate,
                        info,
                        slot,
                    ));
                }
            }
            accepted.response
        }
        (Transport::Polling, None) => {
            if parts.method != Method::GET {
                return error(EngineError::BadHandshakeMethod);
            }
            let info = handshake_info(engine, remote, parts);
            match polling::handshake(engine, info) {
                Ok(body) => text_plain(body),
                Err(e) => error(e),
            }
        }
        (Transport::Polling, Some(sid)) => {
            let Some(session) = engine.get(&sid) else {
                // Another node's session: forwarded to it when it can be.
                let Some((forwarder, addr)) = http.forwarder_for(&sid) else {
                    return error(EngineError::UnknownSid);
                };
                let bytes = if parts.method == Method::POST {
                    match polling_body(engine, body).await {
                        Ok(b) => b,
                        Err((answer, _)) => return answer,
                    }
                } else {
                    bytes::Bytes::new()
                };
                return forwarder.forward(engine, &addr, remote, parts, bytes).await;
            };
            if parts.method == Method::GET {
                match polling::get(engine, session).await {
                    Ok(body) => text_plain(body),
                    Err(e) => error(e),
                }
            } else if parts.method == Method::POST {
                let bytes = match polling_body(engine, body).await {
                    Ok(b) => b,
                    Err((answer, reason)) => {
                        tracing::debug!(sid = %session.sid, %reason, "polling body refused");
                        session.close(reason);
                        return answer;
                    }
                };
                match polling::post(engine, session, bytes).await {
                    Ok(()) => ([(header::CONTENT_TYPE, "text/html")], "ok").into_response(),
                    Err(e) => error(e),
                }
            } else {
                error(EngineError::BadRequest)
            }
        }
    }
}

impl Http {
    /// The forwarder and the owner's internal address for session `sid`,
    /// when this endpoint forwards and `sid` is a live other node's.
    fn forwarder_for(&self, sid: &str) -> Option<(&Forwarder, String)> {
        let forwarder = self.forward.as_deref()?;
        Some((forwarder, forwarder.adapter.forward_target(sid)?))
    }
}

/// A polling POST's body. One announced over `max_payload` is refused
/// before any of it is read; one that stalls is cut off. Either way the
/// connection closes (the rest of the body is never read): the error is
/// that answer, and why the session (when this node has it) closes.
async fn polling_body(
    engine: &Engine,
    body: Body,
) -> Result<bytes::Bytes, (Response, DisconnectReason)> {
    let server = &engine.config().server;
    match read_body(
        body,
        server.max_payload as usize,
        server.request_body_timeout(),
    )
    .await
    {
        Ok(b) => Ok(b),
        Err(BodyError::TooLarge) => Err((
            closing(error(EngineError::PayloadTooLarge)),
            DisconnectReason::ProtocolError,
        )),
        Err(BodyError::Stalled) => {
            engine.metrics.http_timeout(HttpPhase::RequestBody);
            Err((
                closing(error(EngineError::RequestTimeout)),
                DisconnectReason::TransportError,
            ))
        }
        Err(BodyError::Failed) => Err((
            closing(error(EngineError::BadRequest)),
            DisconnectReason::TransportError,
        )),
    }
}

fn parse_query(q: &str) -> Option<EngineQuery> {
    axum::extract::Query::<EngineQuery>::try_from_uri(&format!("/?{q}").parse().ok()?)
        .ok()
        .map(|axum::extract::Query(q)| q)
}

fn handshake_info(
    engine: &Engine,
    remote: SocketAddr,
    parts: &axum::http::request::Parts,
) -> HandshakeInfo {
    let headers = if engine.keep_headers() {
        parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().into(), v.to_str().ok()?.into())))
            .collect()
    } else {
        Vec::new()
    };
    HandshakeInfo {
        remote,
        query: parts.uri.query().unwrap_or("").into(),
        headers,
    }
}

/// `response`, after which the connection closes.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn text_plain(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=UTF-8")], body).into_response()
}

fn error(e: EngineError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    error_with_status(e, status)
}

/// `e`'s answer body with another status (an owner's, relayed).
fn error_with_status(e: EngineError, status: StatusCode) -> Response {
    let body = format!("{{\"code\":{},\"message\":\"{}\"}}", e.code(), e.message());
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn cors_headers(engine: &Engine, request: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    let allowed = &engine.config().server.cors_origins;
    if allowed.is_empty() {
        return out;
    }
    let origin = request.get(header::ORIGIN);
    if allowed.iter().any(|o| o == "*") {
        out.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    } else if let Some(origin) =
        origin.filter(|o| allowed.iter().any(|a| a.as_bytes() == o.as_bytes()))
    {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        out.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        out.insert(header::VARY, HeaderValue::from_static("Origin"));
    } else {
        return out;
    }
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    if let Some(h) = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, h.clone());
    }
    out
}
