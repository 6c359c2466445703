//! Connection state recovery across nodes over a real Redis (each test
//! starts its own `redis-server`): a client comes back on another node with
//! its socket id, rooms and exactly the events it missed, in the one order
//! of the namespace's log; a client that comes back before its node noticed
//! it was gone takes its socket over; the log and the records in Redis stay
//! bounded; and a node whose Redis connection was lost makes its clients
//! recover what it missed meanwhile.
//!
//! Processes killed with SIGKILL and rolling restarts behind a proxy are
//! tested with the official client in `tests/js/test/recovery_cluster.test.js`.

mod support;

use std::time::Duration;

use gateway::socketio::{Payload, Target};
use serde_json::{Value, json};
use support::node::{TestNode, config, until_clustered};
use support::recovery::{
    assert_new_session, connect, drop_transport, emit, reconnect, recoveries, stored_event,
};
use support::redis::Redis;
use support::sio::SioClient;
use support::tools::skip_without_redis;
use support::wait::{DEADLINE, eventually, eventually_async};

const QUIET: Duration = Duration::from_millis(300);

/// A node on `redis` with recovery on `/` (a window of `window_ms`, at most
/// `max_packets` events) and `/other` (the defaults, but at most 3 lost
/// sessions); quick heartbeats.
async fn node(redis: &Redis, window_ms: u64, max_packets: usize) -> TestNode {
    let recovery = format!(
        "[namespaces.recovery]\nenabled = true\nmax_disconnection_ms = {window_ms}\nmax_packets = {max_packets}\n"
    );
    let mut config = config(&format!(
        r#"
        [cluster]
        heartbeat_interval_ms = 200
        node_timeout_ms = 1000
        [limits]
        rate_limit_per_sec = 0
        [[namespaces]]
        name = "/"
        join = ["*"]
        publish = true
        {recovery}
        [[namespaces]]
        name = "/other"
        join = ["*"]
        [namespaces.recovery]
        enabled = true
        max_sessions = 3
        "#
    ));
    config.cluster.redis_url = Some(redis.url());
    TestNode::builder(config).start().await
}

/// A Redis of the test's own and two nodes on it (see [`node`]), clustered.
async fn pair(window_ms: u64, max_packets: usize) -> (Redis, TestNode, TestNode) {
    let redis = Redis::start().await;
    let n1 = node(&redis, window_ms, max_packets).await;
    let n2 = node(&redis, window_ms, max_packets).await;
    until_clustered(&[&n1, &n2]).await;
    (redis, n1, n2)
}

/// `redis-cli` answers as a number.
fn number(redis: &Redis, args: &[&str]) -> i64 {
    let out = redis.cli(args);
    out.parse()
        .unwrap_or_else(|_| panic!("{args:?}: not a number: {out:?}"))
}

