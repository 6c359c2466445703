//! The client tasks the scenarios are made of: a receiver (connects,
//! optionally joins a room, then counts and checks every stamped message
//! until told to stop), a publisher (emits stamped messages at a fixed
//! rate through the publish event, counting acks), an admin publisher (the
//! same through the admin API's Emit, behind [`AdminSink`]) and a churn
//! cycle.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cli::Schedule;
use crate::payload::PayloadSpec;
use crate::protocol::{self, SioKind, Stamp};
use crate::rng::SplitMix;
use crate::shards::{Counters, ShardCtx};
use crate::stats::ReceiverTally;
use crate::transport::counted::WireStats;
use crate::transport::{Conn, ConnectOpts, Node, TransportKind};

/// Bound on closing one connection politely.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What every client of a run shares.
pub struct ClientEnv {
    pub nodes: Vec<Node>,
    pub opts: ConnectOpts,
    pub join_event: String,
    /// Event name stamped messages arrive with.
    pub event: String,
    pub publish_event: String,
    /// What each published message carries besides its stamp.
    pub payload: PayloadSpec,
    pub ack_timeout: Duration,
    /// Limits handshakes in progress.
    pub connect_gate: Arc<Semaphore>,
    /// Ends every client task.
    pub stop: CancellationToken,
}

impl ClientEnv {
    /// Connects client `index` to `node`, recording the handshake time.
    /// `wire` counts what the connection reads: the shard's receivers'
    /// or its publishers' counts.
    async fn connect(
        &self,
        ctx: &ShardCtx,
        index: usize,
        node: usize,
        transport: TransportKind,
        wire: &Arc<WireStats>,
    ) -> Result<Conn, String> {
        let _permit = self
            .connect_gate
            .acquire()
            .await
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        match Conn::connect(
            &self.nodes[node],
            transport,
            &self.opts,
            self.opts.source_ip(index),
            wire,
        )
        .await
        {
            Ok(conn) => {
                ctx.connect
                    .borrow_mut()
                    .record_us(started.elapsed().as_micros() as u64);
                Counters::inc(&ctx.counters.connected);
                Ok(conn)
            }
            Err(e) => {
                Counters::inc(&ctx.counters.connect_errors);
                Err(format!("{:#}", e))
            }
        }
    }

    async fn join(&self, ctx: &ShardCtx, conn: &mut Conn, room: &str) -> Result<(), String> {
        let started = Instant::now();
        match conn
            .call(1, &self.join_event, &[room], self.ack_timeout)
            .await
        {
            Ok(()) => {
                ctx.ack
                    .borrow_mut()
                    .record_us(started.elapsed().as_micros() as u64);
                Counters::inc(&ctx.counters.joined);
                Ok(())
            }
            Err(e) => {
                Counters::inc(&ctx.counters.join_errors);
                Err(format!("{e:#}"))
            }
        }
    }
}

async fn close(ctx: &ShardCtx, conn: Conn) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close()).await;
    Counters::inc(&ctx.counters.closed);
}

/// One receiving client.
#[derive(Debug, Clone)]
pub struct ReceiverSpec {
    /// Client number, picks the source address.
    pub index: usize,
    pub node: usize,
    pub transport: TransportKind,
    pub channel: u32,
    /// Room to join after connecting.
    pub room: Option<String>,
}

/// A receiver's report once it is connected (and joined), or why not.
#[derive(Debug, Clone)]
pub enum Ready {
    Up { spec: ReceiverSpec, sid: String },
    Failed { error: String },
}

/// Connects, joins, reports [`Ready`], then checks stamped messages until
/// `env.stop`; sends its tally on `done` (only if it got ready).
pub async fn receiver(
    ctx: ShardCtx,
    env: Arc<ClientEnv>,
    spec: ReceiverSpec,
    ready: mpsc::UnboundedSender<Ready>,
    done: mpsc::UnboundedSender<ReceiverTally>,
) {
    let mut conn = match env
        .connect(
            &ctx,
            spec.index,
            spec.node,
            spec.transport,
            &ctx.counters.wire,
        )
        .await
    {
        Ok(c) => c,
        Err(error) => {
            let _ = ready.send(Ready::Failed { error });
            return;
        }
    };
    if let Some(room) = &spec.room
        && let Err(error) = env.join(&ctx, &mut conn, room).await
    {
        let _ = ready.send(Ready::Failed { error });
        close(&ctx, conn).await;
        return;
    }
    let mut tally = ReceiverTally::new(spec.channel);
    let _ = ready.send(Ready::Up {
        sid: conn.sid.clone(),
        spec,
    });
    let mut alive = true;
    loop {
        tokio::select! {
            biased;
            _ = env.stop.cancelled() => break,
            r = conn.recv() => match r {
                Ok(Some(pkt)) => on_packet(&ctx, &env.event, conn.namespace(), &pkt, &mut tally),
                Ok(None) | Err(_) => {
                    alive = false;
                    break;
                }
            },
        }
    }
    let _ = done.send(tally);
    if alive {
        close(&ctx, conn).await;
    } else {
        Counters::inc(&ctx.counters.dropped);
    }
}

