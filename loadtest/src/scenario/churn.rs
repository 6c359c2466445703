//! `churn`: open connections at a fixed rate, each joining a room, staying
//! `--hold-ms` and leaving, to find leaks: connect rate, errors, and the
//! server's RSS before and after (drift per cycle).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::clients::{ClientEnv, churn_cycle};
use super::delivery::settle_closes;
use super::{Progress, collect, fill_connections, new_report, remember_error};
use crate::cli::{ChurnArgs, secs};
use crate::payload::{PayloadKind, PayloadSpec};
use crate::procfs::Sampler;
use crate::report::{Churn, Report, Server};
use crate::shards::Shards;
use crate::transport::TransportKind;

pub async fn churn(args: &ChurnArgs) -> Result<Report> {
    let common = &args.common;
    common.validate()?;
    args.validate()?;
    let nodes = common.nodes()?;
    let sampler = Sampler::new(common.server_pids.clone())?;
    let planned = (args.rate * args.duration).round().max(1.0) as usize;
    let transports: Vec<TransportKind> = (0..planned)
        .map(|i| TransportKind::for_client(i, common.polling_share))
        .collect();
    let mut report = new_report("churn", common, args, transports.iter().copied())?;

    let shards = Arc::new(Shards::start(common.threads)?);
    let progress = Progress::start(shards.clone(), common.quiet);
    let stop = CancellationToken::new();
    let _stop_guard = stop.clone().drop_guard();
    let n_nodes = nodes.len();
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
    let inflight = Arc::new(Semaphore::new(args.max_inflight));
    let hold = Duration::from_millis(args.hold_ms);

    tokio::time::sleep(secs(args.settle)).await;
    let before = sampler.snapshot()?;
    let sampled = Instant::now();
    progress.phase("churn");
    let start = Instant::now();
    // Starting stops at the latest this long after the planned end, even
    // when the server stalls and the in-flight bound holds new cycles back.
    let start_deadline = start + secs(args.duration) + Duration::from_secs(30);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut started = 0usize;
    for (i, transport) in transports.into_iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / args.rate)).await;
        let permit =
            match tokio::time::timeout_at(start_deadline, inflight.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => break,
            };
        let room = (args.rooms > 0).then(|| format!("{}{}", args.room_prefix, i % args.rooms));
        let (env, done) = (env.clone(), done_tx.clone());
        shards.spawn(i, move |ctx| async move {
            let outcome =
                churn_cycle(&ctx, &env, i, i % n_nodes, transport, room.as_deref(), hold).await;
            let _ = done.send(outcome);
            drop(permit);
        });
        started += 1;
    }
    let window_secs = start.elapsed().as_secs_f64();
    drop(done_tx);

    progress.phase("finish");
    let outcomes = collect(
        &mut done_rx,
        started,
        hold + secs(common.connect_timeout) + secs(common.ack_timeout) + Duration::from_secs(10),
    )
    .await;
    stop.cancel();
    settle_closes(&shards).await;
    tokio::time::sleep(secs(args.settle)).await;
    let after = sampler.snapshot()?;
    let hist = shards.take_histograms().await;
    let totals = shards.totals();
    drop(progress);

    let mut errors = Vec::new();
    let mut failed = (started - outcomes.len()) as u64;
    let mut completed = 0u64;
    for o in outcomes {
        match o {
            Ok(()) => completed += 1,
            Err(e) => {
                failed += 1;
                remember_error(&mut errors, e);
            }
        }
    }
    fill_connections(&mut report, &totals);
    report.connections.setup_secs = window_secs;
    report.connections.connects_per_sec = totals.connected as f64 / window_secs.max(1e-9);
    report.connections.connect_ms = hist.connect.percentiles();
    report.connections.ack_ms = hist.ack.percentiles();
    report.connections.first_errors = errors;
    report.churn = Some(Churn {
        planned_cycles: planned as u64,
        started: started as u64,
        completed,
        failed,
        window_secs,
        connects_per_sec: totals.connected as f64 / window_secs.max(1e-9),
    });
    if started < planned {
        report.notes.push(format!(
            "only {started} of {planned} cycles started: the in-flight bound was full until the deadline"
        ));
    }
    if let (Some(before), Some(after)) = (before, after) {
        let mut server = Server::between(before, after, sampled.elapsed().as_secs_f64());
        if completed > 0 {
            server.rss_per_conn_kib = Some(server.rss_delta_kib as f64 / completed as f64);
            report
                .notes
                .push("rss/connection is the RSS drift per completed cycle".into());
        }
        report.server = Some(server);
    }
    report.judge();
    Ok(report)
}
