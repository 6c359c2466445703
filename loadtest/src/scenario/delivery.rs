//! The delivery scenarios, `fanout` (rooms) and `targeted` (socket ids):
//! receivers connect and join, publishers emit stamped messages at a fixed
//! total rate, and every delivery is checked against what was sent.
//!
//! Publishers are Socket.IO clients emitting `$publish` (`--via client`),
//! or callers of the gateway's admin API Emit (`--via grpc`, feature `grpc`).
//!
//! Phases: setup (receivers, then publishers, connect), publish (the server
//! processes are sampled just before it starts), drain (until every expected
//! delivery arrived or none came for `--drain-timeout`; sampled again), stop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::clients::{
    self, ClientEnv, PublisherIo, PublisherResult, PublisherSpec, Ready, ReceiverSpec,
};
use super::{Progress, collect, fill_connections, new_report, remember_error};
use crate::cli::{ChatArgs, Common, FanoutArgs, Placement, PublishArgs, TargetedArgs, Via, secs};
use crate::procfs::Sampler;
use crate::report::{Delivery, Report, Server};
use crate::rng::SplitMix;
use crate::shards::Shards;
use crate::stats::{DeliveryTotals, SentLedger};
use crate::transport::TransportKind;

/// A receiver that is connected (and joined).
#[derive(Debug, Clone)]
pub struct Up {
    pub spec: ReceiverSpec,
    pub sid: String,
}

/// Picks publisher `p`'s `(channel, room)` list, on node `node`, once the
/// receivers are up.
type ChannelsFor = Box<dyn Fn(usize, usize, &[Up]) -> Vec<(u32, String)>>;

struct Plan {
    scenario: &'static str,
    receivers: Vec<ReceiverSpec>,
    join_event: String,
    channels_for: ChannelsFor,
    /// Channels are socket ids (admin publishers target sockets, not rooms).
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))]
    by_socket_id: bool,
    /// The node every publisher connects to; none: spread round-robin.
    publishers_on: Option<usize>,
}

/// The node of client `i` of `n`: round-robin over every node, or over the
/// nodes after the first when `cross` (the first has the publishers).
fn receiver_node(i: usize, nodes: usize, placement: Placement) -> usize {
    match placement {
        Placement::Cross if nodes > 1 => 1 + i % (nodes - 1),
        _ => i % nodes,
    }
}

pub async fn fanout(args: &FanoutArgs) -> Result<Report> {
    if args.rooms == 0 {
        bail!("--rooms must be positive");
    }
    let nodes = args.common.nodes()?.len();
    if args.placement == Placement::Cross && nodes < 2 {
        bail!("--placement cross needs two nodes or more");
    }
    let receivers = (0..args.subscribers)
        .map(|i| ReceiverSpec {
            index: i,
            node: receiver_node(i, nodes, args.placement),
            transport: TransportKind::for_client(i, args.common.polling_share),
            channel: (i % args.rooms) as u32,
            room: Some(format!("{}{}", args.room_prefix, i % args.rooms)),
        })
        .collect();
    let (rooms, prefix) = (args.rooms, args.room_prefix.clone());
    let plan = Plan {
        scenario: "fanout",
        receivers,
        join_event: args.join_event.clone(),
        by_socket_id: false,
        publishers_on: (args.placement == Placement::Cross).then_some(0),
        channels_for: Box::new(move |_, _, _| {
            (0..rooms)
                .map(|r| (r as u32, format!("{prefix}{r}")))
                .collect()
        }),
    };
    run(&args.common, &args.publish, plan, args).await
}

/// The member counts of chat rooms for `sockets` sockets: each drawn
/// uniformly from `min..=max`; the last room takes the rest (at most
/// `max`, and at least one member).
fn chat_rooms(sockets: usize, min: usize, max: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix::new(seed);
    let mut sizes = Vec::new();
    let mut left = sockets;
    while left > 0 {
        let size = (min + (rng.next() % (max - min + 1) as u64) as usize).min(left);
        sizes.push(size);
        left -= size;
    }
    sizes
}