#[tokio::test]
async fn recovers_on_another_node_with_the_missed_events_in_log_order() {
    if skip_without_redis() {
        return;
    }
    let redis = Redis::start().await;
    let (n1, n2, n3) = (
        node(&redis, 60_000, 10_000).await,
        node(&redis, 60_000, 10_000).await,
        node(&redis, 60_000, 10_000).await,
    );
    until_clustered(&[&n1, &n2, &n3]).await;
    let mut a = connect(&n1, "/").await;
    let mut b = connect(&n2, "/").await;
    a.join("r").await;
    b.join("r").await;

    // Emits from all three nodes interleave: both clients get them in the
    // one order of the log, with the same offsets.
    let nodes = [&n1, &n2, &n3];
    for i in 0..30 {
        emit(nodes[i % 3], "/", Target::room("r"), "seq", json!([i])).await;
    }
    let mut seen = Vec::new();
    for c in [&mut a, &mut b] {
        let mut got = Vec::new();
        for _ in 0..30 {
            let (_, args, offset) = stored_event(c).await;
            got.push((args, offset));
        }
        seen.push(got);
    }
    assert_eq!(seen[0], seen[1], "one order, one offset per event");
    let order: Vec<Value> = seen[0].iter().map(|(a, _)| a[0].clone()).collect();
    assert_eq!(order, (0..30).map(|i| json!(i)).collect::<Vec<_>>());
    let offset = seen[0].last().unwrap().1.clone();

    let (sid, pid) = (a.id.clone(), a.pid.clone().unwrap());
    drop_transport(&n1, &a).await;
    emit(&n2, "/", Target::room("r"), "m1", json!([1])).await;
    emit(&n3, "/", Target::default(), "m2", json!([2])).await;
    emit(&n3, "/", Target::room("elsewhere"), "no1", json!([])).await;
    emit(&n2, "/", Target::socket(sid.clone()), "m3", json!([3])).await;
    emit(&n1, "/", Target::default().except("r"), "no2", json!([])).await;
    emit(&n3, "/other", Target::default(), "no3", json!([])).await;
    emit(
        &n2,
        "/",
        Target::room("r").except("nobody"),
        "m4",
        json!([4]),
    )
    .await;

    let mut back = reconnect(&n3, "/", &pid, &offset).await;
    assert_eq!(back.id, sid, "the same socket id, on another node");
    assert_eq!(back.pid.as_deref(), Some(pid.as_str()));
    assert_eq!(
        back.before_connect, 4,
        "the replay precedes the CONNECT reply"
    );
    for (i, expected) in ["m1", "m2", "m3", "m4"].into_iter().enumerate() {
        let (name, args, _) = stored_event(&mut back).await;
        assert_eq!((name.as_str(), args), (expected, vec![json!(i + 1)]));
    }
    back.no_event(QUIET).await;
    // Its rooms came back with it; live events follow, from any node.
    assert!(n3.io.socket("/", &sid).is_some_and(|s| s.in_room("r")));
    emit(&n1, "/", Target::room("r"), "live1", json!([])).await;
    emit(&n2, "/", Target::socket(sid.clone()), "live2", json!([])).await;
    assert_eq!(stored_event(&mut back).await.0, "live1");
    assert_eq!(stored_event(&mut back).await.0, "live2");
    back.no_event(QUIET).await;
    // A volatile emit to its id takes the bus, to the channel of the node
    // the id names (n1, still alive): the node holding it now hears it.
    let volatile = Target {
        volatile: true,
        ..Target::socket(sid.clone())
    };
    for from in [&n1, &n2, &n3] {
        emit(from, "/", volatile.clone(), "vol", json!([1])).await;
        assert_eq!(back.event().await.1, [json!(1)], "no offset, once");
    }
    back.no_event(QUIET).await;
    assert_eq!(recoveries(&n3, "recovered"), 1.0);
    // Cluster-wide requests find it where it lives now.
    let (found, _) = n1
        .io
        .fetch_sockets("/", &Target::socket(sid.clone()))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].node_id.to_string(), n3.node_id());

    // A session is held by one connection at a time: a later claim with
    // the pid (the client came back once more) moves it again, and the
    // node that held it drops its copy.
    let again = reconnect(&n2, "/", &pid, &offset).await;
    assert_eq!(again.id, sid);
    let io = n3.io.clone();
    let id = sid.clone();
    eventually("the previous holder to drop its copy", move || {
        io.socket("/", &id).is_none()
    })
    .await;
    assert_eq!(recoveries(&n2, "recovered"), 1.0);
    for n in [n1, n2, n3] {
        n.stop().await;
    }
}