/// Checks one received packet: a stamped `event` is counted and timed.
fn on_packet(ctx: &ShardCtx, event: &str, nsp: &str, pkt: &str, tally: &mut ReceiverTally) {
    let Some(p) = protocol::parse_sio(pkt) else {
        return;
    };
    if p.kind != SioKind::Event || p.nsp != nsp {
        return;
    }
    if protocol::event_name(p.data).as_deref() != Some(event) {
        return;
    }
    let Some(stamp) = Stamp::find(p.data) else {
        return;
    };
    ctx.delivery
        .borrow_mut()
        .record_since(stamp.sent_ns, unix_nanos());
    tally.record(stamp.publisher, stamp.channel, stamp.seq);
    Counters::inc(&ctx.counters.delivered);
}

/// One churn cycle: connect, join `room`, stay `hold`, leave.
pub async fn churn_cycle(
    ctx: &ShardCtx,
    env: &ClientEnv,
    index: usize,
    node: usize,
    transport: TransportKind,
    room: Option<&str>,
    hold: Duration,
) -> Result<(), String> {
    let mut conn = env
        .connect(ctx, index, node, transport, &ctx.counters.wire)
        .await?;
    if let Some(room) = room
        && let Err(e) = env.join(ctx, &mut conn, room).await
    {
        close(ctx, conn).await;
        return Err(e);
    }
    let until = Instant::now() + hold;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            _ = env.stop.cancelled() => break,
            r = conn.recv() => if !matches!(r, Ok(Some(_))) {
                Counters::inc(&ctx.counters.dropped);
                return Err("closed by the server while held".into());
            },
        }
    }
    close(ctx, conn).await;
    Ok(())
}

/// One publishing client.
#[derive(Debug, Clone)]
pub struct PublisherSpec {
    pub id: u32,
    /// Client number, picks the source address.
    pub index: usize,
    pub node: usize,
    /// `(channel, room)` pairs, used in turn.
    pub channels: Vec<(u32, String)>,
    /// Messages to send.
    pub count: u64,
    /// Messages per second.
    pub rate: f64,
    pub schedule: Schedule,
    /// Seed of its Poisson schedule.
    pub seed: u64,
}

/// The generator of publisher `spec`'s payloads (`--payload-kind json`):
/// its own seed, apart from its schedule's.
fn payload_rng(spec: &PublisherSpec) -> SplitMix {
    SplitMix::new(spec.seed ^ 0x7061_796c_6f61_6421)
}

/// When a publisher's next message is due: on the common period from the
/// start (lockstep), or after exponential gaps of its own (Poisson).
struct Pacer {
    schedule: Schedule,
    rate: f64,
    start: Instant,
    rng: SplitMix,
    sent: u64,
    due: Instant,
}

impl Pacer {
    fn new(spec: &PublisherSpec, start: Instant) -> Self {
        let mut pacer = Self {
            schedule: spec.schedule,
            rate: spec.rate,
            start,
            rng: SplitMix::new(spec.seed),
            sent: 0,
            due: start,
        };
        if pacer.schedule == Schedule::Poisson {
            pacer.due = start + pacer.gap();
        }
        pacer
    }

    fn gap(&mut self) -> Duration {
        Duration::from_secs_f64(self.rng.exponential_secs(self.rate))
    }

    fn due(&self) -> Instant {
        self.due
    }

    /// One more message went.
    fn advance(&mut self) {
        self.sent += 1;
        self.due = match self.schedule {
            // From the start, so that rounding does not drift.
            Schedule::Lockstep => {
                self.start + Duration::from_secs_f64(self.sent as f64 / self.rate)
            }
            Schedule::Poisson => self.due + self.gap(),
        };
    }
}

/// What a publisher sent.
#[derive(Debug, Clone, Default)]
pub struct PublisherResult {
    pub id: u32,
    /// `(channel, messages sent)`.
    pub sent: Vec<(u32, u64)>,
    /// Publishes whose ack never came.
    pub unacked: u64,
    /// The first reason a publish was refused (`ok:false`).
    pub refusal: Option<String>,
    /// Why the publisher stopped early.
    pub error: Option<String>,
}