pub async fn chat(args: &ChatArgs) -> Result<Report> {
    args.validate()?;
    let nodes = args.common.nodes()?.len();
    let sizes = chat_rooms(
        args.sockets,
        args.min_members,
        args.max_members,
        args.publish.seed,
    );
    let rooms = sizes.len();
    // Members of a room go round-robin over the nodes: a room of two or
    // more members spans nodes whenever there are several.
    let mut receivers = Vec::with_capacity(args.sockets);
    for (room, size) in sizes.iter().enumerate() {
        for _ in 0..*size {
            let i = receivers.len();
            receivers.push(ReceiverSpec {
                index: i,
                node: i % nodes,
                transport: TransportKind::for_client(i, args.common.polling_share),
                channel: room as u32,
                room: Some(format!("{}{room}", args.room_prefix)),
            });
        }
    }
    let publishers = args.publish.publishers;
    let prefix = args.room_prefix.clone();
    let plan = Plan {
        scenario: "chat",
        receivers,
        join_event: args.join_event.clone(),
        by_socket_id: false,
        publishers_on: None,
        // Publisher p speaks in rooms p, p + P, p + 2P...
        channels_for: Box::new(move |p, _, _| {
            (p..rooms)
                .step_by(publishers)
                .map(|r| (r as u32, format!("{prefix}{r}")))
                .collect()
        }),
    };
    run(&args.common, &args.publish, plan, args).await
}

pub async fn targeted(args: &TargetedArgs) -> Result<Report> {
    let nodes = args.common.nodes()?.len();
    let receivers = (0..args.targets)
        .map(|i| ReceiverSpec {
            index: i,
            node: i % nodes,
            transport: TransportKind::for_client(i, args.common.polling_share),
            channel: i as u32,
            room: None,
        })
        .collect();
    let plan = Plan {
        scenario: "targeted",
        receivers,
        join_event: String::new(),
        by_socket_id: true,
        publishers_on: None,
        // Targets on other nodes than the publisher's, when there are any.
        channels_for: Box::new(move |_, node, up| {
            let elsewhere: Vec<_> = up
                .iter()
                .filter(|u| nodes < 2 || u.spec.node != node)
                .map(|u| (u.spec.channel, u.sid.clone()))
                .collect();
            if elsewhere.is_empty() {
                up.iter().map(|u| (u.spec.channel, u.sid.clone())).collect()
            } else {
                elsewhere
            }
        }),
    };
    run(&args.common, &args.publish, plan, args).await
}

