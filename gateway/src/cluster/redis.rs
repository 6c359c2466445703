//! The Redis implementation of the bus, with `fred`: standalone, Sentinel
//! (`redis-sentinel://...`) and Redis Cluster (`redis-cluster://...`,
//! through sharded pub/sub: `SPUBLISH`/`SSUBSCRIBE`, Redis >= 7, so rooms
//! spread over the shards by their channel names).
//!
//! Two connections: one publishes, one subscribes. Both reconnect forever;
//! while Redis is down publishes fail at once (the caller reports
//! `UNAVAILABLE`), and after it comes back the node subscribes every wanted
//! channel again (see `subscriptions`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::clients::{Client, Pipeline};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::types::Builder;
use fred::types::config::{Config, Options, ReconnectPolicy, ServerConfig};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::{BusError, BusEvent, BusEvents, ClusterBus, Sent};
use crate::telemetry::ErrorChain;
use crate::telemetry::logs::Throttle;

/// The shortest interval between two warnings of one kind while Redis is
/// unreachable.
const OUTAGE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Connection events waiting for the node.
const EVENT_QUEUE: usize = 64;
/// Messages handed to [`ClusterBus::enqueue`] not yet sent.
const SEND_QUEUE: usize = 65_536;
/// Most messages sent in one pipeline.
const SEND_BATCH: usize = 512;
/// Messages the subscriber's connection keeps for the cluster loop, which
/// reads them off the client's broadcast channel: past this many waiting,
/// the oldest are lost (the client's default, 32, loses messages under
/// load). The channel's slots are allocated up front, about 150 bytes each.
const SUBSCRIBER_BACKLOG: usize = 32_768;
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct RedisBus {
    publisher: Client,
    /// Connection state recovery's store, made when first asked for.
    recovery: std::sync::OnceLock<Arc<super::redis_recovery::RedisRecovery>>,
    subscriber: Client,
    sharded: bool,
    sender: mpsc::Sender<Outgoing>,
    events: Mutex<Option<BusEvents>>,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A message waiting for the sender task, and whom to tell its fate.
type Outgoing = (String, Bytes, Option<Sent>);

/// Options of every publish and (un)subscribe: one attempt, failing at
/// once while the connection is down. A publish is never sent again after a
/// reconnection (seconds late, out of context, perhaps twice): its fate is
/// reported as unknown instead, and the caller's answer says so. Nor is an
/// (un)subscribe, which would otherwise land on the new connection after
/// the resubscription and leave a channel subscribed that nobody wants any
/// more (or unsubscribe one that is wanted again): the reconciler decides
/// what to send after a reconnection.
pub(crate) fn one_attempt() -> Options {
    Options {
        max_attempts: Some(1),
        fail_fast: true,
        timeout: Some(COMMAND_TIMEOUT),
        ..Default::default()
    }
}

/// The error of a failed Redis `op`, the client's error as its source.
pub(crate) fn failed(op: &'static str) -> impl FnOnce(fred::error::Error) -> BusError {
    move |e| BusError::Redis {
        op,
        source: readable(e),
    }
}

/// `e` with its I/O details in words. The client writes the I/O error
/// beneath an `IO Error` in Rust's debug form (`Os { code: 111, kind:
/// ConnectionRefused, message: "Connection refused" }`); logs and answers
/// show it as the I/O error itself does (`Connection refused (os error
/// 111)`). Other errors are kept as they are.
fn readable(e: fred::error::Error) -> fred::error::Error {
    if *e.kind() != fred::error::ErrorKind::IO {
        return e;
    }
    let details = e.details();
    // The text is the last field: from after `field` to the last quote.
    let quoted = |field: &str| {
        let start = details.find(field)? + field.len();
        let end = details.rfind('"').filter(|&end| end >= start)?;
        Some(&details[start..end])
    };
    let words = if details.starts_with("Os {") {
        let code = details
            .strip_prefix("Os { code: ")
            .and_then(|rest| rest.split(',').next());
        match (quoted("message: \""), code) {
            (Some(message), Some(code)) => format!("{message} (os error {code})"),
            _ => return e,
        }
    } else if details.starts_with("Custom {") {
        match quoted("error: \"") {
            Some(error) => error.to_owned(),
            None => return e,
        }
    } else {
        return e;
    };
    fred::error::Error::new(fred::error::ErrorKind::IO, words)
}

fn client(config: &Config) -> Result<Client, BusError> {
    let mut config = config.clone();
    // The first connection retries like any later one (the client's default
    // gives up on it for good): a node started before Redis is reachable
    // connects when Redis appears.
    config.fail_fast = false;
    Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = COMMAND_TIMEOUT;
            c.internal_command_timeout = COMMAND_TIMEOUT;
            c.max_command_attempts = 2;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = COMMAND_TIMEOUT;
            p.broadcast_channel_capacity = SUBSCRIBER_BACKLOG;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
        .build()
        .map_err(failed("connect"))
}

/// A connection of its own to the bus's Redis (`url` as
/// `cluster.redis_url` gives it), configured and reconnecting as the bus's
/// are: for what other programs publish there (the Socket.IO Redis
/// emitter). Not connected yet.
pub(crate) fn connection(url: &str) -> Result<Client, BusError> {
    client(&Config::from_url(url).map_err(failed("connect"))?)
}

impl RedisBus {
    /// Connects to `url` (`redis://`, `redis-sentinel://`, `redis-cluster://`).
    /// Returns once the connections are attempted; an unreachable Redis is
    /// not an error here (the node starts, reports not ready, and retries).
    pub(crate) async fn connect(url: &str) -> Result<Self, BusError> {
        let config = Config::from_url(url).map_err(failed("connect"))?;
        let sharded = matches!(config.server, ServerConfig::Clustered { .. });
        let publisher = client(&config)?;
        let subscriber = client(&config)?;
        // Listening before connecting: the first connection is an event too
        // (however late it comes), and so is every failed attempt.
        let messages = Messages(subscriber.message_rx());
        let mut reconnects = subscriber.reconnect_rx();
        let mut errors = subscriber.error_rx();
        publisher.connect();
        subscriber.connect();
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, async {
            let _ = publisher.wait_for_connect().await;
            let _ = subscriber.wait_for_connect().await;
        })
        .await;
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let mut tasks = Vec::new();
        let (sender, outgoing) = mpsc::channel(SEND_QUEUE);
        tasks.push(tokio::spawn(send_pipelined(
            publisher.clone(),
            sharded,
            outgoing,
        )));
        // During an outage every reconnection attempt fails (one every
        // 2 s at most): one warning per OUTAGE_LOG_INTERVAL, with the count
        // of those held back.
        let outage = Arc::new(Throttle::new(OUTAGE_LOG_INTERVAL));
        let re_tx = tx.clone();
        let reconnected = outage.clone();
        tasks.push(tokio::spawn(async move {
            while reconnects.recv().await.is_ok() {
                let held_back = reconnected.reset();
                tracing::info!(
                    failed_attempts_not_logged = held_back,
                    "redis subscriber connected"
                );
                let _ = re_tx.send(BusEvent::Reconnected).await;
            }
        }));
        let err_tx = tx;
        tasks.push(tokio::spawn(async move {
            while let Ok((e, _)) = errors.recv().await {
                if let Some(held_back) = outage.admit() {
                    tracing::warn!(
                        error = %readable(e),
                        held_back,
                        "redis subscriber connection lost; retrying"
                    );
                }
                let _ = err_tx.send(BusEvent::Disconnected).await;
            }
        }));
        Ok(Self {
            publisher,
            recovery: std::sync::OnceLock::new(),
            subscriber,
            sharded,
            sender,
            events: Mutex::new(Some(BusEvents::with_messages(rx, messages))),
            _tasks: tasks,
        })
    }

    /// Waits until Redis has carried out every (un)subscribe sent before.
    ///
    /// The Redis client resolves `SUBSCRIBE` and `UNSUBSCRIBE` as soon as
    /// the command is handed to its connection, not when Redis confirms it
    /// (their replies arrive out of band and are dropped). A subscription
    /// "done" that way may not exist yet on the server: a message another
    /// node publishes a moment later is lost when Redis takes the `PUBLISH`
    /// first, which a busy Redis does when both wait in its queue. Redis
    /// answers the commands of one connection in order, so the reply to a
    /// `PING` sent after them on the same connection is the confirmation.
    /// (`SSUBSCRIBE` is answered in band, so sharded pub/sub needs none.)
    /// A failure is reported as one of `op`, the command confirmed.
    async fn confirm(&self, op: &'static str) -> Result<(), BusError> {
        self.subscriber
            .with_options(&one_attempt())
            .ping::<fred::types::Value>(None)
            .await
            .map(|_| ())
            .map_err(failed(op))
    }

    fn not_connected() -> BusError {
        BusError::NotConnected { bus: "redis" }
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        for t in &self._tasks {
            t.abort();
        }
        let (p, s) = (self.publisher.clone(), self.subscriber.clone());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = p.quit().await;
                let _ = s.quit().await;
            });
        }
    }
}

