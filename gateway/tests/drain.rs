//! Graceful drain: the shutdown future resolves (SIGTERM in the binary)
//! while clients are connected. Readiness flips at once, clients are
//! disconnected (a transport close: they reconnect elsewhere), the client
//! listener closes, and `serve` returns within the grace period, even when
//! in-flight work does not finish.

mod support;

use std::time::Duration;

use gateway::Config;
use gateway::telemetry::names;
use support::eio::{PollClient, WsClient};
use support::metrics::value;
use support::node::TestNode;
use support::wait::DEADLINE;
use tokio::time::Instant;

/// A node with an operations port, draining after `drain_delay_ms` for at
/// most `grace_period_ms`.
async fn start(drain_delay_ms: u64, grace_period_ms: u64) -> TestNode {
    let mut c = Config::default();
    c.shutdown.drain_delay_ms = drain_delay_ms;
    c.shutdown.grace_period_ms = grace_period_ms;
    TestNode::builder(c).ops().start().await
}

#[tokio::test]
async fn drain_flips_readiness_disconnects_clients_and_returns_in_time() {
    let grace = Duration::from_secs(5);
    let delay = Duration::from_millis(1_000);
    let mut node = start(delay.as_millis() as u64, grace.as_millis() as u64).await;
    let (mut ws1, _) = WsClient::socket(&node, false).await;
    let (mut ws2, _) = WsClient::socket(&node, false).await;
    let (polling, _) = PollClient::socket(&node).await;
    assert_eq!(node.ops_get("/readyz").await.0, 200);
    // A long-poll pending over the shutdown, as a polling client keeps one.
    let polling = tokio::spawn(async move { polling.closed().await });

    let started = Instant::now();
    node.shutdown();

    // Not ready at once, while the clients are still served (drain delay).
    let body = node.ops_until("/readyz", 503, DEADLINE).await;
    assert_eq!(body, "not ready: draining\n");
    let flipped = started.elapsed();
    assert!(flipped < delay, "readiness flipped after {flipped:?}");
    assert_eq!(
        node.ops_get("/healthz").await.0,
        200,
        "still live while draining"
    );
    let text = node.scrape().await;
    assert_eq!(value(&text, names::DRAINING, &[]), 1.0, "{text}");

    // Then every client is disconnected with a transport close: no Socket.IO
    // DISCONNECT packet, which would stop the official client reconnecting.
    for ws in [&mut ws1, &mut ws2] {
        let before_close = ws.expect_closed().await;
        assert!(
            !before_close.iter().any(|p| p.starts_with("41")),
            "a Socket.IO disconnect was sent: {before_close:?}"
        );
    }
    assert!(
        started.elapsed() >= delay,
        "clients closed before the drain delay"
    );
    assert!(
        polling.await.unwrap(),
        "the pending poll was not answered with a close packet"
    );

    node.stopped(grace + Duration::from_secs(2)).await.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed < delay + grace, "drain took {elapsed:?}");

    // The listener is gone.
    let refused = tokio::net::TcpStream::connect(node.addr).await;
    assert!(refused.is_err(), "the client listener still accepts");
}

#[tokio::test]
async fn drain_without_delay_closes_clients_and_the_listener() {
    let mut node = start(0, 5_000).await;
    let (mut ws, _) = WsClient::socket(&node, false).await;
    node.shutdown();
    ws.expect_closed().await;
    node.stopped(Duration::from_secs(7)).await.unwrap();
    assert!(tokio::net::TcpStream::connect(node.addr).await.is_err());
}

/// With `shutdown.disconnect_spread_ms`, the clients are closed a few at a
/// time over the window rather than all at once (so that they reconnect to
/// the other nodes gradually), and the drain still ends within the grace
/// period.
#[tokio::test]
async fn clients_are_closed_spread_over_the_window() {
    let spread = Duration::from_millis(1_000);
    let mut c = Config::default();
    c.shutdown.grace_period_ms = 5_000;
    c.shutdown.disconnect_spread_ms = spread.as_millis() as u64;
    let mut node = TestNode::builder(c).start().await;
    let mut closed = Vec::new();
    // More clients than batches (one every 20 ms: 50 in the window), so
    // that batches hold two clients each: 30 batches, still spread over the
    // whole window.
    for _ in 0..60 {
        let (mut ws, _) = WsClient::socket(&node, false).await;
        closed.push(tokio::spawn(async move {
            ws.expect_closed().await;
            Instant::now()
        }));
    }
    let started = Instant::now();
    node.shutdown();
    let mut at = Vec::new();
    for c in closed {
        at.push(c.await.unwrap().duration_since(started));
    }
    let (first, last) = (at.iter().min().unwrap(), at.iter().max().unwrap());
    // Thirty batches of two, 33 ms apart: the last about 967 ms after the
    // first (later under load, never sooner).
    assert!(
        *last - *first >= spread * 3 / 4,
        "all closed between {first:?} and {last:?}"
    );
    node.stopped(Duration::from_secs(7)).await.unwrap();
}

#[tokio::test]
async fn drain_waits_for_in_flight_work() {
    let mut node = start(0, 5_000).await;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    node.tasks.spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = done_tx.send(());
    });
    let started = Instant::now();
    node.shutdown();
    node.stopped(Duration::from_secs(7)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250));
    done_rx
        .await
        .expect("the in-flight task finished before serve returned");
}

#[tokio::test]
async fn drain_gives_up_after_the_grace_period() {
    let grace = Duration::from_millis(400);
    let mut node = start(0, grace.as_millis() as u64).await;
    let _ws = WsClient::socket(&node, false).await;
    node.tasks.spawn(std::future::pending::<()>());
    let started = Instant::now();
    node.shutdown();
    node.stopped(Duration::from_secs(5)).await.unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= grace,
        "returned before the grace period: {elapsed:?}"
    );
    assert!(
        elapsed < grace + Duration::from_millis(1_500),
        "returned {elapsed:?} after shutdown"
    );
}