async fn run<S: serde::Serialize>(
    common: &Common,
    publish: &PublishArgs,
    plan: Plan,
    settings: &S,
) -> Result<Report> {
    common.validate()?;
    publish.validate()?;
    #[cfg(not(feature = "grpc"))]
    if publish.via == Via::Grpc {
        bail!(
            "--via grpc needs the admin API client: rebuild loadtest with `--features grpc` \
             (this build only publishes as clients, --via client)"
        );
    }
    if plan.receivers.is_empty() {
        bail!("no receivers: nothing to measure");
    }
    let nodes = common.nodes()?;
    let sampler = Sampler::new(common.server_pids.clone())?;
    let n_pub = publish.publishers;
    let mut report = new_report(
        plan.scenario,
        common,
        settings,
        plan.receivers
            .iter()
            .map(|r| r.transport)
            .chain(std::iter::repeat_n(TransportKind::Websocket, n_pub)),
    )?;

    let shards = Arc::new(Shards::start(common.threads)?);
    let progress = Progress::start(shards.clone(), common.quiet);
    let stop = CancellationToken::new();
    // Ends the client tasks even when this function returns early.
    let _stop_guard = stop.clone().drop_guard();
    let env = Arc::new(ClientEnv {
        nodes: nodes.clone(),
        opts: common.connect_opts(),
        join_event: plan.join_event.clone(),
        event: publish.event.clone(),
        publish_event: publish.publish_event.clone(),
        payload: publish.payload(),
        ack_timeout: secs(common.ack_timeout),
        connect_gate: Arc::new(Semaphore::new(common.connect_concurrency)),
        stop: stop.clone(),
    });
    let mut errors = Vec::new();

    // Setup: receivers.
    let setup_started = Instant::now();
    let setup_deadline = setup_started + secs(common.setup_timeout);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let n_recv = plan.receivers.len();
    for spec in plan.receivers {
        let (env, ready, done) = (env.clone(), ready_tx.clone(), done_tx.clone());
        shards.spawn(spec.index, move |ctx| {
            clients::receiver(ctx, env, spec, ready, done)
        });
    }
    drop((ready_tx, done_tx));
    let mut up = Vec::with_capacity(n_recv);
    for r in collect(&mut ready_rx, n_recv, setup_deadline - Instant::now()).await {
        match r {
            Ready::Up { spec, sid } => up.push(Up { spec, sid }),
            Ready::Failed { error } => remember_error(&mut errors, error),
        }
    }
    if up.len() < n_recv {
        report.notes.push(format!(
            "{} of {n_recv} receivers were not ready; they are not counted as receivers",
            n_recv - up.len()
        ));
    }
    if up.is_empty() {
        report.connections.first_errors = errors;
        fill_connections(&mut report, &shards.totals());
        report.judge();
        return Ok(report);
    }
    let mut members: HashMap<u32, u64> = HashMap::new();
    for u in &up {
        *members.entry(u.spec.channel).or_default() += 1;
    }

    // Setup: publishers, each on its node, with its channels.
    let total = (publish.rate * publish.duration).round() as u64;
    let rate_each = publish.rate / n_pub as f64;
    let (go_tx, go_rx) = watch::channel(None);
    let (pub_ready_tx, mut pub_ready_rx) = mpsc::unbounded_channel();
    let (result_tx, mut result_rx) = mpsc::unbounded_channel();
    for p in 0..n_pub {
        let node = plan.publishers_on.unwrap_or(p % nodes.len());
        let channels = (plan.channels_for)(p, node, &up);
        if channels.is_empty() {
            bail!("publisher {p} has nothing to publish to");
        }
        let spec = PublisherSpec {
            id: p as u32,
            index: n_recv + p,
            node,
            channels,
            count: total / n_pub as u64 + u64::from((p as u64) < total % n_pub as u64),
            rate: rate_each,
            schedule: publish.schedule,
            seed: publish.seed.wrapping_add(p as u64),
        };
        let io = PublisherIo {
            ready: pub_ready_tx.clone(),
            go: go_rx.clone(),
            result: result_tx.clone(),
        };
        let env = env.clone();
        match publish.via {
            Via::Client => {
                shards.spawn(spec.index, move |ctx| {
                    clients::publisher(ctx, env, spec, io)
                });
            }
            #[cfg(feature = "grpc")]
            Via::Grpc => {
                let admin = publish.admin.clone();
                let by_socket_id = plan.by_socket_id;
                shards.spawn(spec.index, move |ctx| async move {
                    let sink = super::grpc::connect(&admin).await;
                    clients::admin_publisher(ctx, env, spec, by_socket_id, sink, io).await;
                });
            }
            #[cfg(not(feature = "grpc"))]
            Via::Grpc => unreachable!("--via grpc is refused without the grpc feature"),
        }
    }
    drop((pub_ready_tx, result_tx));
    let pub_ready = collect(
        &mut pub_ready_rx,
        n_pub,
        setup_deadline.saturating_duration_since(Instant::now()),
    )
    .await;
    for r in &pub_ready {
        if let Err(e) = r {
            remember_error(&mut errors, e.clone());
        }
    }
    let setup_secs = setup_started.elapsed().as_secs_f64();
    report.connections.setup_secs = setup_secs;
    report.connections.connects_per_sec = shards.totals().connected as f64 / setup_secs.max(1e-9);

    // Publish.
    progress.phase("publish");
    let before = sampler.snapshot()?;
    let at_start = shards.totals();
    let delivered_before = at_start.delivered;
    let start = Instant::now();
    let _ = go_tx.send(Some(start));
    let results: Vec<PublisherResult> = collect(
        &mut result_rx,
        n_pub,
        secs(publish.duration) + secs(common.ack_timeout) + Duration::from_secs(30),
    )
    .await;
    let mut ledger = SentLedger::default();
    let mut unacked = 0;
    for r in &results {
        for &(c, n) in &r.sent {
            ledger.add(r.id, c, n);
        }
        unacked += r.unacked;
        if let Some(e) = &r.error {
            remember_error(&mut errors, format!("publisher {}: {e}", r.id));
        }
        if let Some(e) = &r.refusal {
            remember_error(
                &mut errors,
                format!("publisher {}: publish refused: {e}", r.id),
            );
        }
    }
    if results.len() < n_pub {
        report.notes.push(format!(
            "{} publishers did not report",
            n_pub - results.len()
        ));
    }
    let expected: u64 = members
        .iter()
        .map(|(c, m)| ledger.channel_total(*c) * m)
        .sum();

    // Drain: until everything expected arrived or deliveries stalled.
    progress.phase("drain");
    let stall = secs(publish.drain_timeout);
    // However slowly a backlog trickles in, the drain ends by this deadline.
    let drain_deadline =
        Instant::now() + stall + secs(publish.duration) * 2 + Duration::from_secs(60);
    let mut seen = shards.totals().delivered - delivered_before;
    let mut last_change = Instant::now();
    while seen < expected && last_change.elapsed() < stall && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now_seen = shards.totals().delivered - delivered_before;
        if now_seen != seen {
            seen = now_seen;
            last_change = Instant::now();
        }
    }
    let window = last_change.saturating_duration_since(start);
    let after = sampler.snapshot()?;
    let at_end = shards.totals();

    // Stop: receivers hand in their tallies and close.
    progress.phase("stop");
    stop.cancel();
    let tallies = collect(&mut done_rx, up.len(), Duration::from_secs(20)).await;
    if tallies.len() < up.len() {
        report.notes.push(format!(
            "{} receivers did not hand in their tally",
            up.len() - tallies.len()
        ));
    }
    settle_closes(&shards).await;
    let hist = shards.take_histograms().await;
    let totals = shards.totals();
    drop(progress);

    fill_connections(&mut report, &totals);
    report.connections.connect_ms = hist.connect.percentiles();
    report.connections.ack_ms = hist.ack.percentiles();
    report.connections.first_errors = errors;
    let mut accounted = DeliveryTotals::account(&ledger, &tallies);
    // A receiver that never handed in its tally lost everything it expected.
    if tallies.len() < up.len() {
        let mut reported: HashMap<u32, u64> = HashMap::new();
        for t in &tallies {
            *reported.entry(t.channel).or_default() += 1;
        }
        for (c, m) in &members {
            let missing = m.saturating_sub(reported.get(c).copied().unwrap_or(0));
            let n = ledger.channel_total(*c) * missing;
            accounted.expected += n;
            accounted.lost += n;
        }
    }
    let window_secs = window.as_secs_f64();
    let mut delivery = Delivery {
        publishers: n_pub as u64,
        published: ledger.total(),
        publish_acks: totals.publish_acks,
        publish_errors: totals.publish_errors,
        publish_unacked: unacked,
        totals: accounted,
        window_secs,
        deliveries_per_sec: seen as f64 / window_secs.max(1e-9),
        latency_ms: hist.delivery.percentiles(),
        ..Default::default()
    };
    delivery.set_wire(
        at_end.wire_bytes_read - at_start.wire_bytes_read,
        at_end.compressed_messages - at_start.compressed_messages,
        seen,
    );
    report.delivery = Some(delivery);
    if let (Some(before), Some(after)) = (before, after) {
        let mut server = Server::between(before, after, window_secs);
        if server.cpu_secs > 0.0 {
            server.deliveries_per_cpu_sec = Some(seen as f64 / server.cpu_secs);
        }
        report.server = Some(server);
    }
    report.judge();
    Ok(report)
}