#[async_trait::async_trait]
impl ClusterBus for RedisBus {
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<(), BusError> {
        self.publish_counted(channel, payload).await.map(|_| ())
    }

    async fn publish_counted(
        &self,
        channel: &str,
        payload: Bytes,
    ) -> Result<Option<u64>, BusError> {
        if !self.publisher.is_connected() {
            return Err(Self::not_connected());
        }
        let publisher = self.publisher.with_options(&one_attempt());
        let result: Result<i64, _> = if self.sharded {
            publisher.spublish(channel, payload).await
        } else {
            publisher.publish(channel, payload).await
        };
        // The reply counts the subscriber connections: one per node.
        result
            .map(|receivers| Some(receivers.max(0) as u64))
            .map_err(failed("publish"))
    }

    fn enqueue(&self, channel: String, payload: Bytes, sent: Option<Sent>) -> Result<(), BusError> {
        if !self.publisher.is_connected() {
            return Err(Self::not_connected());
        }
        self.sender
            .try_send((channel, payload, sent))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => BusError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => Self::not_connected(),
            })
    }

    async fn subscribe(&self, channels: &[String]) -> Result<(), BusError> {
        if !self.subscriber.is_connected() {
            return Err(Self::not_connected());
        }
        let subscriber = self.subscriber.with_options(&one_attempt());
        if self.sharded {
            // Sharded channels live on different slots: one call each.
            for ch in channels {
                subscriber
                    .ssubscribe(ch.as_str())
                    .await
                    .map_err(failed("subscribe"))?;
            }
            Ok(())
        } else {
            subscriber
                .subscribe(channels.to_vec())
                .await
                .map_err(failed("subscribe"))?;
            self.confirm("subscribe").await
        }
    }

    async fn unsubscribe(&self, channels: &[String]) -> Result<(), BusError> {
        if !self.subscriber.is_connected() {
            return Err(Self::not_connected());
        }
        let subscriber = self.subscriber.with_options(&one_attempt());
        if self.sharded {
            for ch in channels {
                subscriber
                    .sunsubscribe(ch.as_str())
                    .await
                    .map_err(failed("unsubscribe"))?;
            }
            Ok(())
        } else {
            subscriber
                .unsubscribe(channels.to_vec())
                .await
                .map_err(failed("unsubscribe"))?;
            self.confirm("unsubscribe").await
        }
    }

    fn take_events(&self) -> Option<BusEvents> {
        self.events.lock().take()
    }

    fn is_connected(&self) -> bool {
        self.publisher.is_connected() && self.subscriber.is_connected()
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn recovery_store(
        &self,
        channels: &super::Channels,
        cluster: &crate::config::ClusterConfig,
    ) -> Option<Arc<dyn super::recovery::RecoveryStore>> {
        let store = self.recovery.get_or_init(|| {
            Arc::new(super::redis_recovery::RedisRecovery::new(
                self.publisher.clone(),
                self.sharded,
                channels,
                Duration::from_millis(cluster.node_timeout_ms),
                Duration::from_millis(cluster.heartbeat_interval_ms),
            ))
        });
        Some(store.clone())
    }
}