/// A client whose connection died without its node noticing (no close, no
/// ping timeout yet) comes back on another node: its record, written at
/// CONNECT, is taken over, and the first node drops its copy.
#[tokio::test]
async fn a_socket_still_held_by_its_node_is_taken_over() {
    if skip_without_redis() {
        return;
    }
    let (redis, n1, n2) = pair(60_000, 10_000).await;
    let mut a = connect(&n1, "/").await;
    a.join("r").await;
    emit(&n2, "/", Target::room("r"), "e0", json!([])).await;
    let (_, _, offset) = stored_event(&mut a).await;
    emit(&n2, "/", Target::room("r"), "e1", json!([1])).await;
    emit(&n2, "/", Target::default(), "e2", json!([2])).await;

    // The old connection stays open; the claim comes from elsewhere.
    let sid = a.id.clone();
    let mut back = reconnect(&n2, "/", a.pid.as_deref().unwrap(), &offset).await;
    assert_eq!(back.id, sid);
    assert_eq!(back.before_connect, 2);
    assert_eq!(stored_event(&mut back).await.0, "e1");
    assert_eq!(stored_event(&mut back).await.0, "e2");
    let io = n1.io.clone();
    let id = sid.clone();
    eventually("the first node to drop its copy", move || {
        io.socket("/", &id).is_none()
    })
    .await;
    // What the old connection still had queued, then its end.
    loop {
        match a.next(DEADLINE).await {
            Some(support::sio::Incoming::Event { .. }) => continue,
            Some(support::sio::Incoming::Closed) => break,
            other => panic!("the old connection: {other:?}"),
        }
    }
    // Exactly once from now on, and the record stays with its new holder:
    // the first node's departure did not make it a lost session.
    emit(&n1, "/", Target::room("r"), "after", json!([])).await;
    assert_eq!(stored_event(&mut back).await.0, "after");
    back.no_event(QUIET).await;
    assert_eq!(recoveries(&n2, "recovered"), 1.0);
    let record = redis.cli(&["HGET", "sio-gw:rec:{1:/}:sess", a.pid.as_deref().unwrap()]);
    assert!(
        record.starts_with(&format!("{}.", n2.node_id())) && record.contains("|c|"),
        "held connected by the second node: {record}"
    );
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test]
async fn refusals_over_redis() {
    if skip_without_redis() {
        return;
    }
    let redis = Redis::start().await;
    let n1 = node(&redis, 60_000, 3).await;
    let mut a = connect(&n1, "/").await;
    let pid = a.pid.clone().unwrap();
    emit(&n1, "/", Target::default(), "e0", json!([])).await;
    let (_, _, offset) = stored_event(&mut a).await;
    drop_transport(&n1, &a).await;
    let fresh = |c: &SioClient| assert_new_session(c, &a.id, &pid);
    // A forged pid, another namespace's, offsets never issued or malformed.
    fresh(&reconnect(&n1, "/", "AAAAAAAAAAAAAAAAAAAA", &offset).await);
    fresh(&reconnect(&n1, "/other", &pid, &offset).await);
    fresh(&reconnect(&n1, "/", &pid, "99999999999999-0").await);
    fresh(&reconnect(&n1, "/", &pid, "bogus").await);
    assert_eq!(recoveries(&n1, "bad_offset"), 2.0);
    // None of them used the session up; events trimmed after the offset
    // make it unrecoverable.
    for i in 0..5 {
        emit(&n1, "/", Target::default(), "lost", json!([i])).await;
    }
    fresh(&reconnect(&n1, "/", &pid, &offset).await);
    assert_eq!(recoveries(&n1, "bad_offset"), 3.0);
    n1.stop().await;

    // Past the window.
    let n2 = node(&redis, 300, 100).await;
    let mut b = connect(&n2, "/").await;
    emit(&n2, "/", Target::default(), "e0", json!([])).await;
    let (_, _, offset) = stored_event(&mut b).await;
    drop_transport(&n2, &b).await;
    // Lets the window pass (not an assertion).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let late = reconnect(&n2, "/", b.pid.as_deref().unwrap(), &offset).await;
    assert_ne!(late.id, b.id);
    assert_eq!(recoveries(&n2, "no_session"), 1.0);
    n2.stop().await;
}

/// Sustained emits keep the log at its bounds, and sessions that were lost
/// and never came back are gone from Redis after the window.
#[tokio::test]
async fn what_recovery_keeps_in_redis_stays_bounded() {
    if skip_without_redis() {
        return;
    }
    let redis = Redis::start().await;
    let n1 = node(&redis, 1_000, 50).await;
    let mut keep = connect(&n1, "/").await;
    for i in 0..300 {
        emit(&n1, "/", Target::default(), "tick", json!([i])).await;
    }
    for _ in 0..300 {
        keep.event().await;
    }
    // Each stored emit is one publish, its entry coming back one receive.
    assert!(n1.metric("gateway_redis_publishes_total", &[]) >= 300.0);
    assert!(n1.metric("gateway_redis_receives_total", &[]) >= 300.0);
    let log = "sio-gw:rec:{1:/}:log";
    assert_eq!(number(&redis, &["XLEN", log]), 50);
    // It expires whole when nothing is appended for the window.
    let ttl = number(&redis, &["PTTL", log]);
    assert!(ttl > 0 && ttl <= 1_000, "log: {ttl}");
    let mut gone = Vec::new();
    for _ in 0..5 {
        let c = connect(&n1, "/").await;
        drop_transport(&n1, &c).await;
        gone.push(c);
    }
    let sessions = "sio-gw:rec:{1:/}:sess";
    eventually_async("six records, five of them lost", || async {
        number(&redis, &["HLEN", sessions]) == 6
            && number(&redis, &["ZCARD", "sio-gw:rec:{1:/}:exp"]) == 5
    })
    .await;
    // Beyond `max_sessions`, the oldest lost sessions go.
    for _ in 0..5 {
        let c = connect(&n1, "/other").await;
        drop_transport(&n1, &c).await;
    }
    eventually_async("three lost sessions in /other, not five", || async {
        number(&redis, &["ZCARD", "sio-gw:rec:{6:/other}:exp"]) == 3
            && number(&redis, &["HLEN", "sio-gw:rec:{6:/other}:sess"]) == 3
    })
    .await;
    // After the window, the next keepalives drop the lost ones.
    eventually_async("the lost sessions to expire", || async {
        number(&redis, &["HLEN", sessions]) == 1
    })
    .await;
    assert_eq!(number(&redis, &["ZCARD", "sio-gw:rec:{1:/}:exp"]), 0);
    // Every key has a time to live (the log expired already).
    assert_eq!(number(&redis, &["EXISTS", log]), 0);
    for key in ["meta", "sess", "holders"] {
        let ttl = number(&redis, &["PTTL", &format!("sio-gw:rec:{{1:/}}:{key}")]);
        assert!(ttl > 0, "{key}: {ttl}");
    }
    // The gauges read Redis's figures.
    eventually("the stored sessions gauge", || {
        n1.metric("gateway_recovery_sessions", &[]) == 1.0
    })
    .await;
    drop(keep);
    n1.stop().await;
}