/// How a publisher talks to the coordinator.
pub struct PublisherIo {
    /// Connected (or why not).
    pub ready: mpsc::UnboundedSender<Result<(), String>>,
    /// The start time, once every publisher is ready.
    pub go: watch::Receiver<Option<Instant>>,
    /// What was sent, once done.
    pub result: mpsc::UnboundedSender<PublisherResult>,
}

/// Connects, reports on `ready`, waits for the start time on `go`, then
/// publishes `spec.count` messages at `spec.rate`, waits for their acks
/// (bounded), reports on `result`, and holds the connection until stop.
pub async fn publisher(ctx: ShardCtx, env: Arc<ClientEnv>, spec: PublisherSpec, io: PublisherIo) {
    let PublisherIo {
        ready,
        mut go,
        result,
    } = io;
    let mut conn = match env
        .connect(
            &ctx,
            spec.index,
            spec.node,
            TransportKind::Websocket,
            &ctx.counters.publisher_wire,
        )
        .await
    {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e.clone()));
            let _ = result.send(PublisherResult {
                id: spec.id,
                error: Some(e),
                ..Default::default()
            });
            return;
        }
    };
    // Servers that let only members publish into a room (the gateway's
    // policy) need the publisher in its rooms; the gateway leaves the
    // sender out of its own publishes, so this adds no deliveries.
    if !env.join_event.is_empty() {
        for (_, room) in &spec.channels {
            if let Err(e) = conn
                .call(1, &env.join_event, &[room.as_str()], env.ack_timeout)
                .await
            {
                let error = format!("publisher join refused: {e:#}");
                let _ = ready.send(Err(error.clone()));
                let _ = result.send(PublisherResult {
                    id: spec.id,
                    error: Some(error),
                    ..Default::default()
                });
                return;
            }
        }
    }
    let _ = ready.send(Ok(()));

    // Wait for the start, answering pings meanwhile.
    let start = loop {
        tokio::select! {
            _ = env.stop.cancelled() => return close(&ctx, conn).await,
            g = go.wait_for(Option::is_some) => match g {
                Ok(v) => break v.unwrap_or_else(Instant::now),
                Err(_) => return close(&ctx, conn).await,
            },
            r = conn.recv() => if !matches!(r, Ok(Some(_))) {
                Counters::inc(&ctx.counters.dropped);
                let _ = result.send(PublisherResult {
                    id: spec.id,
                    error: Some("closed before publishing".into()),
                    ..Default::default()
                });
                return;
            },
        }
    };

    let nsp = conn.namespace().to_string();
    // `"$publish","room","event",` for each channel.
    let heads: Vec<String> = spec
        .channels
        .iter()
        .map(|(_, room)| {
            let mut h = String::new();
            for s in [env.publish_event.as_str(), room, env.event.as_str()] {
                protocol::push_json_str(&mut h, s);
                h.push(',');
            }
            h
        })
        .collect();
    let mut pacer = Pacer::new(&spec, start);
    let mut payload_rng = payload_rng(&spec);
    let mut seqs = vec![0u64; spec.channels.len()];
    let mut pending: HashMap<u64, Instant> = HashMap::new();
    let mut next_id: u64 = 1;
    let mut sent: u64 = 0;
    let mut ack_deadline = None;
    let mut error = None;
    let mut refusal = None;

    loop {
        let now = Instant::now();
        let wake = if sent < spec.count {
            let due = pacer.due();
            if now >= due {
                let slot = (sent as usize + spec.id as usize) % spec.channels.len();
                let stamp = Stamp {
                    publisher: spec.id,
                    channel: spec.channels[slot].0,
                    seq: seqs[slot],
                    sent_ns: unix_nanos(),
                };
                let mut packet = protocol::event_head(&nsp, Some(next_id));
                packet.push_str(&heads[slot]);
                env.payload.push(&mut packet, &stamp, &mut payload_rng);
                packet.push(']');
                if let Err(e) = conn.send(packet).await {
                    error = Some(format!("send: {e:#}"));
                    break;
                }
                pending.insert(next_id, Instant::now());
                next_id += 1;
                seqs[slot] += 1;
                sent += 1;
                pacer.advance();
                Counters::inc(&ctx.counters.published);
                continue;
            }
            due
        } else {
            let deadline = *ack_deadline.get_or_insert(now + env.ack_timeout);
            if pending.is_empty() || now >= deadline {
                break;
            }
            deadline
        };
        tokio::select! {
            biased;
            _ = env.stop.cancelled() => break,
            r = conn.recv() => match r {
                Ok(Some(pkt)) => {
                    if let Err(e) = on_ack(&ctx, &pkt, &nsp, &mut pending) {
                        refusal.get_or_insert(e);
                    }
                }
                Ok(None) | Err(_) => {
                    error = Some("connection closed while publishing".into());
                    break;
                }
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
    }

    let _ = result.send(PublisherResult {
        id: spec.id,
        sent: spec
            .channels
            .iter()
            .zip(&seqs)
            .map(|((c, _), n)| (*c, *n))
            .collect(),
        unacked: pending.len() as u64,
        refusal,
        error: error.clone(),
    });
    if error.is_some() {
        Counters::inc(&ctx.counters.dropped);
        return;
    }
    loop {
        tokio::select! {
            _ = env.stop.cancelled() => break,
            r = conn.recv() => if !matches!(r, Ok(Some(_))) {
                return;
            },
        }
    }
    close(&ctx, conn).await;
}

/// Counts a publish ack; `Err` with the server's reason for a refusal.
fn on_ack(
    ctx: &ShardCtx,
    pkt: &str,
    nsp: &str,
    pending: &mut HashMap<u64, Instant>,
) -> Result<(), String> {
    let Some(p) = protocol::parse_sio(pkt) else {
        return Ok(());
    };
    if p.kind != SioKind::Ack || p.nsp != nsp {
        return Ok(());
    }
    let Some(sent_at) = p.ack_id.and_then(|id| pending.remove(&id)) else {
        return Ok(());
    };
    ctx.ack
        .borrow_mut()
        .record_us(sent_at.elapsed().as_micros() as u64);
    let result = protocol::ack_result(p.data);
    match &result {
        Ok(()) => Counters::inc(&ctx.counters.publish_acks),
        Err(_) => Counters::inc(&ctx.counters.publish_errors),
    }
    result
}

/// Whom an admin-API emit targets.
// Used by the gRPC publisher only (feature `grpc`) and by tests.
#[cfg_attr(not(feature = "grpc"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminTarget<'a> {
    Room(&'a str),
    Socket(&'a str),
}

/// The admin API as publishers use it: Emit `event(args..)` to a room or a
/// socket id of a namespace, `args_json` being the JSON array of arguments.
/// The gRPC client implements it (feature `grpc`); tests use a fake.
#[cfg_attr(not(feature = "grpc"), allow(dead_code))]
pub trait AdminSink {
    fn emit(
        &mut self,
        namespace: &str,
        target: AdminTarget<'_>,
        event: &str,
        args_json: String,
    ) -> impl Future<Output = Result<(), String>>;
}

/// Publishes like [`publisher`] but through the admin API: one Emit call
/// at a time, its reply standing for the ack. `by_socket_id` targets the
/// channels' names as socket ids instead of rooms.
#[cfg_attr(not(feature = "grpc"), allow(dead_code))]
pub async fn admin_publisher<S: AdminSink>(
    ctx: ShardCtx,
    env: Arc<ClientEnv>,
    spec: PublisherSpec,
    by_socket_id: bool,
    sink: Result<S, String>,
    io: PublisherIo,
) {
    let PublisherIo {
        ready,
        mut go,
        result,
    } = io;
    let mut sink = match sink {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e.clone()));
            let _ = result.send(PublisherResult {
                id: spec.id,
                error: Some(e),
                ..Default::default()
            });
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let start = tokio::select! {
        _ = env.stop.cancelled() => return,
        g = go.wait_for(Option::is_some) => match g {
            Ok(v) => v.unwrap_or_else(Instant::now),
            Err(_) => return,
        },
    };
    let mut seqs = vec![0u64; spec.channels.len()];
    let mut refusal = None;
    let mut pacer = Pacer::new(&spec, start);
    let mut payload_rng = payload_rng(&spec);
    for sent in 0..spec.count {
        tokio::select! {
            _ = env.stop.cancelled() => break,
            _ = tokio::time::sleep_until(pacer.due()) => {}
        }
        pacer.advance();
        let slot = (sent as usize + spec.id as usize) % spec.channels.len();
        let (channel, name) = &spec.channels[slot];
        let stamp = Stamp {
            publisher: spec.id,
            channel: *channel,
            seq: seqs[slot],
            sent_ns: unix_nanos(),
        };
        let mut args = String::from("[");
        env.payload.push(&mut args, &stamp, &mut payload_rng);
        args.push(']');
        let target = if by_socket_id {
            AdminTarget::Socket(name)
        } else {
            AdminTarget::Room(name)
        };
        // Counted as sent before the reply: a failed Emit shows as loss.
        seqs[slot] += 1;
        Counters::inc(&ctx.counters.published);
        let called = Instant::now();
        match sink
            .emit(&env.opts.namespace, target, &env.event, args)
            .await
        {
            Ok(()) => {
                ctx.ack
                    .borrow_mut()
                    .record_us(called.elapsed().as_micros() as u64);
                Counters::inc(&ctx.counters.publish_acks);
            }
            Err(e) => {
                Counters::inc(&ctx.counters.publish_errors);
                refusal.get_or_insert(e);
            }
        }
    }
    let _ = result.send(PublisherResult {
        id: spec.id,
        sent: spec
            .channels
            .iter()
            .zip(&seqs)
            .map(|((c, _), n)| (*c, *n))
            .collect(),
        unacked: 0,
        refusal,
        error: None,
    });
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use crate::payload::PayloadKind;
    use crate::shards::Counters;

    /// Records every Emit; refuses the ones to room `no`.
    struct FakeAdmin(Rc<RefCell<Vec<(String, String, String)>>>);

    impl AdminSink for FakeAdmin {
        async fn emit(
            &mut self,
            namespace: &str,
            target: AdminTarget<'_>,
            event: &str,
            args_json: String,
        ) -> Result<(), String> {
            let to = match target {
                AdminTarget::Room(r) => format!("room:{r}"),
                AdminTarget::Socket(s) => format!("socket:{s}"),
            };
            let refused = to == "room:no";
            self.0
                .borrow_mut()
                .push((format!("{namespace} {to}"), event.to_string(), args_json));
            if refused {
                Err("forbidden".into())
            } else {
                Ok(())
            }
        }
    }

    fn ctx() -> ShardCtx {
        ShardCtx {
            counters: Arc::new(Counters::default()),
            delivery: Rc::default(),
            connect: Rc::default(),
            ack: Rc::default(),
        }
    }

    fn env() -> Arc<ClientEnv> {
        Arc::new(ClientEnv {
            nodes: Vec::new(),
            opts: ConnectOpts {
                path: "/socket.io/".into(),
                namespace: "/".into(),
                ws_read_buffer: 4096,
                timeout: Duration::from_secs(1),
                source_ips: 0,
                ws_deflate: false,
            },
            join_event: "$join".into(),
            event: "msg".into(),
            publish_event: "$publish".into(),
            payload: PayloadSpec {
                kind: PayloadKind::Padding,
                bytes: 40,
            },
            ack_timeout: Duration::from_secs(1),
            connect_gate: Arc::new(Semaphore::new(1)),
            stop: CancellationToken::new(),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn admin_publisher_paces_stamps_and_counts() {
        let calls = Rc::new(RefCell::new(Vec::new()));
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
        let (go_tx, go_rx) = watch::channel(None);
        let (result_tx, mut result_rx) = mpsc::unbounded_channel();
        let spec = PublisherSpec {
            id: 1,
            index: 0,
            node: 0,
            channels: vec![(0, "a".into()), (1, "no".into())],
            count: 5,
            rate: 10.0,
            schedule: Schedule::Lockstep,
            seed: 1,
        };
        let ctx = ctx();
        let counters = ctx.counters.clone();
        let task = admin_publisher(
            ctx,
            env(),
            spec,
            false,
            Ok(FakeAdmin(calls.clone())),
            PublisherIo {
                ready: ready_tx,
                go: go_rx,
                result: result_tx,
            },
        );
        let start = Instant::now();
        go_tx.send(Some(start)).unwrap();
        task.await;
        // 5 messages at 10/s: the last one is due 400 ms after the start.
        assert!(start.elapsed() >= Duration::from_millis(400));
        assert_eq!(ready_rx.recv().await, Some(Ok(())));
        let r = result_rx.recv().await.unwrap();
        // Publisher 1 starts at slot 1 and alternates: no, a, no, a, no.
        assert_eq!(r.sent, vec![(0, 2), (1, 3)]);
        assert_eq!(r.refusal.as_deref(), Some("forbidden"));
        let calls = calls.borrow();
        assert_eq!(calls.len(), 5);
        assert_eq!(calls[1].0, "/ room:a");
        assert_eq!(calls[1].1, "msg");
        let stamp = Stamp::find(&calls[3].2).unwrap();
        assert_eq!((stamp.publisher, stamp.channel, stamp.seq), (1, 0, 1));
        let args: Vec<String> = serde_json::from_str(&calls[3].2).unwrap();
        assert_eq!(args[0].len(), 40);
        assert_eq!(
            counters
                .publish_errors
                .load(std::sync::atomic::Ordering::Relaxed),
            3
        );
    }
}