/// The messages of the subscriber's connection, as the client hands them
/// to every reader of its broadcast channel.
pub(crate) struct Messages(tokio::sync::broadcast::Receiver<fred::types::Message>);

impl Messages {
    /// The next message's payload; `None` once the client is gone.
    /// Cancel-safe.
    pub(crate) async fn next(&mut self) -> Option<Bytes> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match self.0.recv().await {
                Ok(msg) => {
                    if let Some(payload) = msg.value.into_bytes() {
                        return Some(payload);
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "redis subscriber lagged; messages lost");
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// Sends enqueued messages in order, everything waiting at once as one
/// pipeline (one round trip per batch, not per message), then tells each
/// message's sender its fate: accepted when Redis replied, failed when the
/// batch failed or its fate is unknown.
async fn send_pipelined(client: Client, sharded: bool, mut outgoing: mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::with_capacity(SEND_BATCH);
    let mut waiting: Vec<Sent> = Vec::with_capacity(SEND_BATCH);
    let failures = Throttle::new(OUTAGE_LOG_INTERVAL);
    while outgoing.recv_many(&mut batch, SEND_BATCH).await > 0 {
        let pipeline = Pipeline::from(client.with_options(&one_attempt()));
        let mut queued = Ok(());
        for (channel, payload, sent) in batch.drain(..) {
            waiting.extend(sent);
            if queued.is_err() {
                continue;
            }
            let q: Result<(), _> = if sharded {
                pipeline.spublish(channel, payload).await
            } else {
                pipeline.publish(channel, payload).await
            };
            queued = q;
        }
        let result = match queued {
            Ok(()) => pipeline.all::<Vec<fred::types::Value>>().await.map(|_| ()),
            Err(e) => Err(e),
        };
        let result = result.map_err(|e| {
            let e = failed("publish")(e);
            if let Some(held_back) = failures.admit() {
                tracing::warn!(error = %ErrorChain(&e), held_back, "redis pipelined publish failed");
            }
            e
        });
        for sent in waiting.drain(..) {
            sent(result.clone());
        }
    }
}

/// Keeps the `Arc` type in one place for callers.
pub(crate) async fn connect(url: &str) -> Result<Arc<dyn ClusterBus>, BusError> {
    Ok(Arc::new(RedisBus::connect(url).await?))
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_failed_command_names_it_and_keeps_the_client_error() {
        let e = failed("publish")(fred::error::Error::new(
            fred::error::ErrorKind::Timeout,
            "Request timed out.",
        ));
        assert_eq!(
            e.to_string(),
            "cluster bus unavailable: redis publish failed"
        );
        let source = e.source().expect("the client's error is the source");
        assert!(source.is::<fred::error::Error>());
        assert_eq!(source.to_string(), "Timeout Error: Request timed out.");
        assert_eq!(
            ErrorChain(&e).to_string(),
            "cluster bus unavailable: redis publish failed: Timeout Error: Request timed out."
        );
    }

    #[test]
    fn io_errors_read_as_the_io_error_does_not_in_debug_form() {
        let refused = std::io::Error::from_raw_os_error(111);
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        for io in [refused, reset] {
            let words = format!("IO Error: {io}");
            let raw = fred::error::Error::from(io);
            assert!(raw.details().contains(" {"), "debug form: {raw}");
            let e = failed("connect")(raw);
            assert_eq!(e.source().unwrap().to_string(), words);
        }
        // Anything else is left as the client wrote it.
        let other = fred::error::Error::new(fred::error::ErrorKind::IO, "Failed to connect.");
        assert_eq!(readable(other.clone()), other);
    }
}