/// A node that lost its Redis subscription may have missed stored events
/// appended meanwhile: once subscribed again, it closes the connections of
/// its sockets whose namespace's log moved on, and they recover what they
/// missed from their offsets. Whether an event falls in the gap depends on
/// timing; what must hold either way is that the client ends with every
/// event exactly once, in order.
#[tokio::test]
async fn events_appended_while_a_node_resubscribes_are_not_lost() {
    if skip_without_redis() {
        return;
    }
    let (redis, n1, n2) = pair(60_000, 10_000).await;
    let mut a = connect(&n1, "/").await;
    let pid = a.pid.clone().unwrap();
    emit(&n2, "/", Target::default(), "e", json!([0])).await;
    let (_, _, mut offset) = stored_event(&mut a).await;
    // Every node's subscriber connection is cut; the emits follow at once.
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    for i in 1..=20 {
        emit(&n2, "/", Target::default(), "e", json!([i])).await;
    }
    let mut got = Vec::new();
    let mut recoveries = 0;
    while got.len() < 20 {
        match a.next(DEADLINE).await {
            Some(support::sio::Incoming::Event { mut args, .. }) => {
                offset = args
                    .pop()
                    .and_then(|o| o.as_str().map(str::to_owned))
                    .unwrap();
                got.push(args[0].clone());
            }
            Some(support::sio::Incoming::Closed) => {
                recoveries += 1;
                assert!(recoveries <= 2, "recovered more than twice");
                a = reconnect(&n1, "/", &pid, &offset).await;
            }
            other => panic!("after {got:?}: {other:?}"),
        }
    }
    assert_eq!(got, (1..=20).map(|i| json!(i)).collect::<Vec<_>>());
    a.no_event(QUIET).await;
    n1.stop().await;
    n2.stop().await;
}

/// A drained node records its clients' sessions as lost before it exits,
/// and they recover on another node.
#[tokio::test]
async fn a_drained_nodes_clients_recover_elsewhere() {
    if skip_without_redis() {
        return;
    }
    let (redis, n1, n2) = pair(60_000, 10_000).await;
    let mut a = connect(&n1, "/").await;
    a.join("r").await;
    emit(&n2, "/", Target::room("r"), "e0", json!([])).await;
    let (_, _, offset) = stored_event(&mut a).await;
    let pid = a.pid.clone().unwrap();
    n1.stop().await;
    let record = redis.cli(&["HGET", "sio-gw:rec:{1:/}:sess", &pid]);
    assert!(
        record.contains("|d|"),
        "recorded lost at the drain: {record}"
    );
    emit(&n2, "/", Target::room("r"), "m1", json!([1])).await;
    let mut back = reconnect(&n2, "/", &pid, &offset).await;
    assert_eq!(back.id, a.id);
    assert_eq!(stored_event(&mut back).await.0, "m1");
    assert!(n2.io.socket("/", &a.id).is_some_and(|s| s.in_room("r")));
    n2.stop().await;
}

