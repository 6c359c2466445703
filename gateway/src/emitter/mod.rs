//! Ingest of the Socket.IO Redis emitter: what `@socket.io/redis-emitter`
//! (and its ports to Python, PHP, Go, Java) publishes for a cluster of Node
//! Socket.IO servers reaches this node's sockets too, so a backend that used
//! it works unchanged against the gateway.
//!
//! Each node holds one more Redis connection, pattern-subscribed to the
//! emitter's channels (`<key>#*` and `<key>-request#*`), and applies every
//! message to its own sockets only: each node receives each message once
//! (one pattern matches each channel), whatever room channel it was
//! published on, so every recipient gets it exactly once. Messages are
//! handled in the order they arrive: `socketsJoin` then an emit to the
//! room reaches the joined sockets. A message that does not decode is
//! counted (`gateway_emitter_messages_total{result="malformed"}`) and
//! logged, never fatal.

pub(crate) mod decode;

use std::time::{Duration, Instant};

use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::cluster::message::Op;
use crate::cluster::redis;
use crate::socketio::{SocketIo, payload};
use crate::telemetry::ErrorChain;
use decode::Request;

/// Least time between two warnings about malformed messages.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Receives the emitter's messages from the Redis at `url` (the cluster's)
/// for channels of `key` until `stop`.
pub(crate) async fn run(io: SocketIo, url: String, key: String, stop: CancellationToken) {
    let client = match redis::connection(&url) {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(error = %ErrorChain(&e), "redis emitter ingest not started");
            return;
        }
    };
    let patterns = vec![
        format!("{}#*", glob_escape(&key)),
        format!("{}-request#*", glob_escape(&key)),
    ];
    // Listening before connecting: the first connection is an event too.
    let mut messages = client.message_rx();
    let mut connections = client.reconnect_rx();
    client.connect();
    let mut ingest = Ingest {
        io,
        key,
        warned: None,
        suppressed: 0,
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            connected = connections.recv() => match connected {
                // (Re)connected: subscriptions do not survive a connection.
                Ok(_) => {
                    let subscribed = client
                        .with_options(&redis::one_attempt())
                        .psubscribe(patterns.clone())
                        .await;
                    match subscribed {
                        Ok(()) => tracing::debug!(?patterns, "redis emitter ingest subscribed"),
                        Err(e) => tracing::warn!(
                            error = %ErrorChain(&redis::failed("psubscribe")(e)),
                            "redis emitter ingest not subscribed; retried on the next connection"
                        ),
                    }
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break,
            },
            message = messages.recv() => match message {
                Ok(message) => {
                    let Some(payload) = message.value.as_bytes() else {
                        continue;
                    };
                    ingest.handle(&message.channel, payload).await;
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "redis emitter ingest lagged; messages lost");
                }
                Err(RecvError::Closed) => break,
            },
        }
    }
    let _ = client.quit().await;
}

/// `key` as a literal inside a Redis glob pattern.
fn glob_escape(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

struct Ingest {
    io: SocketIo,
    key: String,
    /// When a malformed message was last logged, and how many were not
    /// logged since.
    warned: Option<Instant>,
    suppressed: u64,
}

impl Ingest {
    async fn handle(&mut self, channel: &str, payload: &[u8]) {
        let max = self.io.config().server.max_payload;
        let emit = channel
            .strip_prefix(self.key.as_str())
            .is_some_and(|rest| rest.starts_with('#'));
        if emit {
            if payload.len() as u64 > max {
                return self.malformed("emit", channel, "larger than server.max_payload");
            }
            match decode::emit(payload) {
                Ok(e) => self.emit(e),
                Err(e) => self.malformed("emit", channel, &e.to_string()),
            }
        } else if let Some(nsp) = decode::request_namespace(&self.key, channel) {
            if payload.len() as u64 > max {
                return self.malformed("other", channel, "larger than server.max_payload");
            }
            match decode::request(payload) {
                Ok(r) => self.request(nsp, r).await,
                Err(e) => self.malformed("other", channel, &e.to_string()),
            }
        }
    }

    fn emit(&self, e: decode::Emit) {
        let metrics = self.io.metrics();
        match payload::encode_event(&e.nsp, &e.event, &e.args, None) {
            Ok(frames) => {
                self.io.emit_local(&e.nsp, &e.target, &frames);
                metrics.emitter_message("emit", "ok");
            }
            Err(_) => metrics.emitter_message("emit", "malformed"),
        }
    }

    async fn request(&mut self, nsp: &str, request: Request) {
        let kind = request.kind();
        let (target, op) = match request {
            Request::Join { target, rooms } => (target, Op::Join(rooms)),
            Request::Leave { target, rooms } => (target, Op::Leave(rooms)),
            Request::Disconnect { target, close } => (target, Op::Disconnect { close }),
            Request::ServerSideEmit | Request::Other(_) => {
                // serverSideEmit is for Node servers' own handlers, and the
                // other requests wait for answers that only Node servers
                // give: both left to them.
                tracing::debug!(nsp, kind, "redis emitter request not supported; ignored");
                self.io.metrics().emitter_message(kind, "unsupported");
                return;
            }
        };
        if let Op::Join(rooms) | Op::Leave(rooms) = &op
            && !self.joinable(rooms)
        {
            return self.malformed(kind, nsp, "a room name is not one a socket may join");
        }
        self.io.apply_local(nsp, &target, &op).await;
        self.io.metrics().emitter_message(kind, "ok");
    }

    fn joinable(&self, rooms: &[String]) -> bool {
        let max = self.io.config().limits.max_room_name;
        rooms
            .iter()
            .all(|r| crate::ids::check_joinable_room(r, max).is_ok())
    }

    fn malformed(&mut self, kind: &str, channel: &str, why: &str) {
        self.io.metrics().emitter_message(kind, "malformed");
        let now = Instant::now();
        if self
            .warned
            .is_some_and(|at| now.duration_since(at) < WARN_EVERY)
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            channel,
            error = why,
            not_logged_since = self.suppressed,
            "malformed redis emitter message ignored"
        );
        self.warned = Some(now);
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_of_the_key_are_literal() {
        assert_eq!(glob_escape("socket.io"), "socket.io");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
