//! `idle`: hold N connected sockets and measure what they cost the server
//! in memory: (RSS while holding - RSS before connecting) / N.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::clients::{self, ClientEnv, Ready, ReceiverSpec};
use super::delivery::settle_closes;
use super::{Progress, collect, fill_connections, new_report, remember_error};
use crate::cli::{IdleArgs, secs};
use crate::payload::{PayloadKind, PayloadSpec};
use crate::procfs::Sampler;
use crate::report::{Report, Server};
use crate::shards::Shards;
use crate::transport::TransportKind;

pub async fn idle(args: &IdleArgs) -> Result<Report> {
    let common = &args.common;
    common.validate()?;
    if args.connections == 0 {
        bail!("--connections must be positive");
    }
    if !(0.0..=3600.0).contains(&args.hold) || !(0.0..=600.0).contains(&args.settle) {
        bail!("--hold must be within [0, 3600] and --settle within [0, 600] seconds");
    }
    let nodes = common.nodes()?;
    let sampler = Sampler::new(common.server_pids.clone())?;
    let specs: Vec<ReceiverSpec> = (0..args.connections)
        .map(|i| ReceiverSpec {
            index: i,
            node: i % nodes.len(),
            transport: TransportKind::for_client(i, common.polling_share),
            channel: 0,
            room: (args.rooms > 0).then(|| format!("{}{}", args.room_prefix, i % args.rooms)),
        })
        .collect();
    let mut report = new_report("idle", common, args, specs.iter().map(|s| s.transport))?;

    let shards = Arc::new(Shards::start(common.threads)?);
    let progress = Progress::start(shards.clone(), common.quiet);
    let stop = CancellationToken::new();
    let _stop_guard = stop.clone().drop_guard();
    let env = Arc::new(ClientEnv {
        nodes,
        opts: common.connect_opts(),
        join_event: args.join_event.clone(),
        event: String::new(),
        publish_event: String::new(),
        payload: PayloadSpec {
            kind: PayloadKind::Padding,
            bytes: 0,
        },
        ack_timeout: secs(common.ack_timeout),
        connect_gate: Arc::new(Semaphore::new(common.connect_concurrency)),
        stop: stop.clone(),
    });

    tokio::time::sleep(secs(args.settle)).await;
    let before = sampler.snapshot()?;
    let started = Instant::now();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    for spec in specs {
        let (env, ready, done) = (env.clone(), ready_tx.clone(), done_tx.clone());
        shards.spawn(spec.index, move |ctx| {
            clients::receiver(ctx, env, spec, ready, done)
        });
    }
    drop((ready_tx, done_tx));
    let mut up = 0u64;
    let mut errors = Vec::new();
    for r in collect(&mut ready_rx, args.connections, secs(common.setup_timeout)).await {
        match r {
            Ready::Up { .. } => up += 1,
            Ready::Failed { error } => remember_error(&mut errors, error),
        }
    }
    let setup_secs = started.elapsed().as_secs_f64();
    report.connections.setup_secs = setup_secs;
    report.connections.connects_per_sec = up as f64 / setup_secs.max(1e-9);

    progress.phase("hold");
    tokio::time::sleep(secs(args.hold)).await;
    let after = sampler.snapshot()?;
    let window_secs = started.elapsed().as_secs_f64();

    progress.phase("close");
    stop.cancel();
    let _ = collect(&mut done_rx, up as usize, Duration::from_secs(20)).await;
    settle_closes(&shards).await;
    tokio::time::sleep(secs(args.settle)).await;
    let after_close = sampler.snapshot()?;
    let hist = shards.take_histograms().await;
    drop(progress);

    fill_connections(&mut report, &shards.totals());
    report.connections.connect_ms = hist.connect.percentiles();
    report.connections.ack_ms = hist.ack.percentiles();
    report.connections.first_errors = errors;
    if let (Some(before), Some(after)) = (before, after) {
        let mut server = Server::between(before, after, window_secs);
        if up > 0 {
            server.rss_per_conn_kib = Some(server.rss_delta_kib as f64 / up as f64);
        }
        server.rss_after_close_kib = after_close.map(|s| s.rss_kib());
        report.server = Some(server);
    }
    report.judge();
    Ok(report)
}