/// Waits (bounded) until every connection opened was closed or dropped.
pub async fn settle_closes(shards: &Shards) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let t = shards.totals();
        if t.closed + t.dropped >= t.connected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod schedule_tests {
    use super::*;

    #[test]
    fn chat_rooms_have_their_sizes_and_hold_everyone() {
        let sizes = chat_rooms(20_000, 2, 8, 1);
        assert_eq!(sizes.iter().sum::<usize>(), 20_000);
        assert!(sizes.iter().all(|s| (1..=8).contains(s)));
        assert!(sizes[..sizes.len() - 1].iter().all(|s| *s >= 2));
        // About 20000 / 5 rooms, and the same for the same seed.
        assert!((3_800..4_200).contains(&sizes.len()), "{}", sizes.len());
        assert_eq!(sizes, chat_rooms(20_000, 2, 8, 1));
        assert_ne!(sizes, chat_rooms(20_000, 2, 8, 2));
    }

    #[test]
    fn poisson_gaps_average_the_period() {
        let mut rng = SplitMix::new(7);
        let n = 100_000;
        let mean = (0..n).map(|_| rng.exponential_secs(50.0)).sum::<f64>() / n as f64;
        assert!((mean - 0.02).abs() < 0.0005, "{mean}");
    }

    #[test]
    fn cross_placement_keeps_receivers_off_the_first_node() {
        assert!((0..10).all(|i| receiver_node(i, 2, Placement::Cross) == 1));
        assert_eq!(
            (0..4)
                .map(|i| receiver_node(i, 3, Placement::Cross))
                .collect::<Vec<_>>(),
            [1, 2, 1, 2]
        );
        assert_eq!(receiver_node(3, 2, Placement::Spread), 1);
    }
}