/// On Redis Cluster, a namespace's keys and log channel share one slot
/// (one hash tag), so the scripts run there and publish with `SPUBLISH`.
#[tokio::test]
async fn recovers_over_redis_cluster() {
    if skip_without_redis() {
        return;
    }
    let cluster = support::redis::RedisCluster::start(3).await;
    let start = || async {
        let mut config = config(
            r#"
            [cluster]
            heartbeat_interval_ms = 200
            node_timeout_ms = 1000
            [limits]
            rate_limit_per_sec = 0
            [[namespaces]]
            name = "/"
            join = ["*"]
            [namespaces.recovery]
            enabled = true
            "#,
        );
        config.cluster.redis_url = Some(cluster.url());
        TestNode::builder(config).start().await
    };
    let (n1, n2) = (start().await, start().await);
    until_clustered(&[&n1, &n2]).await;
    let mut a = connect(&n1, "/").await;
    a.join("r").await;
    for i in 0..10 {
        let from = if i % 2 == 0 { &n1 } else { &n2 };
        emit(from, "/", Target::room("r"), "seq", json!([i])).await;
    }
    let mut offset = String::new();
    for i in 0..10 {
        let (_, args, o) = stored_event(&mut a).await;
        assert_eq!(args, [json!(i)]);
        offset = o;
    }
    drop_transport(&n1, &a).await;
    emit(&n1, "/", Target::room("r"), "m1", json!([])).await;
    emit(&n2, "/", Target::socket(a.id.clone()), "m2", json!([])).await;
    let mut back = reconnect(&n2, "/", a.pid.as_deref().unwrap(), &offset).await;
    assert_eq!(back.id, a.id);
    assert_eq!(stored_event(&mut back).await.0, "m1");
    assert_eq!(stored_event(&mut back).await.0, "m2");
    back.no_event(QUIET).await;
    n1.stop().await;
    n2.stop().await;
}

/// Clients recover on another node while events are appended without a
/// pause: each ends with every event exactly once and in order. (An event
/// appended just before a replay was read can reach the recovering node
/// after the socket is back; it must not be delivered twice.)
#[tokio::test]
async fn recoveries_under_steady_emits_deliver_each_event_once() {
    if skip_without_redis() {
        return;
    }
    let (_redis, n1, n2) = pair(60_000, 100_000).await;
    const CLIENTS: usize = 60;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(connect(&n1, "/").await);
    }
    // Every client gets a first event (and so an offset) before emits go on.
    emit(&n2, "/", Target::default(), "e", json!([0])).await;
    let mut received: Vec<Vec<i64>> = vec![Vec::new(); CLIENTS];
    let mut offsets = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let (_, args, offset) = stored_event(c).await;
        received[i].push(args[0].as_i64().unwrap());
        offsets.push(offset);
    }
    // Steady emits from the other node, bounded in count.
    let emitter = {
        let io = n2.io.clone();
        tokio::spawn(async move {
            for i in 1..=400i64 {
                let args = Payload::from_values(&[json!(i)]);
                io.emit("/", &Target::default(), "e", &args).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    // Each client reads a little, loses its transport and comes back on
    // the other node with its last offset, while the emits go on.
    let mut back = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        for _ in 0..2 {
            match c.next(Duration::from_millis(50)).await {
                Some(support::sio::Incoming::Event { args, .. }) => {
                    received[i].push(args[0].as_i64().unwrap());
                    offsets[i] = args[1].as_str().unwrap().to_owned();
                }
                _ => break,
            }
        }
        c.close();
        let pid = c.pid.clone().unwrap();
        let r = reconnect(&n2, "/", &pid, &offsets[i]).await;
        assert_eq!(r.id, c.id, "client {i} recovered");
        back.push(r);
    }
    emitter.await.unwrap();
    for (i, c) in back.iter_mut().enumerate() {
        while received[i].last() != Some(&400) {
            let (_, args, _) = stored_event(c).await;
            received[i].push(args[0].as_i64().unwrap());
        }
        assert_eq!(
            received[i],
            (0..=400).collect::<Vec<i64>>(),
            "client {i}: every event once, in order"
        );
    }
    // Nothing more after the last, for anyone (the first waits for all).
    back[0].no_event(QUIET).await;
    for c in &mut back[1..] {
        c.no_event(Duration::from_millis(10)).await;
    }
    n1.stop().await;
    n2.stop().await;
}
